"""Data layer: raw-dataset sources, the per-subject cache, splits and Lightning DataModules."""
