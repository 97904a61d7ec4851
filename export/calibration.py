"""Calibration / verification windows for an export.

`load_windows(source, input_dim, window)` returns `Windows(feats [N, T, C] float32,
mask [N, T] bool, ids, source, synthetic)`, where T is the export window in feature-grid
frames. Sources:
- a folder of `[T_i, C]` float32 `.npy` feature files: each file is cut into consecutive
  windows of T frames, the last one zero-padded (mask False on the padding);
- a config file (`.yaml`/`.yml`): the features of its training split, read with the
  project's data readers and windowed the same way;
- None: seeded N(0, 1) windows (only for float exports; flagged `synthetic`).
"""
import dataclasses
import glob
import os

import numpy as np
from absl import logging


@dataclasses.dataclass
class Windows:
    feats: np.ndarray        # [N, T, C] float32
    mask: np.ndarray         # [N, T] bool
    ids: list                # N names "<video>@<start frame>"
    source: str
    synthetic: bool = False

    def __len__(self):
        return len(self.ids)

    def take(self, n):
        """The first n windows (all when n is None)."""
        if n is None or n >= len(self):
            return self
        return Windows(self.feats[:n], self.mask[:n], self.ids[:n], self.source, self.synthetic)


def _cut(name, x, window):
    """Consecutive windows of `window` frames over x [T_i, C]; last one zero-padded."""
    out = []
    t = x.shape[0]
    for start in range(0, max(t, 1), window):
        chunk = x[start:start + window]
        n = chunk.shape[0]
        f = np.zeros((window, x.shape[1]), np.float32)
        f[:n] = chunk
        m = np.zeros((window,), bool)
        m[:n] = True
        out.append((f"{name}@{start}", f, m))
    return out


def _check_array(path, x, input_dim):
    if x.ndim != 2:
        raise ValueError(f"{path}: calibration features must be [T, C], got shape {list(x.shape)}")
    if x.shape[1] != input_dim:
        raise ValueError(f"{path}: calibration features have width C={x.shape[1]}, the model "
                         f"expects input_dim={input_dim}")
    if x.shape[0] == 0:
        raise ValueError(f"{path}: calibration features are empty (T=0)")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: calibration features contain NaN or Inf")
    return x.astype(np.float32, copy=False)


def _from_arrays(named, input_dim, window, max_windows, source):
    items = []
    for name, x in named:
        items.extend(_cut(name, x, window))
        if max_windows is not None and len(items) >= max_windows:
            break
    items = items[:max_windows] if max_windows is not None else items
    return Windows(np.stack([f for _, f, _ in items]), np.stack([m for _, _, m in items]),
                   [i for i, _, _ in items], source)


def _from_dir(path, input_dim, window, max_windows):
    files = sorted(glob.glob(os.path.join(path, "*.npy")))
    if not files:
        raise FileNotFoundError(f"{path}: calibration folder holds no .npy feature files")

    def named():
        for f in files:
            try:
                x = np.load(f, allow_pickle=False)
            except (ValueError, OSError) as err:
                raise ValueError(f"{f}: not a readable .npy array ({err})") from None
            yield os.path.splitext(os.path.basename(f))[0], _check_array(f, x, input_dim)

    return _from_arrays(named(), input_dim, window, max_windows, path)


def config_records(path, split_kind="train"):
    """(config, FeatureReader, records of the config's train or val split that have features)."""
    from asl_tf.config import load_config
    from asl_tf.data.annotations import read_dataset
    from asl_tf.data.features import FeatureReader, match_records

    cfg = load_config(path)
    ds = cfg.dataset
    which = "train" if split_kind == "train" else "val"
    ann = read_dataset(ds, which)
    reader = FeatureReader.from_config(ds)
    records, _ = match_records(ann.records, reader)
    if not records:
        raise ValueError(f"{path}: no video of split {getattr(ds, which + '_split')} has features in {ds.feat_folder}")
    return cfg, reader, records


def _from_config(path, input_dim, window, max_windows, split_kind="train"):
    """Windows over the features of a config's training (or validation) split."""
    cfg, reader, records = config_records(path, split_kind)
    if int(cfg.dataset.input_dim) != input_dim:
        raise ValueError(f"{path}: dataset.input_dim={cfg.dataset.input_dim} but the model "
                         f"expects input_dim={input_dim}")

    def named():
        for rec in records:
            yield rec.video_id, _check_array(f"{path}: video {rec.video_id}",
                                             np.asarray(reader(rec.video_id)), input_dim)

    return _from_arrays(named(), input_dim, window, max_windows, path)


def video_meta_from_config(path):
    """The training data's default feat_stride / num_frames / fps of a config (fps may be None)."""
    from asl_tf.config import load_config
    ds = load_config(path).dataset
    return {"feat_stride": ds.feat_stride, "num_frames": ds.num_frames, "fps": ds.default_fps}


def synthetic(input_dim, window, n=4, seed=0):
    """Seeded N(0,1) windows, the last half of the last window padded."""
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, window, input_dim)).astype(np.float32)
    mask = np.ones((n, window), bool)
    mask[-1, window // 2:] = False
    feats[~mask] = 0.0
    return Windows(feats, mask, [f"synthetic@{i}" for i in range(n)], "synthetic", synthetic=True)


def load_windows(source, input_dim, window, max_windows=None, split_kind="train"):
    """Windows [N, window, input_dim] from a folder of .npy files, a config (its `split_kind`
    split: train or val), or None (synthetic)."""
    if source is None:
        logging.warning("no --calibration given: verifying on synthetic N(0,1) windows")
        return synthetic(input_dim, window)
    source = os.fspath(source)
    if os.path.isdir(source):
        return _from_dir(source, input_dim, window, max_windows)
    if not os.path.exists(source):
        raise FileNotFoundError(f"--calibration {source}: no such file or folder")
    if source.endswith((".yaml", ".yml")):
        return _from_config(source, input_dim, window, max_windows, split_kind)
    raise ValueError(f"--calibration {source}: expected a config (.yaml) or a folder of .npy files")
