"""`asl-train`: train an ASL / ActionFormer detector with `model.fit`, resumable.

    asl-train --config configs/X.yaml --workdir runs/X [--override key.sub=value ...]
              [--strategy default|mirrored|multi_worker] [--mixed_precision off|auto|
              mixed_bfloat16|mixed_float16] [--xla] [--backup_every N] [--force]
              [--inter_op_threads N]

Memory: `--override train_cfg.remat=true` recomputes each transformer block's attention and
MLP in the backward pass instead of keeping their activations, and `--inter_op_threads 1`
runs one op at a time; together with `--mixed_precision mixed_bfloat16` they bring the
THUMOS14-config step (batch 2, T=2304) under the PyTorch reference's peak RSS
(bench/train_step.py, mode `bf16_lean`).

The workdir layout and resuming are described in `asl_tf.experiment` (the runner this
flags front-end calls).
"""
from absl import flags

from asl_tf.cli._common import run_app

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("config", None, "Experiment YAML config.")
    flags.DEFINE_string("workdir", None, "Run folder (checkpoints, logs); rerun to resume.")
    flags.DEFINE_multi_string("override", [], "Config override key.sub=value (repeatable).")
    flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                      "tf.distribute strategy.")
    flags.DEFINE_string("mixed_precision", "off",
                        "off | auto (bf16 on CPU, fp16 on GPU) | mixed_bfloat16 | mixed_float16.")
    flags.DEFINE_bool("xla", False, "Compile the train step with XLA (jit_compile).")
    flags.DEFINE_integer("backup_every", 100, "Steps between resumable backups.")
    flags.DEFINE_bool("force", False, "Restart a workdir that holds another config's run.")
    flags.DEFINE_integer("verbose", 1, "Keras fit verbosity (1 = progress bar).")
    flags.DEFINE_bool("deterministic", True, "tf.config.experimental.enable_op_determinism().")
    flags.DEFINE_bool("run_eagerly", False, "Debug / tiny runs: no graph tracing.")
    flags.DEFINE_integer("inter_op_threads", 0,
                         "TensorFlow inter-op threads (0: TensorFlow's default). 1 runs one op "
                         "at a time, which lowers peak memory (bench/train_step.py).")
    flags.DEFINE_integer("collective_timeout", 600,
                         "multi_worker: seconds a cross-worker all-reduce may wait for a peer "
                         "before the step fails (0: no limit).")


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.config:
        raise ValueError("--config is required")
    if not FLAGS.workdir:
        raise ValueError("--workdir is required")
    if FLAGS.inter_op_threads < 0:
        raise ValueError(f"--inter_op_threads must be >= 0, got {FLAGS.inter_op_threads}")
    if FLAGS.inter_op_threads:
        import tensorflow as tf
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    from asl_tf.config import load_config
    from asl_tf.experiment import train
    from asl_tf import training
    from asl_tf.training import NonFiniteLossError
    if FLAGS.strategy == "multi_worker":   # a lost peer is reported once, by _peer_lost
        import logging as py_logging
        py_logging.getLogger("tensorflow").addFilter(
            lambda rec: not rec.getMessage().startswith("Error reported to Coordinator"))
    cfg = load_config(FLAGS.config, overrides=FLAGS.override)
    try:
        train(cfg, FLAGS.workdir, strategy=FLAGS.strategy, mixed_precision=FLAGS.mixed_precision,
              xla=FLAGS.xla, force=FLAGS.force, backup_every=FLAGS.backup_every,
              verbose=FLAGS.verbose, deterministic=FLAGS.deterministic,
              run_eagerly=FLAGS.run_eagerly, collective_timeout=FLAGS.collective_timeout)
    except NonFiniteLossError as err:
        raise ValueError(str(err)) from None
    except Exception as err:  # noqa: BLE001  (only a lost peer is turned into one line)
        if FLAGS.strategy != "multi_worker" or not training.peer_failure(err):
            raise
        _peer_lost(err)
    return 0


def _peer_lost(err):
    """A peer worker died or hung: one line on stderr, exit 1 without waiting on the
    collective runtime's threads (which can block interpreter shutdown)."""
    import os
    import sys

    from asl_tf import training
    first = (str(err).strip().splitlines() or [""])[0][:200]
    step = training.StepBackup(os.path.join(FLAGS.workdir, "backup")).load_step()
    print(f"asl-train: error: multi_worker: lost contact with a peer worker "
          f"({type(err).__name__}: {first}); restart every worker with the same command to "
          f"resume from the last backup (step {step}, {FLAGS.workdir}/backup)",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


def run():
    run_app(main, define_flags)


if __name__ == "__main__":
    run()
