"""Edge latency of the egocentric preset (configs/ego4d_mq_edge.yaml) on 1 thread; prints JSON.

Exports the preset's detector to TFLite at its window with `export.api.export_model`, then runs
`asl-edge bench` in a subprocess (no TensorFlow loaded there, so peak RSS is the device's).
Without --model_keras the detector is randomly initialised (no trained Ego4D checkpoint ships):
the model latency is that of the trained model; the end-to-end stream number then includes
NMS over the many low-score candidates of an untrained model (an upper bound).

    python bench/edge_ego4d.py [--config configs/ego4d_mq_edge.yaml] [--quantize none|fp16|dynamic]
        [--hop 192] [--threads 1]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "ego4d_mq_edge.yaml"))
    ap.add_argument("--model_keras", default=None, help="trained .keras (default: random init)")
    ap.add_argument("--quantize", default="none", choices=["none", "fp16", "dynamic"])
    ap.add_argument("--hop", type=int, default=192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--windows", type=int, default=20)
    ap.add_argument("--workdir", default=None, help="keep the export here")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, REPO)
    from asl_tf.config import load_config
    from export.api import export_model

    cfg = load_config(args.config)
    if args.model_keras:
        from export.api import load_model
        model, trained = load_model(args.model_keras), True
    else:
        from asl_tf.model.detector import build_detector
        model, trained = build_detector(cfg.model_dict()), False
    work = args.workdir or tempfile.mkdtemp(prefix="edge_ego4d_")
    out = os.path.join(work, f"ego4d_edge_{args.quantize}.tflite")
    ds = cfg.dataset
    export_model(model, "tflite", out, quantize=args.quantize, force=True, verify=False,
                 video_meta={
        "feat_stride": ds.feat_stride, "num_frames": ds.num_frames, "fps": ds.default_fps})
    env = dict(os.environ, PYTHONPATH=REPO)
    res = subprocess.run([sys.executable, "-m", "edge.cli", "bench", "--model", out,
                          "--threads", str(args.threads), "--hop", str(args.hop),
                          "--windows", str(args.windows)],
                         capture_output=True, text=True, env=env, check=True)
    rep = json.loads(res.stdout)
    rep.update({"config": os.path.relpath(args.config, REPO), "trained": trained,
                "quantize": args.quantize,
                "model_size_mb": os.path.getsize(out) / 1e6,
                "params": int(model.count_params())})
    print(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
