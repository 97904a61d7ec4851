"""The snippet-feature recipe: how a video becomes `[T, C]` features the detector reads.

A recipe is read from a config (configs/features/efficientnet_lite0*.yaml, or a detector preset
that has one as `_base_`): `dataset.default_fps` (the grid the video is resampled to by
presentation timestamps), `dataset.feat_stride`, `dataset.num_frames` (resampled frames),
`dataset.input_dim` (the feature width) and the `features` section (encoder,
frames_per_snippet, size, interpolation, pool, batch_size). Snippet i is centred at
`(i * feat_stride + num_frames / 2) / fps` s; the frames it encodes, their timing and the
snippet count of a video are `edge.frames.SnippetGrid` (shared with the device).
"""
import dataclasses

from asl_tf.errors import UserError

DEFAULT_CONFIG = "configs/features/efficientnet_lite0.yaml"
ENCODER_DIMS = {"efficientnet_lite0": 1280}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A snippet-feature recipe (see the module docstring). Times in seconds, sizes in pixels."""
    encoder: str = "efficientnet_lite0"
    fps: float = 10.0
    feat_stride: int = 5
    num_frames: int = 5
    frames_per_snippet: int = 1
    size: int = 224
    interpolation: str = "BILINEAR"
    pool: str = "mean"
    input_dim: int = 1280
    batch_size: int = 32

    def grid(self):
        """The `edge.frames.SnippetGrid` of this recipe (validates the timing)."""
        from edge.frames import SnippetGrid
        return SnippetGrid(self.fps, self.feat_stride, self.num_frames, self.frames_per_snippet)

    @property
    def step_s(self):
        """Seconds between snippet centres."""
        return self.feat_stride / self.fps

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def recipe_from_config(cfg, source="<config>"):
    """A Recipe from an `asl_tf.config.ExperimentConfig`; UserError naming `source` and the
    field when the config does not describe a usable recipe."""
    ds, fe = cfg.dataset, cfg.features
    if not fe.encoder:
        raise UserError(f"{source}: 'features.encoder' is not set (not a feature recipe; see "
                        f"{DEFAULT_CONFIG})")
    if fe.encoder not in ENCODER_DIMS:
        raise UserError(f"{source}: 'features.encoder' {fe.encoder!r} is not one of "
                        f"{sorted(ENCODER_DIMS)}")
    if ds.default_fps is None:
        raise UserError(f"{source}: 'dataset.default_fps' must be set (the recipe's frame rate)")
    for name in ("feat_stride", "num_frames"):
        if not float(getattr(ds, name)).is_integer():
            raise UserError(f"{source}: 'dataset.{name}' must be a whole number of frames, got "
                            f"{getattr(ds, name)}")
    dim = ENCODER_DIMS[fe.encoder]
    if ds.input_dim != dim:
        raise UserError(f"{source}: 'dataset.input_dim' = {ds.input_dim}, but {fe.encoder} "
                        f"features are {dim}-d")
    recipe = Recipe(encoder=fe.encoder, fps=float(ds.default_fps),
                    feat_stride=int(ds.feat_stride), num_frames=int(ds.num_frames),
                    frames_per_snippet=int(fe.frames_per_snippet), size=int(fe.size),
                    interpolation=fe.interpolation, pool=fe.pool, input_dim=dim,
                    batch_size=int(fe.batch_size))
    try:
        recipe.grid()
    except ValueError as err:
        raise UserError(f"{source}: {err}") from None
    if recipe.batch_size < recipe.frames_per_snippet:
        raise UserError(f"{source}: 'features.batch_size' must be >= frames_per_snippet")
    return recipe


def load_recipe(path=None):
    """Read a recipe from a YAML config (default: configs/features/efficientnet_lite0.yaml,
    relative to the repository; an install without configs/ gets `Recipe()`, whose defaults
    are that file's values: tests/test_features_recipe.py checks they agree)."""
    import os

    from asl_tf.config import load_config
    if path is None:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), DEFAULT_CONFIG)
        if not os.path.isfile(path):
            return Recipe()
    return recipe_from_config(load_config(path), source=str(path))
