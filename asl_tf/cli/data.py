"""`asl-data`: dataset tools.

  asl-data stats --annotations FILE --format FORMAT [--split SPLIT] [--json OUT.json]
                 [--video-info CSV] [--label verb|noun|action] [--label-offset N]
                 [--class-file CSV] [--config YAML] [--override key=value ...]
                 [--default-fps F] [--feat-stride S] [--num-frames N]

  asl-data check --config YAML [--split SPLIT] [--strict] [--json OUT.json]

`stats` prints videos, instances, classes, messy-row counts, duration / segment-length distributions in
seconds and feature steps, and how many instances no pyramid level can be assigned to under the
config's regression ranges (`asl_tf.data.stats`). `--json` writes the same numbers (atomically).
With `--config`, the grid (feat_stride, num_frames, default_fps), regression ranges and
max_seq_len come from the config; the flags override them.
`check` reads every feature file of the config's splits: a wrong width, NaN/inf, an empty or
unreadable file is an error (exit 2, naming file and video); annotated videos without features
and feature files without an annotation entry are counted (errors with --strict).
"""
import json
import os

from absl import flags

from asl_tf.cli._common import run_app
from asl_tf.errors import UserError
from asl_tf.fileio import atomic_write

FLAGS = flags.FLAGS
COMMANDS = ("stats", "check")


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
    from asl_tf.data.annotations import read_annotations
    from asl_tf.data.features import FeatureReader, match_records

    if not FLAGS.config:
        raise UserError("check needs --config")
    cfg = load_config(FLAGS.config, FLAGS.override)
    ds = cfg.dataset
    if FLAGS.split:
        groups = [([FLAGS.split], ds.val_json_file if FLAGS.split in ds.val_split and ds.val_json_file
                   else ds.json_file)]
    else:
        groups = [(ds.train_split, ds.json_file), (ds.val_split, ds.val_json_file or ds.json_file)]
    records = []
    for splits, path in groups:
        ann = read_annotations(FLAGS.annotations or path, ds.format, split=splits,
                               video_info=FLAGS.video_info or ds.video_info, label=ds.label,
                               label_offset=ds.label_offset, default_fps=ds.default_fps,
                               feat_stride=ds.feat_stride, num_frames=ds.num_frames,
                               class_file=ds.class_file, num_classes=ds.num_classes)
        records += ann.records
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


def main(argv):
    args = argv[1:]
    if not args or args[0] not in COMMANDS:
        raise UserError(f"expected a command: {', '.join(COMMANDS)} (e.g. `asl-data stats --annotations "
                        "FILE --format FORMAT --split SPLIT`)")
    if len(args) > 1:
        raise UserError(f"unexpected arguments: {' '.join(args[1:])}")
    return _stats() if args[0] == "stats" else _check()




def run(argv=None):
    """Console-script entry point (`asl-data`); flags accept `-` or `_` in their names."""
    run_app(main, define_flags, argv=argv)


if __name__ == "__main__":
    run()
