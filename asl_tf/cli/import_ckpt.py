"""`asl-import`: convert an ActionFormer / ASL PyTorch checkpoint into a Keras `.keras` model.

    asl-import --config thumos_i3d.yaml --checkpoint epoch_034.pth.tar [--ema] --out model.keras

--config is one of:
  * an ActionFormer YAML config (merged with ActionFormer's DEFAULTS as the reference does);
  * an asl-tf experiment YAML (configs/*.yaml; detected by `_base_` or --config_format=asl_tf);
  * a JSON file holding the merged model section (or the golden `visible_config.json`).
--checkpoint is a .pth / .pth.tar / .npz (read without torch). --ema takes `state_dict_ema`.
The model is written to a temporary file and renamed when complete. No torch is needed.
"""
import json
import os

import numpy as np
from absl import flags, logging

from asl_tf.cli._common import run_app
from asl_tf.fileio import atomic_path

FLAGS = flags.FLAGS
_FORMATS = ("auto", "actionformer", "asl_tf", "json")


def define_flags():
    flags.DEFINE_string("config", None, "ActionFormer YAML, asl-tf YAML, or model-section JSON.")
    flags.DEFINE_enum("config_format", "auto", _FORMATS, "How to read --config.")
    flags.DEFINE_string("checkpoint", None, "Checkpoint: .pth, .pth.tar or .npz.")
    flags.DEFINE_bool("ema", False, "Use the checkpoint's state_dict_ema.")
    flags.DEFINE_string("out", None, "Output .keras file.")
    flags.DEFINE_bool("force", False, "Overwrite --out if it exists.")


def _model_section_from_json(path):
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be an object")
    for key, value in data.items():
        if key.startswith("config_model") and isinstance(value, dict):
            return value
    if isinstance(data.get("model"), dict) and "train_cfg" in data["model"]:
        return data["model"]
    if "backbone_arch" in data or "backbone_type" in data:
        return data
    raise ValueError(f"{path}: no model section found (expected a merged ActionFormer model "
                     f"dict)")


def load_model_section(path, fmt="auto"):
    """The merged model section for --config (see module doc)."""
    from asl_tf.compat import actionformer as af

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: config file not found")
    if fmt == "auto":
        if path.endswith(".json"):
            fmt = "json"
        else:
            import yaml

            with open(path, encoding="utf-8") as fh:
                try:
                    raw = yaml.safe_load(fh) or {}
                except yaml.YAMLError as err:
                    raise ValueError(f"{path}: not valid YAML ({err})") from None
            fmt = "asl_tf" if isinstance(raw, dict) and "_base_" in raw else "actionformer"
    if fmt == "json":
        return _model_section_from_json(path)
    if fmt == "asl_tf":
        from asl_tf.config import load_config

        return load_config(path).model_dict()
    return af.load_actionformer_config(path)


def convert(config, checkpoint, out, ema=False, config_format="auto", force=False):
    """Build the model from `config`, load `checkpoint`, save to `out` (atomic). Returns model."""
    from asl_tf.compat import actionformer as af

    if not out.endswith(".keras"):
        raise ValueError(f"--out {out}: the output file must end in .keras")
    if os.path.exists(out) and not force:
        raise FileExistsError(f"--out {out}: exists (use --force to overwrite)")
    model = af.model_from_config(load_model_section(config, config_format))
    af.load_state_dict(model, checkpoint, ema=ema)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    with atomic_path(out, suffix=".keras") as tmp:
        model.save(tmp)
    n = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    logging.info("asl-import: %s (%d parameters, %s) -> %s", checkpoint, n,
                 "state_dict_ema" if ema else "state_dict", out)
    return model


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("config", "checkpoint", "out"):
        if not getattr(FLAGS, name):
            raise ValueError(f"--{name} is required")
    convert(FLAGS.config, FLAGS.checkpoint, FLAGS.out, ema=FLAGS.ema,
            config_format=FLAGS.config_format, force=FLAGS.force)
    print(FLAGS.out)
    return 0


def run(argv=None):
    run_app(main, define_flags, argv)


if __name__ == "__main__":
    run()
