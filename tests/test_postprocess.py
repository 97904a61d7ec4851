"""edge.postprocess against the ActionFormer goldens (NMS in six modes, decode, full postprocess)."""
import ast
import json

import numpy as np
import pytest

from conftest import FIXTURES
from eval_loop_reference import loop_soft_nms as _softnms_loop
from edge.postprocess import (batched_nms, decode, make_points, postprocess, sigmoid,
                              to_seconds)

NMS = FIXTURES / "golden" / "nms"
MODEL = FIXTURES / "golden" / "model"
MODES = ["hard_multiclass", "hard_agnostic_novote", "hard_agnostic_vote",
         "soft_multiclass", "soft_agnostic_novote", "soft_agnostic_vote"]


def _nms_cases():
    params = json.loads((NMS / "visible_params.json").read_text())
    for case in params["cases"]:
        for mode in case["modes"]:
            yield case["key"], mode["mode"], mode["args"], mode["n_out"]


@pytest.mark.parametrize("key,mode,args,n_out", list(_nms_cases()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_batched_nms_golden(key, mode, args, n_out):
    inp = np.load(NMS / "visible_inputs.npz")
    out = np.load(NMS / "visible_outputs.npz")
    segs, scores, labels = batched_nms(inp[f"{key}_segs"], inp[f"{key}_scores"],
                                       inp[f"{key}_labels"], **args)
    exp_segs = out[f"{key}_{mode}_segs"]
    exp_scores = out[f"{key}_{mode}_scores"]
    exp_labels = out[f"{key}_{mode}_labels"]
    assert len(labels) == n_out == len(exp_labels)
    np.testing.assert_array_equal(labels, exp_labels)
    np.testing.assert_allclose(scores, exp_scores, rtol=1e-5, atol=0)
    np.testing.assert_allclose(segs, exp_segs, rtol=1e-5, atol=1e-4)
    assert segs.dtype == np.float32 and scores.dtype == np.float32
    assert labels.dtype == np.int64


def _loop_batched_nms(segs, scores, labels, args):
    """Loop reference for the no-voting modes: the literal hard / soft NMS loops below, per class
    (multiclass) or over all inputs, then a stable sort by score, capped at max_seg_num."""
    groups = ([np.nonzero(labels == c)[0] for c in np.unique(labels)] if args["multiclass"]
              else [np.arange(len(scores))])
    kept = []
    for idx in groups:
        if args["use_soft_nms"]:
            kept += [(idx[i], v) for i, v in _softnms_loop(segs[idx], scores[idx], args["sigma"],
                                                           args["min_score"])]
        else:
            kept += [(idx[i], scores[idx[i]]) for i in _hardnms_loop(
                segs[idx], scores[idx], args["iou_threshold"], args["min_score"])]
    kept = sorted(kept, key=lambda t: -t[1])[:args["max_seg_num"]]
    return segs[[i for i, _ in kept]], np.array([v for _, v in kept], np.float32)


@pytest.mark.parametrize("mode", ["hard_multiclass", "hard_agnostic_novote", "soft_multiclass",
                                  "soft_agnostic_novote"])
def test_golden_nms_outputs_match_loop_reference(mode):
    """The goldens of the four no-voting modes are reproduced by the literal loop ports, which
    the tie-order tests below then trust; and every case of the golden covers all six modes."""
    params = json.loads((NMS / "visible_params.json").read_text())
    inp, out = np.load(NMS / "visible_inputs.npz"), np.load(NMS / "visible_outputs.npz")
    assert len(params["cases"]) == 3
    n_out = 0
    for case in params["cases"]:
        key = case["key"]
        assert sorted(m["mode"] for m in case["modes"]) == sorted(MODES)
        args = next(m["args"] for m in case["modes"] if m["mode"] == mode)
        segs, sc = _loop_batched_nms(inp[f"{key}_segs"], inp[f"{key}_scores"],
                                     inp[f"{key}_labels"], args)
        assert len(sc) == len(out[f"{key}_{mode}_scores"])
        n_out += len(sc)
        np.testing.assert_allclose(sc, out[f"{key}_{mode}_scores"], rtol=1e-5)
        np.testing.assert_allclose(segs, out[f"{key}_{mode}_segs"], rtol=1e-5, atol=1e-4)
    assert n_out > 30


# ---- literal loop ports of the reference C++ control flow, to test order effects on ties ----

def _hardnms_loop(segs, scores, thr, min_score):
    f = np.float32
    idx = [i for i in range(len(scores)) if not (min_score > 0) or scores[i] > f(min_score)]
    order = sorted(idx, key=lambda i: -scores[i])  # stable
    keep = []
    alive = [True] * len(order)
    for a in range(len(order)):
        if not alive[a]:
            continue
        i = order[a]
        keep.append(i)
        for b in range(a + 1, len(order)):
            j = order[b]
            if not alive[b]:
                continue
            ai = f(segs[i, 1] - segs[i, 0]) + f(1e-6)
            aj = f(segs[j, 1] - segs[j, 0]) + f(1e-6)
            inter = max(f(0), min(segs[i, 1], segs[j, 1]) - max(segs[i, 0], segs[j, 0]))
            if inter / (ai + aj - inter) >= f(thr):
                alive[b] = False
    return keep


def _random_case(rng, n, n_levels=6):
    start = rng.integers(0, 40, n).astype(np.float32)
    length = rng.integers(1, 12, n).astype(np.float32)
    segs = np.stack([start, start + length], 1)
    # few distinct score values -> many exact ties, which exercise the swap order
    scores = rng.choice(np.linspace(0.002, 0.9, n_levels).astype(np.float32), n)
    return segs, scores


@pytest.mark.parametrize("seed", range(6))
def test_softnms_order_matches_cpp_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    segs, scores = _random_case(rng, 60)
    labels = np.zeros(60, np.int64)
    exp = _softnms_loop(segs, scores, 0.5, 0.05)
    s, sc, lb = batched_nms(segs, scores, labels, 0.1, 0.05, 1000, use_soft_nms=True,
                            multiclass=False, sigma=0.5, voting_thresh=0.0)
    # batched_nms re-sorts by score (stable), so compare against the loop's output sorted the same way
    exp_sorted = sorted(exp, key=lambda t: -t[1])
    assert len(sc) == len(exp_sorted)
    np.testing.assert_array_equal(s, segs[[i for i, _ in exp_sorted]])
    np.testing.assert_allclose(sc, [v for _, v in exp_sorted], rtol=1e-6)


def test_softnms_selection_order_private():
    from edge.postprocess import _soft_nms
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        segs, scores = _random_case(rng, 80, n_levels=4)
        exp = _softnms_loop(segs, scores, 0.5, 0.1)
        keep, dec = _soft_nms(segs, scores, 0.5, 0.1, 0)
        assert keep.tolist() == [i for i, _ in exp]
        np.testing.assert_allclose(dec, [v for _, v in exp], rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_hard_nms_matches_loop(seed):
    rng = np.random.default_rng(seed)
    segs, scores = _random_case(rng, 50, n_levels=50)
    labels = np.zeros(50, np.int64)
    exp = _hardnms_loop(segs, scores, 0.3, 0.1)
    s, sc, lb = batched_nms(segs, scores, labels, 0.3, 0.1, 1000, use_soft_nms=False,
                            multiclass=False, voting_thresh=0.0)
    np.testing.assert_array_equal(s, segs[exp])


def test_softnms_keeps_first_max_even_below_min_score():
    segs = np.array([[0, 10], [20, 30]], np.float32)
    scores = np.array([0.004, 0.003], np.float32)
    s, sc, lb = batched_nms(segs, scores, np.array([1, 1]), 0.1, 0.01, 10, use_soft_nms=True)
    # the reference never tests the selected segment against min_score
    assert sc.tolist() == [np.float32(0.004)]
    s, sc, lb = batched_nms(segs, scores, np.array([1, 1]), 0.1, 0.01, 10, use_soft_nms=False)
    assert len(sc) == 0  # hard NMS filters by score > min_score first


def test_multiclass_never_votes_and_caps():
    segs = np.array([[0, 10], [0.5, 10], [0, 9], [50, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    labels = np.array([2, 2, 0, 0])
    s, sc, lb = batched_nms(segs, scores, labels, 0.5, 0.0, 3, use_soft_nms=False,
                            multiclass=True, voting_thresh=0.9)
    np.testing.assert_array_equal(s, segs[[0, 2, 3]])  # unchanged coordinates
    assert lb.tolist() == [2, 0, 0]
    s, sc, lb = batched_nms(segs, scores, labels, 0.5, 0.0, 2, use_soft_nms=False,
                            multiclass=True)
    assert len(sc) == 2


def test_agnostic_voting_uses_all_inputs():
    segs = np.array([[0, 10], [0, 10.5], [40, 50]], np.float32)
    scores = np.array([0.9, 0.05, 0.8], np.float32)
    # min_score filters seg 1 out of NMS, yet it still votes
    s, sc, lb = batched_nms(segs, scores, np.array([0, 1, 0]), 0.5, 0.1, 10,
                            use_soft_nms=False, multiclass=False, voting_thresh=0.5)
    iou = 10 / 10.5
    w0, w1 = 0.9 * 1.0, 0.05 * iou
    exp_end = (w0 * 10 + w1 * 10.5) / (w0 + w1)
    assert s.shape == (2, 2)
    np.testing.assert_allclose(s[0], [0, exp_end], rtol=1e-6)
    np.testing.assert_allclose(s[1], [40, 50], rtol=1e-6)


def test_empty_and_bad_input():
    s, sc, lb = batched_nms(np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64),
                            0.1, 0.01, 10)
    assert s.shape == (0, 2) and sc.shape == (0,) and lb.shape == (0,)
    with pytest.raises(ValueError, match="NaN"):
        batched_nms(np.array([[0, 1.0]]), np.array([np.nan]), np.array([0]), 0.1, 0.0, 10)
    with pytest.raises(ValueError, match="same length"):
        batched_nms(np.array([[0, 1.0]]), np.array([0.5, 0.4]), np.array([0]), 0.1, 0.0, 10)


def test_to_seconds_clamps():
    segs = np.array([[-5, 3], [100, 1000]], np.float32)
    out = to_seconds(segs, 30.0, 16, 32, 20.0)
    exp = (segs * 16 + 16) / 30
    exp = np.clip(exp, 0, 20)
    np.testing.assert_allclose(out, exp, rtol=1e-6)
    assert out[1, 1] == np.float32(20.0) and out[0, 0] == 0
    with pytest.raises(ValueError, match="fps"):
        to_seconds(segs, 0, 16, 32, 20.0)


def test_sigmoid_stable():
    x = np.array([-100, -1, 0, 1, 100], np.float32)
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6,
                               atol=1e-30)
    assert sigmoid(x).dtype == np.float32


def _model_cases():
    cfg = json.loads((MODEL / "visible_config.json").read_text())
    yield "visible_outputs.npz", cfg["video_meta"], cfg
    yield "visible_long_outputs.npz", [cfg["long_video_meta"]], cfg


@pytest.mark.parametrize("fname", ["visible_outputs.npz", "visible_long_outputs.npz"])
def test_decode_and_postprocess_model_golden(fname):
    cfg = json.loads((MODEL / "visible_config.json").read_text())
    metas = cfg["video_meta"] if fname == "visible_outputs.npz" else [cfg["long_video_meta"]]
    model_cfg = cfg["config_model (merged, as passed to make_meta_arch)"]
    test_cfg = model_cfg["test_cfg"]
    d = np.load(MODEL / fname)
    n_levels = len(cfg["fpn_strides"])
    lens = [d[f"cls_logits_l{lv}"].shape[1] for lv in range(n_levels)]
    pts = make_points(lens, cfg["fpn_strides"], model_cfg["regression_range"])
    np.testing.assert_array_equal(
        pts, np.concatenate([d[f"points_l{lv}"] for lv in range(n_levels)]))
    for b, meta in enumerate(metas):
        logits = np.concatenate([d[f"cls_logits_l{lv}"][b] for lv in range(n_levels)])
        offs = np.concatenate([d[f"offsets_l{lv}"][b] for lv in range(n_levels)])
        mask = np.concatenate([d[f"fpn_masks_l{lv}"][b] for lv in range(n_levels)])
        segs, scores, labels = decode(logits, offs, mask, pts, lens, test_cfg)
        np.testing.assert_array_equal(labels, d[f"cand_v{b}_labels"])
        np.testing.assert_allclose(scores, d[f"cand_v{b}_scores"], rtol=1e-5)
        np.testing.assert_allclose(segs, d[f"cand_v{b}_segs"], rtol=1e-5, atol=1e-4)
        res = postprocess(logits, offs, mask, pts, lens, test_cfg, meta["fps"],
                          meta["feat_stride"], meta["feat_num_frames"], meta["duration"])
        np.testing.assert_array_equal(res["labels"], d[f"det_v{b}_labels"])
        np.testing.assert_allclose(res["scores"], d[f"det_v{b}_scores"], rtol=1e-5)
        np.testing.assert_allclose(res["segments"], d[f"det_v{b}_segs"], rtol=1e-5, atol=1e-4)
        assert res["segments"].min() >= 0 and res["segments"].max() <= meta["duration"]


def test_postprocess_nms_none_returns_candidates():
    rng = np.random.default_rng(0)
    lens = [8, 4]
    pts = make_points(lens, [1, 2], [[0, 4], [4, 100]])
    logits = rng.normal(size=(12, 3)).astype(np.float32)
    offs = np.abs(rng.normal(size=(12, 2))).astype(np.float32) + 0.5
    mask = np.ones(12, bool)
    cfg = {"pre_nms_thresh": 0.3, "pre_nms_topk": 5, "duration_thresh": 0.05,
           "nms_method": "none"}
    res = postprocess(logits, offs, mask, pts, lens, cfg, 10.0, 4, 8, 100.0)
    segs, scores, labels = decode(logits, offs, mask, pts, lens, cfg)
    assert len(res["scores"]) == len(scores) <= 10
    # per level: sorted descending, top-k capped at 5
    assert np.all(np.diff(scores[:min(5, len(scores))]) <= 0)
    with pytest.raises(ValueError, match="inconsistent"):
        decode(logits, offs, mask, pts, [8, 3], cfg)


def test_edge_postprocess_imports_only_numpy_and_stdlib():
    import sys
    import inspect

    import edge.postprocess
    tree = ast.parse(inspect.getsource(edge.postprocess))
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mods.add((node.module or "").split(".")[0])
    stdlib = set(sys.stdlib_module_names)
    assert mods - stdlib == {"numpy"}, mods


@pytest.mark.parametrize("soft", [True, False])
@pytest.mark.parametrize("multiclass", [True, False])
def test_max_seg_num_cap_equals_prefix_of_uncapped(soft, multiclass):
    rng = np.random.default_rng(7)
    segs, _ = _random_case(rng, 120)
    scores = rng.random(120).astype(np.float32)
    labels = rng.integers(0, 3, 120)
    kw = dict(use_soft_nms=soft, multiclass=multiclass, sigma=0.5, voting_thresh=0.0)
    full = batched_nms(segs, scores, labels, 0.2, 0.01, 10000, **kw)
    assert len(full[1]) > 9
    capped = batched_nms(segs, scores, labels, 0.2, 0.01, 9, **kw)
    for a, b in zip(capped, full):
        np.testing.assert_array_equal(a, b[:9])


def test_postprocess_rejects_unknown_nms_method():
    pts = make_points([4], [1], [[0, 100]])
    with pytest.raises(ValueError, match="nms_method"):
        postprocess(np.zeros((4, 2), np.float32), np.ones((4, 2), np.float32), np.ones(4, bool),
                    pts, [4], {"nms_method": "linear"}, 10.0, 4, 8, 10.0)
