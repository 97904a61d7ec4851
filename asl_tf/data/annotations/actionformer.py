"""`actionformer` format: `{"database": {vid: {subset, duration, fps, annotations: [{label,
segment [s], label_id}]}}}` (THUMOS14, MultiThumos, ActionFormer's ANet/EPIC/Ego4D conversions)."""
from __future__ import annotations

from asl_tf.data.annotations.common import (_Builder, _err, _get, _load_json, _num, _rank_names,
                                            _segment)


def _read_actionformer(path, b: _Builder, allow_missing=False):
    """ActionFormer JSON (and the Ego4D per-clip layout when allow_missing)."""
    data = _load_json(path)
    db = data.get("database", data) if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise ValueError(f"{path}: expected a JSON object with a 'database' mapping")
    has_ids = True
    for vid, v in db.items():
        if not isinstance(v, dict):
            raise _err(path, vid, None, f"expected a JSON object, got {type(v).__name__}")
        subset = _get(v, "subset", path, vid)
        if "duration" in v:
            duration = _num(v["duration"], path, vid, "duration")
        elif allow_missing:
            duration = None
        else:
            raise _err(path, vid, "duration", "missing")
        fps = _num(v["fps"], path, vid, "fps") if v.get("fps") is not None else None
        rec = b.video(vid, str(subset), duration, fps)
        anns = v.get("annotations", [])
        if not isinstance(anns, list):
            raise _err(path, vid, "annotations", "expected a list")
        for a in anns:
            s, e = _segment(_get(a, "segment", path, vid), path, vid)
            name = str(_get(a, "label", path, vid))
            if "label_id" in a:
                lid = a["label_id"]
                if isinstance(lid, bool) or not isinstance(lid, (int, float)) or int(lid) != lid or lid < 0:
                    raise _err(path, vid, "label_id", f"expected a non-negative integer, got {lid!r}")
                lid = int(lid)
            elif allow_missing:
                lid, has_ids = None, False
            else:
                raise _err(path, vid, "label_id", "missing")
            rec["rows"].append((s, e, lid, name))
    if not has_ids:
        names = _rank_names(n for v in b.videos.values() for *_, n in v["rows"])
        return names, True
    return b.class_names_from_ids(), False


def read(path, b: _Builder, opts):
    return _read_actionformer(path, b)
