"""asl_tf/model: the ActionFormer/ASL pyramid in Keras 3 (channels-last, keras.ops only).

layers.py (masked conv, LayerNorm, local/global masked attention, transformer block, PE),
backbone.py, neck.py, heads.py, points.py, sensitivity.py (ASL), detector.py (ASLDetector).
`from asl_tf.model import ASLDetector, build_detector` (imported lazily).
"""

__all__ = ["ASLDetector", "build_detector"]


def __getattr__(name):
    if name in __all__:
        from asl_tf.model import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'asl_tf.model' has no attribute {name!r}")
