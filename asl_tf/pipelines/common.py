"""Shared pieces of the Beam pipelines: counters, dead letters, idempotent atomic outputs.

Outputs go to a folder `OUT` that every worker can reach (a local disk for DirectRunner, a
shared file system such as NFS or a bucket mounted with gcsfuse on a cluster):
- `OUT/<video>.<ext>`: one finished output per video, written atomically; its presence
  means "done", so a rerun skips the video;
- `OUT/_failed/<video>.json`: `{"video_id", "stage", "error"}` for a video that failed
  (removed again when a later run succeeds).
"""
import json
import os

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from asl_tf.fileio import atomic_write

NAMESPACE = "asl_tf"
COUNTERS = ("videos_done", "videos_skipped", "videos_failed", "video_seconds_milli")
FAILED_DIR = "_failed"


def counter(name):
    """A Beam counter of the asl_tf namespace (one of COUNTERS)."""
    return Metrics.counter(NAMESPACE, name)


def failed_path(out_dir, video_id):
    return os.path.join(out_dir, FAILED_DIR, f"{video_id}.json")


def write_json(path, obj, indent=1):
    """Write `obj` as JSON to `path` atomically (the folder is created if missing)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


class DeadLetter(beam.DoFn):
    """(video_id, stage, error text) -> `OUT/_failed/<video>.json`; counts `videos_failed`."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.failed = counter("videos_failed")

    def process(self, item):
        video_id, stage, error = item
        write_json(failed_path(self.out_dir, video_id),
                   {"video_id": video_id, "stage": stage, "error": str(error)})
        self.failed.inc()
        yield video_id


def clear_failure(out_dir, video_id):
    """Remove a stale dead letter of a video that has now succeeded."""
    try:
        os.remove(failed_path(out_dir, video_id))
    except FileNotFoundError:
        pass


def report(result):
    """The asl_tf counters of a finished pipeline -> dict (seconds of video as a float).

    Committed values where the runner has them, else attempted ones (DirectRunner)."""
    out = {k: 0 for k in COUNTERS}
    res = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for c in res["counters"]:
        name = c.key.metric.name
        value = c.committed if c.committed is not None else c.attempted
        out[name] = out.get(name, 0) + int(value or 0)
    out["video_seconds"] = out.pop("video_seconds_milli") / 1000.0
    return out
