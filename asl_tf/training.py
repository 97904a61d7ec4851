"""Training of `ASLDetector`: optimizer, schedule, TF train step, callbacks, strategies.

- `build_optimizer`: Keras `AdamW` (betas 0.9/0.999, eps 1e-8) with the reference's weight-decay
  rule (decay only conv / linear kernels, i.e. variables of rank >= 2; no decay on biases,
  norms, `Scale`, drop-path scales, and the ASL Gaussians in the normalised mode), the
  learning rate `lr_schedule` (Keras `CosineDecay`: linear warm-up from 0 over
  `warmup_epochs`, then cosine to `eta_min` over `epochs`, stepped per iteration), weight EMA
  (`use_ema`, `ema_momentum = train_cfg.ema_decay`, used for evaluation), global clip.
- `train_step(model, data)`: the TensorFlow step `ASLDetector.train_step` delegates to.
  Under a `tf.distribute` strategy each replica's loss is its share of the global-batch loss
  (local sums / the global normaliser, the positive count all-reduced), the gradients are
  all-reduced, their global norm is measured and clipped on the global gradient, and the
  normaliser EMA is updated identically on every replica (the reference loses this update
  under DataParallel). Logs: loss, cls_loss, reg_loss (+ quality_loss, ascl_loss), num_pos,
  loss_normalizer, grad_norm (before clipping), lr.
- Other backends (JAX, torch) train through `ASLDetector.compute_loss` and Keras' own step
  (the optimizer then clips and EMA-averages).
- Callbacks: `EvalCallback` (detection with `edge.postprocess` + `asl_tf.evaluation` mAP on
  the validation split with the EMA weights every N epochs), `NonFiniteLossStop`,
  `StepBackup` (step-level backup for exact resume; Keras' `BackupAndRestore` only resumes
  at epoch starts) and `default_callbacks` (ModelCheckpoint best by `val_mAP`, StepBackup,
  TensorBoard, CSVLogger).
"""
import json
import math
import os

import keras
import numpy as np
from absl import logging

from asl_tf import inference
from asl_tf.errors import UserError
from asl_tf.fileio import atomic_path, atomic_write

LOSS_KEYS = ("cls_loss", "reg_loss", "quality_loss", "ascl_loss")
GLOBAL_KEYS = ("num_pos", "loss_normalizer", "grad_norm")


# --------------------------------------------------------------------------- optimizer
def lr_schedule(learning_rate, steps_per_epoch, epochs, warmup_epochs, eta_min=1e-8):
    """Linear warm-up from 0 then cosine to `eta_min`, per step (Keras `CosineDecay`)."""
    warm = int(round(warmup_epochs * steps_per_epoch))
    decay = max(int(round(epochs * steps_per_epoch)), 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warm > 0 else learning_rate, decay_steps=decay,
        alpha=float(eta_min) / float(learning_rate), warmup_target=learning_rate if warm > 0 else None,
        warmup_steps=warm)


def decay_variables(model):
    """Variables that get weight decay: conv / linear kernels (rank >= 2) and, in the
    authors' class-level mode, the ASL Gaussians (the authors decay them)."""
    from asl_tf.model.sensitivity import asl_options
    out = [v for v in model.trainable_variables if len(v.shape) >= 2]
    sens = getattr(model, "class_sensitivity", None)
    if sens is not None and asl_options(getattr(model, "asl_cfg", None))["class_mode"] == "authors":
        out += list(sens.trainable_variables)
    return out


@keras.saving.register_keras_serializable(package="asl_tf")
class AdamWEMA(keras.optimizers.AdamW):
    """Keras AdamW whose EMA does NOT overwrite the model at the end of `fit`.

    Keras' `finalize_variable_values` copies the EMA into the model when `fit` returns; a run
    resumed mid-epoch calls `fit` twice, which would then continue from the EMA instead of the
    raw weights. Here the EMA stays in the optimizer; use `EMAWeights` / `use_ema_weights`.
    """

    def finalize_variable_values(self, var_list):
        return None


def use_ema_weights(model):
    """Copy the optimizer's EMA into the model's trainable weights (permanently)."""
    opt = getattr(model, "optimizer", None)
    ema = getattr(opt, "_model_variables_moving_average", None) if opt is not None else None
    if opt is None or not getattr(opt, "use_ema", False) or not ema:
        return False
    for v, e in zip(model.trainable_variables, ema):
        v.assign(e)
    return True


def build_optimizer(model, opt_cfg, train_cfg, steps_per_epoch, clip_in_optimizer=None):
    """AdamW + schedule + EMA for `model` from the `opt` and `train_cfg` sections (dicts).

    `clip_in_optimizer`: clip in the optimizer (other backends); the TF `train_step` clips
    the all-reduced gradient itself. Default: True unless the backend is TensorFlow.
    """
    if str(opt_cfg.get("type", "AdamW")).lower() != "adamw":
        raise ValueError(f"opt.type: only AdamW is supported, got {opt_cfg.get('type')!r}")
    if clip_in_optimizer is None:
        # the TF train step clips the all-reduced gradient itself, except under mixed_float16
        # where the gradients it sees are loss-scaled: the (inner) optimizer clips after unscaling
        clip_in_optimizer = (keras.backend.backend() != "tensorflow"
                             or keras.mixed_precision.global_policy().name == "mixed_float16")
    clip = float(train_cfg.get("clip_grad_l2norm", 1.0) or -1)
    sched = lr_schedule(float(opt_cfg.get("learning_rate", 1e-4)), steps_per_epoch,
                        float(train_cfg.get("epochs", 30)), float(train_cfg.get("warmup_epochs", 5)),
                        float(opt_cfg.get("eta_min", 1e-8)))
    ema = float(train_cfg.get("ema_decay", 0.999) or 0)
    opt = AdamWEMA(
        learning_rate=sched, weight_decay=float(opt_cfg.get("weight_decay", 0.0)),
        beta_1=0.9, beta_2=0.999, epsilon=1e-8,
        global_clipnorm=clip if (clip_in_optimizer and clip > 0) else None,
        use_ema=ema > 0, ema_momentum=ema if ema > 0 else 0.99)
    decay_ids = {id(v) for v in decay_variables(model)}
    opt.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if id(v) not in decay_ids])
    opt.asl_clip_norm = clip  # read by train_step
    return opt


# --------------------------------------------------------------------------- metrics
def attach_metrics(model):
    """Create the per-component loss trackers (`ASLDetector._build_asl` does, before build;
    calling it again is a no-op)."""
    if getattr(model, "asl_trackers", None):
        return
    model.asl_trackers = {k: keras.metrics.Mean(name=k) for k in LOSS_KEYS + GLOBAL_KEYS}


# --------------------------------------------------------------------------- train step
def _assign_everywhere(variable, value):
    """Assign the same value to a (possibly mirrored) variable from replica context."""
    import tensorflow as tf
    ctx = tf.distribute.get_replica_context()
    var = variable.value if isinstance(variable, keras.Variable) else variable
    if ctx is None or ctx.num_replicas_in_sync == 1 or not tf.distribute.has_strategy():
        variable.assign(value)
        return

    def merge(strategy, v):
        strategy.extended.update(var, lambda x, y: x.assign(y), args=(v,), group=False)

    ctx.merge_call(merge, args=(value,))


def train_step(model, data):
    """One TensorFlow training step (see the module docstring). `data = (x, y)`."""
    import tensorflow as tf
    from asl_tf import losses

    x, y = data[0], data[1]
    ctx = tf.distribute.get_replica_context()
    n_rep = ctx.num_replicas_in_sync if ctx is not None else 1
    reduce = (lambda v: ctx.all_reduce(tf.distribute.ReduceOp.SUM, v)) if n_rep > 1 else None
    replica = None
    if n_rep > 1:
        replica = {"gather": lambda t: ctx.all_gather(t, axis=0), "sum": reduce,
                   "index": ctx.replica_id_in_sync_group}
    opt = model.optimizer
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        comps = losses.detector_loss(model, x, y, y_pred, training=True, num_pos_reduce=reduce,
                                     return_components=True, num_replicas=n_rep,
                                     assign_normalizer=False, replica=replica)
        loss = comps["final_loss"]
        scaled = opt.scale_loss(loss) if hasattr(opt, "scale_loss") else loss
    tvars = model.trainable_variables
    grads = tape.gradient(scaled, tvars)
    grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, tvars)]
    loss_scaled = isinstance(opt, keras.optimizers.LossScaleOptimizer)
    if n_rep > 1:
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    gnorm = tf.linalg.global_norm(grads)
    clip = getattr(opt, "asl_clip_norm", -1.0)
    if loss_scaled:
        # mixed_float16: gradients are scaled; the inner optimizer unscales, checks and clips
        # (the scale the loss was multiplied by: dynamic_scale once built, initial_scale before)
        gnorm = gnorm / tf.cast(opt.scale_loss(tf.constant(1.0, gnorm.dtype)), gnorm.dtype)
    elif clip and clip > 0:
        grads, _ = tf.clip_by_global_norm(grads, clip, use_norm=gnorm)
    if n_rep > 1:
        # the Keras optimizer all-reduces (sums) again: hand it 1/n of the global gradient
        grads = [g / n_rep for g in grads]
    opt.apply(grads, tvars)
    _assign_everywhere(model.loss_normalizer, tf.cast(comps["loss_normalizer"], model.loss_normalizer.dtype))

    # logs: per-replica losses are shares of the global loss -> report n * share (averaged)
    logs = {}
    model._loss_tracker.update_state(loss * n_rep)
    logs["loss"] = model._loss_tracker.result()
    trackers = getattr(model, "asl_trackers", None) or {}
    for k in LOSS_KEYS:
        if k in comps and k in trackers:
            trackers[k].update_state(comps[k] * n_rep)
    for k, v in (("num_pos", comps["num_pos"]), ("loss_normalizer", comps["loss_normalizer"]),
                 ("grad_norm", gnorm)):
        if k in trackers:
            trackers[k].update_state(v)
    for k, t in trackers.items():
        if k in comps or k in GLOBAL_KEYS:
            logs[k] = t.result()
    if _across_workers():
        # Keras 3.15 averages logs across workers with strategy.reduce("MEAN", v, axis=0),
        # which needs a batch axis: hand it [1]-shaped values (the mean is then taken over
        # the workers, as MirroredStrategy's logs are over its local replicas)
        logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
    return logs


def _across_workers():
    """True inside a MultiWorkerMirroredStrategy of more than one worker."""
    import tensorflow as tf
    strat = tf.distribute.get_strategy()
    return (isinstance(strat, tf.distribute.MultiWorkerMirroredStrategy)
            and strat.extended._in_multi_worker_mode())


# --------------------------------------------------------------------------- callbacks
class NonFiniteLossError(RuntimeError):
    """Raised when the training loss turns NaN/inf (the last good checkpoint is kept)."""


class NonFiniteLossStop(keras.callbacks.Callback):
    """Stop at the first non-finite loss, naming the step, before any checkpoint is written.

    Place it FIRST in the callback list so BackupAndRestore / ModelCheckpoint never save the
    broken state; it raises `NonFiniteLossError`.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            step = int(self.model.optimizer.iterations.numpy())
            msg = f"training loss became {float(loss)} at step {step} (batch {batch}); stopped, last good checkpoint kept"
            self.model.stop_training = True
            raise NonFiniteLossError(msg)  # the CLI prints it as its one error line


def seed_generators(model):
    """Every `keras.random.SeedGenerator` of the model's layers, in a fixed (build) order."""
    out = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        out += list(getattr(layer, "_seed_generators", None) or [])
    return out


class StepBackup(keras.callbacks.Callback):
    """Step-level backup for exact resume: every `every` optimizer steps (and at the end of
    `fit`) the model weights WITH the optimizer state (moments, EMA, iteration count) and the
    loss normaliser go to `<dir>/state.weights.h5`, and `{"step": n}` to `<dir>/state.json`,
    each written to a temp file and renamed.

    Keras' `BackupAndRestore` restores only the epoch (a mid-epoch kill replays the epoch's
    first batches, so the weights differ); the training loop of `asl-train` instead restarts
    at the exact step, with the seeded input stream skipped to the same batch.
    """

    def __init__(self, directory, every=100):
        super().__init__()
        self.directory, self.every = directory, max(int(every), 1)

    @property
    def weights_path(self):
        return os.path.join(self.directory, "state.weights.h5")

    def step(self):
        return int(np.asarray(self.model.optimizer.iterations.numpy()))

    def save(self):
        os.makedirs(self.directory, exist_ok=True)
        step = self.step()
        with atomic_path(self.weights_path, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp, overwrite=True)
        rng = [np.asarray(g.state.numpy()).tolist() for g in seed_generators(self.model)]
        with atomic_write(os.path.join(self.directory, "state.json")) as f:
            f.write(json.dumps({"step": step, "rng": rng}))

    def restore(self):
        """Load the backup into `self.model`: weights, optimizer state, and the state of every
        random generator of the model (drop-path, dropout: `save_weights` leaves them out, so a
        resumed run would draw other masks). Returns the saved step."""
        self.model.load_weights(self.weights_path)
        with open(os.path.join(self.directory, "state.json")) as f:
            meta = json.load(f)
        gens = seed_generators(self.model)
        rng = meta.get("rng")
        if rng is not None:
            if len(rng) != len(gens):
                raise UserError(f"{self.directory}/state.json: {len(rng)} random generator "
                                f"states for a model with {len(gens)}")
            for g, value in zip(gens, rng):
                g.state.assign(np.asarray(value, dtype=g.state.dtype))
        return int(meta["step"])

    def load_step(self):
        """The saved step, or None when there is no complete backup."""
        meta = os.path.join(self.directory, "state.json")
        if not (os.path.exists(meta) and os.path.exists(self.weights_path)):
            return None
        with open(meta) as f:
            return int(json.load(f)["step"])

    def on_train_batch_end(self, batch, logs=None):
        if self.step() % self.every == 0:
            self.save()

    def on_train_end(self, logs=None):
        self.save()


class EMAWeights:
    """Context manager: swap the optimizer's EMA weights into the model and back."""

    def __init__(self, model):
        self.model = model
        opt = getattr(model, "optimizer", None)
        self.ema = getattr(opt, "_model_variables_moving_average", None) if opt is not None and opt.use_ema else None

    def __enter__(self):
        if self.ema:
            tv = self.model.trainable_variables
            self.saved = [v.numpy() for v in tv]
            for v, e in zip(tv, self.ema):
                v.assign(e)
        return self.model

    def __exit__(self, *exc):
        if self.ema:
            for v, s in zip(self.model.trainable_variables, self.saved):
                v.assign(s)
        return False


def _meta_value(v):
    v = np.asarray(v)
    v = v.reshape(-1)[0] if v.size else v
    return v.decode() if isinstance(v, bytes) else (v.item() if hasattr(v, "item") else v)


class EvalCallback(keras.callbacks.Callback):
    """Every `every` epochs: detect on the validation set with the EMA weights, compute mAP.

    Args:
        dataset: iterable of `(x, meta)` with batch 1 (`meta`: video_id, fps, feat_stride,
            num_frames, duration).
        gt: `asl_tf.evaluation.GroundTruth` or a list of `VideoRecord`s (seconds).
        tious: tIoU thresholds. Adds `val_mAP` (average mAP) and `val_mAP@<tiou>` to the logs.
    """

    def __init__(self, dataset, gt, tious, every=1, use_ema=True):
        super().__init__()
        self.dataset, self.gt, self.tious = dataset, gt, np.asarray(tious, np.float64)
        self.every, self.use_ema = max(int(every), 1), use_ema
        self.last = None

    def evaluate(self):
        from asl_tf.evaluation import evaluate_detections
        dets = []
        ctx = EMAWeights(self.model) if self.use_ema else _Null(self.model)
        with ctx:
            for x, meta in self.dataset:
                m = {k: _meta_value(v) for k, v in meta.items()}
                d = inference.detect_window(self.model, x["feats"], x["mask"], m["fps"],
                                            m["feat_stride"], m["num_frames"], m["duration"])
                d["video_id"] = str(_meta_value(meta["video_id"]))
                dets.append(d)
        res = evaluate_detections(self.gt, dets, self.tious, warn=False)
        return res

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or (epoch + 1) % self.every:
            return
        res = self.evaluate()
        logs["val_mAP"] = float(res["average_mAP"])
        for t, m in zip(self.tious, res["mAP_per_tiou"]):
            logs[f"val_mAP@{t:.2f}"] = float(m)
        self.last = res
        logging.info("epoch %d: val average mAP %.4f", epoch + 1, logs["val_mAP"])


class _Null:
    def __init__(self, model):
        self.model = model

    def __enter__(self):
        return self.model

    def __exit__(self, *exc):
        return False


def tensorboard_available():
    """True when the `tensorboard` package (needed by keras.callbacks.TensorBoard) imports."""
    import importlib.util
    return importlib.util.find_spec("tensorboard") is not None


def default_callbacks(workdir, eval_cb=None, backup_every_steps=50, tensorboard=True):
    """NaN stop first, then eval (adds val_mAP), best checkpoint, step backup, logs."""
    cbs = [NonFiniteLossStop(), StepBackup(os.path.join(workdir, "backup"), backup_every_steps)]
    if eval_cb is not None:
        cbs.append(eval_cb)
        cbs.append(keras.callbacks.ModelCheckpoint(
            os.path.join(workdir, "best.weights.h5"), monitor="val_mAP", mode="max",
            save_best_only=True, save_weights_only=True))
    cbs.append(keras.callbacks.ModelCheckpoint(os.path.join(workdir, "last.weights.h5"),
                                               save_weights_only=True))
    cbs.append(keras.callbacks.CSVLogger(os.path.join(workdir, "log.csv"), append=True))
    if tensorboard and tensorboard_available():
        cbs.append(keras.callbacks.TensorBoard(os.path.join(workdir, "tb"), update_freq="epoch"))
    return cbs


# --------------------------------------------------------------------------- strategy / precision
def make_strategy(name="default", collective_timeout=None):
    """`default` | `mirrored` | `multi_worker` tf.distribute strategy.

    `multi_worker` reads the cluster from `TF_CONFIG` (README); it must be created before any
    other TensorFlow op of the process. `collective_timeout` (seconds): a cross-worker
    all-reduce / all-gather that waits longer fails (DeadlineExceededError) instead of
    hanging when a peer is gone; TensorFlow's peer health check also aborts them.
    """
    import tensorflow as tf
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        opts = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=float(collective_timeout) if collective_timeout else None)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=opts)
    raise ValueError(f"--strategy: expected default|mirrored|multi_worker, got {name!r}")


def worker_role(strategy):
    """(is_chief, task_type, task_id) of this process; single-process strategies: chief.

    The chief is task `chief`, or `worker` 0 when the cluster has no `chief` (TF's rule)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    ttype = getattr(resolver, "task_type", None) if resolver is not None else None
    if not ttype:
        return True, None, None
    tid = int(resolver.task_id or 0)
    cluster = resolver.cluster_spec().as_dict()
    is_chief = ttype == "chief" or (ttype == "worker" and tid == 0 and "chief" not in cluster)
    return is_chief, ttype, tid


def write_dir(workdir, strategy):
    """Where this process writes: `workdir` for the chief, `workdir/.<type>-<id>` for the
    other workers (their checkpoints and logs are copies; only the chief's count, and every
    worker resumes from the chief's `workdir/backup`)."""
    is_chief, ttype, tid = worker_role(strategy)
    return workdir if is_chief else os.path.join(workdir, f".{ttype}-{tid}")


PEER_ERRORS = ("UnavailableError", "DeadlineExceededError", "CancelledError", "AbortedError")


def peer_failure(err):
    """True when `err` is how a multi-worker step fails after a peer died or hung."""
    return type(err).__name__ in PEER_ERRORS


def distributable(dataset, strategy):
    """Make a training dataset safe for Keras `fit` under a multi-replica strategy.

    Keras (3.15) reduces the first distributed batch with MEAN to build the model symbolically,
    which fails on the bool `mask`; under more than one replica the mask is sent as float32
    (the detector casts it anyway). One replica: unchanged.
    Across workers the global batch is split by element (auto-shard policy DATA): every
    worker builds the same seeded stream and replica r takes slice r of each global batch,
    as MirroredStrategy does within one process.
    """
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return dataset
    import tensorflow as tf
    if worker_role(strategy)[1] is not None:
        opts = tf.data.Options()
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = dataset.with_options(opts)
    return dataset.map(lambda x, y: ({**x, "mask": tf.cast(x["mask"], tf.float32)}, y))


def keras_multi_worker_build(model, strategy):
    """Let Keras `fit` start under MultiWorkerMirroredStrategy with our dict batches.

    Keras 3.15 `fit` first reduces one distributed batch with `strategy.reduce("MEAN")` to
    build the model symbolically; across workers that reduce cannot take a nested (dict)
    batch and fails. Only shapes and dtypes matter there, so this instance-level override
    takes the first local replica's batch instead (no cross-worker traffic). No-op for
    single-process strategies.
    """
    if worker_role(strategy)[1] is None:
        return
    import types

    import tensorflow as tf

    def local(v):
        return v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(local, next(it))
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)


def set_precision(mixed):
    """`mixed`: off | auto (bf16 on CPU, fp16 on GPU) | mixed_bfloat16 | mixed_float16."""
    if mixed in (None, "", "off", "float32", False):
        keras.mixed_precision.set_global_policy("float32")
        return "float32"
    if mixed in ("auto", True, "on"):
        import tensorflow as tf
        mixed = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    if mixed not in ("mixed_bfloat16", "mixed_float16"):
        raise ValueError(f"--mixed_precision: expected off|auto|mixed_bfloat16|mixed_float16, got {mixed!r}")
    keras.mixed_precision.set_global_policy(mixed)
    return mixed


def set_remat(model, on=True):
    """Turn rematerialisation of every transformer block's attention and MLP on or off
    (`TransformerBlock.remat`: recompute in the backward pass instead of keeping activations).

    Returns the number of blocks changed. Refuses (ValueError) when a block has attention or
    projection dropout, whose recomputation would draw a different mask.
    """
    from asl_tf.model.layers import TransformerBlock
    blocks = [l for l in model._flatten_layers(include_self=False, recursive=True)
              if isinstance(l, TransformerBlock)]
    if on:
        bad = [b.name for b in blocks if b.attn_pdrop > 0 or b.proj_pdrop > 0]
        if bad:
            raise ValueError(f"remat needs attn_pdrop = proj_pdrop = 0 (a recomputed dropout "
                             f"draws a new mask); blocks with dropout: {', '.join(bad)}")
    for b in blocks:
        b.remat = bool(on)
    return len(blocks)
