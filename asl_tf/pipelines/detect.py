"""Beam `detect`: a feature folder -> RunInference with the exported SavedModel's in-graph
`detect` signature, keyed by video id -> `OUT/<video>.json` + `OUT/predictions.json`.

    videos (manifest) -> Load (skip finished, read + check the .npy; bad -> dead letter)
      -> RunInference(KeyedModelHandler(DetectSignatureHandler)) (errors -> dead letter)
      -> Write `OUT/<video>.json` -> all finished ids -> `OUT/predictions.json`

`OUT/<video>.json` has the schema of `asl-edge run --out`: `{"video_id", "detections":
[{"segment": [start, end] s, "score", "label", "label_name"}]}`, sorted by score.
`OUT/predictions.json` is the ActivityNet-style results file `asl-eval --pred` reads:
`{"version", "external_data", "results": {video: [{"segment", "score", "label" (class id),
"label_name"}]}}`, over every finished video of the manifest (also those of earlier runs).

The `detect` signature (export/detect_graph.py) pads one whole video by the reference
evaluation rule and runs decode + NMS in the graph, so a video no longer than the model's
`max_seq_len` gets the detections of the Keras model with the reference post-processing.
"""
import json
import os

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import (KeyedModelHandler, ModelHandler, PredictionResult,
                                           RunInference)

from asl_tf.errors import UserError
from asl_tf.pipelines import common
from asl_tf.pipelines.features_dir import check_meta, load_features, read_manifest

PREDICTIONS = "predictions.json"
SIDECAR = os.path.join("assets.extra", "asl_meta.json")


def serving_dir(saved_model):
    """`asl-export --format saved_model --out DIR` writes DIR/1/; accept DIR or DIR/1."""
    for d in (os.path.join(saved_model, "1"), saved_model):
        if os.path.isfile(os.path.join(d, "saved_model.pb")):
            return d
    raise UserError(f"--saved-model: no saved_model.pb in {saved_model} or {saved_model}/1 "
                    "(the folder given to asl-export --format saved_model --out)")


def read_sidecar(saved_model):
    """The export's metadata (input_dim, class_names, window, test_cfg ...)."""
    path = os.path.join(serving_dir(saved_model), SIDECAR)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"--saved-model: cannot read {path} ({err})") from None


class DetectSignatureHandler(ModelHandler):
    """Beam ModelHandler over the SavedModel's `detect` signature.

    Example: `{"feats": [T, C] float32, "fps", "feat_stride", "num_frames", "duration"}`;
    inference: `{"segments": [N, 2] s, "scores": [N], "labels": [N] int32}` (numpy).
    One video per call (the signature takes one unpadded video)."""

    def __init__(self, saved_model, max_batch_size=1):
        super().__init__(max_batch_size=max_batch_size)
        self.path = serving_dir(saved_model)

    def load_model(self):
        import tensorflow as tf
        return tf.saved_model.load(self.path)

    def run_inference(self, batch, model, inference_args=None):
        import tensorflow as tf
        fn = model.signatures["detect"]
        for ex in batch:
            out = fn(feats=tf.constant(ex["feats"], tf.float32),
                     **{k: tf.constant(float(ex[k]), tf.float32)
                        for k in ("fps", "feat_stride", "num_frames", "duration")})
            yield PredictionResult(ex, {k: v.numpy() for k, v in out.items()})

    def get_num_bytes(self, batch):
        return sum(int(ex["feats"].nbytes) for ex in batch)


class LoadFeatures(beam.DoFn):
    """(video_id, manifest entry) -> main (video_id, example) | `skipped` id | `failed`
    (video_id, "load", error)."""

    def __init__(self, features_dir, out_dir, input_dim):
        self.features_dir, self.out_dir, self.input_dim = features_dir, out_dir, input_dim
        self.seconds = common.counter("video_seconds_milli")
        self.skipped = common.counter("videos_skipped")

    def process(self, item):
        video_id, meta = item
        if os.path.exists(os.path.join(self.out_dir, f"{video_id}.json")):
            self.skipped.inc()
            yield beam.pvalue.TaggedOutput("skipped", video_id)
            return
        try:
            m = check_meta(video_id, meta)
            feats = load_features(os.path.join(self.features_dir, f"{video_id}.npy"),
                                  self.input_dim)
        except (ValueError, OSError) as err:
            yield beam.pvalue.TaggedOutput("failed", (video_id, "load", err))
            return
        self.seconds.inc(int(round(1000 * m["duration"])))
        yield video_id, {"feats": feats, **m}


class WriteDetections(beam.DoFn):
    """(video_id, PredictionResult) -> `OUT/<video>.json` (atomic); yields the id."""

    def __init__(self, out_dir, class_names):
        self.out_dir, self.class_names = out_dir, list(class_names)
        self.done = common.counter("videos_done")

    def process(self, item):
        video_id, result = item
        out = result.inference
        dets = []
        for seg, score, label in zip(np.asarray(out["segments"]).reshape(-1, 2),
                                     np.asarray(out["scores"]).reshape(-1),
                                     np.asarray(out["labels"]).reshape(-1)):
            k = int(label)
            dets.append({"segment": [float(seg[0]), float(seg[1])], "score": float(score),
                         "label": k, "label_name": self.class_names[k]
                         if 0 <= k < len(self.class_names) else str(k)})
        dets.sort(key=lambda d: -d["score"])
        common.write_json(os.path.join(self.out_dir, f"{video_id}.json"),
                          {"video_id": video_id, "detections": dets})
        common.clear_failure(self.out_dir, video_id)
        self.done.inc()
        yield video_id


def _failed_batch(bad):
    """A RunInference dead-letter element (batch, error) -> [(video_id, "detect", error)]."""
    batch, err = bad
    text = err[1] if isinstance(err, tuple) and len(err) > 1 else str(err)
    return [(key, "detect", text) for key, _ in batch]


def write_predictions(video_ids, out_dir):
    """Merge the finished per-video files into `OUT/predictions.json` (atomic)."""
    results = {}
    for vid in sorted(set(video_ids)):
        with open(os.path.join(out_dir, f"{vid}.json"), encoding="utf-8") as f:
            results[vid] = json.load(f)["detections"]
    common.write_json(os.path.join(out_dir, PREDICTIONS),
                      {"version": "asl-tf beam detect", "external_data": {},
                       "results": results}, indent=None)
    return len(results)


def build(p, saved_model, features_dir, out_dir, batch_size=1):
    """Add the detect pipeline to Beam pipeline `p` (driver-side checks raise UserError)."""
    videos = read_manifest(features_dir)
    side = read_sidecar(saved_model)
    handler = KeyedModelHandler(DetectSignatureHandler(saved_model, max_batch_size=batch_size))
    os.makedirs(out_dir, exist_ok=True)
    loaded = (p | "Videos" >> beam.Create(sorted(videos.items()))
              | "Load" >> beam.ParDo(LoadFeatures(features_dir, out_dir, side["input_dim"]))
              .with_outputs("skipped", "failed", main="todo"))
    results, dlq = loaded.todo | "Detect" >> RunInference(handler).with_exception_handling()
    written = results | "Write" >> beam.ParDo(WriteDetections(out_dir, side["class_names"]))
    inf_failed = dlq.failed_inferences | "InferenceErrors" >> beam.FlatMap(_failed_batch)
    _ = ((loaded.failed, inf_failed) | "Failures" >> beam.Flatten()
         | "DeadLetter" >> beam.ParDo(common.DeadLetter(out_dir)))
    return ((written, loaded.skipped) | "Finished" >> beam.Flatten()
            | "AllIds" >> beam.combiners.ToList()
            | "Predictions" >> beam.Map(write_predictions, out_dir))
