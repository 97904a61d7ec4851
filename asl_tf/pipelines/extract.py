"""Beam `extract`: videos -> the frame encoder -> `OUT/<stem>.npy` + `OUT/manifest.json`, the
same files as `asl-extract-features` (both call `asl_tf.features.extract.process_one`).

    videos (folder | list | glob | file) -> Extract (one encoder per worker, built in setup;
      skip videos the manifest already has; bad video -> dead letter) -> manifest.json

The manifest is read on the driver (refusing a folder of another recipe or encoder weights,
as `asl-extract-features` does) and rewritten once at the end with every new entry; a video
that failed is listed under "failed" and in `OUT/_failed/<stem>.json`.
"""
import glob
import os

import apache_beam as beam

from asl_tf.errors import UserError
from asl_tf.pipelines import common


def list_inputs(spec):
    """A glob pattern, or what `asl-extract-features --videos` takes -> {stem: path}."""
    from asl_tf.features import extract as ex
    if any(ch in os.fspath(spec) for ch in "*?[") and not os.path.exists(spec):
        paths = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
        if not paths:
            raise UserError(f"--videos {spec}: the pattern matches no file")
    else:
        paths = ex.list_videos(spec)
    return ex.stems(paths)


class ExtractVideo(beam.DoFn):
    """(stem, path) -> main (stem, info) | `skipped` stem | `failed` (stem, "extract", error)."""

    def __init__(self, out_dir, recipe_dict, weights, threads, finished):
        self.out_dir, self.recipe_dict, self.weights = out_dir, recipe_dict, weights
        self.threads, self.finished = threads, set(finished)
        self.seconds = common.counter("video_seconds_milli")
        self.skipped = common.counter("videos_skipped")
        self.done = common.counter("videos_done")

    def setup(self):
        from asl_tf.features.recipe import Recipe
        self.recipe = Recipe.from_dict(self.recipe_dict)
        self.encoder = None   # built on the first video that needs it

    def process(self, item):
        from asl_tf.features import extract as ex
        stem, path = item
        if stem in self.finished and os.path.isfile(os.path.join(self.out_dir, stem + ".npy")):
            self.skipped.inc()
            yield beam.pvalue.TaggedOutput("skipped", stem)
            return
        if self.encoder is None:
            self.encoder = ex.keras_encoder(self.recipe, self.weights)
        stem, info, err = ex.process_one(stem, path, self.out_dir, self.recipe, self.encoder,
                                         self.threads)
        if err is not None:
            yield beam.pvalue.TaggedOutput("failed", (stem, "extract", err))
            return
        common.clear_failure(self.out_dir, stem)
        self.seconds.inc(int(round(1000 * info["duration"])))
        self.done.inc()
        yield stem, info


def write_manifest(outcomes, out_dir, manifest):
    """outcomes: [("ok", stem, info) | ("failed", stem, error)] -> manifest.json (atomic)."""
    from asl_tf.features import extract as ex
    for kind, stem, value in outcomes:
        if kind == "ok":
            manifest["videos"][stem] = value
            manifest["failed"].pop(stem, None)
        else:
            manifest["failed"][stem] = value
    ex.write_manifest(out_dir, manifest)
    return len(manifest["videos"])


def build(p, videos, out_dir, config=None, weights=None, threads=None):
    """Add the extract pipeline to `p` (driver: list videos, check the output folder)."""
    from asl_tf.features import default_weights_path
    from asl_tf.features import extract as ex
    from asl_tf.features.recipe import load_recipe
    recipe = load_recipe(config)
    todo = list_inputs(videos)
    weights = weights or default_weights_path()
    if not os.path.isfile(weights):
        raise UserError(f"--weights {weights}: no such file")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out {out_dir}: exists and is not a folder")
    os.makedirs(out_dir, exist_ok=True)
    encoder_info = {"name": recipe.encoder, "weights": os.path.basename(weights),
                    "weights_sha256": ex.sha256(weights)}
    manifest = ex.read_manifest(out_dir, recipe, encoder_info)
    res = (p | "Videos" >> beam.Create(sorted(todo.items()))
           | "Extract" >> beam.ParDo(ExtractVideo(out_dir, recipe.to_dict(), weights, threads,
                                                  manifest["videos"]))
           .with_outputs("skipped", "failed", main="ok"))
    _ = res.failed | "DeadLetter" >> beam.ParDo(common.DeadLetter(out_dir))
    ok = res.ok | "OkEntries" >> beam.Map(lambda kv: ("ok", kv[0], kv[1]))
    bad = res.failed | "FailedEntries" >> beam.Map(lambda f: ("failed", f[0], str(f[2])))
    return ((ok, bad) | "Outcomes" >> beam.Flatten() | "All" >> beam.combiners.ToList()
            | "Manifest" >> beam.Map(write_manifest, out_dir, manifest))
