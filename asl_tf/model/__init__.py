"""asl_tf/model: the ActionFormer/ASL pyramid in Keras 3 (channels-last, keras.ops only).

layers.py (masked conv, LayerNorm, local/global masked attention, transformer block, PE),
backbone.py, neck.py, heads.py, points.py, sensitivity.py (ASL), detector.py (ASLDetector:
`from asl_tf.model.detector import ASLDetector, build_detector`).
"""
