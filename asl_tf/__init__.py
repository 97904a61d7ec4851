"""asl-tf: Action Sensitivity Learning for temporal action localization (Keras 3)."""

__version__ = "0.1.0"
