"""`asl-edge`: run an exported asl-tf detector on a device (no TensorFlow).

    asl-edge run --model M.tflite|M.onnx --features VIDEO.npy [--stream --hop H]
                 [--fps F --feat-stride S --num-frames K --duration D] --out dets.json
    asl-edge run --model M.tflite --video SRC --encoder E.tflite [--stream --hop H]
                 [--frames-per-snippet K --timeout S --report R.json] --out dets.json
    asl-edge bench --model M.tflite [--threads N] [--hop H] [--windows N]

`run` offline writes `{"video_id", "detections": [{"segment": [s, e], "score", "label",
"label_name"}]}` sorted by score (the model's exported test config; segments clamped to
`[0, duration]` s). Offline, a video of at most the exported window is exactly one whole-video
inference; a longer video runs windows every `--hop` steps and merges them (edge/stream.py,
`detect_video`: each point decoded by the window where it is most central, one NMS over the
video; it differs from a whole-video pass in per-window top-k and context). `run --stream`
pushes the features one chunk at a time (`--chunk`, default
1 step) and writes one JSON line per detection as it is finalised, with its latency;
`--out -` writes to stdout as it goes. `run --video` starts from frames (a file, a URL, a
camera; edge/video.py) and writes the same JSON. `bench` prints JSON: model latency per window, end-to-end
streaming latency per second of video, real-time factor and peak RSS.

argparse only; a user error (bad flag, bad or damaged file, unwritable output, full disk)
prints one line `asl-edge: error: ...` and exits 2 (`--debug`: with its traceback); Ctrl-C exits
130 without a traceback; anything else is a bug and shows its traceback.
"""
import argparse
import contextlib
import json
import logging
import os
import sys
import time
import tokenize
import zipfile

import numpy as np

from edge.errors import user_error_text
from edge.fileio import atomic_write
from edge.runtime import EdgeModel, peak_rss_mb
from edge.stream import StreamingDetector, default_duration, detect_video

PROG = "asl-edge"


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse with the house rule for usage errors: one line on stderr, exit 2."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p):
        p.add_argument("--debug", action="store_true",
                       help="show the traceback of user errors too")
        p.add_argument("--model", required=True, help="exported .tflite or .onnx (with sidecar)")
        p.add_argument("--threads", type=_positive(int), default=None,
                       help="interpreter threads (default: the runtime's choice)")
        p.add_argument("--hop", type=_positive(int), default=None,
                       help="window hop in feature steps (default: half the window)")

    run = sub.add_parser("run", help="detect actions in a feature file")
    common(run)
    run.add_argument("--features", default=None, help="VIDEO.npy, [T, C] float32")
    run.add_argument("--video", default=None, help="instead of --features: a video file, URL or "
                     "camera (/dev/video0) that FFmpeg opens (needs PyAV: asl-tf-edge[video])")
    run.add_argument("--encoder", default=None, help="with --video: the exported frame encoder "
                     "(.tflite or .onnx)")
    run.add_argument("--frames-per-snippet", type=_positive(int), default=1,
                     help="with --video: frames encoded per snippet (the recipe's; default 1)")
    run.add_argument("--timeout", type=_positive(float), default=10.0,
                     help="with --video: seconds without data after which a live source has "
                     "stopped (its stream ends with what it had)")
    run.add_argument("--report", default=None, help="with --video: write the run's report "
                     "(real-time factor, peak RSS) as JSON here")
    run.add_argument("--out", required=True, help="output JSON (JSON lines with --stream; '-' "
                     "for stdout)")
    run.add_argument("--stream", action="store_true", help="stream mode: JSON lines as "
                     "detections are finalised")
    run.add_argument("--chunk", type=_positive(int), default=1,
                     help="steps per push in --stream mode (default 1)")
    run.add_argument("--video-id", default=None, help="default: the features file's stem")
    run.add_argument("--fps", type=_positive(float), default=None,
                     help="video frames per second (default: the sidecar's)")
    run.add_argument("--feat-stride", type=_positive(float), default=None,
                     help="video frames between feature steps (default: the sidecar's)")
    run.add_argument("--num-frames", type=_positive(float), default=None,
                     help="video frames per feature step (default: the sidecar's)")
    run.add_argument("--duration", type=_positive(float), default=None,
                     help="video duration in seconds (default: from T, fps, stride, frames)")

    bench = sub.add_parser("bench", help="latency per window and per second of video, peak RSS")
    common(bench)
    bench.add_argument("--windows", type=_positive(int), default=20,
                       help="timed model calls, and windows of the synthetic stream")
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--fps", type=_positive(float), default=None)
    bench.add_argument("--feat-stride", type=_positive(float), default=None)
    bench.add_argument("--num-frames", type=_positive(float), default=None)
    bench.add_argument("--out", default=None, help="also write the JSON here")
    return parser


def _load_features(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: features file not found")
    try:
        feats = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError,
            RuntimeError, SyntaxError, tokenize.TokenError) as err:  # (a damaged .npy header)
        raise ValueError(f"{path}: not a .npy array ({err})") from None
    if isinstance(feats, np.lib.npyio.NpzFile):  # .npz: one array, [T, C]
        with contextlib.closing(feats):
            names = list(feats.files)
            if len(names) != 1:
                raise ValueError(f"{path}: a .npz features file must hold one [T, C] array, "
                                 f"got {len(names)} ({', '.join(names[:5])})")
            try:
                feats = feats[names[0]]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError,
                    RuntimeError) as err:
                raise ValueError(f"{path}: damaged array {names[0]!r} ({err})") from None
    if feats.ndim != 2:
        raise ValueError(f"{path}: features must be [T, C], got shape {list(feats.shape)}")
    if feats.shape[0] == 0:
        raise ValueError(f"{path}: the video has no feature steps (T = 0)")
    if not np.issubdtype(feats.dtype, np.floating):
        raise ValueError(f"{path}: features must be float, got dtype {feats.dtype}")
    return feats


def _check_out(path):
    """Refuse an output path that cannot become a file, before any work is done."""
    if path in (None, "-"):
        return
    if os.path.isdir(path):
        raise IsADirectoryError(f"--out {path}: is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--out {path}: folder {folder} does not exist")


def _public(d, video_id=None, stream=False):
    out = {"segment": d["segment"], "score": d["score"], "label": d["label"],
           "label_name": d["label_name"]}
    if stream:
        out = {"video_id": video_id, **out, "latency_steps": d["latency_steps"],
               "latency_s": d["latency_s"], "emitted_at": d["emitted_at"]}
    return out


def cmd_run(args):
    if (args.features is None) == (args.video is None):
        raise ValueError("run: give exactly one of --features VIDEO.npy and --video SRC")
    _check_out(args.out)
    if args.video is not None:
        from edge.video import run_video
        return run_video(args, _public)
    feats = _load_features(args.features)
    model = EdgeModel(args.model, num_threads=args.threads)
    if feats.shape[1] != model.input_dim:
        raise ValueError(f"{args.features}: features have width {feats.shape[1]}, the model "
                         f"{args.model} takes {model.input_dim} (field input_dim)")
    video_id = args.video_id or os.path.splitext(os.path.basename(args.features))[0]
    meta = dict(fps=args.fps, feat_stride=args.feat_stride, num_frames=args.num_frames)
    if not args.stream:
        bad = ~np.isfinite(feats).all(axis=1)
        if bad.any():  # a file, not a live stream: refuse (--stream drops such chunks)
            raise ValueError(f"{args.features}: {int(bad.sum())} feature steps contain NaN/inf "
                             f"(first: step {int(np.flatnonzero(bad)[0])}); --stream drops "
                             "such chunks with a warning instead")
        dets = detect_video(model, feats, hop=args.hop, duration=args.duration, **meta)
        doc = {"video_id": video_id, "detections": [_public(d) for d in dets]}
        if args.out == "-":
            json.dump(doc, sys.stdout)
            sys.stdout.write("\n")
            return 0
        with atomic_write(args.out) as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        logging.info("%s: %d detections -> %s", video_id, len(dets), args.out)
        return 0

    det = StreamingDetector(model, hop=args.hop, **meta)
    duration = args.duration or default_duration(len(feats), det.fps, det.feat_stride,
                                                 det.num_frames)
    out = contextlib.nullcontext(sys.stdout) if args.out == "-" else atomic_write(args.out)
    count = 0
    with out as f:
        for i in range(0, len(feats), args.chunk):
            for d in det.push(np.asarray(feats[i:i + args.chunk])):
                f.write(json.dumps(_public(d, video_id, True)) + "\n")
                f.flush()
                count += 1
        for d in det.flush(duration=duration):
            f.write(json.dumps(_public(d, video_id, True)) + "\n")
            count += 1
        f.flush()
    logging.info("%s: %d detections streamed (%d windows, %d steps dropped)", video_id, count,
                 det.windows_run, det.dropped_steps)
    return 0



def cmd_bench(args):
    _check_out(args.out)
    model = EdgeModel(args.model, num_threads=args.threads)
    rng = np.random.default_rng(0)
    w, c = model.window, model.input_dim
    x = rng.standard_normal((w, c)).astype(np.float32)
    for _ in range(max(args.warmup, 0)):
        model.run(x)
    times = []
    for _ in range(args.windows):
        t0 = time.perf_counter()
        model.run(x)
        times.append(time.perf_counter() - t0)
    rss_model = peak_rss_mb()
    det = StreamingDetector(model, hop=args.hop, fps=args.fps, feat_stride=args.feat_stride,
                            num_frames=args.num_frames)
    steps = w + (args.windows - 1) * det.hop
    stream = rng.standard_normal((steps, c)).astype(np.float32)
    n_dets = 0
    t0 = time.perf_counter()
    for i in range(0, steps, det.hop):
        n_dets += len(det.push(stream[i:i + det.hop]))
    n_dets += len(det.flush())
    wall = time.perf_counter() - t0
    video_s = steps * det.feat_stride / det.fps
    hop_s = det.hop * det.feat_stride / det.fps
    med = float(np.median(times))
    report = {
        "model": os.path.basename(args.model), "backend": model.backend,
        "threads": model.num_threads, "window_steps": w, "hop_steps": det.hop,
        "input_dim": c, "num_classes": model.num_classes,
        "window_s": w * det.feat_stride / det.fps, "hop_s": hop_s,
        "model_ms_per_window_median": 1e3 * med,
        "model_ms_per_window_p90": 1e3 * float(np.percentile(times, 90)),
        "model_ms_per_video_second": 1e3 * med / hop_s,
        "stream_windows": det.windows_run, "stream_video_s": video_s,
        "stream_ms_per_video_second": 1e3 * wall / video_s,
        "real_time_factor": video_s / wall if wall > 0 else float("inf"),
        "stream_detections": n_dets,
        "peak_rss_mb_model": rss_model,
        "peak_rss_mb": peak_rss_mb(),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with atomic_write(args.out) as f:
            f.write(text + "\n")
    return 0


def main(argv=None):
    """Console entry point of `asl-edge`; returns the exit status (2 on a user error)."""
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = cmd_run(args) if args.command == "run" else cmd_bench(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as err:  # noqa: BLE001  (classified: bugs re-raise)
        text = user_error_text(err)
        if text is None or args.debug:
            raise
        print(f"{PROG}: error: {text}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
