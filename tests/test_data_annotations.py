"""Annotation readers on the real files (tests/fixtures/data) and on bad input."""
import json

import numpy as np
import pytest

from asl_tf.data.annotations import FORMATS, read_annotations
from conftest import FIXTURES

D = FIXTURES / "data"
EPIC = D / "epic_kitchens_100"


def test_thumos14_test_counts_and_rows():
    a = read_annotations(D / "thumos14/thumos14.json", "actionformer", split="test",
                         feat_stride=4, num_frames=16)
    assert (len(a.records), a.num_instances, a.num_classes) == (212, 3358, 20)
    assert a.stats["past_end"] == 26 and a.stats["end_le_start"] == 0
    r = next(r for r in a.records if r.video_id == "video_test_0000004")
    assert r.subset == "Test" and r.duration == pytest.approx(33.83) and r.fps == 30.0
    assert (r.feat_stride, r.num_frames) == (4, 16)
    np.testing.assert_allclose(r.segments[0], [0.2, 1.1])
    assert r.label_names[0] == "CricketBowling" and r.labels[0] == 5
    assert a.class_names[5] == "CricketBowling"
    assert r.segments.dtype == np.float64 and r.labels.dtype == np.int64
    # split is case-insensitive and takes lists
    assert len(read_annotations(D / "thumos14/thumos14.json", "actionformer", split=["VALIDATION"]).records) == 200
    assert len(read_annotations(D / "thumos14/thumos14.json", "actionformer").records) == 412


def test_multithumos_test_counts():
    a = read_annotations(D / "multithumos/multithumos.json.gz", "actionformer", split="test")
    assert (len(a.records), a.num_instances, a.num_classes) == (212, 20186, 65)
    assert (a.stats["end_le_start"], a.stats["past_end"]) == (30, 29)


def test_charades_superevents_counts():
    a = read_annotations(D / "charades/charades.json.gz", "superevents", split="testing")
    assert (len(a.records), a.num_instances, a.num_classes) == (1863, 16691, 157)
    assert a.stats["past_end"] == 5027
    assert a.records[0].fps is None
    b = read_annotations(D / "charades/charades.json.gz", "superevents", split="testing", default_fps=24)
    assert b.records[0].fps == 24.0


def test_superevents_label_offset():
    path = D / "multithumos/multithumos_superevents_subset.json"
    raw = json.loads(path.read_text())
    a = read_annotations(path, "superevents", split="testing", label_offset=1)
    first = next(iter(raw))
    np.testing.assert_array_equal(a.records[0].labels, [c - 1 for c, _, _ in raw[first]["actions"]])
    assert a.num_instances == sum(len(v["actions"]) for v in raw.values())
    assert a.records[0].labels.min() >= 0


def test_epic_validation_counts_and_labels():
    a = read_annotations(EPIC / "EPIC_100_validation.csv.gz", "epic", split="validation",
                         video_info=EPIC / "EPIC_100_video_info.csv.gz",
                         class_file=EPIC / "EPIC_100_verb_classes.csv.gz")
    assert (len(a.records), a.num_instances, a.num_classes) == (138, 9668, 97)
    r = next(r for r in a.records if r.video_id == "P01_11")
    np.testing.assert_allclose(r.segments[:2], [[0.0, 1.89], [1.56, 2.45]])
    assert list(r.labels[:2]) == [0, 1] and r.label_names[:2] == ["take", "put"]
    assert r.fps == pytest.approx(59.94005994) and r.subset == "validation"
    # split is ignored for single-split files
    assert len(read_annotations(EPIC / "EPIC_100_validation.csv.gz", "epic", split="whatever").records) == 138
    n = read_annotations(EPIC / "EPIC_100_validation.csv.gz", "epic", label="noun", default_fps=30,
                         class_file=EPIC / "EPIC_100_noun_classes.csv.gz")
    assert n.num_classes == 300 and n.records[0].labels[0] == 2 and n.records[0].fps == 30.0
    act = read_annotations(EPIC / "EPIC_100_validation.csv.gz", "epic", label="action",
                           class_file=(EPIC / "EPIC_100_verb_classes.csv.gz", EPIC / "EPIC_100_noun_classes.csv.gz"))
    r = next(r for r in act.records if r.video_id == "P01_11")
    assert r.labels[0] == 0 * 300 + 2 and act.class_names[r.labels[0]] == "take,plate"
    assert act.num_classes == 97 * 300
    # without video_info: duration = latest end
    nd = read_annotations(EPIC / "EPIC_100_validation.csv.gz", "epic")
    assert nd.stats["duration_from_segments"] == 138
    assert nd.records[0].duration == pytest.approx(nd.records[0].segments[:, 1].max())


def test_epic_c2_matches_timestamp_csv():
    c2 = read_annotations(EPIC / "c2_validation.csv.gz", "epic_c2", split="validation",
                          video_info=EPIC / "c2_video_lengths.csv.gz")
    ts = read_annotations(EPIC / "EPIC_100_validation.csv.gz", "epic")
    assert (len(c2.records), c2.num_instances) == (138, 9668)
    r = next(r for r in c2.records if r.video_id == "P01_11")
    assert r.fps == 30.0 and r.segments[0, 1] == pytest.approx(56 / 30.0)
    by_id = {r.video_id: r for r in ts.records}
    for rec in c2.records:  # same rows, same verbs; frames/30 within a frame of the timestamps
        other = by_id[rec.video_id]
        np.testing.assert_array_equal(rec.labels, other.labels)
        assert np.abs(rec.segments - other.segments).max() < 0.1


def test_anet_bsn_validation_counts():
    a = read_annotations(D / "activitynet13/anet_anno_action_validation.json.gz", "anet_bsn",
                         split="validation", video_info=D / "activitynet13/video_info_new_validation.csv.gz")
    assert (len(a.records), a.num_instances, a.num_classes) == (4728, 7293, 200)
    assert (a.stats["end_le_start"], a.stats["past_end"]) == (3, 71)
    assert a.class_names == sorted(a.class_names)
    r = a.records[0]
    assert r.labels[0] == a.class_names.index(r.label_names[0]) and r.fps > 0
    with pytest.raises(ValueError, match="video_info"):
        read_annotations(D / "activitynet13/anet_anno_action_validation.json.gz", "anet_bsn", split="validation")


def test_anet_official_schema(tmp_path):
    db = {"version": "VERSION 1.3", "taxonomy": [], "database": {
        "abc": {"subset": "validation", "duration": 30.0, "resolution": "640x360", "url": "u",
                "annotations": [{"segment": [1.0, 5.0], "label": "Zumba"},
                                {"segment": [6.0, 31.0], "label": "Archery"}]},
        "def": {"subset": "training", "duration": 10.0, "annotations": [{"segment": [1, 2], "label": "Bowling"}]},
        "ghi": {"subset": "testing", "duration": 12.0, "annotations": []}}}
    p = tmp_path / "activity_net.v1-3.min.json"
    p.write_text(json.dumps(db))
    a = read_annotations(p, "anet", split="Validation", default_fps=15)
    assert a.class_names == ["Archery", "Bowling", "Zumba"]
    (r,) = a.records
    assert list(r.labels) == [2, 0] and r.fps == 15.0 and a.stats["past_end"] == 1
    assert len(read_annotations(p, "anet").records) == 3


def test_ego4d_official_and_per_clip():
    a = read_annotations(D / "ego4d/moments_synthetic.json", "ego4d", split="validation")
    ids = [r.video_id for r in a.records]
    assert ids == ["clip_a1", "clip_a2"]
    r = a.records[0]
    assert r.duration == 480.0 and r.fps == pytest.approx(30.0)
    assert r.num_instances == 3  # primary labels of both annotators
    np.testing.assert_allclose(r.segments[1], [470.0, 481.0])
    assert a.stats["past_end"] == 1 and a.records[1].num_instances == 0
    assert a.class_names == sorted(a.class_names) and len(a.class_names) == 3
    tr = read_annotations(D / "ego4d/moments_synthetic.json", "ego4d", split="training")
    assert tr.stats["end_le_start"] == 1
    p = read_annotations(D / "ego4d/per_clip_synthetic.json", "ego4d", split="validation", default_fps=30)
    assert [r.video_id for r in p.records] == ["clip_a1", "clip_a2"]
    # one row lacks label_id -> ids are the sorted names' ranks
    assert p.class_names == ["use_phone", "wash_dishes_/_utensils_/_bakeware_etc."]
    assert list(p.records[0].labels) == [1, 0] and p.records[1].fps == 30.0


# ----------------------------------------------------------------------------- bad input

def _w(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_annotations(tmp_path / "nope.json", "actionformer")
    with pytest.raises(ValueError, match="unknown annotation format 'csv'"):
        read_annotations(D / "thumos14/thumos14.json", "csv")
    assert set(FORMATS) == {"actionformer", "anet", "anet_bsn", "superevents", "epic", "epic_c2", "ego4d"}


def test_split_matching_nothing(tmp_path):
    with pytest.raises(ValueError, match="matches no video.*Test"):
        read_annotations(D / "thumos14/thumos14.json", "actionformer", split="testing")


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ({"database": {"v1": {"subset": "test", "duration": 5, "annotations": [{"segment": [1, 2], "label": "a"}]}}},
     "video 'v1': field 'label_id': missing"),
    ({"database": {"v1": {"subset": "test", "duration": "long", "annotations": []}}},
     "video 'v1': field 'duration': expected a number"),
    ({"database": {"v1": {"subset": "test", "duration": 5, "annotations": [
        {"segment": [1, "x"], "label": "a", "label_id": 0}]}}}, "video 'v1': field 'segment'"),
    ({"database": {"v1": {"duration": 5, "annotations": []}}}, "video 'v1': field 'subset': missing"),
    ({"database": {"v1": {"subset": "test", "duration": 5, "annotations": [
        {"segment": [1, 2], "label": "a", "label_id": 0}, {"segment": [1, 2], "label": "b", "label_id": 0}]}}},
     "id 0 is used for both"),
    ([1, 2], "database"),
])
def test_malformed_actionformer(tmp_path, content, needle):
    p = _w(tmp_path, "bad.json", content)
    with pytest.raises(ValueError) as err:
        read_annotations(p, "actionformer")
    assert needle in str(err.value) and "bad.json" in str(err.value)


def test_label_out_of_class_map(tmp_path):
    p = _w(tmp_path, "se.json", {"v": {"subset": "testing", "duration": 9, "actions": [[0, 1, 2]]}})
    with pytest.raises(ValueError, match=r"se\.json.*video 'v'.*label out of the class map"):
        read_annotations(p, "superevents", label_offset=1)
    with pytest.raises(ValueError, match=r"thumos14\.json: video '.*': label id 19 .*num_classes=10"):
        read_annotations(D / "thumos14/thumos14.json", "actionformer", split="test", num_classes=10)
    csvp = _w(tmp_path, "EPIC_x_validation.csv",
              "narration_id,video_id,start_timestamp,stop_timestamp,verb_class,noun_class\n"
              "a,P01_01,00:00:01.00,00:00:02.00,120,3\n")
    with pytest.raises(ValueError, match=r"video 'P01_01'.*verb_class.*120 is outside"):
        read_annotations(csvp, "epic", class_file=EPIC / "EPIC_100_verb_classes.csv.gz")


@pytest.mark.parametrize("row,needle", [
    ("a,P01_01,00:00:01.00,00:0x:02.00,1,3", "stop_timestamp"),
    ("a,P01_01,00:00:01.00,2.0,1,3", "HH:MM:SS"),
    ("a,P01_01,00:00:01.00,00:00:02.00,one,3", "verb_class"),
    ("a,P01_01,00:00:01.00", "wrong number of columns"),
])
def test_malformed_epic_rows(tmp_path, row, needle):
    p = _w(tmp_path, "EPIC_100_validation.csv",
           "narration_id,video_id,start_timestamp,stop_timestamp,verb_class,noun_class\n" + row + "\n")
    with pytest.raises(ValueError, match=needle):
        read_annotations(p, "epic")
    p2 = _w(tmp_path, "c2.csv", "narration_id,video\nx,y\n")
    with pytest.raises(ValueError, match="missing CSV column"):
        read_annotations(p2, "epic_c2")


def test_video_info_missing_video(tmp_path):
    info = _w(tmp_path, "lengths.csv", "video,frames\nP99_01,100\n")
    with pytest.raises(ValueError, match=r"lengths\.csv: video 'P01_11'"):
        read_annotations(EPIC / "c2_validation.csv.gz", "epic_c2", video_info=info)


def test_bad_rows_are_kept_and_counted(tmp_path):
    p = _w(tmp_path, "x.json", {"database": {"v": {"subset": "test", "duration": 10.0, "fps": 30, "annotations": [
        {"segment": [1, 2], "label": "a", "label_id": 0},
        {"segment": [5, 5], "label": "a", "label_id": 0},
        {"segment": [8, 12], "label": "b", "label_id": 1},
        {"segment": [-1, 3], "label": "b", "label_id": 1}]}}})
    a = read_annotations(p, "actionformer")
    assert a.num_instances == 4
    assert (a.stats["end_le_start"], a.stats["past_end"], a.stats["negative_start"]) == (1, 1, 1)
