"""Streaming detection over a live feature stream, and the same windows offline.

numpy + `edge.runtime` + `edge.postprocess` only (no TensorFlow).

How it works (all positions in feature steps = feature-grid units):

* **Windows.** The exported model takes a fixed window of `W` steps. Window j covers steps
  `[s_j, s_j + W)` with `s_j = j·hop`. It runs as soon as its last step has arrived. At the end
  of the stream (`flush`) the remaining steps are covered by windows padded with `mask=False`,
  like the reference pads a short video. A video shorter than `W` is one padded window.
* **Ownership, no duplicates.** With overlap `O = W - hop`, window j keeps only the candidates
  whose anchor point `t` lies in `[s_j + O/2, s_j + hop + O/2)` (window 0 from -inf, the last
  window to +inf): every step of the video is owned by exactly one window, the one where it is
  most central, so the candidate set is that of one pass over the video. The rest of a window's
  points get `mask=False` before `edge.postprocess.decode`.
* **Clipping.** A window's segments are clipped to its own span `[s_j, s_j + W]` (the first
  window's start is not clipped, nor the last window's end: the duration clamps it in seconds,
  as in a whole-video pass): a future window can then only produce candidates starting at
  or after its own start.
* **Cross-window NMS, finalisation.** Candidates wait in a pool. After window j, no future
  candidate can start before `c = s_{j+1}`. The pool is split into connected groups of
  overlapping segments (per class when `multiclass_nms`); a group whose segments all end at or
  before `c` can no longer change: NMS (`edge.postprocess.batched_nms`, the model's test
  config) runs on it and its detections are emitted. NMS of disjoint groups is independent,
  so this equals NMS over the whole video (all groups finalised together go through one NMS
  call), except for the video-level `max_seg_num` cap: a stream applies it to each batch of
  detections finalised together (a bound on bursts), offline mode once more over the video.
* **Bounded latency and memory.** A group whose oldest closed segment has waited `max_delay`
  steps past its end is flushed early: its closed members are NMS-ed and emitted, the open
  ones stay (the only approximation). The pool therefore holds only candidates of the last
  `(W + max_delay)/hop + 1` windows and the feature buffer at most `W + hop` steps, whatever
  the stream length.
* **Latency** of a detection = steps received when it was emitted minus its end (grid units);
  also in seconds (`· feat_stride / fps`).
* **Bad data.** A chunk with NaN/inf is dropped with a warning: its steps stay in the timeline
  as padding (`mask=False`), so later detections keep their times. An empty chunk (a stream
  that pauses) does nothing. A chunk of the wrong width raises ValueError.
"""
import logging

import numpy as np

from edge import postprocess as pp

log = logging.getLogger("edge.stream")


def merge_test_cfg(*cfgs):
    """`edge.postprocess.DEFAULT_TEST_CFG` updated by each dict in turn (None values skipped)."""
    out = dict(pp.DEFAULT_TEST_CFG)
    for cfg in cfgs:
        out.update({k: v for k, v in dict(cfg or {}).items() if v is not None})
    return out


def run_nms(segs, scores, labels, test_cfg, max_seg_num=None):
    """`edge.postprocess.batched_nms` with the switches of a test config (`nms_method` none /
    soft / hard, `multiclass_nms`, ...). Inputs `[N,2]`, `[N]`, `[N]`; sorted outputs."""
    cfg = merge_test_cfg(test_cfg)
    if cfg["nms_method"] not in ("soft", "hard", "none"):
        raise ValueError(f"test_cfg.nms_method must be soft, hard or none, got "
                         f"{cfg['nms_method']!r}")
    if str(cfg["nms_method"]) == "none":
        order = np.argsort(-scores, kind="stable")
        if max_seg_num is not None:
            order = order[:int(max_seg_num)]
        return segs[order], scores[order], labels[order]
    return pp.batched_nms(
        segs, scores, labels, cfg["iou_threshold"], cfg["min_score"],
        cfg["max_seg_num"] if max_seg_num is None else max_seg_num,
        use_soft_nms=(cfg["nms_method"] == "soft"), multiclass=bool(cfg["multiclass_nms"]),
        sigma=cfg["nms_sigma"], voting_thresh=cfg["voting_thresh"])


def _groups(segs, keys):
    """Connected groups of strictly overlapping segments with the same key.

    segs `[N,2]`, keys `[N]` int -> `[N]` int group id (0..G-1). Vectorised sweep: sort by
    (key, start); a group ends where a start reaches the running max of the ends, keys kept
    apart by an offset larger than the span of all segments."""
    n = len(segs)
    if n == 0:
        return np.zeros(0, np.int64)
    segs = np.asarray(segs, np.float64)
    keys = np.asarray(keys, np.int64)
    order = np.lexsort((segs[:, 0], keys))
    lo = segs.min()
    span = segs.max() - lo + 1.0
    off = (keys[order] - keys.min()) * span - lo
    start = segs[order, 0] + off
    run_end = np.maximum.accumulate(segs[order, 1] + off)
    new = np.ones(n, bool)
    new[1:] = start[1:] >= run_end[:-1]
    gid = np.empty(n, np.int64)
    gid[order] = np.cumsum(new) - 1
    return gid


class StreamingDetector:
    """Sliding-window detection over a feature stream with one exported model.

    Args:
      model: an `edge.runtime.EdgeModel`.
      hop: window hop in feature steps, `1 <= hop <= model.window` (default: half the window,
        rounded down to a multiple of the coarsest FPN stride).
      fps, feat_stride, num_frames: video meta for seconds (default: the sidecar's).
      test_cfg: overrides of the model's exported test config.
      max_delay: steps a closed detection may wait for its overlap group (default: window).
      total_steps: the stream's length when it is known in advance (offline mode): the window
        that reaches it is the last one and is decoded in one piece, so a video of at most
        `window` steps is exactly one whole-video inference.

    `push(chunk)` takes `[n, C]` (or one step `[C]`) float features and returns the detections
    finalised by it; `flush(duration=None)` ends the stream and returns the rest. Detections
    are dicts: `segment` [start_s, end_s], `score`, `label`, `label_name`, `segment_grid`
    [start, end] (steps), `emitted_at` (steps received), `latency_steps`, `latency_s`.
    """

    def __init__(self, model, hop=None, fps=None, feat_stride=None, num_frames=None,
                 test_cfg=None, max_delay=None, total_steps=None):
        self.model = model
        self.total_steps = None if total_steps is None else int(total_steps)
        w = int(model.window)
        coarse = max(model.fpn_strides)
        if hop is None:
            hop = max(coarse, (w // 2) // coarse * coarse)
        if isinstance(hop, float) and not hop.is_integer():
            raise ValueError(f"hop: must be an integer number of feature steps, got {hop}")
        hop = int(hop)
        if hop < 1:
            raise ValueError(f"hop: must be >= 1 feature step, got {hop}")
        if hop > w:
            raise ValueError(f"hop: {hop} is larger than the model's window of {w} steps "
                             "(steps between windows would never be seen)")
        self.window, self.hop = w, hop
        self.overlap = w - hop
        self.fps = float(fps if fps is not None else _need(model.fps, "fps"))
        self.feat_stride = float(feat_stride if feat_stride is not None
                                 else _need(model.feat_stride, "feat_stride"))
        self.num_frames = float(num_frames if num_frames is not None
                                else _need(model.num_frames, "num_frames"))
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps: must be a positive number, got {fps}")
        self.test_cfg = merge_test_cfg(model.test_cfg, test_cfg)
        self.max_delay = int(w if max_delay is None else max_delay)
        self.multiclass = bool(self.test_cfg["multiclass_nms"])
        self._points = pp.make_points(model.level_lengths, model.fpn_strides,
                                      model.regression_range)
        self._lvl_idx = np.concatenate([
            np.minimum(np.arange(n) * s, w - 1) if n else np.zeros(0, np.int64)
            for n, s in zip(model.level_lengths, model.fpn_strides)]).astype(np.int64)
        self._lvl_ok = np.concatenate([np.arange(n) * s < w for n, s in
                                       zip(model.level_lengths, model.fpn_strides)])
        c = model.input_dim
        # Feature buffer: steps [buf_start, received), at most W + hop steps.
        self._buf = np.zeros((w + hop, c), np.float32)
        self._valid = np.zeros(w + hop, bool)
        self._buf_start = 0
        self.received = 0          # steps pushed so far (dropped chunks included)
        self.dropped_steps = 0
        self.windows_run = 0
        self._next = 0             # start of the next window to run
        self._pool = _Pool()
        self._tail = None          # last window's outputs past its ownership (for flush)
        self.finished = False

    # --- input -------------------------------------------------------------------------
    def push(self, chunk):
        """Append `[n, C]` (or `[C]`) feature steps; return the detections finalised now."""
        if self.finished:
            raise ValueError("push: the stream was already flushed")
        if chunk is None:
            return []
        chunk = np.asarray(chunk)
        if chunk.ndim == 1 and chunk.size:
            chunk = chunk[None]
        if chunk.size == 0:
            return []  # a pause: nothing arrived
        if chunk.ndim != 2 or chunk.shape[1] != self.model.input_dim:
            raise ValueError(f"features: expected [n, {self.model.input_dim}] steps, got shape "
                             f"{list(chunk.shape)} (wrong feature width for this model)")
        if not np.issubdtype(chunk.dtype, np.floating):
            raise ValueError(f"features: dtype must be floating point, got {chunk.dtype}")
        valid = True
        if not np.all(np.isfinite(chunk)):
            log.warning("dropping a chunk of %d steps at step %d: it contains NaN/inf",
                        len(chunk), self.received)
            self.dropped_steps += len(chunk)
            valid = False
        out = []
        for i in range(0, len(chunk), self.hop):  # keep the buffer at W + hop steps
            piece = chunk[i:i + self.hop]
            self._append(piece if valid else None, len(piece))
            out += self._run_ready()
        return out

    def _append(self, piece, n):
        end = self.received - self._buf_start
        if end + n > len(self._buf):  # drop steps no future window needs
            shift = self._next - self._buf_start
            self._buf[:end - shift] = self._buf[shift:end]
            self._valid[:end - shift] = self._valid[shift:end]
            self._buf_start, end = self._next, end - shift
        if piece is None:
            self._buf[end:end + n] = 0.0
            self._valid[end:end + n] = False
        else:
            self._buf[end:end + n] = piece
            self._valid[end:end + n] = True
        self.received += n

    def _run_ready(self):
        out = []
        while self._next + self.window <= self.received:
            final = self.total_steps is not None and self._next + self.window >= self.total_steps
            out += self._run_window(final=final)
            if final:
                break
        return out

    # --- windows -----------------------------------------------------------------------
    def _window_data(self, s):
        w = self.window
        feats = np.zeros((w, self.model.input_dim), np.float32)
        mask = np.zeros(w, bool)
        lo = s - self._buf_start
        n = max(0, min(w, self.received - s))
        feats[:n] = self._buf[lo:lo + n]
        mask[:n] = self._valid[lo:lo + n]
        return feats, mask

    def _run_window(self, final):
        s = self._next
        feats, mask = self._window_data(s)
        out = self.model.run(feats, mask)
        self.windows_run += 1
        pmask = mask[self._lvl_idx] & self._lvl_ok
        g = s + self._points[:, 0]
        half = self.overlap / 2.0
        lo = -np.inf if s == 0 else s + half
        hi = np.inf if final else s + self.hop + half
        own = pmask & (g >= lo) & (g < hi)
        self._pool.add(self._decode(out, own, s, final))
        # decoded only if this window turns out to be the last one (see flush)
        self._tail = None if final else (out, pmask & (g >= hi), s)
        self._next = s + self.hop
        return self._finalise(cutoff=np.inf if final else float(self._next),
                              emitted_at=min(s + self.window, self.received))

    def _decode(self, out, mask, s, final=True):
        segs, scores, labels = pp.decode(out["cls_logits"], out["offsets"], mask, self._points,
                                         self.model.level_lengths, self.test_cfg)
        segs = segs.astype(np.float64) + s  # float64: exact global positions in long streams
        # the last window is not clipped at its end (the video's duration clamps it, as in a
        # whole-video pass)
        segs = np.clip(segs, -np.inf if s == 0 else s, np.inf if final else s + self.window)
        keep = (segs[:, 1] - segs[:, 0]) > float(self.test_cfg["duration_thresh"])
        return _Pool(segs[keep], scores[keep], labels[keep])

    def flush(self, duration=None):
        """End of stream: cover the remaining steps with padded windows, emit everything.

        duration: video duration in seconds for the final clamp of this flush's detections
        (default: not clamped at the end)."""
        if self.finished:
            return []
        self.finished = True
        self._duration = duration
        out = []
        if self.received == 0:
            return out
        if self.windows_run == 0 or self.received > self._next - self.hop + self.window:
            # Steps past the last window's end (or a video shorter than W): padded windows.
            while True:
                final = self._next + self.window >= self.received
                out += self._run_window(final=final)
                if final:
                    break
        else:
            # The last window ends the video: its points past its ownership are its own.
            if self._tail is not None:
                self._pool.add(self._decode(*self._tail))
            out += self._finalise(cutoff=np.inf, emitted_at=self.received)
        self._tail = None
        return out

    # --- cross-window merge ------------------------------------------------------------
    def _finalise(self, cutoff, emitted_at):
        pool = self._pool
        if not len(pool):
            return []
        keys = pool.labels if self.multiclass else np.zeros(len(pool), np.int64)
        gid = _groups(pool.segs, keys)
        n_groups = int(gid.max()) + 1
        closed = pool.segs[:, 1] <= cutoff
        stale = pool.segs[:, 1] <= cutoff - self.max_delay
        all_closed = np.bincount(gid, weights=~closed, minlength=n_groups) == 0
        any_stale = np.bincount(gid, weights=stale, minlength=n_groups) > 0
        # whole groups that are closed; from a group that waited too long, its closed members
        emit = all_closed[gid] | (any_stale[gid] & closed)
        if not emit.any():
            return []
        idx = np.flatnonzero(emit)
        self._pool = pool.take(~emit)
        # One NMS call for all emitted groups: groups do not overlap, so NMS of their union is
        # the union of their NMS (its max_seg_num cap then bounds this burst of detections).
        # NMS is shift-invariant: run it near 0 so float32 keeps the precision.
        origin = np.floor(pool.segs[idx, 0].min())
        segs, scores, labels = run_nms(pool.segs[idx] - origin, pool.scores[idx],
                                       pool.labels[idx], self.test_cfg)
        dets = self._to_dets(segs.astype(np.float64) + origin, scores, labels, emitted_at)
        dets.sort(key=lambda d: d["segment_grid"][1])
        return dets

    def _to_dets(self, segs, scores, labels, emitted_at):
        if not len(segs):
            return []
        duration = getattr(self, "_duration", None)
        sec = pp.to_seconds(segs, self.fps, self.feat_stride, self.num_frames, duration)
        names = self.model.class_names
        dets = []
        for (g0, g1), (t0, t1), sc, lb in zip(segs, sec, scores, labels):
            lat = max(0.0, float(emitted_at - g1))  # <0 only at flush, past the data
            dets.append({"segment": [float(t0), float(t1)], "score": float(sc),
                         "label": int(lb), "label_name": str(names[int(lb)]),
                         "segment_grid": [float(g0), float(g1)], "emitted_at": int(emitted_at),
                         "latency_steps": lat,
                         "latency_s": lat * self.feat_stride / self.fps})
        return dets

    @property
    def pending(self):
        """Candidates waiting in the cross-window pool."""
        return len(self._pool)

    @property
    def buffered(self):
        """Feature steps held in memory (at most window + hop)."""
        return self.received - self._buf_start


class _Pool:
    """Candidates: segs `[N,2]` float64 (grid, global), scores `[N]`, labels `[N]`."""

    def __init__(self, segs=None, scores=None, labels=None):
        self.segs = np.zeros((0, 2), np.float64) if segs is None else segs
        self.scores = np.zeros(0, np.float32) if scores is None else scores
        self.labels = np.zeros(0, np.int64) if labels is None else labels

    def __len__(self):
        return len(self.scores)

    def add(self, other):
        self.segs = np.concatenate([self.segs, other.segs])
        self.scores = np.concatenate([self.scores, other.scores])
        self.labels = np.concatenate([self.labels, other.labels])

    def take(self, keep):
        return _Pool(self.segs[keep], self.scores[keep], self.labels[keep])


def _need(value, name):
    if value is None:
        raise ValueError(f"{name}: the model's sidecar has no '{name}'; give it explicitly")
    return value


def default_duration(num_steps, fps, feat_stride, num_frames):
    """Video duration (s) implied by `num_steps` features: `((T-1)·stride + num_frames)/fps`."""
    return ((max(int(num_steps), 1) - 1) * feat_stride + num_frames) / fps


def detect_video(model, feats, hop=None, fps=None, feat_stride=None, num_frames=None,
                 duration=None, test_cfg=None, chunk=None):
    """Offline mode: the stream's windows with all data present.

    A video of at most `window` steps is ONE model call on the padded window, decoded and
    NMS-ed in one piece: exactly whole-video inference (the Keras model on the video padded
    to `window`). A longer video runs windows every `hop` steps; each point is decoded by the
    window where it is most central (the last window keeps all points past its start half),
    and NMS runs over the merged candidates. That differs from one whole-video pass only in
    the per-window `pre_nms_topk` and in context: attention and convolutions of a window do
    not see past its `window` steps.

    feats `[T, C]`, pushed `chunk` steps at a time (default: hop; a chunk with NaN/inf is
    dropped with a warning, as in a stream). Returns the detections (as `StreamingDetector`)
    sorted by descending score,
    capped at the test config's `max_seg_num` and clamped to `[0, duration]` seconds
    (default duration: `default_duration(T, ...)`).
    """
    feats = np.asarray(feats)
    det = StreamingDetector(model, hop=hop, fps=fps, feat_stride=feat_stride,
                            num_frames=num_frames, test_cfg=test_cfg,
                            total_steps=len(feats) if feats.ndim == 2 else None)
    if feats.ndim != 2:
        raise ValueError(f"features: expected [T, C], got shape {list(feats.shape)}")
    if feats.shape[0] == 0:
        raise ValueError("features: the video has no feature steps (T = 0)")
    if duration is None:
        duration = default_duration(len(feats), det.fps, det.feat_stride, det.num_frames)
    step = det.hop if chunk is None else int(chunk)  # a NaN chunk drops `step` steps
    dets = []
    for i in range(0, len(feats), step):
        dets += det.push(feats[i:i + step])
    dets += det.flush(duration=duration)
    for d in dets:  # clamp detections emitted before the duration was known
        d["segment"] = [min(max(v, 0.0), float(duration)) for v in d["segment"]]
    dets.sort(key=lambda d: -d["score"])
    return dets[:int(det.test_cfg["max_seg_num"])]
