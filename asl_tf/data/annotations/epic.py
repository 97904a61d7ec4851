"""`epic`: EPIC-KITCHENS-100 CSVs (HH:MM:SS.ss timestamps, `video_info` =
`EPIC_100_video_info.csv`, `class_file` = `EPIC_100_{verb,noun}_classes.csv`); `epic_c2`: the C2
action-detection CSVs (frames at a uniform 30 fps, `video_info` = `c2_video_lengths.csv`).
`label` is verb, noun or action; action id = `verb * 300 + noun` (official C2 evaluator)."""
import os

from absl import logging

from asl_tf.data.annotations.common import (_as_list, _Builder, _err, _hms, _num, _read_csv)

EPIC_NUM_NOUNS = 300        # official C2 evaluator: action = verb * num_nouns + noun
EPIC_C2_FPS = 30.0          # c2_*.csv frame numbers are at a uniform 30 fps
EPIC_NUM_VERBS = 97         # official class counts (EPIC_100_{verb,noun}_classes.csv, C2 evaluator)


def _read_class_csv(path):
    """EPIC class CSV (`id,key,...`) -> names indexed by id."""
    names = {}
    for row in _read_csv(path, ["id", "key"]):
        i = _num(row["id"], path, None, "id")
        names[int(i)] = row["key"]
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{path}: class ids are not 0..{len(names) - 1}")
    return [names[i] for i in range(len(names))]


def _epic_class_names(label, class_file, rows_ids):
    """Class map for verb / noun / action; from class_file when given."""
    if label == "action":
        verbs = nouns = None
        if class_file:
            verbs, nouns = class_file
        n_verbs = len(verbs) if verbs else max(
            EPIC_NUM_VERBS, max((i // EPIC_NUM_NOUNS for i in rows_ids), default=-1) + 1)
        names = []
        for v in range(n_verbs):
            for n in range(EPIC_NUM_NOUNS):
                vn = verbs[v] if verbs else f"verb_{v}"
                nn = nouns[n] if nouns and n < len(nouns) else f"noun_{n}"
                names.append(f"{vn},{nn}")
        return names
    if class_file:
        return list(class_file)
    n = max({"verb": EPIC_NUM_VERBS, "noun": EPIC_NUM_NOUNS}[label], max(rows_ids, default=-1) + 1)
    return [f"{label}_{i}" for i in range(n)]


def class_file_name(class_file):
    return "from the class file" if class_file else "from the rows"


def _subset_from_name(path):
    base = os.path.basename(path).lower()
    for key, subset in (("validation", "validation"), ("val", "validation"), ("train", "training"),
                        ("test", "testing")):
        if key in base:
            return subset
    return None


def _epic_label(row, label, cols, path, vid, line):
    """Integer label of one EPIC row; cols = (verb column, noun column)."""
    def ci(col):
        v = _num(row[col], path, vid, col)
        if int(v) != v or v < 0:
            raise _err(path, vid, col, f"row {line}: expected a non-negative integer, got {row[col]!r}")
        return int(v)
    if label == "verb":
        return ci(cols[0])
    if label == "noun":
        return ci(cols[1])
    return ci(cols[0]) * EPIC_NUM_NOUNS + ci(cols[1])


def _read_epic(path, b: _Builder, label, video_info, class_file, c2: bool):
    subset = _subset_from_name(path)
    if c2:
        rows = _read_csv(path, ["video", "start", "stop", "verb", "noun"])
        vcol, to_sec = "video", lambda x, vid, f: _num(x, path, vid, f) / EPIC_C2_FPS
        verb_col, noun_col = "verb", "noun"
    else:
        rows = _read_csv(path, ["video_id", "start_timestamp", "stop_timestamp", "verb_class", "noun_class"])
        vcol, to_sec = "video_id", lambda x, vid, f: _hms(x, path, vid, f)
        verb_col, noun_col = "verb_class", "noun_class"
    info = {}
    if video_info is not None:
        if c2:
            for r in _read_csv(video_info, ["video", "frames"]):
                frames = _num(r["frames"], video_info, r["video"], "frames")
                info[r["video"]] = (frames / EPIC_C2_FPS, EPIC_C2_FPS)
        else:
            for r in _read_csv(video_info, ["video_id", "duration", "fps"]):
                vid = r["video_id"]
                info[vid] = (_num(r["duration"], video_info, vid, "duration"),
                             _num(r["fps"], video_info, vid, "fps"))
    else:
        logging.warning("%s: no video_info CSV given: durations are the latest segment end", path)
    for line, row in enumerate(rows, start=2):
        vid = row[vcol]
        if video_info is not None and vid not in info:
            raise _err(video_info, vid, "video", f"no duration for this video of {path}")
        duration, fps = info.get(vid, (None, EPIC_C2_FPS if c2 else None))
        rec = b.video(vid, subset, duration, fps)
        s = to_sec(row["start" if c2 else "start_timestamp"], vid, "start" if c2 else "start_timestamp")
        e = to_sec(row["stop" if c2 else "stop_timestamp"], vid, "stop" if c2 else "stop_timestamp")
        rec["rows"].append((s, e, _epic_label(row, label, (verb_col, noun_col), path, vid, line), None))
    ids = [lid for v in b.videos.values() for _, _, lid, _ in v["rows"]]
    names = _epic_class_names(label, class_file, ids)
    for vid, v in b.videos.items():
        for s, e, lid, _ in v["rows"]:
            if lid >= len(names):
                raise _err(path, vid, f"{label}_class", f"class id {lid} is outside the class map "
                           f"of {len(names)} classes ({class_file_name(class_file)})")
        v["rows"] = [(s, e, lid, names[lid]) for s, e, lid, _ in v["rows"]]
    return names, False


def _class_files(label, class_file):
    """Parsed class CSV(s): a name list, or (verbs, nouns) for label='action'; None if none."""
    if class_file is None:
        return None
    if label == "action":
        if len(_as_list(class_file)) != 2:
            raise ValueError("label='action' needs class_file=(verb_csv, noun_csv)")
        return tuple(_read_class_csv(p) for p in class_file)
    return _read_class_csv(class_file)


def read(path, b: _Builder, opts):
    classes = _class_files(opts.label, opts.class_file)
    return _read_epic(path, b, opts.label, opts.video_info, classes, c2=False)


def read_c2(path, b: _Builder, opts):
    classes = _class_files(opts.label, opts.class_file)
    return _read_epic(path, b, opts.label, opts.video_info, classes, c2=True)
