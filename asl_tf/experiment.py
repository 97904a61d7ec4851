"""The experiment runner: build the detector, fit it with the project's callbacks, evaluate.

`train(cfg, workdir, ...)` is the one training loop: `asl-train`, the demo (`asl-demo`) and
`bench/ablation.py` all call it. It reads the config's splits with
`asl_tf.data.annotations.read_dataset`, builds `ASLDetector` under the distribution strategy
with the precision policy, compiles the ASL train step (AdamW, warm-up + cosine, clip, EMA),
and runs `model.fit` with NaN stop, step backups, validation mAP, CSV and TensorBoard logs.

The workdir keeps `config.json` (the resolved config),
`backup/state.weights.h5` + `backup/state.json` (weights, optimizer moments, EMA, loss
normaliser and the step, saved every `backup_every` steps and at the end), `log.csv`,
`tb/` (TensorBoard), `best.weights.h5` (best validation average mAP with the EMA weights,
when `train_cfg.eval_every > 0` and the validation split exists), `final.weights.h5`,
`final_ema.weights.h5` and `final.keras` (the final EMA model: what `asl-export --model` takes). Rerunning resumes at the saved step with the seeded input
stream skipped to the same batch, so a killed run ends with the weights of an uninterrupted
one. A workdir holding another config's run is refused unless `force` (which restarts).

`detect_records(model, records, reader)` and `score(records, dets, class_names, tious)` are
the evaluation half: whole-video Keras inference + `edge.postprocess`, then mAP per tIoU.
"""
import dataclasses
import json
import os
import re

import numpy as np
from absl import logging

from asl_tf.errors import UserError
from asl_tf.fileio import atomic_path, atomic_write


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
            for name in ("log.csv", "best.weights.h5", "final.weights.h5", "final_ema.weights.h5",
                         "final.keras"):
                if os.path.exists(os.path.join(workdir, name)):
                    os.remove(os.path.join(workdir, name))
    os.makedirs(workdir, exist_ok=True)
    with atomic_write(path) as f:
        json.dump(cfg_dict, f, indent=1, sort_keys=True)


def read_records(cfg, which):
    """(records, class names) of the config's "train" or "val" split."""
    from asl_tf.data.annotations import read_dataset
    ann = read_dataset(cfg.dataset, which)
    return list(ann.records), ann.class_names


def train(cfg, workdir, *, strategy="default", mixed_precision="off", xla=False, force=False,
          backup_every=100, verbose=1, deterministic=True, run_eagerly=False, callbacks=(),
          evaluate=True, ema_weights=False, collective_timeout=None):
    """Train `cfg` (ExperimentConfig) in `workdir`, resuming from its backup. Returns
    `(model, history dict)`.

    evaluate: run the validation-mAP callback every `train_cfg.eval_every` epochs (and keep
    `best.weights.h5`) when the validation split exists. ema_weights: leave the EMA weights
    in the returned model (what ActionFormer evaluates); otherwise the raw final weights.

    `strategy="multi_worker"`: one call per worker process (cluster from `TF_CONFIG`); the
    chief writes `workdir`, the others `workdir/.worker-<i>`, and all resume from the chief's
    backup (`workdir` must be on a file system every worker sees). `collective_timeout`: s a
    cross-worker collective may wait for a peer."""
    import keras
    import tensorflow as tf

    from asl_tf import training
    from asl_tf.data import pipeline
    from asl_tf.data.features import FeatureReader, check_features
    from asl_tf.model.detector import build_detector

    tc = cfg.train_cfg
    strat = training.make_strategy(strategy, collective_timeout)  # first TF op (multi_worker)
    out_dir = training.write_dir(workdir, strat)
    os.makedirs(out_dir, exist_ok=True)  # an unwritable workdir fails first (nothing in it yet)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(int(tc.seed) % (2 ** 31))
    training.set_precision(mixed_precision)
    records, names = read_records(cfg, "train")
    if cfg.dataset.class_names is None and names:
        cfg.dataset.class_names = list(names)
    reader = FeatureReader.from_config(cfg.dataset)
    check_features(records, reader)  # a bad file: one line naming it, before anything is written
    _check_workdir(cfg.to_dict(), out_dir, force)  # config.json only once the inputs are good
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
        restore.set_model(model)
        step = restore.restore()  # weights, optimizer state and the random generators' state
        logging.info("resuming %s at step %d", workdir, step)
    step = step or 0
    cbs = [training.NonFiniteLossStop(), backup]
    eval_cb = None
    if evaluate and tc.eval_every and tc.eval_every > 0 and cfg.dataset.val_split:
        try:
            val_records, _ = read_records(cfg, "val")
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
        try:
            h = model.fit(ds, initial_epoch=first_epoch, epochs=last_epoch,
                          steps_per_epoch=n_steps, callbacks=cbs, verbose=verbose)
        except tf.errors.InvalidArgumentError as err:  # a reader error raised inside tf.data
            found = re.search(r"ValueError: (.+)", err.message or "")
            if found is None:
                raise
            raise UserError(found.group(1).strip()) from None
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
    ema = training.use_ema_weights(model)
    if ema:
        _save(model, os.path.join(out_dir, "final_ema.weights.h5"))
    # the model `asl-export --model` takes: the EMA weights (ActionFormer evaluates the EMA)
    with atomic_path(os.path.join(out_dir, "final.keras"), suffix=".keras") as tmp:
        model.save(tmp)
    if ema and not ema_weights:
        for v, r in zip(model.trainable_variables, raw):
            v.assign(r)
    return model, history


def _save(model, path):
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp, overwrite=True)


def detect_records(model, records, reader):
    """{video_id: detections in seconds} of whole-video inference (`asl_tf.inference`) on each
    record's features (trimmed eval padding). records: `VideoRecord`s with fps, feat_stride, num_frames, duration."""
    from asl_tf.inference import detect_video

    return {r.video_id: detect_video(model, reader(r.video_id), r.fps, r.feat_stride,
                                     r.num_frames, r.duration, trim=True)
            for r in records}


def score(records, dets, class_names, tious):
    """mAP per tIoU of {video: {"segments" [M,2] s, "scores" [M], "labels" [M]}} against the
    records' ground truth. Returns `asl_tf.evaluation.average_map`'s dict."""
    from asl_tf.evaluation import GroundTruth, Predictions, average_map

    gt = GroundTruth([r.video_id for r in records],
                     np.concatenate([np.full(len(r.labels), i) for i, r in enumerate(records)]),
                     np.concatenate([np.asarray(r.segments, np.float64).reshape(-1, 2)
                                     for r in records]),
                     np.concatenate([np.asarray(r.labels, np.int64) for r in records]),
                     dict(enumerate(class_names)))
    preds = Predictions.from_detections([{"video_id": vid, **d} for vid, d in dets.items()])
    return average_map(gt, preds, tious, warn=False)
