"""ASL ablation on synthetic features with real THUMOS'14 timings; prints JSON.

    .venv/bin/python bench/ablation.py --workdir runs/ablation [--seeds 3] [--epochs N]

Variants (cumulative, as in the paper's ablation), same data, same budget (epochs, batch,
optimizer), seeds 0..S-1 (`train_cfg.seed` = config seed + s: initialisation and data order):

  baseline   ActionFormer (every ASL switch off)
  +class     + class-level sensitivity (per-class Gaussians)
  +instance  + instance-level sensitivity (quality branch)
  full       + action sensitive contrastive loss (ASCL) = full ASL
  +instance-sum, full-sum   diagnostics, not run by default: `asl.combine=sum` (h = w + q)

Data: `asl_tf.data.synthetic` with configs/demo_synthetic.yaml (written once to
<workdir>/data); model / training recipe: configs/demo.yaml (+ --override). Each run is
evaluated on the held-out split (average mAP over tIoU 0.3:0.7:5, EMA weights) and saved as
<workdir>/runs/<variant>_s<seed>.json, so an interrupted bench resumes where it stopped.
Outputs: <workdir>/ablation.json (per variant mean / std of average mAP, per-seed values)
and <workdir>/sensitivity.png: the learned class-level Gaussians of the full-ASL runs and the
instance-level qualities predicted inside held-out instances (mean by relative position),
next to the generator's key-evidence envelope there.
"""
import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = {
    "baseline": dict(class_level=False, instance_level=False, contrastive=False),
    "+class": dict(class_level=True, instance_level=False, contrastive=False),
    "+instance": dict(class_level=True, instance_level=True, contrastive=False),
    "full": dict(class_level=True, instance_level=True, contrastive=True),
    # diagnostics (not part of the paper's ablation): h = w + q instead of h = w * q
    "+instance-sum": dict(class_level=True, instance_level=True, contrastive=False, combine="sum"),
    "full-sum": dict(class_level=True, instance_level=True, contrastive=True, combine="sum"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/ablation")
    p.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    p.add_argument("--data_config", default=str(REPO / "configs" / "demo_synthetic.yaml"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--variants", default="baseline,+class,+instance,full")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--warmup_epochs", type=int, default=None)
    p.add_argument("--train_videos", type=int, default=None)
    p.add_argument("--test_videos", type=int, default=None)
    p.add_argument("--override", action="append", default=[], help="experiment key.sub=value")
    p.add_argument("--data_override", action="append", default=[], help="synthetic key=value")
    args = p.parse_args(argv)
    bad = [v for v in args.variants.split(",") if v not in VARIANTS]
    if bad:
        p.error(f"--variants: unknown {bad[0]!r} (known: {', '.join(VARIANTS)})")
    return args


def _data(args, work):
    """(SyntheticConfig, data summary) of the generated data in <work>/data (written once)."""
    from asl_tf import demo
    from asl_tf.data.synthetic import write_dataset

    dcfg = demo.data_config(args.data_config, args.data_override, args.train_videos,
                            args.test_videos)
    data_dir = work / "data"
    meta = data_dir / "synthetic_meta.json"
    want = dataclasses.asdict(dcfg)
    if meta.exists() and json.loads(meta.read_text())["synthetic_config"] == want:
        m = json.loads(meta.read_text())
        summary = {"annotation_file": str(data_dir / "annotations.json"),
                   "feature_dir": str(data_dir / "features"), "class_names": m["class_names"]}
    else:
        summary = write_dataset(dcfg, data_dir)
    return dcfg, summary


def quality_profile(model, dcfg, num_classes, records, reader, bins=10):
    """Mean predicted (q_cls, q_loc) at finest-level points inside held-out instances, by
    relative position (t - start) / length in `bins` bins, and the generator's key-evidence
    envelope binned the same way. Returns dict of lists (None without the quality branch)."""
    from asl_tf.data import synthetic as S
    from asl_tf.data.pipeline import pad_for_eval

    protos = S.make_prototypes(dcfg, num_classes)
    sums = np.zeros((3, bins))
    counts = np.zeros(bins)
    for r in records:
        feats = reader(r.video_id)
        segs, labels = r.segments, r.labels
        _, lat = S.generate_video(segs, labels, r.duration, r.fps, dcfg, protos, r.video_id,
                                  return_latent=True)
        t = feats.shape[0]
        x, m = pad_for_eval(model, feats)
        out = model({"feats": x, "mask": m}, training=False)
        if "quality" not in out:
            return None
        q = np.asarray(out["quality"])[0, :t]  # level 0 (stride 1) comes first
        times = lat["times"]
        for (s, e) in segs:
            inside = (times >= s) & (times < e)
            if e <= s or not inside.any():
                continue
            b = np.minimum(((times[inside] - s) / (e - s) * bins).astype(int), bins - 1)
            np.add.at(sums[0], b, q[inside, 0])
            np.add.at(sums[1], b, q[inside, 1])
            np.add.at(sums[2], b, lat["key"][inside])
            np.add.at(counts, b, 1)
    c = np.maximum(counts, 1)
    return {"q_cls": (sums[0] / c).tolist(), "q_loc": (sums[1] / c).tolist(),
            "key_envelope": (sums[2] / c).tolist(), "points": counts.tolist()}


def class_gaussians(model):
    """Learned per-class Gaussian parameters (mu, sigma) of the class-level branch, or None."""
    layer = getattr(model, "class_sensitivity", None)
    if layer is None:
        return None
    out = {}
    for part in ("cls", "start", "end"):
        mu = np.asarray(getattr(layer, f"mu_{part}").numpy(), np.float64)
        sig = np.asarray(layer._sigma(getattr(layer, f"sigma_{part}")), np.float64)
        out[part] = {"mu": mu.tolist(), "sigma": sig.tolist()}
    return out


def run_one(args, work, dcfg, summary, variant, seed):
    """Train one variant/seed with the experiment runner, score it on the held-out split."""
    from asl_tf import demo, experiment
    from asl_tf.data.features import FeatureReader
    from asl_tf.evaluation import default_tious
    from asl_tf.fileio import atomic_write

    out_json = work / "runs" / f"{variant}_s{seed}.json"
    if out_json.exists():
        return json.loads(out_json.read_text())
    run_dir = work / "runs" / f"{variant}_s{seed}"
    cfg = demo.config_for_data(args.config, dcfg, summary, run_dir, args.override, args.epochs,
                               args.warmup_epochs)
    for k, v in VARIANTS[variant].items():
        setattr(cfg.asl, k, v)
    cfg.train_cfg.seed = int(cfg.train_cfg.seed) + seed
    t0 = time.time()
    model, info = demo.fit(cfg, str(run_dir), verbose=0)
    records = demo.held_out(cfg)
    reader = FeatureReader.from_config(cfg.dataset)
    dets = experiment.detect_records(model, records, reader)
    res = experiment.score(records, dets, summary["class_names"], default_tious("thumos14"))
    rec = {"variant": variant, "seed": seed, "asl": dataclasses.asdict(cfg.asl),
           "average_mAP": float(res["average_mAP"]),
           "mAP_per_tiou": [float(v) for v in res["mAP_per_tiou"]],
           "tiou_thresholds": [float(v) for v in res["tiou_thresholds"]],
           "train": info, "wall_s": time.time() - t0,
           "gaussians": class_gaussians(model),
           "quality_profile": quality_profile(model, dcfg, len(summary["class_names"]), records,
                                              reader)}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_json) as f:
        f.write(json.dumps(rec, indent=1))
    return rec


def _finished_runs(work):
    out = []
    for f in sorted((pathlib.Path(work) / "runs").glob("*_s*.json")):
        try:
            out.append(json.loads(f.read_text()))
        except ValueError:
            continue
    return sorted(out, key=lambda r: (list(VARIANTS).index(r["variant"]) if r["variant"] in VARIANTS
                                      else 99, r["seed"]))


def _machine():
    import platform

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine()}


def summarize(records, variants):
    table = {}
    for v in variants:
        vals = [r["average_mAP"] for r in records if r["variant"] == v]
        if not vals:
            continue
        per_tiou = np.array([r["mAP_per_tiou"] for r in records if r["variant"] == v])
        table[v] = {"n": len(vals), "mean": float(np.mean(vals)),
                    "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                    "per_seed": vals, "mAP_per_tiou_mean": per_tiou.mean(0).tolist()}
    if "baseline" in table:
        for v in table:
            table[v]["delta_vs_baseline"] = table[v]["mean"] - table["baseline"]["mean"]
    return table


def plot(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = [r for r in records if r["variant"] == "full" and r.get("gaussians")]
    if not full:
        full = [r for r in records if r.get("gaussians")]
    qual = [r for r in records if r.get("quality_profile") and r["variant"] in ("full", "full-sum")]
    qual = qual or [r for r in records if r.get("quality_profile")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    x = np.linspace(-1.0, 1.0, 201)
    for ax, part in zip(axes[:2], ("cls", ("start", "end"))):
        parts = part if isinstance(part, tuple) else (part,)
        for r in full:
            for pname, ls in zip(parts, ("-", "--")):
                g = r["gaussians"][pname]
                for mu, sd in zip(g["mu"], g["sigma"]):
                    ax.plot(x, np.exp(-(x - mu) ** 2 / (2 * sd ** 2)), ls, lw=0.7, alpha=0.5,
                            color=f"C{r['seed']}")
        ax.set_xlabel("x = (c - t) / (s * len)")
        ax.set_title("class-level g_cls per class" if parts == ("cls",)
                     else "class-level g_start (-), g_end (--) per class")
        ax.set_ylim(0, 1.05)
    ax = axes[2]
    for i, v in enumerate(dict.fromkeys(r["variant"] for r in qual)):
        runs = [r["quality_profile"] for r in qual if r["variant"] == v]
        bins = len(runs[0]["q_cls"])
        rel = (np.arange(bins) + 0.5) / bins
        ax.plot(rel, np.mean([q["q_cls"] for q in runs], 0), "-", color=f"C{i}",
                label=f"q_cls, {v} ({len(runs)} seeds)")
        ax.plot(rel, np.mean([q["q_loc"] for q in runs], 0), ":", color=f"C{i}",
                label=f"q_loc, {v}")
    if qual:
        ax.plot(rel, qual[0]["quality_profile"]["key_envelope"], "k-", lw=2,
                label="generator key-evidence envelope")
    ax.set_xlabel("relative position in instance (t - start) / length")
    ax.set_title("instance level: q_cls (-), q_loc (:) inside held-out GT")
    ax.set_ylim(0, 1.05)
    if qual:
        ax.legend(fontsize=6)
    fig.suptitle("Learned action sensitivity: class-level Gaussians of the full-ASL runs (colour = seed); "
                 "instance-level qualities (colour = variant, mean over seeds)", fontsize=10)
    fig.tight_layout()
    from asl_tf.fileio import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    work = pathlib.Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    dcfg, summary = _data(args, work)
    variants = args.variants.split(",")
    records, t0 = [], time.time()
    for seed in range(args.seeds):
        for v in variants:
            rec = run_one(args, work, dcfg, summary, v, seed)
            records.append(rec)
            print(f"[ablation] {v} seed {seed}: average mAP {100 * rec['average_mAP']:.2f} "
                  f"({rec['wall_s']:.0f} s)", flush=True)
            # the table covers every finished run in <workdir>/runs (earlier invocations too)
            done = _finished_runs(work)
            table = summarize(done, [v for v in VARIANTS if any(r["variant"] == v for r in done)])
            result = {"command": "python bench/ablation.py " + " ".join(argv or sys.argv[1:]),
                      "variants": {k: VARIANTS[k] for k in variants}, "seeds": args.seeds,
                      "table": table, "elapsed_s": time.time() - t0,
                      "complete": len(records) == args.seeds * len(variants),
                      "machine": _machine()}
            from asl_tf.fileio import atomic_write

            with atomic_write(work / "ablation.json") as f:
                f.write(json.dumps(result, indent=1))
            try:
                plot(done, work / "sensitivity.png")
            except Exception as err:  # noqa: BLE001 - the numbers matter more than the figure
                print(f"[ablation] plot failed: {err}", file=sys.stderr)
    print(json.dumps(result["table"], indent=1))
    return result


if __name__ == "__main__":
    main()
