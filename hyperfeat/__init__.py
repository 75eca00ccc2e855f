"""hyperfeat: diffusion hyperfeatures for semantic and temporal correspondence."""

__version__ = "0.1.0"
