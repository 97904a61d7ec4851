"""`anet`: the official ActivityNet `activity_net.v1-3.min.json`; `anet_bsn`: BSN's
`anet_anno_action.json` with `video_info_new.csv` (subset, fps) as `video_info`. Ids = ranks of
the sorted label names of the whole file."""
from __future__ import annotations

from absl import logging

from asl_tf.data.annotations.common import (_Builder, _err, _get, _load_json, _num,
                                            _plain_video, _rank_names, _read_csv, _segment)


def _read_anet(path, b: _Builder):
    data = _load_json(path)
    db = data.get("database") if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise ValueError(f"{path}: expected the ActivityNet schema with a 'database' mapping")
    for vid, v in db.items():
        rec = _plain_video(b, path, vid, v)
        for a in v.get("annotations", []) or []:
            s, e = _segment(_get(a, "segment", path, vid), path, vid)
            rec["rows"].append((s, e, None, str(_get(a, "label", path, vid))))
    return _rank_names(n for v in b.videos.values() for *_, n in v["rows"]), True


def _read_anet_bsn(path, b: _Builder, video_info):
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{video_id: {{duration_second, annotations}}}}")
    info = {}
    if video_info is not None:
        for row in _read_csv(video_info, ["video", "fps", "subset"]):
            info[row["video"]] = row
    else:
        logging.warning("%s: no video_info CSV given: subsets unknown, fps from default_fps", path)
    for vid, v in data.items():
        if "duration_second" in v:
            duration = _num(v["duration_second"], path, vid, "duration_second")
        else:
            duration = None
        row = info.get(vid)
        if video_info is not None and row is None:
            raise _err(video_info, vid, "video", f"no row for this video of {path}")
        subset = row["subset"] if row else None
        fps = _num(row["fps"], video_info, vid, "fps") if row else None
        if duration is None and row and "seconds" in row:
            duration = _num(row["seconds"], video_info, vid, "seconds")
        rec = b.video(vid, subset, duration, fps)
        for a in v.get("annotations", []) or []:
            s, e = _segment(_get(a, "segment", path, vid), path, vid)
            rec["rows"].append((s, e, None, str(_get(a, "label", path, vid))))
    if video_info is not None:
        extra = sorted(set(info) - set(data))
        if extra:
            logging.warning("%s: %d videos have no entry in %s (e.g. %s)", video_info, len(extra),
                            path, extra[0])
    return _rank_names(n for v in b.videos.values() for *_, n in v["rows"]), True


def read(path, b: _Builder, opts):
    return _read_anet(path, b)


def read_bsn(path, b: _Builder, opts):
    return _read_anet_bsn(path, b, opts.video_info)
