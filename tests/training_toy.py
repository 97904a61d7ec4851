"""Tiny 2-level toy detector and data for the training tests (kept small: a few steps on CPU)."""
import json
import os

import numpy as np

TOY_MODEL = {
    "backbone_arch": [2, 0, 1], "n_mha_win_size": 5, "embd_dim": 16, "fpn_dim": 16,
    "head_dim": 16, "n_head": 2, "regression_range": [[0, 4], [4, 10000]],
    "input_dim": 8, "num_classes": 3, "max_seq_len": 32,
    "train_cfg": {"init_loss_norm": 10, "droppath": 0.0},
}


def toy_model(asl=None, **train_cfg):
    from asl_tf.model.detector import build_detector
    cfg = json.loads(json.dumps(TOY_MODEL))
    cfg["train_cfg"].update(train_cfg)
    if asl is not None:
        cfg["asl"] = asl
    return build_detector(cfg)


def toy_batches(n=4, seed=0, t=32, g=3):
    """`n` videos with class evidence inside their GT; numpy (x, y) dicts."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(3, 8)).astype(np.float32) * 2
    feats = rng.normal(size=(n, t, 8)).astype(np.float32)
    mask = np.ones((n, t), bool)
    segs = np.zeros((n, g, 2), np.float32)
    labels = np.full((n, g), -1, np.int32)
    for i in range(n):
        mask[i, t - int(rng.integers(0, 6)):] = False if i % 2 else True
        k = int(rng.integers(1, g + 1))
        for j in range(k):
            s = float(rng.integers(0, t - 10))
            e = s + float(rng.integers(3, 10))
            c = int(rng.integers(0, 3))
            segs[i, j] = (s, e)
            labels[i, j] = c
            feats[i, int(s):int(e) + 1] += protos[c]
    feats *= mask[..., None]
    return {"feats": feats, "mask": mask}, {"gt_segments": segs, "gt_labels": labels}


def write_toy_dataset(root, n_train=8, n_val=4, seed=0, num_classes=3, dim=8, fps=10.0):
    """ActionFormer-format annotations + .npy features (feat_stride = num_frames = 1 frame)."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(num_classes, dim)).astype(np.float32) * 2
    os.makedirs(os.path.join(root, "features"), exist_ok=True)
    db = {}
    for i in range(n_train + n_val):
        vid = f"v{i:03d}"
        t = int(rng.integers(24, 33))
        x = rng.normal(size=(t, dim)).astype(np.float32)
        anns = []
        for _ in range(int(rng.integers(1, 3))):
            s = int(rng.integers(0, t - 10))
            e = s + int(rng.integers(4, 10))
            c = int(rng.integers(0, num_classes))
            x[s:e] += protos[c]
            # grid = sec*fps - 0.5 (num_frames 1, stride 1): sec = (grid + 0.5) / fps
            anns.append({"label": f"c{c}", "label_id": c,
                         "segment": [(s + 0.5) / fps, (e + 0.5) / fps]})
        np.save(os.path.join(root, "features", vid + ".npy"), x)
        db[vid] = {"subset": "training" if i < n_train else "validation",
                   "duration": (t + 0.5) / fps, "fps": fps, "annotations": anns}
    with open(os.path.join(root, "annotations.json"), "w") as f:
        json.dump({"version": "toy", "database": db}, f)


def toy_config_yaml(root, repo, epochs=2, eval_every=1, extra=""):
    path = os.path.join(root, "toy.yaml")
    with open(path, "w") as f:
        f.write(f"""_base_: {repo}/configs/_base_/actionformer.yaml
name: toy
dataset:
  name: thumos14
  format: actionformer
  json_file: {root}/annotations.json
  feat_folder: [{root}/features]
  train_split: [training]
  val_split: [validation]
  feat_stride: 1
  num_frames: 1
  input_dim: 8
  num_classes: 3
  max_seq_len: 32
model:
  backbone_arch: [2, 0, 1]
  n_mha_win_size: 5
  embd_dim: 16
  fpn_dim: 16
  head_dim: 16
  n_head: 2
  regression_range: [[0, 4], [4, 10000]]
opt:
  learning_rate: 0.01
  weight_decay: 0.05
train_cfg:
  epochs: {epochs}
  warmup_epochs: 1
  batch_size: 2
  init_loss_norm: 10
  clip_grad_l2norm: 1.0
  droppath: 0.0
  ema_decay: 0.9
  eval_every: {eval_every}
  seed: 7
test_cfg:
  pre_nms_topk: 100
  max_seg_num: 20
  min_score: 0.001
{extra}""")
    return path
