"""`asl-data`: dataset tools.

  asl-data stats --annotations FILE --format FORMAT [--split SPLIT] [--json OUT.json]
                 [--video-info CSV] [--label verb|noun|action] [--label-offset N]
                 [--class-file CSV] [--config YAML] [--override key=value ...]
                 [--default-fps F] [--feat-stride S] [--num-frames N]

  asl-data check --config YAML [--split SPLIT] [--strict] [--json OUT.json]

  asl-data splice --clips DIR --out DIR [--videos N] [--heldout N] [--seed S]
                  [--splice-config YAML] [--fps F] [--size WxH]

`stats` prints videos, instances, classes, messy-row counts, duration / segment-length distributions in
seconds and feature steps, and how many instances no pyramid level can be assigned to under the
config's regression ranges (`asl_tf.data.stats`). `--json` writes the same numbers (atomically).
With `--config`, the grid (feat_stride, num_frames, default_fps), regression ranges and
max_seq_len come from the config; the flags override them.
`check` reads every feature file of the config's splits: a wrong width, NaN/inf, an empty or
unreadable file is an error (exit 2, naming file and video); annotated videos without features
and feature files without an annotation entry are counted (errors with --strict).
`splice` builds the spliced-clip test bed (`asl_tf.data.spliced`): long videos cut from the real
clips in `--clips` at frame-exact points, re-encoded at one fps and size, in `OUT/videos/*.mp4`,
with the ground truth in `OUT/annotations.json` (ActionFormer format, subsets training /
validation). The cut settings come from `--splice-config` (configs/demo_spliced.yaml); the flags
override them. An alignment and pipeline check on real pixels, not an action benchmark.
"""
import dataclasses
import json
import os
import pathlib

from absl import flags

from asl_tf.cli._common import run_app
from asl_tf.errors import UserError
from asl_tf.fileio import atomic_write

FLAGS = flags.FLAGS
_REPO = pathlib.Path(__file__).resolve().parents[2]
COMMANDS = ("stats", "check", "splice")


def define_flags():
    from asl_tf.data.annotations import FORMATS
    flags.DEFINE_string("annotations", None, "Annotation file.")
    # plain strings (not enums): a bad value is a one-line user error with exit 2
    flags.DEFINE_string("format", None, f"Annotation format: {'|'.join(FORMATS)}.")
    flags.DEFINE_string("split", None, "Subset to read (case-insensitive); all videos when unset.")
    flags.DEFINE_string("json", None, "Write the statistics as JSON to this file.")
    flags.DEFINE_string("video_info", None, "Durations/fps CSV (anet_bsn, epic, epic_c2).")
    flags.DEFINE_string("label", "verb", "EPIC label kind: verb|noun|action.")
    flags.DEFINE_integer("label_offset", 0, "Subtracted from super-events class numbers.")
    flags.DEFINE_multi_string("class_file", None, "EPIC class CSV (verb and noun CSVs for action).")
    flags.DEFINE_string("config", None, "Experiment YAML (grid, regression ranges, max_seq_len).")
    flags.DEFINE_multi_string("override", [], "Config override key.sub=value (repeatable).")
    flags.DEFINE_float("default_fps", None, "fps for every video (overrides the file's).")
    flags.DEFINE_float("feat_stride", None, "Frames between features.")
    flags.DEFINE_float("num_frames", None, "Frames per feature.")
    flags.DEFINE_boolean("strict", False, "check: annotated videos without features, and feature "
                         "files without an annotation entry, are errors (default: warnings).")
    flags.DEFINE_string("clips", None, "splice: folder of source video clips.")
    flags.DEFINE_string("out", None, "splice: output folder (videos/ and annotations.json).")
    flags.DEFINE_string("splice_config", str(_REPO / "configs" / "demo_spliced.yaml"),
                        "splice: YAML with a `splice` section.")
    flags.DEFINE_integer("videos", None, "splice: number of videos (default: the config's).")
    flags.DEFINE_integer("heldout", None, "splice: of which held out (default: the config's).")
    flags.DEFINE_integer("seed", None, "splice: random seed (default: the config's).")
    flags.DEFINE_string("fps", None, "splice: output fps, a number or a ratio like 30000/1001.")
    flags.DEFINE_string("size", None, "splice: output WIDTHxHEIGHT, e.g. 224x224.")


def _write_json(path, obj):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_write(path) as f:
        json.dump(obj, f, indent=1)


def _stats():
    from asl_tf.data.annotations import read_annotations
    from asl_tf.data.stats import dataset_stats, format_table

    if not FLAGS.annotations:
        raise UserError("--annotations is required")
    if not FLAGS.format:
        raise UserError("--format is required")
    grid = {"fps": FLAGS.default_fps, "feat_stride": FLAGS.feat_stride, "num_frames": FLAGS.num_frames}
    model_kw = {}
    if FLAGS.config:
        from asl_tf.config import load_config
        cfg = load_config(FLAGS.config, FLAGS.override)
        ds, m = cfg.dataset, cfg.model
        grid = {"fps": FLAGS.default_fps if FLAGS.default_fps is not None else ds.default_fps,
                "feat_stride": FLAGS.feat_stride if FLAGS.feat_stride is not None
                else ds.feat_stride * ds.downsample_rate,
                "num_frames": FLAGS.num_frames if FLAGS.num_frames is not None else ds.num_frames}
        model_kw = {"regression_range": m.regression_range, "scale_factor": m.scale_factor,
                    "fpn_start_level": m.fpn_start_level,
                    "center_sample_radius": cfg.train_cfg.center_sample_radius,
                    "max_seq_len": ds.max_seq_len, "force_upsampling": ds.force_upsampling}
    elif FLAGS.override:
        raise UserError("--override needs --config")
    class_file = FLAGS.class_file
    if class_file is not None:
        class_file = class_file[0] if len(class_file) == 1 else tuple(class_file)
    aset = read_annotations(FLAGS.annotations, FLAGS.format, split=FLAGS.split,
                            video_info=FLAGS.video_info, label=FLAGS.label,
                            label_offset=FLAGS.label_offset, default_fps=grid["fps"],
                            feat_stride=grid["feat_stride"], num_frames=grid["num_frames"],
                            class_file=class_file)
    stats = dataset_stats(aset, split=FLAGS.split, **model_kw)
    print(format_table(stats))
    if FLAGS.json:
        _write_json(FLAGS.json, stats)
        print(f"wrote {FLAGS.json}")
    return 0


def _check():
    """Read every feature file of the config's split(s) and validate it against the annotations."""
    import numpy as np
    from asl_tf.config import load_config
    from asl_tf.data.annotations import read_dataset
    from asl_tf.data.features import FeatureReader, match_records

    if not FLAGS.config:
        raise UserError("check needs --config")
    cfg = load_config(FLAGS.config, FLAGS.override)
    ds = cfg.dataset
    ds = dataclasses.replace(ds, json_file=FLAGS.annotations or ds.json_file,
                             val_json_file=None if FLAGS.annotations else ds.val_json_file,
                             video_info=FLAGS.video_info or ds.video_info)
    if FLAGS.split:  # one named split: read from the file of the side it belongs to
        side = "val" if FLAGS.split in ds.val_split else "train"
        ds = dataclasses.replace(ds, **{f"{side}_split": [FLAGS.split]})
        sides = [side]
    else:
        sides = ["train", "val"]
    records = []
    for side in sides:
        records += read_dataset(ds, side).records
    reader = FeatureReader.from_config(ds)
    kept, missing = match_records(records, reader, require_all=FLAGS.strict,
                                  features_only=FLAGS.strict)
    lengths = []
    for r in kept:
        lengths.append(reader(r.video_id).shape[0])  # raises on width / NaN / empty / dtype
    known = {r.video_id for r in records}
    extra = sorted(reader.video_ids() - known)
    out = {"config": FLAGS.config, "videos": len(records), "with_features": len(kept),
           "missing_features": len(missing), "features_without_annotation": len(extra),
           "feature_steps": {"min": int(np.min(lengths)), "max": int(np.max(lengths))} if lengths else None,
           "input_dim": ds.input_dim}
    for key in ("videos", "with_features", "missing_features", "features_without_annotation"):
        print(f"  {key:<28} {out[key]}")
    if missing:
        print(f"  e.g. missing features: {missing[0]}")
    if extra:
        print(f"  e.g. features without annotation: {extra[0]}")
    if FLAGS.json:
        _write_json(FLAGS.json, out)
    return 0


def _splice():
    from asl_tf.data.spliced import SpliceConfig, write_spliced_set

    if not FLAGS.clips or not FLAGS.out:
        raise UserError("splice needs --clips DIR and --out DIR")
    size = {}
    if FLAGS.size:
        w, x, h = FLAGS.size.lower().partition("x")
        if not (x and w.isdigit() and h.isdigit()):
            raise UserError(f"--size: expected WIDTHxHEIGHT like 224x224, got {FLAGS.size!r}")
        size = {"width": int(w), "height": int(h)}
    heldout = FLAGS.heldout
    cfg = SpliceConfig.from_yaml(FLAGS.splice_config, videos=FLAGS.videos, seed=FLAGS.seed,
                                 fps=FLAGS.fps, **size, heldout=heldout)
    summary = write_spliced_set(FLAGS.clips, FLAGS.out, cfg,
                                progress=lambda i, n, vid: print(f"  [{i}/{n}] {vid}", flush=True))
    print(f"wrote {summary['videos']} videos, {summary['instances']} instances of "
          f"{len(summary['classes'])} classes, {summary['seconds']:.1f} s of video to {FLAGS.out}")
    return 0


def main(argv):
    args = argv[1:]
    if not args or args[0] not in COMMANDS:
        raise UserError(f"expected a command: {', '.join(COMMANDS)} (e.g. `asl-data stats --annotations "
                        "FILE --format FORMAT --split SPLIT`)")
    if len(args) > 1:
        raise UserError(f"unexpected arguments: {' '.join(args[1:])}")
    return {"stats": _stats, "check": _check, "splice": _splice}[args[0]]()




def run(argv=None):
    """Console-script entry point (`asl-data`); flags accept `-` or `_` in their names."""
    run_app(main, define_flags, argv=argv)


if __name__ == "__main__":
    run()
