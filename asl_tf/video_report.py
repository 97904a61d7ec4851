"""Report of the video demo: `report.md` and `timeline.png` (frame thumbnails above the
ground-truth and detection tracks of held-out spliced videos)."""
from __future__ import annotations

import pathlib

import numpy as np

from asl_tf.fileio import atomic_path, atomic_write

TRACKS = (("keras", "Keras"), ("tflite", "TFLite (edge, offline)"),
          ("tflite_stream", "TFLite (edge, stream)"), ("onnx", "ONNX (edge)"))
MIN_SCORE = 0.3           # detections drawn in the timeline


def _thumbs(path, times, height=48):
    """RGB thumbnails of the video at `times` (s), decoded with PyAV."""
    import av

    out, want = [], list(times)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for frame in c.decode(s):
            t = float(frame.pts * s.time_base)
            while want and t + 1e-6 >= want[0]:
                w = int(round(frame.width * height / frame.height))
                out.append(frame.to_ndarray(format="rgb24", width=w, height=height))
                want.pop(0)
            if not want:
                break
    return out


def timeline(path, records, class_names, dets, videos_dir, n_thumbs=10):
    """One panel per record: thumbnails, then ground truth and each detection track."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracks = [(k, name) for k, name in TRACKS if k in dets]
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(len(records), 1, figsize=(13, 1.1 + 0.45 * (len(tracks) + 3)
                                                       * len(records) / 1.4), squeeze=False)
    for ax, r in zip(axes[:, 0], records):
        dur = r.duration
        times = (np.arange(n_thumbs) + 0.5) * dur / n_thumbs
        for t, img in zip(times, _thumbs(pathlib.Path(videos_dir) / f"{r.video_id}.mp4", times)):
            w = dur / n_thumbs * 0.95
            ax.imshow(img, extent=(t - w / 2, t + w / 2, len(tracks) + 1.0, len(tracks) + 3.2),
                      aspect="auto")
        rows = [("ground truth", np.asarray(r.segments).reshape(-1, 2), np.asarray(r.labels), None)]
        for k, name in tracks:
            d = dets[k].get(r.video_id)
            keep = d["scores"] >= MIN_SCORE
            rows.append((name, d["segments"][keep], d["labels"][keep], d["scores"][keep]))
        for i, (name, segs, labels, scores) in enumerate(rows):
            y = len(tracks) - i + 0.1
            for j, ((s, e), lab) in enumerate(zip(segs, labels)):
                alpha = 1.0 if scores is None else float(np.clip(scores[j], 0.3, 1.0))
                ax.barh(y + 0.4, e - s, left=s, height=0.7, color=colors(int(lab)), alpha=alpha)
            ax.text(-0.01 * dur, y + 0.4, name, ha="right", va="center", fontsize=7)
        ax.set_xlim(0, dur)
        ax.set_ylim(0, len(tracks) + 3.3)
        ax.set_yticks([])
        ax.set_title(f"{r.video_id} (held out, {dur:.1f} s; detections scoring >= {MIN_SCORE})",
                     fontsize=8, loc="left")
    axes[-1, 0].set_xlabel("seconds")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors(i)) for i in range(len(class_names))]
    fig.legend(handles, class_names, loc="upper right", fontsize=7, ncol=len(class_names))
    fig.tight_layout(rect=(0.08, 0, 1, 0.97))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_report(path, summary):
    """report.md from the demo's summary dict."""
    maps = summary["heldout_map"]
    lines = ["# asl-tf demo: video in, detections out", "",
             "What this is: " + summary["what"] + ". The ground truth is exact (cut points are "
             "frame-exact); no accuracy on real actions is claimed.", "",
             "## Held-out mAP (%) and boundary error", "",
             "| model | " + " | ".join(f"tIoU {t}" for t in maps["keras"]["tious"])
             + " | average | median boundary error (s) | missed |",
             "|---|" + "---|" * (len(maps["keras"]["tious"]) + 3)]
    names = dict(TRACKS)
    for k, m in maps.items():
        err = "-" if m["boundary_error_s"] is None else f"{m['boundary_error_s']:.3f}"
        lines.append(f"| {names.get(k, k)} | " + " | ".join(f"{x:.2f}" for x in m["mAP_per_tiou"])
                     + f" | **{m['average']:.2f}** | {err} | {m['missed']}/{m['instances']} |")
    quant = summary.get("tflite_quantization", {})
    if quant:
        lines += ["", f"TFLite: encoder {quant.get('encoder')}, detector {quant.get('detector')}"
                  + (f" (refused first: {'; '.join(quant['refused'])})" if quant.get("refused") else "") + "."]
    agree = summary.get("stream_vs_offline_agreement")
    lines += ["", "Boundary error: |start - start'| and |end - end'| of each ground-truth "
              "instance's best detection of its class with tIoU >= 0.5, median over both ends.",
              f"Streaming vs offline (TFLite): {'-' if agree is None else f'{100 * agree:.1f}%'} "
              "of the offline detections scoring >= half the video's top score are reproduced by the "
              "stream (same class, "
              "tIoU >= 0.9, score within 0.05).", "", "## Device path (asl-edge run --video, no TensorFlow)", "",
              "| run | real-time factor (median) | peak RSS (MB) |", "|---|---|---|"]
    for k, e in summary.get("edge", {}).items():
        rtf = "-" if e["real_time_factor_median"] is None else f"{e['real_time_factor_median']:.1f}x"
        rss = "-" if e["peak_rss_mb_max"] is None else f"{e['peak_rss_mb_max']:.0f}"
        lines.append(f"| {names.get(k, k)} | {rtf} | {rss} |")
    lines += ["", "## Steps", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v['seconds']:.1f} |" for k, v in summary["steps"].items()]
    lines += ["", "![timeline](timeline.png)", ""]
    with atomic_write(path) as f:
        f.write("\n".join(lines))
