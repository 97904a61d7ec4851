"""`superevents`: `{vid: {subset, duration, actions: [[class, start_s, end_s]]}}` (Charades
0-based, MultiThumos 1-based: `label_offset=1`)."""
from __future__ import annotations

from asl_tf.data.annotations.common import _Builder, _err, _get, _load_json, _num, _plain_video


def _read_superevents(path, b: _Builder, label_offset):
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{video: {{subset, duration, actions}}}}")
    for vid, v in data.items():
        rec = _plain_video(b, path, vid, v)
        actions = _get(v, "actions", path, vid)
        if not isinstance(actions, list):
            raise _err(path, vid, "actions", "expected a list of [class, start, end]")
        for act in actions:
            if not isinstance(act, (list, tuple)) or len(act) != 3:
                raise _err(path, vid, "actions", f"expected [class, start, end], got {act!r}")
            c = _num(act[0], path, vid, "actions[class]")
            if int(c) != c:
                raise _err(path, vid, "actions[class]", f"expected an integer class, got {act[0]!r}")
            lid = int(c) - int(label_offset)
            if lid < 0:
                raise _err(path, vid, "actions[class]", f"class {int(c)} - label_offset {label_offset} "
                           "is negative (label out of the class map; check --label-offset)")
            s = _num(act[1], path, vid, "actions[start]")
            e = _num(act[2], path, vid, "actions[end]")
            rec["rows"].append((s, e, lid, None))
    ids = [lid for v in b.videos.values() for _, _, lid, _ in v["rows"]]
    n = max(ids) + 1 if ids else 0
    names = [f"class_{i}" for i in range(n)]
    for v in b.videos.values():
        v["rows"] = [(s, e, lid, names[lid]) for s, e, lid, _ in v["rows"]]
    return names, False


def read(path, b: _Builder, opts):
    return _read_superevents(path, b, opts.label_offset)
