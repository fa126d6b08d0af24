"""Training: Lightning modules, augmentations, probes, loggers and encoder artifacts."""
