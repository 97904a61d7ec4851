"""Config loading: presets, `_base_` inheritance, overrides, typed errors, model_dict, save."""
import dataclasses
import json

import pytest
import yaml

from asl_tf import config as C
from conftest import REPO

CONFIGS = REPO / "configs"
PRESETS = ["thumos14_i3d", "anet13_tsp", "multithumos_i3d", "charades_i3d", "ego4d_mq_slowfast",
           "ego4d_mq_egovlp", "epic100_verb_slowfast", "epic100_noun_slowfast"]
GOLDEN_MODEL_CFG = REPO / "tests/fixtures/golden/model/visible_config.json"


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_are_consistent(name):
    cfg = C.load_config(CONFIGS / f"{name}.yaml")
    assert cfg.name == name
    d = cfg.model_dict()
    n_levels = cfg.model.backbone_arch[2] + 1
    assert len(d["regression_range"]) == n_levels
    assert d["input_dim"] == cfg.dataset.input_dim and d["num_classes"] == cfg.dataset.num_classes
    assert d["max_seq_len"] == cfg.dataset.max_seq_len
    assert set(d["train_cfg"]) >= {"center_sample", "init_loss_norm", "dropout", "droppath"}
    assert d["asl"]["topk"] == 3
    json.dumps(d)  # plain data


def test_base_yaml_equals_dataclass_defaults():
    """configs/_base_/actionformer.yaml spells out the dataclass defaults (ActionFormer DEFAULTS)."""
    from_yaml = C.load_config(CONFIGS / "_base_/actionformer.yaml").to_dict()
    defaults = C.ExperimentConfig().to_dict()
    raw = yaml.safe_load((CONFIGS / "_base_/actionformer.yaml").read_text())
    for section, keys in raw.items():
        for key in keys:
            assert from_yaml[section][key] == defaults[section][key], f"{section}.{key}"


def test_actionformer_reference_values():
    """Spot values from the reference configs (CONFIGS.md table) and ActionFormer DEFAULTS."""
    t = C.load_config(CONFIGS / "thumos14_i3d.yaml")
    assert (t.dataset.input_dim, t.dataset.feat_stride, t.dataset.num_frames) == (2048, 4, 16)
    assert t.model.n_mha_win_size == 19 and t.model.max_buffer_len_factor == 6.0
    assert t.opt.learning_rate == pytest.approx(1e-4) and t.opt.weight_decay == 0.05
    assert (t.train_cfg.epochs, t.train_cfg.warmup_epochs, t.train_cfg.batch_size) == (30, 5, 2)
    assert t.train_cfg.init_loss_norm == 100 and t.train_cfg.clip_grad_l2norm == 1.0
    assert t.train_cfg.droppath == 0.1 and t.train_cfg.dropout == 0.0
    assert (t.test_cfg.pre_nms_topk, t.test_cfg.max_seg_num, t.test_cfg.min_score) == (2000, 200, 1e-3)
    assert t.test_cfg.voting_thresh == 0.7 and t.test_cfg.nms_sigma == 0.5
    assert t.dataset.crop_ratio == [0.9, 1.0] and t.dataset.train_split == ["validation"]
    a = C.load_config(CONFIGS / "anet13_tsp.yaml")
    assert a.model.n_mha_win_size == [7, 7, 7, 7, 7, -1] and a.model.embd_dim == 256
    assert a.train_cfg.loss_weight == 2.0 and a.train_cfg.label_smoothing == 0.1
    assert a.dataset.force_upsampling and a.dataset.max_seq_len == 192
    assert a.test_cfg.duration_thresh == 0.001 and a.test_cfg.nms_sigma == 0.75
    e = C.load_config(CONFIGS / "ego4d_mq_egovlp.yaml")
    assert e.model.regression_range[-2:] == [[64, 256], [128, 10000]] and e.model.embd_dim == 384
    assert e.train_cfg.dropout == 0.1 and e.dataset.trunc_thresh == 0.3
    s = C.load_config(CONFIGS / "ego4d_mq_slowfast.yaml")
    assert s.model.backbone_arch == [2, 2, 6] and s.dataset.input_dim == 2304
    v = C.load_config(CONFIGS / "epic100_verb_slowfast.yaml")
    n = C.load_config(CONFIGS / "epic100_noun_slowfast.yaml")
    assert (v.dataset.num_classes, n.dataset.num_classes) == (97, 300)
    assert (v.train_cfg.label_smoothing, n.train_cfg.label_smoothing) == (0.0, 0.1)
    assert v.train_cfg.init_loss_norm == 250 and v.test_cfg.nms_sigma == 0.4
    m = C.load_config(CONFIGS / "multithumos_i3d.yaml")
    assert m.model.backbone_arch == [3, 0, 5] and m.test_cfg.pre_nms_topk == 8000
    c = C.load_config(CONFIGS / "charades_i3d.yaml")
    assert c.model.input_pdrop == 0.3 and c.dataset.max_seq_len == 768 and c.test_cfg.nms_sigma == 0.3


def test_model_dict_matches_golden_layout(tmp_path):
    """A config with the golden's values gives the golden's merged model dict (ActionFormer keys)."""
    golden = json.loads(GOLDEN_MODEL_CFG.read_text())["config_model (merged, as passed to make_meta_arch)"]
    model = {k: v for k, v in golden.items()
             if k not in ("train_cfg", "test_cfg", "input_dim", "num_classes", "max_seq_len")}
    raw = {"dataset": {"input_dim": golden["input_dim"], "num_classes": golden["num_classes"],
                       "max_seq_len": golden["max_seq_len"]},
           "model": model, "train_cfg": golden["train_cfg"], "test_cfg": golden["test_cfg"]}
    d = C.config_from_dict(raw).model_dict()
    for key, value in golden.items():
        if key in ("train_cfg", "test_cfg"):
            for k, v in value.items():
                assert d[key][k] == v, f"{key}.{k}"
        else:
            assert d[key] == value, key


def test_base_inheritance_and_list_replace(tmp_path):
    _write(tmp_path, "a.yaml", {"model": {"embd_dim": 64, "backbone_arch": [2, 2, 5]},
                                "train_cfg": {"epochs": 7}})
    _write(tmp_path, "b.yaml", {"_base_": "a.yaml", "train_cfg": {"batch_size": 3}})
    p = _write(tmp_path, "c.yaml", {"_base_": ["b.yaml"], "model": {"embd_dim": 32}})
    cfg = C.load_config(p)
    assert cfg.model.embd_dim == 32 and cfg.train_cfg.epochs == 7 and cfg.train_cfg.batch_size == 3
    assert cfg.model.fpn_dim == 512  # untouched default


def test_overrides_are_typed():
    cfg = C.load_config(CONFIGS / "thumos14_i3d.yaml", overrides=[
        "train_cfg.epochs=3", "opt.learning_rate=1e-5", "model.n_mha_win_size=[9,9,9,9,9,9]",
        "model.use_abs_pe=true", "dataset.default_fps=null", "test_cfg.nms_method=hard",
        "name=x", "dataset.feat_folder=/tmp/feats"])
    assert cfg.train_cfg.epochs == 3 and isinstance(cfg.train_cfg.epochs, int)
    assert cfg.opt.learning_rate == pytest.approx(1e-5) and isinstance(cfg.opt.learning_rate, float)
    assert cfg.model.n_mha_win_size == [9] * 6 and cfg.model.use_abs_pe is True
    assert cfg.dataset.default_fps is None and cfg.test_cfg.nms_method == "hard" and cfg.name == "x"
    assert cfg.dataset.feat_folder == ["/tmp/feats"]
    assert isinstance(cfg.dataset.feat_stride, float)


@pytest.mark.parametrize("override,needle", [
    ("train_cfg.epochs=abc", "train_cfg.epochs"),
    ("train_cfg.epochs=1.5", "train_cfg.epochs"),
    ("model.use_abs_pe=3", "model.use_abs_pe"),
    ("model.nope=1", "model.nope"),
    ("nosection.x=1", "nosection"),
    ("asl.combine=max", "asl.combine"),
    ("dataset.format=csv", "dataset.format"),
    ("model.regression_range=[[0,4]]", "regression_range"),
    ("train_cfg.epochs", "key.sub=value"),
])
def test_bad_override_names_key(override, needle):
    with pytest.raises(ValueError) as err:
        C.load_config(CONFIGS / "thumos14_i3d.yaml", overrides=[override])
    assert needle in str(err.value) and "override" in str(err.value)


def test_unknown_key_and_wrong_type_name_the_file(tmp_path):
    base = _write(tmp_path, "base.yaml", {"model": {"embd_dimm": 3}})
    child = _write(tmp_path, "child.yaml", {"_base_": "base.yaml"})
    with pytest.raises(ValueError, match=r"base\.yaml.*model\.embd_dimm"):
        C.load_config(child)
    bad = _write(tmp_path, "bad.yaml", {"train_cfg": {"batch_size": "two"}})
    with pytest.raises(ValueError, match=r"bad\.yaml.*train_cfg\.batch_size"):
        C.load_config(bad)
    top = _write(tmp_path, "top.yaml", {"loader": {"batch_size": 2}})
    with pytest.raises(ValueError, match=r"top\.yaml.*'loader'"):
        C.load_config(top)
    mism = _write(tmp_path, "m.yaml", {"model": {"num_classes": 3}, "dataset": {"num_classes": 4}})
    with pytest.raises(ValueError, match="model.num_classes"):
        C.load_config(mism)
    broken = _write(tmp_path, "broken.yaml", "model: [1, 2\n")
    with pytest.raises(ValueError, match="broken.yaml"):
        C.load_config(broken)
    loop = _write(tmp_path, "loop.yaml", {"_base_": "loop.yaml"})
    with pytest.raises(ValueError, match="circular"):
        C.load_config(loop)
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        C.load_config(tmp_path / "nothere.yaml")


def test_save_yaml_round_trip(tmp_path):
    cfg = C.load_config(CONFIGS / "ego4d_mq_egovlp.yaml", overrides=["train_cfg.epochs=2"])
    out = tmp_path / "run" / "config.yaml"
    cfg.save_yaml(out)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp")]
    again = C.load_config(out)
    assert again.to_dict() == cfg.to_dict()
    assert dataclasses.asdict(again.model) == dataclasses.asdict(cfg.model)
