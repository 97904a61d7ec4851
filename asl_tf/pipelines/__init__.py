"""Apache Beam pipelines for work beyond one machine: `detect`, `evaluate` (and `extract`).

Each pipeline runs on any Beam runner (DirectRunner here; Flink, Spark, Dataflow by the
runner flags, see the README). They share the rules of `common`: a rerun skips finished
outputs, every output is written atomically (`asl_tf.fileio`), a bad input goes to the
dead-letter folder `OUT/_failed/<video>.json` with its error instead of failing the
pipeline, and counters (videos done / skipped / failed, seconds of video) are reported
when the pipeline ends. Only this package and `asl_tf.cli` import apache_beam.
"""
