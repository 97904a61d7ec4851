"""asl-tf edge runtime: exported detectors on a device, without TensorFlow.

`edge.runtime.EdgeModel` (a .tflite / .onnx model and its sidecar), `edge.stream`
(`StreamingDetector`, `detect_video`), `edge.postprocess` (decode, NMS, seconds) and the
`asl-edge` command line (`edge.cli`); video (PyAV, optional): `edge.frames` (decoding and
snippet timing, shared with `asl_tf.features`), `edge.encoder` (exported frame encoder),
`edge.video` (frames -> detections). Imports numpy, the standard library, ai_edge_litert and
onnxruntime only.
"""
