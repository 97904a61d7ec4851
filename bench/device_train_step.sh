#!/usr/bin/env bash
# Training steps of the THUMOS14-config ASLDetector on a GPU machine that has JAX (and PyTorch)
# but NO TensorFlow, with the Keras JAX backend and mixed precision; prints JSON
# (steps/s, median s/step, peak GPU memory).
#
#   bench/device_train_step.sh --fetch          # on a machine WITH internet: download the wheels
#                                               # into bench/wheels/ (~10 MB, git-ignored)
#   bench/device_train_step.sh [STEPS] [PRECISION]   # on the GPU machine (offline)
#        STEPS default 20 (after 2 warm-up steps), PRECISION mixed_bfloat16 | mixed_float16 | float32
#        (env CONFIG=configs/X.yaml: another config; tests/test_perf_paths.py runs the Python
#        part with configs/demo.yaml on the JAX CPU backend)
#
# What travels to the device: the repository tree (asl_tf/, configs/, bench/) plus bench/wheels/
# (keras 3.15.1 and the few pure-Python deps a JAX image usually lacks), well under 64 MiB.
# It installs them into a throw-away venv that sees the system JAX (--system-site-packages),
# so nothing on the machine changes. Uses asl_tf's model, label assignment, losses and ASL
# branches (keras.ops only) with Keras' own stateless JAX train step (jit), through
# ASLDetector.compute_loss; TensorFlow-only modules (tf.data, the TF train step) are not used.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
WHEELS="${WHEELS:-$HERE/wheels}"
PKGS=(keras==3.15.1 namex optree typing-extensions rich markdown-it-py mdurl pygments h5py absl-py PyYAML packaging)

if [[ "${1:-}" == "--fetch" ]]; then
  mkdir -p "$WHEELS"
  python3 -m pip download --only-binary=:all: --no-deps --python-version 3.11 \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
      -d "$WHEELS" "${PKGS[@]}"
  du -sh "$WHEELS"
  exit 0
fi

STEPS="${1:-20}"
PRECISION="${2:-mixed_bfloat16}"
OUTDIR="${OUT:-$(mktemp -d)}"
if ! ls "$WHEELS"/keras-3.15.1-*.whl >/dev/null 2>&1; then
  echo "no keras wheel in $WHEELS: run '$0 --fetch' on a machine with internet first" >&2
  exit 2
fi
python3 -c "import jax" || { echo "this script needs JAX on the device" >&2; exit 2; }

VENV="$OUTDIR/venv"
python3 -m venv --system-site-packages "$VENV"
# only the packages missing from the image are installed, from the local wheels
"$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" keras==3.15.1 PyYAML absl-py 2>&1 | tail -n 3

cd "$REPO"
KERAS_BACKEND=jax STEPS="$STEPS" PRECISION="$PRECISION" CONFIG="${CONFIG:-configs/thumos14_i3d.yaml}" PYTHONPATH="$REPO" "$VENV/bin/python" - <<'PY'
import json, os, time
import numpy as np
import jax, keras
from asl_tf import training
from asl_tf.config import load_config
from asl_tf.model.detector import ASLDetector

assert keras.backend.backend() == "jax"
steps, precision = int(os.environ["STEPS"]), os.environ["PRECISION"]
cfg = load_config(os.environ.get("CONFIG", "configs/thumos14_i3d.yaml"))
md = cfg.model_dict()              # ASL switches as in the config (all on)
if precision != "float32":
    keras.mixed_precision.set_global_policy(precision)


keras.utils.set_random_seed(0)
model = ASLDetector(md)   # on JAX: Keras' stateless train step -> compute_loss
tc = {"epochs": 30, "warmup_epochs": 5, "clip_grad_l2norm": 1.0, "ema_decay": 0.999}
model.compile(optimizer=training.build_optimizer(model, {"learning_rate": 1e-4, "weight_decay": 0.05},
                                                 tc, 100), jit_compile=True)
b, t, c = 2, md["max_seq_len"], md["input_dim"]
rng = np.random.default_rng(0)
x = {"feats": rng.normal(size=(b, t, c)).astype(np.float32), "mask": np.ones((b, t), bool)}
x["mask"][1, int(0.87 * t):] = False
gt = np.array([[0.04, 0.08], [0.26, 0.39], [0.65, 0.67]]) * t      # 3 actions per video
y = {"gt_segments": np.array([gt] * b, np.float32),
     "gt_labels": np.array([[1, 5, 9]] * b, np.int32)}
times = []


class Timer(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        # the step's outputs (the variables' values are purged from the model during a JAX fit)
        jax.block_until_ready(logs)
        times.append(time.perf_counter() - self.t0)


warm = 2
xs = {k: np.concatenate([v] * (warm + steps)) for k, v in x.items()}
ys = {k: np.concatenate([v] * (warm + steps)) for k, v in y.items()}
h = model.fit(xs, ys, batch_size=b, epochs=1, shuffle=False, verbose=0, callbacks=[Timer()])
dev = jax.devices()[0]
stats = dev.memory_stats() or {}
med = float(np.median(times[warm:]))
print(json.dumps({"benchmark": "device_train_step", "device": str(dev), "backend": "jax",
                  "precision": precision, "batch": b, "seq_len": t, "asl": md["asl"],
                  "first_step_s": times[0], "median_s_per_step": med, "steps_per_s": 1.0 / med,
                  "peak_gpu_mem_gb": stats.get("peak_bytes_in_use", float("nan")) / 1024 ** 3,
                  "loss": float(h.history["loss"][-1])}, indent=1))
PY
