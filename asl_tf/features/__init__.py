"""Frame encoders that turn RGB frames into per-frame features (see efficientnet_lite.py)."""
from asl_tf.features.efficientnet_lite import default_weights_path, efficientnet_lite0

__all__ = ["efficientnet_lite0", "default_weights_path"]
