"""fm-bio: foundation models of wearable bio-signals and personalised sleep staging."""

__version__ = "0.1.0"
