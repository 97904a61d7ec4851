"""Annotation readers: every supported file format -> one list of `VideoRecord`.

One module per format (actionformer, anet, superevents, epic, ego4d) registers its reader in
`_READERS`; `FORMATS` is the tuple of their names (the config validates `dataset.format`
against it). `read_dataset(dataset_cfg, split)` reads a config's split with every
field of its `dataset` section.

`read_annotations(path, fmt, ...)` returns an `AnnotationSet` with `.records` (one per video of
the split, in file order), `.class_names` (index = integer label id) and `.stats`.

Formats (`fmt`):
- `actionformer`: `{"database": {vid: {subset, duration, fps, annotations: [{label, segment [s],
  label_id}]}}}` (THUMOS14, MultiThumos, ActionFormer's ANet/EPIC/Ego4D conversions).
- `anet`: the official ActivityNet `activity_net.v1-3.min.json` (`database`, no fps, no ids;
  ids = ranks of the sorted label names of the whole file).
- `anet_bsn`: BSN's `anet_anno_action.json` (`{v_id: {duration_second, annotations}}`) with
  `video_info_new.csv` (subset, fps) as `video_info`; ids = ranks of the sorted names.
- `superevents`: `{vid: {subset, duration, actions: [[class, start_s, end_s]]}}` (Charades 0-based,
  MultiThumos 1-based: pass `label_offset=1`).
- `epic`: EPIC-KITCHENS-100 CSV (`EPIC_100_{train,validation}.csv`, HH:MM:SS.ss timestamps);
  `video_info` = `EPIC_100_video_info.csv` (duration, fps); `class_file` =
  `EPIC_100_{verb,noun}_classes.csv`.
- `epic_c2`: the C2 action-detection CSVs (`c2_*.csv`, frames at a uniform 30 fps);
  `video_info` = `c2_video_lengths.csv` (frames at 30 fps).
  For both EPIC formats `label` is `verb`, `noun` or `action`; the action id is
  `verb_class * 300 + noun_class`, the convention of the official C2 evaluator
  (`evaluate_detection_json_ek100.py`, `num_nouns=300`), not the `action` column of the c2 files.
- `ego4d`: the official Moment Queries file (`{"videos": [{video_uid, split, clips: [{clip_uid,
  video_start_sec, video_end_sec, annotations: [{labels: [{start_time, end_time, label,
  primary}]}]}]}]}`; one record per clip, primary labels only, times relative to the clip), or
  the per-clip layout `{clip_id: {subset, duration, fps?, annotations: [{segment, label,
  label_id?}]}}` (optionally under `"database"`). Without `label_id`, ids = sorted names' ranks.

Messy rows (documented policy, issue 2 rulings): rows that end past the video, or have
end <= start, are KEPT as the file has them (evaluation scores them as the official scorers do)
and counted in `.stats` (`past_end`, `end_le_start`); the training pipeline clips rows to the
video and drops end <= start rows. Files that cannot be read as the format (missing fields,
non-numeric values, labels outside the class map, inconsistent class maps) raise ValueError
naming the file, the video and the field; a missing file raises FileNotFoundError.
Segments are float64 seconds; labels int64.
"""
from __future__ import annotations

import os
import types
from typing import Sequence, Union

from absl import logging

from asl_tf.data.annotations import actionformer, anet, ego4d, epic, superevents
from asl_tf.data.annotations.common import (AnnotationSet, VideoRecord, _as_list, _Builder,
                                            _row_stats, _split_set)
from asl_tf.data.annotations.epic import EPIC_NUM_NOUNS

__all__ = ["VideoRecord", "AnnotationSet", "read_annotations", "read_dataset", "FORMATS",
           "EPIC_NUM_NOUNS"]

#: format name -> (reader(path, builder, opts) -> (class_names, by_name), single-split file)
_READERS = {
    "actionformer": (actionformer.read, False),
    "anet": (anet.read, False),
    "anet_bsn": (anet.read_bsn, False),
    "superevents": (superevents.read, False),
    "epic": (epic.read, True),
    "epic_c2": (epic.read_c2, True),
    "ego4d": (ego4d.read, False),
}
FORMATS = tuple(_READERS)


def read_annotations(path, fmt, *, split: Union[str, Sequence[str], None] = None, video_info=None,
                     label="verb", label_offset=0, default_fps=None, feat_stride=None,
                     num_frames=None, class_file=None, num_classes=None) -> AnnotationSet:
    """Read an annotation file of format `fmt` and return the records of `split`.

    Args:
      path: annotation file. fmt: one of FORMATS.
      split: subset name(s), case-insensitive (`test` matches `Test`); None = all videos.
        Single-split files (the EPIC CSVs) accept and ignore it.
      video_info: side CSV with durations/fps (anet_bsn, epic, epic_c2).
      label: EPIC label kind, verb | noun | action.
      label_offset: subtracted from super-events class numbers (MultiThumos: 1).
      default_fps: if set, every record's fps (ActionFormer `default_fps`).
      feat_stride, num_frames: copied into every record (feature grid), may be None.
      class_file: EPIC class CSV (`EPIC_100_verb_classes.csv` / `..._noun_...`); for
        label='action' a (verb_csv, noun_csv) pair.
      num_classes: if given, a label id >= num_classes raises ValueError.
    Raises:
      FileNotFoundError for a missing file; ValueError for an unknown format, an unreadable file,
      a malformed row (naming file, video and field) or a split that matches no video.
    """
    path = os.fspath(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown annotation format '{fmt}' (expected one of {', '.join(FORMATS)})")
    if label not in ("verb", "noun", "action"):
        raise ValueError(f"unknown label kind '{label}' (expected verb, noun or action)")
    for p in [path, video_info] + _as_list(class_file):
        if p is not None and not os.path.isfile(p):
            raise FileNotFoundError(f"annotation file not found: {p}")
    b = _Builder(path, default_fps, feat_stride, num_frames)
    reader, single_split = _READERS[fmt]
    opts = types.SimpleNamespace(video_info=video_info, label=label, label_offset=label_offset,
                                 class_file=class_file)
    names, by_name = reader(path, b, opts)

    wanted = _split_set(split)
    if wanted is not None and not single_split:
        if fmt == "anet_bsn" and video_info is None:
            raise ValueError(f"{path}: anet_bsn has no subsets without video_info "
                             "(pass --video-info video_info_new.csv)")
        subsets = sorted({str(v["subset"]) for v in b.videos.values()})
        b.videos = {k: v for k, v in b.videos.items() if str(v["subset"]).lower() in wanted}
        if not b.videos:
            raise ValueError(f"{path}: split {sorted(wanted)} matches no video "
                             f"(subsets in the file: {subsets})")
    records = b.records(names, by_name=by_name)
    if b.dur_from_segments:
        logging.warning("%s: %d videos have no duration; using their latest segment end",
                        path, b.dur_from_segments)
    aset = AnnotationSet(path=path, fmt=fmt, records=records, class_names=list(names),
                         stats=_row_stats(records, b.dur_from_segments))
    if num_classes is not None:
        aset.check_num_classes(num_classes)
    return aset


def read_dataset(dataset_cfg, split: str = "train") -> AnnotationSet:
    """The records of a config's training (`split="train"`) or validation (`"val"`) split,
    read with every field of its `dataset` section (format, video_info, label, label_offset,
    default_fps, the feature grid, class_file, num_classes). The validation split reads
    `val_json_file` when the config has one (EPIC keeps each split in its own file)."""
    ds = dataset_cfg
    if split not in ("train", "val"):
        raise ValueError(f"read_dataset: split must be 'train' or 'val', got {split!r}")
    splits = ds.train_split if split == "train" else ds.val_split
    path = ds.val_json_file if (split == "val" and ds.val_json_file) else ds.json_file
    return read_annotations(path, ds.format, split=splits, video_info=ds.video_info,
                            label=ds.label, label_offset=ds.label_offset,
                            default_fps=ds.default_fps, feat_stride=ds.feat_stride,
                            num_frames=ds.num_frames, class_file=ds.class_file,
                            num_classes=ds.num_classes)
