"""Multi-worker training throughput: `asl-train`'s loop with 1 process (default strategy),
1 worker and 2 workers of MultiWorkerMirroredStrategy (TF_CONFIG, localhost ports, 1 CPU each).

    python bench/multi_worker.py [--steps 24] [--batch 4] [--json OUT.json]

Data: the seeded toy dataset of the tests (tests/training_toy.py, T <= 32, 8 channels) with
a wider model (`--width`, default 128) so a step is not all overhead. Each run trains
`--steps` optimizer steps with the same global batch (2 workers: half each) in graph mode;
steps/s is timed from the end of step 4 (tracing and the first collectives excluded) to the
last step. Prints one JSON document with the ratios.
"""
import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
SKIP = 4


def child(cfg_path, workdir, strategy, out):
    sys.path.insert(0, str(REPO))
    import keras

    from asl_tf.experiment import train
    from asl_tf.config import load_config
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter())

    train(load_config(cfg_path), workdir, strategy=strategy, verbose=0, backup_every=10 ** 6,
          callbacks=[Timer()], collective_timeout=300)
    if out:
        n = len(times) - SKIP
        with open(out, "w") as f:
            json.dump({"steps_timed": n, "steps_per_s": n / (times[-1] - times[SKIP - 1])}, f)


def _ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def launch(cfg, root, name, workers):
    """workers = 0: one process, default strategy; else a cluster of `workers` processes."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    env.pop("TF_CONFIG", None)
    cpus = sorted(os.sched_getaffinity(0))
    n = max(workers, 1)
    ports = _ports(n)
    procs, out = [], os.path.join(root, name + ".json")
    for i in range(n):
        e = dict(env)
        if workers:
            e["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                         "task": {"type": "worker", "index": i}})
        cmd = [sys.executable, __file__, "--child", cfg, os.path.join(root, name),
               "multi_worker" if workers else "default", out if i == 0 else ""]
        procs.append(subprocess.Popen(cmd, env=e, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True,
                                      preexec_fn=lambda i=i: os.sched_setaffinity(
                                          0, {cpus[i % len(cpus)]})))
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"{name}: worker failed\n{err[-3000:]}")
    with open(out) as f:
        return json.load(f)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from training_toy import toy_config_yaml, write_toy_dataset
    root = tempfile.mkdtemp(prefix="asl-mw-bench-")
    data = os.path.join(root, "data")
    # steps = 2 epochs (1 warm-up) x n_train / batch
    write_toy_dataset(data, n_train=args.steps * args.batch // 2, n_val=2)
    w = args.width
    extra = (f"model:\n  embd_dim: {w}\n  fpn_dim: {w}\n  head_dim: {w}\n")
    cfg = toy_config_yaml(data, str(REPO), epochs=1, eval_every=0, extra=extra)
    with open(cfg) as f:
        text = f.read().replace("batch_size: 2", f"batch_size: {args.batch}")
    # the toy YAML's own model section comes first; merge the override into it
    text = text.replace(extra, "").replace("  embd_dim: 16\n  fpn_dim: 16\n  head_dim: 16\n",
                                           f"  embd_dim: {w}\n  fpn_dim: {w}\n  head_dim: {w}\n")
    with open(cfg, "w") as f:
        f.write(text)
    res = {"steps": args.steps, "global_batch": args.batch, "width": w,
           "cpus": len(os.sched_getaffinity(0)), "load_avg_start": os.getloadavg()[0], "runs": {}}
    for name, workers in (("single_process", 0), ("mw_1_worker", 1), ("mw_2_workers", 2)):
        res["runs"][name] = launch(cfg, root, name, workers)
    r = res["runs"]
    res["ratios"] = {
        "mw_2_vs_mw_1": r["mw_2_workers"]["steps_per_s"] / r["mw_1_worker"]["steps_per_s"],
        "mw_2_vs_single_process": r["mw_2_workers"]["steps_per_s"] / r["single_process"]["steps_per_s"],
        "mw_1_vs_single_process": r["mw_1_worker"]["steps_per_s"] / r["single_process"]["steps_per_s"]}
    res["load_avg_end"] = os.getloadavg()[0]
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
