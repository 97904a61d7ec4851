"""Feature readers: per-video `[T, C]` float32 arrays from .npy / .npz / .h5 files.

A video's features come from one or more *streams* (e.g. RGB + flow, or Ego4D's SlowFast +
Omnivore + EgoVLP), each a folder of files `<prefix><video_id><ext>`, or for `.h5` either such
a folder or one HDF5 file holding one dataset per video (key `<prefix><video_id>`). Streams are
concatenated along channels; their lengths must agree.

Checks (each raises with the file, video and field named):
- missing file or HDF5 key -> FileNotFoundError;
- not 2-D, non-numeric dtype, empty (T == 0), NaN/inf values, or a total width different from
  `input_dim` -> ValueError.
`resize_features` reproduces `F.interpolate(mode='linear', align_corners=False)` (ActivityNet's
fixed-length upsampling in the reference).
"""
from __future__ import annotations

import dataclasses
import glob
import os
import tokenize
import zipfile
import zlib
from typing import Iterable, Optional, Sequence

import numpy as np

__all__ = ["FeatureReader", "resize_features", "feature_file", "list_feature_ids", "match_records"]

_H5_EXTS = (".h5", ".hdf5")


def feature_file(folder: str, video_id: str, prefix: str = "", ext: str = ".npy") -> str:
    """Path of one video's feature file in a stream folder."""
    return os.path.join(folder, f"{prefix}{video_id}{ext}")


def _is_h5_file(folder: str) -> bool:
    return os.path.isfile(folder) and folder.lower().endswith(_H5_EXTS)


def resize_features(feats: np.ndarray, length: int) -> np.ndarray:
    """Linear resampling along time, `F.interpolate(linear, align_corners=False)` semantics.

    feats: [T, C] -> [length, C] float32. Source position of output i is
    `(i + 0.5) * T / length - 0.5`, clamped at 0; the right neighbour is clamped at T-1.
    """
    feats = np.asarray(feats, dtype=np.float32)
    t = feats.shape[0]
    if t == length:
        return feats.copy()
    scale = t / float(length)
    src = (np.arange(length, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src, 0.0)
    lo = np.floor(src).astype(np.int64)
    lo = np.minimum(lo, t - 1)
    hi = np.minimum(lo + 1, t - 1)
    w = (src - lo).astype(np.float32)[:, None]
    return (feats[lo] * (1.0 - w) + feats[hi] * w).astype(np.float32)


@dataclasses.dataclass
class FeatureReader:
    """Reads `[T, C]` float32 features of a video from one or more streams.

    folders: one entry per stream (a folder, or an .h5 file with one dataset per video).
    input_dim: expected total width after concatenation (None: no check).
    downsample_rate: keep every n-th feature (ActionFormer `downsample_rate`).
    """
    folders: Sequence[str]
    file_prefix: str = ""
    file_ext: str = ".npy"
    npz_key: str = "feats"
    input_dim: Optional[int] = None
    downsample_rate: int = 1

    @classmethod
    def from_config(cls, dataset_cfg) -> "FeatureReader":
        """Build from a `DatasetConfig` (feat_folder, file_prefix, file_ext, npz_key, input_dim)."""
        folders = dataset_cfg.feat_folder
        if isinstance(folders, str):
            folders = [folders]
        if not folders:
            raise ValueError("dataset.feat_folder is empty: give one folder (or .h5 file) per stream")
        return cls(folders=list(folders), file_prefix=dataset_cfg.file_prefix or "",
                   file_ext=dataset_cfg.file_ext, npz_key=dataset_cfg.npz_key,
                   input_dim=dataset_cfg.input_dim, downsample_rate=dataset_cfg.downsample_rate)

    def __post_init__(self):
        if isinstance(self.folders, str):
            self.folders = [self.folders]
        self.folders = [os.fspath(f) for f in self.folders]
        for folder in self.folders:
            if not os.path.exists(folder):
                raise FileNotFoundError(f"feature folder not found: {folder}")
        if self.downsample_rate < 1:
            raise ValueError(f"downsample_rate must be >= 1, got {self.downsample_rate}")

    # ------------------------------------------------------------------ reading
    def has(self, video_id: str) -> bool:
        """True when every stream has this video."""
        return all(self._exists(f, video_id) for f in self.folders)

    def _exists(self, folder, video_id):
        if _is_h5_file(folder):
            import h5py
            with h5py.File(folder, "r") as h5:
                return (self.file_prefix + video_id) in h5
        return os.path.isfile(feature_file(folder, video_id, self.file_prefix, self.file_ext))

    def read_stream(self, folder: str, video_id: str) -> np.ndarray:
        """One stream's raw `[T, C]` array (checked for shape, dtype and values)."""
        if _is_h5_file(folder):
            import h5py
            key = self.file_prefix + video_id
            with h5py.File(folder, "r") as h5:
                if key not in h5:
                    raise FileNotFoundError(f"{folder}: video '{video_id}': no dataset '{key}' in the HDF5 file")
                arr = np.asarray(h5[key][()])
            return self._check(arr, folder, video_id)
        path = feature_file(folder, video_id, self.file_prefix, self.file_ext)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"video '{video_id}': feature file not found: {path}")
        ext = self.file_ext.lower()
        try:
            if ext == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    if self.npz_key not in data.files:
                        raise ValueError(f"{path}: video '{video_id}': no array '{self.npz_key}' "
                                         f"(dataset.npz_key) in the .npz (has {data.files})")
                    arr = data[self.npz_key]
            elif ext in _H5_EXTS:
                import h5py
                with h5py.File(path, "r") as h5:
                    keys = list(h5.keys())
                    key = self.npz_key if self.npz_key in h5 else (keys[0] if len(keys) == 1 else None)
                    if key is None:
                        raise ValueError(f"{path}: video '{video_id}': expected one dataset or "
                                         f"'{self.npz_key}', has {keys}")
                    arr = np.asarray(h5[key][()])
            else:
                arr = np.load(path, allow_pickle=False)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                RuntimeError, SyntaxError, tokenize.TokenError, KeyError, TypeError,
                IndexError) as err:
            # np.load / h5py on a truncated, CRC-damaged or empty file; a damaged .npy header
            # (numpy parses it as a Python literal: SyntaxError / TokenError); a damaged HDF5
            # file (h5py raises KeyError/RuntimeError on broken internal addresses)
            raise ValueError(f"{path}: video '{video_id}': unreadable feature file ({err})") from None
        except ValueError as err:
            if str(path) in str(err):
                raise
            raise ValueError(f"{path}: video '{video_id}': unreadable feature file ({err})") from None
        return self._check(arr, path, video_id)

    def _check(self, arr, path, video_id):
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub":
            raise ValueError(f"{path}: video '{video_id}': features must be numeric, got dtype "
                             f"{getattr(arr, 'dtype', type(arr))}")
        if arr.ndim != 2:
            raise ValueError(f"{path}: video '{video_id}': features must be 2-D [T, C], got shape {arr.shape}")
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"{path}: video '{video_id}': empty features (shape {arr.shape})")
        arr = arr.astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise ValueError(f"{path}: video '{video_id}': features contain NaN/inf "
                             f"(first at step {bad[0]}, channel {bad[1]})")
        return arr

    def __call__(self, video_id: str) -> np.ndarray:
        """`[T, C]` float32: streams concatenated along channels, then downsampled."""
        parts = [self.read_stream(f, video_id) for f in self.folders]
        lengths = [p.shape[0] for p in parts]
        if len(set(lengths)) > 1:
            raise ValueError(f"video '{video_id}': streams have different lengths {lengths} "
                             f"({', '.join(self.folders)})")
        feats = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if self.input_dim is not None and feats.shape[1] != self.input_dim:
            widths = "+".join(str(p.shape[1]) for p in parts)
            files = ", ".join(f if _is_h5_file(f) else feature_file(f, video_id, self.file_prefix,
                                                                    self.file_ext)
                              for f in self.folders)
            raise ValueError(f"{files}: video '{video_id}': feature width {widths} = "
                             f"{feats.shape[1]} does not match dataset.input_dim = {self.input_dim}")
        if self.downsample_rate > 1:
            feats = feats[::self.downsample_rate]
        return np.ascontiguousarray(feats, dtype=np.float32)

    def video_ids(self) -> set:
        """Ids of the videos present in every stream."""
        sets = [list_feature_ids(f, self.file_prefix, self.file_ext) for f in self.folders]
        return set.intersection(*sets) if sets else set()


def list_feature_ids(folder: str, prefix: str = "", ext: str = ".npy") -> set:
    """Video ids with a feature file in `folder` (or dataset keys of an .h5 file)."""
    if _is_h5_file(folder):
        import h5py
        with h5py.File(folder, "r") as h5:
            return {k[len(prefix):] for k in h5.keys() if k.startswith(prefix)}
    out = set()
    for path in glob.glob(os.path.join(glob.escape(folder), f"{glob.escape(prefix)}*{glob.escape(ext)}")):
        name = os.path.basename(path)
        out.add(name[len(prefix):len(name) - len(ext)])
    return out


def match_records(records: Iterable, reader: FeatureReader, *, require_all: bool = False,
                  features_only: bool = False):
    """Pair annotation records with feature files.

    Returns (kept records, ids of records without features). A record without features is
    skipped (ActionFormer does the same) unless `require_all`, then ValueError. With
    `features_only` (a run over a feature folder), a feature file whose video has no
    annotation entry raises ValueError.
    """
    records = list(records)
    available = reader.video_ids()
    kept = [r for r in records if r.video_id in available]
    missing = [r.video_id for r in records if r.video_id not in available]
    if missing and require_all:
        raise ValueError(f"{len(missing)} annotated videos have no features in "
                         f"{', '.join(reader.folders)} (e.g. video '{missing[0]}')")
    if features_only:
        known = {r.video_id for r in records}
        extra = sorted(available - known)
        if extra:
            raise ValueError(f"{reader.folders[0]}: video '{extra[0]}' has features but no annotation "
                             f"entry ({len(extra)} such videos)")
    return kept, missing


def check_features(records: Iterable, reader: FeatureReader):
    """Read every record's feature file once and validate it (width, dtype, NaN/inf, T > 0),
    as `asl-data check` does; raise the reader's ValueError naming the file on the first bad one.
    Returns the number of feature steps per video. Use before a tf.data pipeline, which would
    otherwise surface the error as an `InvalidArgumentError` in the middle of training."""
    return {r.video_id: reader(r.video_id).shape[0] for r in records}
