"""`ego4d`: the official Moment Queries file (`{"videos": [{video_uid, split, clips: [{clip_uid,
video_start_sec, video_end_sec, annotations: [{labels: [{start_time, end_time, label,
primary}]}]}]}]}`; one record per clip, primary labels only, times relative to the clip), or the
per-clip layout `{clip_id: {subset, duration, fps?, annotations: [{segment, label,
label_id?}]}}` (optionally under `"database"`). Without `label_id`, ids = sorted names' ranks."""
from __future__ import annotations

from asl_tf.data.annotations.actionformer import _read_actionformer
from asl_tf.data.annotations.common import _Builder, _get, _load_json, _num, _rank_names


def _read_ego4d(path, b: _Builder):
    data = _load_json(path)
    if isinstance(data, dict) and isinstance(data.get("videos"), list):
        return _read_ego4d_official(path, data, b)
    return _read_actionformer(path, b, allow_missing=True)


_EGO4D_SPLITS = {"train": "training", "val": "validation", "test": "testing"}


def _read_ego4d_official(path, data, b: _Builder):
    has_ids = True
    for video in data["videos"]:
        vuid = _get(video, "video_uid", path, None)
        split = str(video.get("split", ""))
        subset = _EGO4D_SPLITS.get(split, split)
        for clip in _get(video, "clips", path, vuid):
            cid = str(_get(clip, "clip_uid", path, vuid))
            cs = _num(_get(clip, "video_start_sec", path, cid), path, cid, "video_start_sec")
            ce = _num(_get(clip, "video_end_sec", path, cid), path, cid, "video_end_sec")
            cs = max(cs, 0.0)
            fps = None
            if "video_start_frame" in clip and "video_end_frame" in clip and ce > cs:
                sf = max(_num(clip["video_start_frame"], path, cid, "video_start_frame"), 0.0)
                ef = _num(clip["video_end_frame"], path, cid, "video_end_frame")
                fps = (ef - sf) / (ce - cs)
            rec = b.video(cid, subset, ce - cs, fps)
            for annotator in clip.get("annotations", []) or []:
                for item in _get(annotator, "labels", path, cid) or []:
                    if not item.get("primary", True):
                        continue
                    if "start_time" in item:
                        s = _num(item["start_time"], path, cid, "start_time")
                        e = _num(_get(item, "end_time", path, cid), path, cid, "end_time")
                    else:
                        s = _num(_get(item, "video_start_time", path, cid), path, cid, "video_start_time") - cs
                        e = _num(_get(item, "video_end_time", path, cid), path, cid, "video_end_time") - cs
                    name = str(_get(item, "label", path, cid))
                    lid = item.get("label_id")
                    if lid is None:
                        has_ids = False
                    rec["rows"].append((s, e, None if lid is None else int(lid), name))
    if not has_ids:
        return _rank_names(n for v in b.videos.values() for *_, n in v["rows"]), True
    return b.class_names_from_ids(), False


def read(path, b: _Builder, opts):
    return _read_ego4d(path, b)
