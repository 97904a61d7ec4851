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

Rerunning the same command resumes: the workdir keeps `config.json` (the resolved config),
`backup/state.weights.h5` + `backup/state.json` (weights, optimizer moments, EMA, loss
normaliser and the step, saved every `--backup_every` steps and at the end), `log.csv`,
`tb/` (TensorBoard), `best.weights.h5` (best validation average mAP with the EMA weights,
when `train_cfg.eval_every > 0` and the validation split exists), `final.weights.h5` and
`final_ema.weights.h5`. The resumed run restarts at the saved step with the seeded input
stream skipped to the same batch, so a killed run ends with the weights of an uninterrupted
one. A workdir holding another config's run is refused unless `--force` (which restarts).
"""
import dataclasses
import json
import os

from absl import flags, logging

from asl_tf.cli._common import run_app
from asl_tf.fileio import atomic_path, atomic_write

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
                         "before the step fails (0: no limit; TF's health check still aborts "
                         "when a peer is unreachable).")


def _diff(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _diff(a.get(k), b.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    return None if a == b else prefix.rstrip(".")


def _check_workdir(cfg_dict, workdir, force):
    """Refuse a workdir of another config (unless force: then clear its backup)."""
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        key = _diff(old, cfg_dict)
        if key is not None:
            if not force:
                raise ValueError(f"workdir {workdir} holds a run of another config "
                                 f"({path}: '{key}' differs); use --force to restart it")
            import shutil
            shutil.rmtree(os.path.join(workdir, "backup"), ignore_errors=True)
            for name in ("log.csv", "best.weights.h5", "final.weights.h5", "final_ema.weights.h5"):
                if os.path.exists(os.path.join(workdir, name)):
                    os.remove(os.path.join(workdir, name))
    os.makedirs(workdir, exist_ok=True)
    with atomic_write(path) as f:
        json.dump(cfg_dict, f, indent=1, sort_keys=True)


def _records(cfg, splits):
    from asl_tf.data.annotations import read_annotations
    ds = cfg.dataset
    out, names = [], None
    for split in splits:
        path = ds.val_json_file if (ds.val_json_file and splits is ds.val_split) else ds.json_file
        ann = read_annotations(path, ds.format, split=split, video_info=ds.video_info,
                               label=ds.label, label_offset=ds.label_offset,
                               default_fps=ds.default_fps, feat_stride=ds.feat_stride,
                               num_frames=ds.num_frames, class_file=ds.class_file,
                               num_classes=ds.num_classes)
        out += list(ann.records)
        names = names or ann.class_names
    return out, names


def train(cfg, workdir, *, strategy="default", mixed_precision="off", xla=False, force=False,
          backup_every=100, verbose=1, deterministic=True, run_eagerly=False, callbacks=(),
          collective_timeout=None):
    """Train `cfg` (ExperimentConfig) in `workdir`, resuming from its backup. Returns
    `(model, history dict)`; the model holds the raw (non-EMA) final weights.

    `strategy="multi_worker"`: one call per worker process (cluster from `TF_CONFIG`); the
    chief writes `workdir`, the others `workdir/.worker-<i>`, and all resume from the chief's
    backup (`workdir` must be on a file system every worker sees)."""
    import keras
    import tensorflow as tf

    from asl_tf import training
    from asl_tf.data import pipeline
    from asl_tf.data.features import FeatureReader
    from asl_tf.model.detector import build_detector

    tc = cfg.train_cfg
    strat = training.make_strategy(strategy, collective_timeout)  # first TF op (multi_worker)
    out_dir = training.write_dir(workdir, strat)
    _check_workdir(cfg.to_dict(), out_dir, force)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(int(tc.seed) % (2 ** 31))
    training.set_precision(mixed_precision)
    records, names = _records(cfg, cfg.dataset.train_split)
    if cfg.dataset.class_names is None and names:
        cfg.dataset.class_names = list(names)
    reader = FeatureReader.from_config(cfg.dataset)
    steps = pipeline.steps_per_epoch(len(records), tc.batch_size)
    total_epochs = int(tc.epochs + tc.warmup_epochs)
    with strat.scope():
        model = build_detector(cfg.model_dict())
        training.set_remat(model, bool(tc.remat))
        training.attach_metrics(model)
        opt = training.build_optimizer(model, dataclasses.asdict(cfg.opt), dataclasses.asdict(tc), steps)
        model.compile(optimizer=opt, jit_compile=bool(xla), run_eagerly=bool(run_eagerly))
        model.optimizer.build(model.trainable_variables)  # the LossScaleOptimizer wrapper too
    training.keras_multi_worker_build(model, strat)

    backup = training.StepBackup(os.path.join(out_dir, "backup"), backup_every)
    restore = training.StepBackup(os.path.join(workdir, "backup"))   # the chief's
    step = restore.load_step()
    if step is not None:
        model.load_weights(restore.weights_path)
        logging.info("resuming %s at step %d", workdir, step)
    step = step or 0
    cbs = [training.NonFiniteLossStop(), backup]
    eval_cb = None
    if tc.eval_every and tc.eval_every > 0 and cfg.dataset.val_split:
        try:
            val_records, _ = _records(cfg, cfg.dataset.val_split)
        except ValueError as err:
            logging.warning("no validation evaluation: %s", err)
            val_records = []
        if val_records:
            from asl_tf.evaluation import default_tious
            val_ds = pipeline.make_eval_dataset(val_records, reader, cfg.dataset,
                                                max_div=model.max_div_factor, prefetch=False,
                                                max_stride=max(model.fpn_strides))
            eval_cb = training.EvalCallback(val_ds, val_records, default_tious(cfg.dataset.name),
                                            every=tc.eval_every)
            cbs += [eval_cb, keras.callbacks.ModelCheckpoint(
                os.path.join(out_dir, "best.weights.h5"), monitor="val_mAP", mode="max",
                save_best_only=True, save_weights_only=True)]
    cbs.append(keras.callbacks.CSVLogger(os.path.join(out_dir, "log.csv"), append=True))
    if training.tensorboard_available():
        cbs.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "tb"), update_freq="epoch",
                                               write_graph=False))
    else:
        logging.warning("tensorboard is not installed: no TensorBoard logs (log.csv has them)")
    cbs += list(callbacks)

    history = {}

    def fit(ds, first_epoch, n_steps, last_epoch):
        ds = training.distributable(ds, strat)
        h = model.fit(ds, initial_epoch=first_epoch, epochs=last_epoch, steps_per_epoch=n_steps,
                      callbacks=cbs, verbose=verbose)
        for k, v in h.history.items():
            history.setdefault(k, []).extend(v)

    seed = int(tc.seed)
    e0, b0 = divmod(step, steps)
    if e0 < total_epochs and b0 > 0:  # finish the interrupted epoch at the exact batch
        ds = pipeline.make_train_dataset(records, reader, cfg.dataset, batch_size=tc.batch_size,
                                         seed=seed, start_epoch=e0, num_epochs=1).skip(b0)
        fit(ds, e0, steps - b0, e0 + 1)
        e0 += 1
    if e0 < total_epochs:
        ds = pipeline.make_train_dataset(records, reader, cfg.dataset, batch_size=tc.batch_size,
                                         seed=seed, start_epoch=e0)
        fit(ds, e0, steps, total_epochs)
    _save(model, os.path.join(out_dir, "final.weights.h5"))
    raw = [v.numpy() for v in model.trainable_variables]
    if training.use_ema_weights(model):
        _save(model, os.path.join(out_dir, "final_ema.weights.h5"))
        for v, r in zip(model.trainable_variables, raw):
            v.assign(r)
    return model, history


def _save(model, path):
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp, overwrite=True)


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
