"""tf.data pipelines: training batches and batch-1 evaluation inputs (INTERFACES §3).

Training element `(x, y)`:
  x = {"feats": [B, T, C] float32, "mask": [B, T] bool}, T = max_seq_len;
  y = {"gt_segments": [B, G, 2] float32 (feature-grid units of the window),
       "gt_labels": [B, G] int32, -1 = padding}, G = the most GT of any training video.
Eval element `(x, meta)` at batch 1: x as above, padded to max_seq_len, or to a multiple of
max_div_factor when longer; meta = {"video_id": [1] string, "fps", "feat_stride",
"num_frames", "duration": [1] float64 (duration in seconds)}.

Per-video preprocessing follows the ActionFormer reference (`libs/datasets/*.py`,
`data_utils.truncate_feats`):
- seconds -> grid: `(sec * fps - 0.5 * num_frames) / feat_stride` (feat_stride *= downsample_rate);
- `force_upsampling` (ANet): features resized to max_seq_len, `feat_stride = ((T-1)*feat_stride +
  num_frames) / max_seq_len`, `num_frames = feat_stride`;
- training rows are clipped to [0, duration] seconds and rows with end <= start dropped (issue 2
  ruling); with `clip_to_features` (default: force_upsampling, the ANet reference) rows starting
  past `T + offset` are dropped and those mostly outside kept only if their inside ratio >=
  trunc_thresh, clamped to `T + offset`;
- random truncation: a window of max_seq_len with up to 200 tries to keep >= 1 GT whose
  overlap ratio is >= trunc_thresh; if T <= max_seq_len and crop_ratio is set, a random crop of
  length `randint(max(round(lo*T), 1), min(round(hi*T), T))`; GT clipped to the window +- offset
  (`offset = 0.5*num_frames/feat_stride`) and shifted.
Randomness is a function of (seed, epoch, position in the epoch): the epoch order is
`default_rng([seed, epoch]).permutation(N)` and the crop of the k-th video of an epoch uses
`default_rng([seed, epoch, k])`, so a resumed run (start_epoch) sees the same data.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
from absl import logging

from asl_tf.data.features import resize_features
from asl_tf.model.points import max_div_factor as _max_div_factor

__all__ = ["VideoGrid", "video_grid", "sec_to_grid", "grid_to_sec", "clean_training_segments",
           "truncate", "preprocess_train", "train_arrays", "make_train_dataset",
           "make_eval_dataset", "eval_padded_length", "pad_for_eval", "max_div_factor", "max_gt_per_video",
           "steps_per_epoch", "MAX_TRUNC_TRIALS"]

MAX_TRUNC_TRIALS = 200      # reference truncate_feats max_num_trials


def sec_to_grid(sec, fps, feat_stride, num_frames):
    """Seconds -> feature grid: `(sec*fps - 0.5*num_frames)/feat_stride`."""
    return (np.asarray(sec, dtype=np.float64) * fps - 0.5 * num_frames) / feat_stride


def grid_to_sec(grid, fps, feat_stride, num_frames):
    """Feature grid -> seconds: `(grid*feat_stride + 0.5*num_frames)/fps`."""
    return (np.asarray(grid, dtype=np.float64) * feat_stride + 0.5 * num_frames) / fps


def max_div_factor(model_cfg) -> int:
    """ActionFormer `max_div_factor` from a ModelConfig (or model dict)."""
    get = (lambda k: model_cfg[k]) if isinstance(model_cfg, dict) else (lambda k: getattr(model_cfg, k))
    return _max_div_factor(get("scale_factor"), get("fpn_start_level"), get("backbone_arch"),
                           get("n_mha_win_size"))


def eval_padded_length(t: int, max_seq_len: int, div: int,
                       max_stride: Optional[int] = None) -> int:
    """Padded length of a `t`-frame video at evaluation (batch 1).

    Reference rule (max_stride None): max_seq_len if t <= max_seq_len, else the next multiple
    of div. With `max_stride` (the pyramid's largest stride) a t <= max_seq_len is padded only
    as far as needed: to the next multiple of `div` that leaves at least one padded position at
    every pyramid level. The outputs on the valid frames are then those of the reference rule:
    a valid position reads its padded neighbour (conv kernels, pooling) or ignores it
    (attention: padded keys get -1e4, exp() of which is 0 in float32, the same as keys past
    the end), and the first padded neighbour holds the same value either way (masked outputs
    are 0; LayerNorm of 0 is beta); positions past it are never read by a valid one, and the
    absolute PE uses the table's first rows in both. On THUMOS14 test (212 videos, I3D,
    max_seq_len 2304, div 576) this runs 30% fewer frames: 402,624 instead of 570,816.
    """
    if t > max_seq_len:
        return int((t + div - 1) // div * div)
    if not max_stride:
        return int(max_seq_len)
    need = max_stride * (-(-t // max_stride) + 1)
    return int(min(int(max_seq_len), -(-need // div) * div))


def pad_to(feats, length: int):
    """One video's features [T, C] zero-padded to (feats [1, length, C] float32, mask [1, length])."""
    t = feats.shape[0]
    out = np.zeros((1, length, feats.shape[1]), np.float32)
    out[0, :t] = feats
    return out, (np.arange(length) < t)[None]


def pad_for_eval(model, feats, trim: bool = False):
    """Reference eval padding of one video for `model`: feats [T, C] -> (padded [1, T', C],
    mask [1, T']). T' = max_seq_len if T <= max_seq_len, else the next multiple of the model's
    max_div_factor. trim=True: the shortest padding with the same outputs on the T valid frames
    (`eval_padded_length` with the pyramid's largest stride)."""
    tp = eval_padded_length(feats.shape[0], int(model.max_seq_len), int(model.max_div_factor),
                            int(max(model.fpn_strides)) if trim else None)
    return pad_to(feats, tp)


@dataclasses.dataclass
class VideoGrid:
    """Features of one video on its grid: feats [T, C] float32 plus the grid's meta."""
    feats: np.ndarray
    fps: float
    feat_stride: float
    num_frames: float

    @property
    def offset(self) -> float:
        """Half a feature's span in grid units (`0.5*num_frames/feat_stride`)."""
        return 0.5 * self.num_frames / self.feat_stride


def video_grid(record, feats: np.ndarray, dataset_cfg) -> VideoGrid:
    """Apply the reference grid rules (downsampling already done by the reader; ANet resizing).

    feats: [T, C] as read (after downsample_rate). Returns the (possibly resized) features with
    the effective fps, feat_stride and num_frames of this video.
    """
    fps = record.fps
    if fps is None:
        raise ValueError(f"video '{record.video_id}': fps unknown (the annotation has none; "
                         "set dataset.default_fps)")
    stride = float(dataset_cfg.feat_stride) * dataset_cfg.downsample_rate
    nframes = float(dataset_cfg.num_frames)
    max_len = dataset_cfg.max_seq_len
    if stride > 0 and dataset_cfg.force_upsampling:
        stride = ((feats.shape[0] - 1) * float(dataset_cfg.feat_stride) + nframes) / max_len
        nframes = stride
    elif stride <= 0:
        # fixed-length features: recompute the stride from the duration
        seq_len = max_len if dataset_cfg.force_upsampling else feats.shape[0]
        stride = record.duration * fps / seq_len
        nframes = stride
    if dataset_cfg.force_upsampling and feats.shape[0] != max_len:
        feats = resize_features(feats, max_len)
    return VideoGrid(feats=feats, fps=float(fps), feat_stride=float(stride), num_frames=float(nframes))


def clean_training_segments(record, grid: VideoGrid, trunc_thresh: float, clip_to_features: bool):
    """Training GT on the grid: rows clipped to [0, duration] s, end <= start dropped.

    Returns (segments [N, 2] float32 grid units, labels [N] int64).
    """
    segs = np.asarray(record.segments, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(record.labels, dtype=np.int64)
    segs = np.clip(segs, 0.0, record.duration)
    keep = segs[:, 1] > segs[:, 0]
    segs, labels = segs[keep], labels[keep]
    # float32 in the reference's order: seg * fps / feat_stride - 0.5 * num_frames / feat_stride
    g = (segs.astype(np.float32) * np.float32(grid.fps) / np.float32(grid.feat_stride)
         - np.float32(grid.offset)).astype(np.float32)
    if clip_to_features and len(g):
        vid_len = grid.feats.shape[0] + grid.offset
        inside = g[:, 0] < vid_len
        ratio = (np.minimum(g[:, 1], vid_len) - g[:, 0]) / (g[:, 1] - g[:, 0])
        keep = inside & (ratio >= np.float32(trunc_thresh))
        g = np.stack([g[keep, 0], np.minimum(g[keep, 1], vid_len)], axis=1).astype(np.float32)
        labels = labels[keep]
    return g.reshape(-1, 2), labels


def truncate(feats, segments, labels, max_seq_len, trunc_thresh, offset, crop_ratio, rng):
    """Reference `truncate_feats` (has_action=True) with a numpy Generator.

    feats [T, C]; segments [N, 2] grid (N >= 1); returns (feats [T', C], segments [M, 2] shifted
    to the window, labels [M]).
    """
    t = feats.shape[0]
    if t <= max_seq_len:
        if crop_ratio is None:
            return feats, segments, labels
        lo = max(int(round(crop_ratio[0] * t)), 1)
        hi = min(int(round(crop_ratio[1] * t)), t)
        max_seq_len = int(rng.integers(lo, hi + 1))
        if max_seq_len == t:
            return feats, segments, labels
    area = np.abs(segments[:, 1] - segments[:, 0])
    for _ in range(MAX_TRUNC_TRIALS):
        st = int(rng.integers(0, t - max_seq_len + 1))
        ed = st + max_seq_len
        left = np.maximum(np.float32(st) - np.float32(offset), segments[:, 0])
        right = np.minimum(np.float32(ed) + np.float32(offset), segments[:, 1])
        inter = np.maximum(right - left, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = inter / area
        keep = ratio >= np.float32(trunc_thresh)
        if keep.any():
            break
    segs = np.stack([left[keep], right[keep]], axis=1) - np.float32(st)
    return feats[st:ed], segs.astype(np.float32).reshape(-1, 2), labels[keep]


def preprocess_train(record, feats, dataset_cfg, rng, clip_to_features=None):
    """One training example (unpadded): (feats [T, C], segments [M, 2] grid, labels [M])."""
    if clip_to_features is None:
        clip_to_features = bool(dataset_cfg.force_upsampling)
    grid = video_grid(record, feats, dataset_cfg)
    segs, labels = clean_training_segments(record, grid, dataset_cfg.trunc_thresh, clip_to_features)
    if len(segs) == 0:
        return grid.feats[:dataset_cfg.max_seq_len], segs, labels
    return truncate(grid.feats, segs, labels, dataset_cfg.max_seq_len, dataset_cfg.trunc_thresh,
                    grid.offset, dataset_cfg.crop_ratio, rng)


def max_gt_per_video(records) -> int:
    """G: the most GT rows of any record (>= 1)."""
    return max([1] + [r.num_instances for r in records])


def steps_per_epoch(num_videos: int, batch_size: int) -> int:
    """Batches per epoch (the last partial batch is dropped, as the reference loader does)."""
    return num_videos // batch_size


def _warn_unusable(records):
    """Log the videos whose rows all vanish in training cleaning (they train as all-background)."""
    bad = []
    for r in records:
        seg = np.clip(np.asarray(r.segments, dtype=np.float64).reshape(-1, 2), 0.0, r.duration)
        if not np.any(seg[:, 1] > seg[:, 0]):
            bad.append(r.video_id)
    if bad:
        logging.warning("%d training videos have no usable GT (none left after clipping to the video "
                        "and dropping end <= start); they give examples without GT, e.g. '%s'",
                        len(bad), bad[0])


def train_arrays(records, reader, dataset_cfg, *, seed: int, epoch: int, max_gt: int,
                 clip_to_features=None):
    """Yield one epoch of padded numpy examples in the seeded order.

    Yields (feats [L, C] f32, mask [L] bool, gt_segments [G, 2] f32, gt_labels [G] i32), L = max_seq_len.
    """
    n = len(records)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    L = dataset_cfg.max_seq_len
    for k, idx in enumerate(order):
        rec = records[int(idx)]
        rng = np.random.default_rng([seed, epoch, k])
        feats, segs, labels = preprocess_train(rec, reader(rec.video_id), dataset_cfg, rng,
                                               clip_to_features)
        t, c = feats.shape
        if t > L:
            raise ValueError(f"video '{rec.video_id}': {t} features after preprocessing > max_seq_len {L}")
        if len(labels) > max_gt:
            raise ValueError(f"video '{rec.video_id}': {len(labels)} GT > max_gt {max_gt}")
        pf = np.zeros((L, c), np.float32)
        pf[:t] = feats
        mask = np.arange(L) < t
        gs = np.zeros((max_gt, 2), np.float32)
        gl = np.full((max_gt,), -1, np.int32)
        gs[:len(segs)] = segs
        gl[:len(labels)] = labels
        yield pf, mask, gs, gl


def make_train_dataset(records, reader, dataset_cfg, *, batch_size: int, seed: int,
                       start_epoch: int = 0, num_epochs: Optional[int] = None,
                       max_gt: Optional[int] = None, clip_to_features=None, prefetch: bool = True):
    """Training `tf.data.Dataset` of `(x, y)` batches (see module doc).

    Epochs follow each other without a boundary in the stream: epoch e yields
    `steps_per_epoch(len(records), batch_size)` full batches. `num_epochs=None` repeats forever
    (use `steps_per_epoch` with `model.fit`). Every record is used (so the epoch size is
    len(records)); a video whose rows all vanish in cleaning gives an example without GT.
    A record without features raises ValueError up front: filter with
    `asl_tf.data.features.match_records` first (ActionFormer skips such videos).
    """
    import tensorflow as tf

    records = list(records)
    if not records:
        raise ValueError("no training video")
    available = reader.video_ids()
    missing = [r.video_id for r in records if r.video_id not in available]
    if missing:
        raise ValueError(f"{len(missing)} training videos have no features in {', '.join(reader.folders)} "
                         f"(e.g. video '{missing[0]}'); filter them with features.match_records")
    _warn_unusable(records)
    if max_gt is None:
        max_gt = max_gt_per_video(records)
    steps = steps_per_epoch(len(records), batch_size)
    if steps == 0:
        raise ValueError(f"{len(records)} training videos < batch_size {batch_size}")
    L = dataset_cfg.max_seq_len
    c = reader.input_dim
    if c is None:
        c = reader(records[0].video_id).shape[1]

    def gen():
        epoch = start_epoch
        while num_epochs is None or epoch < start_epoch + num_epochs:
            it = train_arrays(records, reader, dataset_cfg, seed=seed, epoch=epoch, max_gt=max_gt,
                              clip_to_features=clip_to_features)
            for _ in range(steps * batch_size):  # drop the last partial batch of each epoch
                yield next(it)
            epoch += 1

    sig = (tf.TensorSpec((L, c), tf.float32), tf.TensorSpec((L,), tf.bool),
           tf.TensorSpec((max_gt, 2), tf.float32), tf.TensorSpec((max_gt,), tf.int32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda f, m, s, l: ({"feats": f, "mask": m}, {"gt_segments": s, "gt_labels": l}))
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds


def pad_for_eval(model, feats, trim=False):
    """Reference eval padding of one video: feats [T,C] -> (padded [1,T',C], mask [1,T']).
    T' = max_seq_len if T <= max_seq_len, else the next multiple of max_div_factor.
    trim=True: the shortest padding with the same outputs on the T valid frames
    (`asl_tf.data.pipeline.eval_padded_length` with max_stride); `detect` keeps the reference's."""
    t = feats.shape[0]
    tp = eval_padded_length(t, int(model.max_seq_len), int(model.max_div_factor),
                            int(max(model.fpn_strides)) if trim else None)
    out = np.zeros((1, tp, feats.shape[1]), np.float32)
    out[0, :t] = feats
    mask = np.zeros((1, tp), bool)
    mask[0, :t] = True
    return out, mask


def eval_example(record, reader, dataset_cfg, div: int, max_stride: Optional[int] = None):
    """One padded eval example as numpy: (feats [1, Lp, C], mask [1, Lp], meta dict).
    With `max_stride` (the pyramid's largest stride) the padding is trimmed
    (`eval_padded_length`: same outputs on the valid frames, fewer frames to run)."""
    grid = video_grid(record, reader(record.video_id), dataset_cfg)
    lp = eval_padded_length(grid.feats.shape[0], dataset_cfg.max_seq_len, div, max_stride)
    feats, mask = pad_to(grid.feats, lp)
    meta = {"video_id": record.video_id, "fps": grid.fps, "feat_stride": grid.feat_stride,
            "num_frames": grid.num_frames, "duration": float(record.duration)}
    return feats, mask, meta


def make_eval_dataset(records, reader, dataset_cfg, *, max_div: int, prefetch: bool = True,
                      max_stride: Optional[int] = None):
    """Evaluation `tf.data.Dataset` of `(x, meta)` at batch 1 (file order, no truncation).
    `max_stride`: trim the padding (`eval_padded_length`); None: the reference padding."""
    import tensorflow as tf

    records = list(records)
    available = reader.video_ids()
    missing = [r.video_id for r in records if r.video_id not in available]
    if missing:
        raise ValueError(f"{len(missing)} evaluation videos have no features in {', '.join(reader.folders)} "
                         f"(e.g. video '{missing[0]}'); filter them with features.match_records")
    c = reader.input_dim
    if c is None and records:
        c = reader(records[0].video_id).shape[1]

    def gen():
        for rec in records:
            feats, mask, meta = eval_example(rec, reader, dataset_cfg, max_div, max_stride)
            yield (feats, mask, np.array([meta["video_id"]]),
                   *(np.array([meta[k]], np.float64) for k in ("fps", "feat_stride", "num_frames", "duration")))

    f64 = lambda: tf.TensorSpec((1,), tf.float64)  # noqa: E731
    sig = (tf.TensorSpec((1, None, c), tf.float32), tf.TensorSpec((1, None), tf.bool),
           tf.TensorSpec((1,), tf.string), f64(), f64(), f64(), f64())
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    ds = ds.map(lambda f, m, vid, fps, st, nf, du: (
        {"feats": f, "mask": m},
        {"video_id": vid, "fps": fps, "feat_stride": st, "num_frames": nf, "duration": du}))
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds
