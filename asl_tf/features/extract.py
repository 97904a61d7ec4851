"""Videos -> snippet features `[T, C]` float32 and a manifest (asl-extract-features, pipelines).

Per video (the reusable unit, also called by the Beam pipeline):

    recipe = load_recipe("configs/features/efficientnet_lite0.yaml")
    encoder = keras_encoder(recipe)                   # or any callable frames -> features
    feats, info = extract_video("clip.mp4", recipe, encoder)

`extract_video(path, recipe, encoder, threads=None)` decodes `path` with PyAV, resamples it to
the recipe's grid by presentation timestamps, converts and resizes only the frames the recipe
encodes (`edge.frames`, the same code as the device), encodes them in batches of
`recipe.batch_size` frames with `encoder` (uint8 `[N, S, S, 3]` RGB 0..255 -> `[N, C]`) and
averages each snippet's `frames_per_snippet` features. Returns `(feats [T, C] float32, info)`,
info = {fps, feat_stride, num_frames, frames_per_snippet, duration (s), frame_count (decoded
source frames), source_fps, T, frames_encoded}. Raises `edge.frames.VideoError` (a ValueError)
for a video it cannot use (not a video, no video stream, corrupt or truncated, shorter than
one snippet) and FileNotFoundError for a missing file.

Many videos: `extract_videos(paths, out_dir, recipe, ...)` writes `<out_dir>/<stem>.npy` (the
layout `asl_tf.data.features` reads: feature_file(folder, video_id)) and
`<out_dir>/manifest.json` = {"recipe", "encoder": {name, weights, weights_sha256}, "videos":
{stem: info + file, path}, "failed": {stem: message}}; resumable (finished videos are skipped),
every file written atomically, `workers` processes.
"""
import glob
import hashlib
import json
import os

import numpy as np

from asl_tf.errors import UserError
from asl_tf.fileio import atomic_path, atomic_write

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts",
                    ".flv", ".wmv")
MANIFEST = "manifest.json"


# --- one video --------------------------------------------------------------------------
def extract_video(path, recipe, encoder, threads=None):
    """Features `[T, C]` float32 and their info for one video (see the module docstring)."""
    from edge.frames import VideoReader, iter_snippets, rgb_converter

    grid = recipe.grid()
    reader = VideoReader(path, threads=threads, strict=True)
    convert = rgb_converter(recipe.size, recipe.interpolation)
    k, batch = grid.k, max(int(recipe.batch_size) // grid.k, 1) * grid.k
    feats, pending = [], []

    def encode(frames):
        out = np.asarray(encoder(np.concatenate(frames)), np.float32)
        if out.ndim != 2 or len(out) != len(frames) * k:
            raise ValueError(f"encoder: returned shape {list(out.shape)} for "
                             f"{len(frames) * k} frames (want [N, C])")
        feats.append(out.reshape(len(frames), k, -1).mean(axis=1))

    for _, frames in iter_snippets(reader, grid, convert):
        pending.append(frames)
        if len(pending) * k >= batch:
            encode(pending)
            pending = []
    if pending:
        encode(pending)
    out = np.concatenate(feats).astype(np.float32, copy=False)
    info = {"fps": grid.fps, "feat_stride": grid.feat_stride, "num_frames": grid.num_frames,
            "frames_per_snippet": k, "duration": float(reader.duration),
            "frame_count": int(reader.frame_count), "source_fps": reader.source_fps,
            "T": int(len(out)), "C": int(out.shape[1]), "frames_encoded": int(len(out) * k)}
    return out, info


# --- the encoder ------------------------------------------------------------------------
def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def keras_encoder(recipe, weights=None):
    """The recipe's Keras encoder as a callable `frames [N, S, S, 3] -> [N, C]` float32, with
    attributes `name`, `weights_path`, `weights_sha256`."""
    from asl_tf.features import default_weights_path, efficientnet_lite0
    if recipe.encoder != "efficientnet_lite0":
        raise UserError(f"features.encoder: {recipe.encoder!r} has no Keras builder")
    weights = weights or default_weights_path()
    model = efficientnet_lite0(include_top=False, weights=weights)
    if int(model.input_shape[1]) != recipe.size:
        raise UserError(f"features.size: {recipe.size}, but the encoder takes "
                        f"{model.input_shape[1]} x {model.input_shape[1]}")

    def encode(frames):
        return np.asarray(model(np.asarray(frames, np.float32), training=False), np.float32)

    encode.name = recipe.encoder
    encode.weights_path = os.fspath(weights)
    encode.weights_sha256 = sha256(weights)
    return encode


# --- many videos ------------------------------------------------------------------------
def list_videos(spec):
    """Video paths of `spec`: a folder (its video files, sorted), a .txt/.lst list (one path a
    line, relative to the list's folder, '#' comments), or a video file."""
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        paths = sorted(p for p in glob.glob(os.path.join(spec, "*"))
                       if p.lower().endswith(VIDEO_EXTENSIONS) and os.path.isfile(p))
        if not paths:
            raise UserError(f"--videos {spec}: the folder holds no video files "
                            f"({', '.join(VIDEO_EXTENSIONS)})")
        return paths
    if not os.path.exists(spec):
        raise UserError(f"--videos {spec}: no such file or folder")
    if spec.lower().endswith((".txt", ".lst", ".list")):
        base = os.path.dirname(os.path.abspath(spec))
        with open(spec, encoding="utf-8") as f:
            lines = [ln.split("#", 1)[0].strip() for ln in f]
        paths = [ln if os.path.isabs(ln) else os.path.join(base, ln) for ln in lines if ln]
        if not paths:
            raise UserError(f"--videos {spec}: the list names no video")
        return paths
    return [spec]


def stems(paths):
    """{stem: path}; UserError when two videos share a stem (their .npy would collide)."""
    out = {}
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in out:
            raise UserError(f"--videos: {out[stem]} and {p} have the same name {stem!r} (one "
                            f"{stem}.npy per video); rename one")
        out[stem] = p
    return out


def read_manifest(out_dir, recipe, encoder_info):
    """The manifest of `out_dir` (a new one if absent); UserError when it was made with another
    recipe or encoder weights (mixing them in one folder would be silent corruption)."""
    path = os.path.join(out_dir, MANIFEST)
    new = {"recipe": recipe.to_dict(), "encoder": encoder_info, "videos": {}, "failed": {}}
    if not os.path.exists(path):
        return new
    try:
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable manifest ({err})") from None
    if old.get("recipe") != new["recipe"]:
        raise UserError(f"{path}: the folder holds features of another recipe (field 'recipe' "
                        "differs); use another --out")
    if (old.get("encoder") or {}).get("weights_sha256") != encoder_info["weights_sha256"]:
        raise UserError(f"{path}: the folder holds features of other encoder weights (field "
                        "'encoder.weights_sha256' differs); use another --out")
    old.setdefault("videos", {})
    old.setdefault("failed", {})
    return old


def write_manifest(out_dir, manifest):
    with atomic_write(os.path.join(out_dir, MANIFEST)) as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


def pending_videos(videos, out_dir, manifest):
    """The {stem: path} of `videos` not finished yet (no manifest entry or no .npy)."""
    return {s: p for s, p in videos.items()
            if not (s in manifest["videos"] and os.path.isfile(os.path.join(out_dir, s + ".npy")))}


def save_features(out_dir, stem, feats):
    with atomic_path(os.path.join(out_dir, stem + ".npy"), suffix=".npy") as tmp:
        np.save(tmp, feats)


# Worker processes: one encoder each (built once, by the initializer).
_WORKER = {}


def _init_worker(recipe_dict, weights, threads):
    import logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("absl").setLevel(logging.ERROR)
    from asl_tf.features.recipe import Recipe
    recipe = Recipe.from_dict(recipe_dict)
    _WORKER.update(recipe=recipe, encoder=keras_encoder(recipe, weights), threads=threads)


def process_one(stem, path, out_dir, recipe=None, encoder=None, threads=None):
    """Extract and save one video; returns (stem, info or None, error message or None)."""
    recipe = recipe or _WORKER["recipe"]
    encoder = encoder or _WORKER["encoder"]
    threads = threads if threads is not None else _WORKER.get("threads")
    try:
        feats, info = extract_video(path, recipe, encoder, threads=threads)
        save_features(out_dir, stem, feats)
    except (ValueError, OSError) as err:
        return stem, None, str(err).splitlines()[0] if str(err) else type(err).__name__
    info.update(file=stem + ".npy", path=os.path.abspath(path))
    return stem, info, None
