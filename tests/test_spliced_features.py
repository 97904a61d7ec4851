"""Fast smoke of the real-pixel path: splice -> extract (the recipe's Keras encoder) -> the
snippet-to-seconds mapping. Each snippet's feature must be the encoder's feature of the source
frame on screen at the snippet's centre `(i * feat_stride + num_frames / 2) / fps` s, taken
from the clip that the spliced ground truth declares there."""
import json
import pathlib

import numpy as np

from asl_tf.data.spliced import SpliceConfig, decode_clip, write_spliced_set
from asl_tf.features.extract import extract_video, keras_encoder
from asl_tf.features.recipe import load_recipe

REPO = pathlib.Path(__file__).resolve().parents[1]
CLIPS = REPO / "tests" / "fixtures" / "videos"


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_snippet_features_come_from_the_declared_source(tmp_path):
    cfg = SpliceConfig(videos=1, heldout=0, fps="15", width=224, height=224,
                       actions=["carphone_pristine"], background=["bikes"], actions_per_video=[2, 2],
                       action_len=[1.0, 1.6], short_len=[0.6, 0.9], gap_len=[0.8, 1.4], seed=5)
    write_spliced_set(CLIPS, tmp_path, cfg)
    entry = json.loads((tmp_path / "annotations.json").read_text())["database"]["spliced_000"]
    recipe = load_recipe(REPO / "configs" / "features" / "efficientnet_lite0.yaml")
    encoder = keras_encoder(recipe)
    feats, info = extract_video(tmp_path / "videos" / "spliced_000.mp4", recipe, encoder)
    grid = recipe.grid()
    assert feats.shape == (grid.num_snippets(entry["duration"]), 1280) and info["T"] == len(feats)

    sources = {n: decode_clip(CLIPS / f"{n}.mp4", 224, 224) for n in ("bikes", "carphone_pristine")}
    want, clips = [], []
    for i in range(len(feats)):
        k = int(np.floor(grid.centre(i) * 15 + 1e-9))       # output frame on screen at the centre
        piece = next(p for p in entry["pieces"] if p["segment_frames"][0] <= k < p["segment_frames"][1])
        t = piece["src_start"] + (k - piece["segment_frames"][0]) / 15
        want.append(sources[piece["clip"]].frame_at(t))
        clips.append(piece["clip"])
    ref = encoder(np.stack(want))
    cos = [_cos(a, b) for a, b in zip(feats, ref)]
    assert len(set(clips)) == 2 and min(cos) > 0.9, (clips, np.round(cos, 3))
    # and the mapping is sharp: the same features one snippet off disagree where the clip changes
    changes = [i for i in range(1, len(clips)) if clips[i] != clips[i - 1]]
    assert changes and all(_cos(feats[i], ref[i - 1]) < 0.8 for i in changes)
    # the ground truth says the same: centres inside an annotated segment show the action clip
    for i, c in enumerate(clips):
        inside = any(s + 1 / 15 <= grid.centre(i) <= e - 1 / 15 for s, e in
                     (a["segment"] for a in entry["annotations"]))
        if inside:
            assert c == "carphone_pristine"
