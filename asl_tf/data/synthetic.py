"""Synthetic features on REAL annotation timings: the project's honest test bed.

No pre-extracted benchmark features (I3D, SlowFast, ...) can be downloaded where this
project is built and tested, so the demo and the ablation bench train on features generated
here. Only the *features* are synthetic: the videos' durations, the instance boundaries,
their overlaps and their class labels are those of a real annotation file (by default the
THUMOS'14 ActionFormer JSON in ``tests/fixtures/data/thumos14``), read with
:func:`asl_tf.data.annotations.read_annotations`.

The generator encodes ASL's premise -- frames inside an action differ in how much they tell --
explicitly. For a feature step centred at time ``t`` (seconds) the feature is

    x(t) = scene(t)                                    video-level background, slow drift
         + sum over instances i of class k_i:
             weak  * inside_i(t) * weak_k              weak evidence, mostly shared with the
                                                       other classes of k's group
           + key   * sum_j bump(t; c_ij, w_ij) * key_k few key sub-phases: the class evidence
           + bound * (bump(t; s_i, b) * onset_g        short transitions at the start / end,
                     + bump(t; e_i, b) * offset_g)     shared by the classes of a group
         + sum over distractors d (background only):   action-like segments with partial key
             the same terms with weaker key evidence   evidence of a random class
         then a temporal blur of ``blur_s`` seconds (the extractor's receptive field)
         + noise * N(0, 1)

``bump(t; c, w) = exp(-(t - c)^2 / (2 w^2))``. Key sub-phase centres sit at class-specific
relative positions (``c_ij = s_i + u_kj * len_i``, ``u_kj`` drawn once per class) jittered per
instance (``key_jitter``), so the class-level sensitivity (where in an instance the evidence
usually is) and the instance-level sensitivity (where it is in this instance) both carry
information. ``key_fraction`` is the share of an instance covered by key sub-phases.
Prototype vectors have unit-variance entries, so strengths are signal-to-noise ratios per
channel.

Feature grid: a video of ``duration`` seconds at ``fps`` gets
``T = floor((duration * fps - num_frames) / feat_stride) + 1`` steps (at least 1), step ``i``
centred at ``(i * feat_stride + 0.5 * num_frames) / fps`` seconds, the ActionFormer convention
(``grid = (sec * fps - 0.5 * num_frames) / feat_stride``). ``feat_stride`` is
``round(fps_default / feature_rate)`` frames and ``num_frames = feat_stride``.

Everything is deterministic: video ``v`` is generated from ``seed`` and a CRC of its id, so it
does not depend on which other videos are selected.

Outputs (:func:`write_dataset`): ``<out>/features/<video_id>.npy`` (``[T, C]`` float32),
``<out>/annotations.json`` (ActionFormer format: ``{"version", "database": {video: {subset,
duration, fps, annotations: [{label, segment, segment(frames), label_id}]}}}``) and
``<out>/synthetic_meta.json`` (the generator config, class names, grid parameters).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import zlib
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging

from asl_tf.fileio import atomic_write

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_ANNOTATIONS = REPO_ROOT / "tests" / "fixtures" / "data" / "thumos14" / "thumos14.json"


@dataclasses.dataclass
class SyntheticConfig:
    """Every knob of the generator (YAML section ``synthetic``).

    Times are in seconds; strengths are per-channel signal-to-noise ratios (prototype entries
    have unit variance).
    """

    # --- source of the timings ---
    annotation_file: str = str(DEFAULT_ANNOTATIONS)
    format: str = "actionformer"          # any format read_annotations knows
    train_split: str = "validation"       # THUMOS'14 trains on its validation videos
    test_split: str = "test"
    num_train_videos: int = 40            # 0 = all videos of the split
    num_test_videos: int = 20
    min_duration: float = 0.0             # keep videos with min_duration <= duration <= max_duration
    max_duration: float = 1e9
    # --- feature grid ---
    feature_rate: float = 4.0             # feature steps per second (nominal)
    default_fps: float = 30.0             # fps that sets feat_stride = round(default_fps / feature_rate)
    input_dim: int = 64                   # feature width C
    # --- evidence ---
    num_groups: int = 5                   # classes k, k+G, ... share weak / boundary evidence
    key_strength: float = 1.0             # class evidence in key sub-phases
    num_key_phases: int = 2               # key sub-phases per instance
    key_fraction: float = 0.25            # share of an instance covered by key sub-phases
    key_jitter: float = 0.08              # std of a key centre around its class position (x len)
    min_key_width: float = 0.15           # lower bound of a key bump's std, seconds
    weak_strength: float = 0.35           # evidence on the rest of an instance
    weak_class_share: float = 0.25        # part of weak evidence that is class-specific (rest: group)
    boundary_strength: float = 0.8        # start / end transitions
    boundary_width: float = 0.3           # std of the transition bumps, seconds
    strength_jitter: float = 0.25         # per-instance multiplicative jitter, U(1-j, 1+j)
    # --- background ---
    scene_strength: float = 0.5           # video-level background vector
    drift_strength: float = 0.3           # slow drift of the background
    drift_period: float = 30.0            # seconds
    distractor_rate: float = 2.0          # action-like distractors per minute of background
    distractor_key_strength: float = 0.45 # key evidence of a distractor (of a random class)
    distractor_boundary_prob: float = 0.5 # chance a distractor also shows boundary transitions
    blur: float = 0.25                    # std of the temporal blur, seconds (0 = none)
    noise: float = 1.0                    # white noise std per channel
    seed: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, source: str = "<dict>") -> "SyntheticConfig":
        """Build from a mapping; an unknown key or a wrong type is a ValueError naming it."""
        d = dict(d or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in d.items():
            if key not in fields:
                raise ValueError(f"{source}: unknown key 'synthetic.{key}' "
                                 f"(known: {', '.join(sorted(fields))})")
            default = getattr(cls(), key)
            if isinstance(default, bool) or isinstance(default, str):
                ok = isinstance(value, type(default))
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                value = float(value) if ok else value
            if not ok:
                raise ValueError(f"{source}: 'synthetic.{key}' must be "
                                 f"{type(default).__name__}, got {value!r}")
            kwargs[key] = value
        cfg = cls(**kwargs)
        cfg.validate(source)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, section: str = "synthetic") -> "SyntheticConfig":
        import yaml  # local: only needed for YAML input

        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: synthetic data config not found")
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
        if section not in doc:
            raise ValueError(f"{path}: no '{section}' section")
        cfg = cls.from_dict(doc[section], source=str(path))
        if not os.path.isabs(cfg.annotation_file):
            # relative paths are relative to the repository root (configs live there)
            cand = REPO_ROOT / cfg.annotation_file
            cfg.annotation_file = str(cand)
        return cfg

    def validate(self, source: str = "<config>") -> None:
        def need(cond, field, what):
            if not cond:
                raise ValueError(f"{source}: 'synthetic.{field}' {what}, got {getattr(self, field)!r}")

        need(self.feature_rate > 0, "feature_rate", "must be > 0")
        need(self.default_fps > 0, "default_fps", "must be > 0")
        need(self.input_dim >= 4, "input_dim", "must be >= 4")
        need(self.num_groups >= 1, "num_groups", "must be >= 1")
        need(self.num_key_phases >= 1, "num_key_phases", "must be >= 1")
        need(0 < self.key_fraction <= 1, "key_fraction", "must be in (0, 1]")
        need(0 <= self.weak_class_share <= 1, "weak_class_share", "must be in [0, 1]")
        need(0 <= self.strength_jitter < 1, "strength_jitter", "must be in [0, 1)")
        need(0 <= self.distractor_boundary_prob <= 1, "distractor_boundary_prob", "must be in [0, 1]")
        for f in ("key_strength", "weak_strength", "boundary_strength", "boundary_width",
                  "scene_strength", "drift_strength", "distractor_rate", "distractor_key_strength",
                  "blur", "noise", "min_key_width", "key_jitter", "min_duration"):
            need(getattr(self, f) >= 0, f, "must be >= 0")
        need(self.drift_period > 0, "drift_period", "must be > 0")
        need(self.max_duration > self.min_duration, "max_duration", "must be > min_duration")
        need(self.num_train_videos >= 0, "num_train_videos", "must be >= 0")
        need(self.num_test_videos >= 0, "num_test_videos", "must be >= 0")

    @property
    def feat_stride(self) -> int:
        """Frames between feature steps at ``default_fps``."""
        return max(1, int(round(self.default_fps / self.feature_rate)))

    @property
    def num_frames(self) -> int:
        """Frames per feature step's window (= feat_stride: non-overlapping windows)."""
        return self.feat_stride


# ----------------------------------------------------------------------------- prototypes

@dataclasses.dataclass
class Prototypes:
    """The fixed evidence vectors of a dataset (all ``[*, C]`` float32, unit-variance entries).

    key: ``[K, C]`` class evidence; weak: ``[K, C]`` weak in-instance evidence (group-shared +
    ``weak_class_share`` class-specific); onset / offset: ``[G, C]`` boundary transitions per
    group; key_pos: ``[K, P]`` relative centres (in (0,1)) of the P key sub-phases per class.
    """

    key: np.ndarray
    weak: np.ndarray
    onset: np.ndarray
    offset: np.ndarray
    key_pos: np.ndarray

    def group(self, k: int) -> int:
        return int(k) % self.onset.shape[0]


def make_prototypes(cfg: SyntheticConfig, num_classes: int) -> Prototypes:
    """Draw the per-class and per-group evidence vectors from ``cfg.seed``."""
    if num_classes < 1:
        raise ValueError("synthetic: the annotation file has no classes")
    rng = np.random.default_rng([cfg.seed, 0x5EED])
    c, g = cfg.input_dim, min(cfg.num_groups, num_classes)
    key = rng.standard_normal((num_classes, c))
    group_vec = rng.standard_normal((g, c))
    own = rng.standard_normal((num_classes, c))
    a = cfg.weak_class_share
    weak = np.stack([np.sqrt(a) * (0.5 * key[k] + np.sqrt(0.75) * own[k])
                     + np.sqrt(1 - a) * group_vec[k % g] for k in range(num_classes)])
    onset = rng.standard_normal((g, c))
    offset = rng.standard_normal((g, c))
    p = cfg.num_key_phases
    # class-specific key positions: evenly spread in (0.15, 0.85), shifted per class
    base = (np.arange(p) + 0.5) / p
    shift = rng.uniform(-0.5, 0.5, size=(num_classes, 1)) / p * 0.8
    key_pos = np.clip(0.15 + 0.7 * (base[None, :] + shift), 0.1, 0.9)
    f32 = lambda x: x.astype(np.float32)  # noqa: E731
    return Prototypes(f32(key), f32(weak), f32(onset), f32(offset), key_pos)


# ----------------------------------------------------------------------------- one video

def feature_times(duration: float, fps: float, feat_stride: int, num_frames: int) -> np.ndarray:
    """Centres (seconds) of the feature steps of a video: ``[T]`` float64."""
    n = int(np.floor((duration * fps - num_frames) / feat_stride)) + 1
    n = max(n, 1)
    return (np.arange(n) * feat_stride + 0.5 * num_frames) / fps


def _bump(t: np.ndarray, c: float, w: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - c) / max(w, 1e-6)) ** 2)


def _inside(t: np.ndarray, s: float, e: float, soft: float) -> np.ndarray:
    """Soft indicator of [s, e] with logistic edges of width ``soft`` seconds."""
    soft = max(soft, 1e-3)
    # logistic written with tanh: no overflow far from the edges
    return 0.25 * (1.0 + np.tanh((t - s) / (2 * soft))) * (1.0 + np.tanh((e - t) / (2 * soft)))


def _video_rng(seed: int, video_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(video_id.encode("utf-8"))])


def generate_video(segments: np.ndarray, labels: np.ndarray, duration: float, fps: float,
                   cfg: SyntheticConfig, protos: Prototypes, video_id: str,
                   return_latent: bool = False):
    """Features of one video.

    Args:
      segments: ``[N, 2]`` seconds (rows past the end are clipped; end <= start rows ignored).
      labels: ``[N]`` int class ids in ``[0, K)``.
      duration, fps: the video's, from the annotation file.
    Returns:
      ``[T, C]`` float32, and with ``return_latent`` also a dict of ``[T]`` arrays
      ``key`` (key-evidence envelope), ``boundary``, ``weak`` (instance interiors),
      ``distractor`` and the list ``distractors`` of ``(start_s, end_s, class)``.
    """
    rng = _video_rng(cfg.seed, video_id)
    t = feature_times(duration, fps, cfg.feat_stride, cfg.num_frames)
    T, C = t.shape[0], cfg.input_dim
    rate = fps / cfg.feat_stride  # this video's actual feature steps per second
    sig = np.zeros((T, C), np.float64)
    env = {n: np.zeros(T) for n in ("key", "boundary", "weak", "distractor")}

    # background scene + slow drift
    scene = rng.standard_normal(C) * cfg.scene_strength
    drift_a, drift_b = rng.standard_normal((2, C)) * cfg.drift_strength
    phase = rng.uniform(0, 2 * np.pi)
    w = 2 * np.pi * t / cfg.drift_period + phase
    sig += scene[None] + np.sin(w)[:, None] * drift_a[None] + np.cos(w)[:, None] * drift_b[None]

    def add_action(s, e, k, key_gain, with_boundary, is_distractor):
        length = max(e - s, 1e-3)
        jit = rng.uniform(1 - cfg.strength_jitter, 1 + cfg.strength_jitter, size=3)
        g = protos.group(k)
        inside = _inside(t, s, e, soft=0.25 / rate)
        # key sub-phases at class-specific relative positions, jittered per instance
        kw = max(cfg.key_fraction * length / (2.0 * cfg.num_key_phases), cfg.min_key_width)
        key_env = np.zeros(T)
        for u in protos.key_pos[k]:
            uj = np.clip(u + rng.normal(0, cfg.key_jitter), 0.05, 0.95)
            key_env = np.maximum(key_env, _bump(t, s + uj * length, kw))
        key_env *= inside
        bnd_env = np.zeros(T)
        if with_boundary:
            on, off = _bump(t, s, cfg.boundary_width), _bump(t, e, cfg.boundary_width)
            sig[:] += (cfg.boundary_strength * jit[2]) * (on[:, None] * protos.onset[g][None]
                                                           + off[:, None] * protos.offset[g][None])
            bnd_env = np.maximum(on, off)
        weak_env = inside * (1.0 - key_env)
        sig[:] += (key_gain * jit[0]) * key_env[:, None] * protos.key[k][None]
        sig[:] += (cfg.weak_strength * jit[1]) * weak_env[:, None] * protos.weak[k][None]
        if is_distractor:
            env["distractor"][:] = np.maximum(env["distractor"], inside)
        else:
            env["key"][:] = np.maximum(env["key"], key_env)
            env["boundary"][:] = np.maximum(env["boundary"], bnd_env)
            env["weak"][:] = np.maximum(env["weak"], weak_env)

    segs = np.asarray(segments, np.float64).reshape(-1, 2)
    labs = np.asarray(labels, np.int64).reshape(-1)
    busy = np.zeros(T, bool)
    for (s, e), k in zip(segs, labs):
        s, e = max(0.0, float(s)), min(float(duration), float(e))
        if e <= s:
            continue
        add_action(s, e, int(k), cfg.key_strength, True, False)
        busy |= (t >= s - 2 * cfg.boundary_width) & (t <= e + 2 * cfg.boundary_width)

    # distractors: action-like segments in the background, lengths from this video's instances
    distractors = []
    free = ~busy
    n_dis = rng.poisson(cfg.distractor_rate * free.sum() / rate / 60.0)
    lens = segs[:, 1] - segs[:, 0]
    lens = lens[lens > 0] if (lens > 0).any() else np.array([3.0])
    num_classes = protos.key.shape[0]
    for _ in range(int(n_dis)):
        for _try in range(20):
            length = float(rng.choice(lens)) * rng.uniform(0.6, 1.4)
            s = rng.uniform(0, max(duration - length, 1e-3))
            e = min(s + length, duration)
            m = (t >= s) & (t <= e)
            if m.any() and free[m].all():
                k = int(rng.integers(num_classes))
                add_action(s, e, k, cfg.distractor_key_strength,
                           bool(rng.random() < cfg.distractor_boundary_prob), True)
                free &= ~((t >= s - 2 * cfg.boundary_width) & (t <= e + 2 * cfg.boundary_width))
                distractors.append((float(s), float(e), k))
                break

    if cfg.blur > 0:
        sd = cfg.blur * rate  # in steps
        if sd > 0.3:
            r = int(np.ceil(3 * sd))
            ker = np.exp(-0.5 * (np.arange(-r, r + 1) / sd) ** 2)
            ker /= ker.sum()
            padded = np.pad(sig, ((r, r), (0, 0)), mode="edge")
            sig = np.stack([np.convolve(padded[:, j], ker, mode="valid") for j in range(C)], 1)
    feats = (sig + cfg.noise * rng.standard_normal((T, C))).astype(np.float32)
    if return_latent:
        env["distractors"] = distractors
        env["times"] = t
        return feats, env
    return feats


# ----------------------------------------------------------------------------- dataset

def select_videos(records: Sequence[Any], n: int, cfg: SyntheticConfig, salt: int) -> list:
    """A deterministic, class-stratified subset of ``n`` records (``n == 0``: all).

    Records outside ``[min_duration, max_duration]`` or without a valid segment are skipped.
    Classes are visited round-robin (seeded order) so every class present gets videos.
    """
    ok = []
    for r in records:
        segs = np.asarray(r.segments, np.float64).reshape(-1, 2)
        if not (cfg.min_duration <= float(r.duration) <= cfg.max_duration):
            continue
        if not (segs[:, 1] > segs[:, 0]).any():
            continue
        ok.append(r)
    ok.sort(key=lambda r: r.video_id)
    if n == 0 or n >= len(ok):
        return ok
    rng = np.random.default_rng([cfg.seed, salt])
    order = list(rng.permutation(len(ok)))
    by_class: dict[int, list[int]] = {}
    for i in order:
        for k in sorted(set(int(x) for x in np.asarray(ok[i].labels).reshape(-1))):
            by_class.setdefault(k, []).append(i)
    chosen: list[int] = []
    classes = sorted(by_class)
    classes = [classes[j] for j in rng.permutation(len(classes))]
    while len(chosen) < n:
        progressed = False
        for k in classes:
            while by_class[k] and by_class[k][0] in chosen:
                by_class[k].pop(0)
            if by_class[k] and len(chosen) < n:
                chosen.append(by_class[k].pop(0))
                progressed = True
        if not progressed:
            break
    return [ok[i] for i in sorted(chosen, key=lambda i: ok[i].video_id)]


def load_source(cfg: SyntheticConfig):
    """Read the real annotation file: returns ``(train_records, test_records, class_names)``."""
    from asl_tf.data.annotations import read_annotations

    path = cfg.annotation_file
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: annotation file not found (synthetic.annotation_file)")
    train = read_annotations(path, cfg.format, split=cfg.train_split)
    test = read_annotations(path, cfg.format, split=cfg.test_split)
    names = list(train.class_names)
    if list(test.class_names) != names:
        # both splits must share one class map; take the longer one if one extends the other
        if list(test.class_names)[:len(names)] == names:
            names = list(test.class_names)
        elif names[:len(test.class_names)] != list(test.class_names):
            raise ValueError(f"{path}: splits '{cfg.train_split}' and '{cfg.test_split}' "
                             "have different class maps")
    return list(train.records), list(test.records), names


def _atomic_write_bytes(path: pathlib.Path, write):
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        write(f)


def write_dataset(cfg: SyntheticConfig, out_dir: str | os.PathLike, *,
                  train_records=None, test_records=None, class_names=None) -> dict:
    """Generate the dataset into ``out_dir``; returns a summary dict.

    By default the records come from ``cfg.annotation_file`` via ``read_annotations``; tests may
    pass ``train_records`` / ``test_records`` / ``class_names`` directly (objects with the
    ``VideoRecord`` fields ``video_id, subset, duration, fps, segments, labels, label_names``).
    The annotation JSON keeps the source's subset names, durations, fps, segments (as read)
    and label ids.
    """
    if train_records is None:
        train_records, test_records, class_names = load_source(cfg)
    out = pathlib.Path(out_dir)
    feat_dir = out / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    protos = make_prototypes(cfg, len(class_names))
    train_sel = select_videos(train_records, cfg.num_train_videos, cfg, salt=1)
    test_sel = select_videos(test_records, cfg.num_test_videos, cfg, salt=2)
    if not train_sel:
        raise ValueError(f"{cfg.annotation_file}: no video of split '{cfg.train_split}' within "
                         f"[{cfg.min_duration}, {cfg.max_duration}] s (synthetic.min/max_duration)")
    database = {}
    n_inst = 0
    n_steps = 0
    for split_name, sel in ((cfg.train_split, train_sel), (cfg.test_split, test_sel)):
        for r in sel:
            labels = np.asarray(r.labels, np.int64).reshape(-1)
            if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
                raise ValueError(f"{cfg.annotation_file}: video {r.video_id}: label out of the "
                                 f"class map (0..{len(class_names) - 1})")
            fps = float(r.fps) if r.fps else cfg.default_fps
            feats = generate_video(r.segments, labels, float(r.duration), fps, cfg, protos,
                                   r.video_id)
            _atomic_write_bytes(feat_dir / f"{r.video_id}.npy", lambda f: np.save(f, feats))
            n_steps += feats.shape[0]
            anns = []
            for (s, e), k in zip(np.asarray(r.segments, np.float64).reshape(-1, 2), labels):
                anns.append({"label": class_names[int(k)], "segment": [float(s), float(e)],
                             "segment(frames)": [float(s) * fps, float(e) * fps],
                             "label_id": int(k)})
            n_inst += len(anns)
            database[r.video_id] = {"subset": r.subset or split_name,
                                    "duration": float(r.duration), "fps": fps,
                                    "annotations": anns}
    ann_path = out / "annotations.json"
    doc = {"version": f"synthetic-on-{pathlib.Path(cfg.annotation_file).stem}",
           "database": database}
    _atomic_write_bytes(ann_path, lambda f: f.write(json.dumps(doc, indent=1).encode()))
    meta = {"synthetic_config": dataclasses.asdict(cfg), "class_names": list(class_names),
            "feat_stride": cfg.feat_stride, "num_frames": cfg.num_frames,
            "default_fps": cfg.default_fps, "input_dim": cfg.input_dim,
            "num_classes": len(class_names),
            "train_videos": [r.video_id for r in train_sel],
            "test_videos": [r.video_id for r in test_sel],
            "instances": n_inst, "feature_steps": n_steps,
            "note": "synthetic features on real annotation timings (asl_tf.data.synthetic)"}
    _atomic_write_bytes(out / "synthetic_meta.json",
                        lambda f: f.write(json.dumps(meta, indent=1).encode()))
    logging.info("synthetic: %d train + %d test videos, %d instances, %d feature steps -> %s",
                 len(train_sel), len(test_sel), n_inst, n_steps, out)
    return {"annotation_file": str(ann_path), "feature_dir": str(feat_dir),
            "meta_file": str(out / "synthetic_meta.json"), "train_videos": len(train_sel),
            "test_videos": len(test_sel), "instances": n_inst, "feature_steps": n_steps,
            "class_names": list(class_names)}
