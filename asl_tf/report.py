"""Plots and the report of the demo: timeline.png (ground truth vs detections per held-out
video) and report.md (steps, timings, mAP tables). Outputs are written atomically."""
from __future__ import annotations

import os
import pathlib

import numpy as np

from asl_tf.fileio import atomic_path, atomic_write


def write_text(path: pathlib.Path, text: str):
    """Write `text` to `path` atomically."""
    with atomic_write(path) as f:
        f.write(text)


def map_summary(res):
    return {"average_mAP": float(res["average_mAP"]),
            "mAP_per_tiou": [float(x) for x in res["mAP_per_tiou"]],
            "tiou_thresholds": [float(x) for x in res["tiou_thresholds"]]}


def _lanes(segs):
    """Lane index per segment so that segments in one lane do not overlap (greedy by start)."""
    ends, out = [], [0] * len(segs)
    for i in np.argsort(np.asarray(segs)[:, 0], kind="stable") if len(segs) else []:
        s, e = segs[i]
        lane = next((j for j, end in enumerate(ends) if end <= s), len(ends))
        if lane == len(ends):
            ends.append(e)
        ends[lane] = e
        out[i] = lane
    return out


def draw_timeline(ctx, videos, path: pathlib.Path, n_videos: int, source: str | None = None):
    """GT vs detections over time for a few held-out videos, one colour per class.

    Per video the top max(5, 1.5 x #GT) detections of `source` are drawn (ASL models score
    low, so a fixed threshold would hide them); bar height = score / the figure's top score.
    Overlapping GT instances (e.g. CliffDiving inside Diving) are drawn in separate lanes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = ctx["data"]["class_names"]
    # prefer videos with several instances and more than one class, then shorter ones
    videos = sorted(videos, key=lambda v: (-min(len(set(v[4].tolist())), 3), -min(len(v[4]), 12),
                                           v[1]))[:n_videos]
    dets_all = (ctx.get("dets") or {}).get(source) if source else None
    shown = {}
    for vid, _, _, _, labels in videos:
        if dets_all is not None and vid in dets_all:
            d = dets_all[vid]
            order = np.argsort(-np.asarray(d["scores"]), kind="stable")
            order = order[:max(5, int(1.5 * len(labels)))]
            shown[vid] = [(float(d["segments"][i][0]), float(d["segments"][i][1]),
                           int(d["labels"][i]), float(d["scores"][i])) for i in order
                          if float(d["scores"][i]) >= 0.01]
    top = max([x[3] for v in shown.values() for x in v], default=1.0)
    # distinct colours for the classes in the figure: tab10 first, then tab20's light shades
    present = sorted({int(k) for v in videos for k in v[4]} | {x[2] for v in shown.values() for x in v})
    palette = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("tab20").colors)[1::2]
    cmap = {k: palette[i % len(palette)] for i, k in enumerate(present)}
    color = lambda k: cmap.get(int(k), "black")  # noqa: E731
    fig, axes = plt.subplots(len(videos), 1, figsize=(13, 1.9 * len(videos) + 0.8), squeeze=False)
    used = set()
    for ax, (vid, dur, _, segs, labels) in zip(axes[:, 0], videos):
        lanes = _lanes(segs)
        h = 0.8 / (max(lanes, default=0) + 1)
        for (s, e), k, lane in zip(segs, labels, lanes):
            ax.broken_barh([(s, max(e - s, 0.05))], (1.1 + lane * h, h), color=color(k))
            used.add(int(k))
        if vid in shown:
            for s, e, k, sc in shown[vid]:
                ax.broken_barh([(s, max(e - s, 0.05))], (0.1, 0.8 * sc / top), color=color(k),
                               alpha=0.75, edgecolor="black", linewidth=0.3)
                used.add(k)
            ax.set_yticks([0.5, 1.5], [f"{source} top-k\n(height ∝ score)", "ground truth"])
        else:
            ax.set_yticks([0.5, 1.5], ["detections: n/a", "ground truth"])
        ax.set_xlim(0, dur)
        ax.set_ylim(0, 2)
        ax.set_title(vid, fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    handles = [Patch(color=color(k), label=names[k]) for k in sorted(used)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, max(1, len(handles))), fontsize=8,
               frameon=False)
    title = "Synthetic features on real THUMOS'14 timings: ground truth vs detections"
    if shown:
        title += f" (top {source} detections per video; tallest bar = score {top:.2f})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(handles) // 6), 1, 0.97))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _map_table(maps: dict) -> list[str]:
    if not maps:
        return ["mAP: not available (see the steps above)."]
    names = list(maps)
    tious = next(iter(maps.values()))["tiou_thresholds"]
    head = "| model | " + " | ".join(f"tIoU {t:.1f}" for t in tious) + " | average |"
    lines = [head, "|" + "---|" * (len(tious) + 2)]
    for n in names:
        r = maps[n]
        lines.append(f"| {n} | " + " | ".join(f"{100 * v:.2f}" for v in r["mAP_per_tiou"])
                     + f" | **{100 * float(r['average_mAP']):.2f}** |")
    return lines


def write_report(ctx, steps, path: pathlib.Path, total_s: float):
    dcfg = ctx.get("data_cfg")
    L = ["# asl-tf demo report", ""]
    L += ["**What is synthetic.** The features are generated by `asl_tf.data.synthetic`; the "
          "video durations, action instance boundaries, overlaps and class labels are the real "
          "THUMOS'14 annotations (`tests/fixtures/data/thumos14/thumos14.json`). Numbers here "
          "measure the pipeline on that test bed, not THUMOS'14 accuracy.", ""]
    L += [f"Total wall time: {total_s:.1f} s. Command: `asl-demo {' '.join(ctx['argv'])}`", ""]
    L += ["## Steps", "", "| step | status | seconds | notes |", "|---|---|---|---|"]
    for s in steps:
        note = s.detail.replace("|", "/") if s.detail else ""
        L.append(f"| {s.name} | {s.status} | {s.seconds:.1f} | {note} |")
    L.append("")
    g = next(s for s in steps if s.name == "generate")
    if g.status == "done" and dcfg is not None:
        d = g.data
        L += ["## Data", "",
              f"- {d['train_videos']} train + {d['test_videos']} held-out videos, "
              f"{d['instances']} instances, {d['feature_steps']} feature steps, "
              f"{dcfg.input_dim} channels, {dcfg.default_fps / dcfg.feat_stride:.2f} steps/s "
              f"(feat_stride {dcfg.feat_stride} frames at {dcfg.default_fps:g} fps)",
              f"- annotations: `{d['annotation_file']}`", f"- features: `{d['feature_dir']}`",
              f"- generator config: `{ctx['data_config_path']}` (+ overrides {ctx['data_overrides']})",
              ""]
    t = next(s for s in steps if s.name == "train")
    if t.status == "done":
        L += ["## Training", "", f"- config: `{ctx['config_path']}`, workdir `{ctx['workdir'] / 'train'}`"]
        for k, v in t.data.items():
            L.append(f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}")
        L.append("")
    L += ["## Held-out mAP (%) per tIoU", ""] + _map_table(
        {k: map_summary(v) for k, v in (ctx.get("map") or {}).items()}) + [""]
    e = next(s for s in steps if s.name == "export")
    if e.status == "done":
        L += ["## Export", ""]
        for fmt, f in e.data["files"].items():
            size = os.path.getsize(f) if os.path.isfile(f) else 0
            L.append(f"- {fmt}: `{f}` ({size / 1e6:.2f} MB)")
            rep = e.data["reports"].get(fmt)
            if isinstance(rep, dict):
                v = rep.get("verification") or {}
                lat = rep.get("latency_ms") or {}
                L.append(f"  - verified against Keras on {v.get('windows', '?')} windows "
                         f"({v.get('calibration', '?')}): max |diff| {v.get('max_diff', float('nan')):.2e}, "
                         f"mAP delta {v.get('mAP_delta', float('nan')):+.2f}, passed {rep.get('passed')}")
                if lat:
                    L.append("  - median latency per window: " + ", ".join(
                        f"{float(ms):.1f} ms @ {t} thread(s)" for t, ms in lat.items()))
        L.append("")
    ed = next(s for s in steps if s.name == "edge")
    if ed.status == "done":
        L += ["## Edge runtime (held-out videos)", "",
              "| model | videos | wall s | ms per second of video | average mAP |", "|---|---|---|---|---|"]
        for fmt, r in ed.data.items():
            L.append(f"| {fmt} | {r['videos']} | {r['wall_s']:.2f} | {r['ms_per_video_second']:.2f} "
                     f"| {100 * r['average_mAP']:.2f} |")
        L.append("")
    L += ["## Timeline", "", "![timeline](timeline.png)", ""]
    failed = [s for s in steps if s.status == "failed"]
    if failed:
        L += ["## Errors", ""]
        for s in failed:
            L += [f"### {s.name}", "", "```", s.data.get("traceback", s.detail).strip(), "```", ""]
    write_text(path, "\n".join(L))


# ----------------------------------------------------------------------------- main
