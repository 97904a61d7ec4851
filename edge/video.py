"""`asl-edge run --video SRC --encoder E --model M`: frames in, detections out, on the device.

    SRC (file, rtsp://, tcp://, /dev/video0) --PyAV--> frames on the recipe's grid (edge.frames)
      -> exported frame encoder (edge.encoder), k frames per snippet, mean -> snippet feature [C]
      -> edge.stream.StreamingDetector (its feature buffer is the bounded ring of W + hop steps)
      -> cross-window merge -> detections

Offline (no `--stream`) collects the video's `[T, C]` features and calls
`edge.stream.detect_video` exactly as `asl-edge run --features` does, so the JSON is the same as
running `--features` on those features. `--stream` writes each detection as a JSON line when it
is final, with `latency_s` (video time from the segment's end to its emission, as
`run --features --stream`) plus `video_time_s` (time of the newest decoded frame then) and
`wall_s` (processing seconds since the video was opened).

Timing: `fps`, `feat_stride`, `num_frames` of the detector's sidecar (or the flags); the encoded
frames per snippet from `--frames-per-snippet` (the recipe's `frames_per_snippet`, default 1).
The encoder's output width must equal the detector's input width: checked before the video is
opened. At the end a report (real-time factor = seconds of video / seconds of processing, also
per CPU second; peak RSS) goes to the log and, with `--report FILE`, to a JSON file.
"""
import contextlib
import json
import os
import re
import sys
import time

import numpy as np

from edge.encoder import FrameEncoder
from edge.fileio import atomic_write
from edge.runtime import EdgeModel, peak_rss_mb
from edge.stream import StreamingDetector, default_duration, detect_video
from edge.frames import SnippetGrid, VideoReader, iter_snippets, rgb_converter

def snippet_features(reader, grid, encoder, stats=None):
    """`(i, feature [D] float32)` per snippet of `reader`: mean of its k encoded frames."""
    convert = rgb_converter(encoder.input_size)
    for i, frames in iter_snippets(reader, grid, convert):
        t0 = time.perf_counter()
        feat = encoder(frames).mean(axis=0)
        if stats is not None:
            stats["frames_encoded"] = stats.get("frames_encoded", 0) + len(frames)
            stats["encode_s"] = stats.get("encode_s", 0.0) + time.perf_counter() - t0
        yield i, feat.astype(np.float32, copy=False)


def _video_id(src):
    base = os.path.splitext(os.path.basename(src.rstrip("/")))[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base) or "stream"



def open_models(encoder_path, model_path, threads=None):
    """The encoder and detector, refused as a pair when their feature widths differ."""
    encoder = FrameEncoder(encoder_path, num_threads=threads)
    model = EdgeModel(model_path, num_threads=threads)
    if encoder.output_dim != model.input_dim:
        raise ValueError(f"{encoder_path}: the encoder makes {encoder.output_dim}-d features, the "
                         f"detector {model_path} takes {model.input_dim} (field input_dim): not "
                         "a pair")
    return encoder, model


def run_video(args, public):
    """The `--video` branch of `asl-edge run` (args of edge.cli); `public(d, video_id, stream)`
    is edge.cli's JSON shaping of a detection. Outputs are written atomically. Returns 0."""
    if not args.encoder:
        raise ValueError("--video needs --encoder E.tflite|E.onnx (the exported frame encoder)")
    t_open = time.perf_counter()
    encoder, model = open_models(args.encoder, args.model, args.threads)
    fps = args.fps if args.fps is not None else model.fps
    stride = args.feat_stride if args.feat_stride is not None else model.feat_stride
    frames = args.num_frames if args.num_frames is not None else model.num_frames
    for name, value in (("fps", fps), ("feat_stride", stride), ("num_frames", frames)):
        if value is None:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{args.model}: the sidecar has no '{name}'; give {flag}")
    grid = SnippetGrid(fps, stride, frames, args.frames_per_snippet)
    meta = dict(fps=grid.fps, feat_stride=grid.feat_stride, num_frames=grid.num_frames)
    det = StreamingDetector(model, hop=args.hop, **meta)  # checks --hop before any decoding
    t_models = time.perf_counter()
    reader = VideoReader(args.video, threads=args.threads, timeout=args.timeout)
    video_id = args.video_id or _video_id(args.video)
    stats = {}
    t0, cpu0 = time.perf_counter(), time.process_time()
    count = 0
    if not args.stream:
        feats = [f for _, f in snippet_features(reader, grid, encoder, stats)]
        feats = np.stack(feats)
        dets = detect_video(model, feats, hop=args.hop, duration=args.duration, **meta)
        doc = {"video_id": video_id, "detections": [public(d) for d in dets]}
        count, steps, windows = len(dets), len(feats), None
        if args.out == "-":
            json.dump(doc, sys.stdout)
            sys.stdout.write("\n")
        else:
            with atomic_write(args.out) as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
    else:
        def write(d):
            line = {**public(d, video_id, True), "video_time_s": reader.duration,
                    "wall_s": time.perf_counter() - t0}
            f.write(json.dumps(line) + "\n")
            f.flush()

        steps = 0
        out = contextlib.nullcontext(sys.stdout) if args.out == "-" else atomic_write(args.out)
        with out as f:
            for i, feat in snippet_features(reader, grid, encoder, stats):
                steps += 1
                for d in det.push(feat[None]):
                    write(d)
                    count += 1
            duration = args.duration or default_duration(steps, grid.fps, grid.feat_stride,
                                                          grid.num_frames)
            for d in det.flush(duration=duration):
                write(d)
                count += 1
        windows = det.windows_run
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    report = {
        "video": args.video, "video_id": video_id, "video_s": reader.duration,
        "frames_decoded": reader.frame_count, "frames_encoded": stats.get("frames_encoded", 0),
        "snippets": steps, "windows": windows, "detections": count,
        "stopped_by": reader.stopped_by, "grid": grid.as_dict(),
        "encoder": os.path.basename(args.encoder), "encoder_backend": encoder.backend,
        "model": os.path.basename(args.model), "threads": args.threads,
        "load_s": t_models - t_open, "process_s": wall,
        "encode_s": stats.get("encode_s", 0.0),
        "real_time_factor": reader.duration / wall if wall > 0 else float("inf"),
        # CPU seconds of this process (all its threads): on a shared machine, the estimate of a
        # dedicated core when every stage runs on 1 thread (--threads 1)
        "process_cpu_s": cpu,
        "real_time_factor_cpu": reader.duration / cpu if cpu > 0 else float("inf"),
        "peak_rss_mb": peak_rss_mb(),
    }
    print(f"asl-edge: {video_id}: {reader.duration:.2f} s of video in {wall:.2f} s "
          f"({report['real_time_factor']:.1f}x real time), {steps} snippets, {count} detections, "
          f"peak RSS {report['peak_rss_mb']:.0f} MB", file=sys.stderr)
    if args.report:
        with atomic_write(args.report) as rf:
            rf.write(json.dumps(report, indent=1) + "\n")
    return 0
