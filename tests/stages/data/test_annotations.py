"""Annotation loaders (ActivityNet JSON, THUMOS-14 folder, CSV): content, errors, clipping."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from stages.data.annotations import (
    AnnotationError,
    VideoAnnotation,
    load_activitynet_json,
    load_annotations,
    load_class_list,
    load_csv,
    load_thumos_folder,
    thumos_exclusions,
)

# ------------------------------------------------------------------------------ ActivityNet


def anet_db() -> dict:
    return {
        "version": "VERSION 1.3",
        "database": {
            "vid_b": {"subset": "validation", "duration": 100.0, "fps": 30,
                      "annotations": [{"label": "Long jump", "segment": [50.0, 60.0]},
                                      {"label": "Archery", "segment": [10.0, 20.5]}]},
            "vid_a": {"subset": "training", "duration": 40.0,
                      "annotations": [{"label": "Archery", "segment": [0, 5]}]},
            "vid_c": {"subset": "testing", "duration": 12.0, "annotations": []},
        },
    }


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_activitynet_load(tmp_path):
    ann = load_activitynet_json(write_json(tmp_path / "a.json", anet_db()))
    assert ann.classes == ["Archery", "Long jump"]
    assert ann.class_index == {"Archery": 0, "Long jump": 1}
    b = ann.videos["vid_b"]
    assert (b.subset, b.duration, b.fps) == ("validation", 100.0, 30.0)
    assert b.segments == [(10.0, 20.5, "Archery"), (50.0, 60.0, "Long jump")]  # sorted by start
    assert b["segments"] is b.segments and b.get("nope", 7) == 7
    assert ann.videos["vid_a"].fps is None
    assert ann.videos_in("validation") == ["vid_b"]
    assert ann.videos_in("val") == ["vid_b"] and ann.videos_in("TESTING") == ["vid_c"]
    assert ann.videos_in(None) == ["vid_a", "vid_b", "vid_c"]
    assert ann.subsets() == ["testing", "training", "validation"]
    assert ann.ground_truth("training") == [
        {"video": "vid_a", "label": "Archery", "start": 0.0, "end": 5.0}]
    with pytest.raises(ValueError, match=r"subset 'dev' not found .*available: testing, training"):
        ann.videos_in("dev")


def test_activitynet_round_trip_and_class_file(tmp_path):
    src = write_json(tmp_path / "a.json", anet_db())
    classes = tmp_path / "classes.txt"
    classes.write_text("Long jump\n\nArchery\nBowling\n")
    ann = load_activitynet_json(src, classes)
    assert ann.classes == ["Long jump", "Archery", "Bowling"]          # file order kept
    out = ann.to_activitynet_json()
    assert out["classes"] == ann.classes
    assert out["database"]["vid_b"]["annotations"][0]["label_id"] == 1
    again = load_annotations(write_json(tmp_path / "b.json", out))     # classes read back
    assert again.classes == ann.classes and again.videos == ann.videos


def test_activitynet_clipping_warns_and_drops(tmp_path):
    db = anet_db()
    db["database"]["vid_a"]["annotations"] = [{"label": "Archery", "segment": [30, 45.5]},
                                              {"label": "Archery", "segment": [41, 44]}]
    with pytest.warns(UserWarning) as record:
        ann = load_activitynet_json(write_json(tmp_path / "a.json", db))
    messages = [str(r.message) for r in record]
    assert any("vid_a" in m and "[30.0, 45.5]" in m and "clipped" in m for m in messages)
    assert any("vid_a" in m and "[41.0, 44.0]" in m and "dropped" in m for m in messages)
    assert ann.videos["vid_a"].segments == [(30.0, 40.0, "Archery")]


def test_zero_length_segment_is_kept_with_warning(tmp_path):
    # the official ActivityNet 1.3 file has a few of these; its evaluator counts them as GT
    db = anet_db()
    db["database"]["vid_a"]["annotations"].append({"label": "Archery", "segment": [0, 0]})
    with pytest.warns(UserWarning, match=r"zero-length segment \[0.0, 0.0\] of video vid_a kept"):
        ann = load_activitynet_json(write_json(tmp_path / "a.json", db))
    assert (0.0, 0.0, "Archery") in ann.videos["vid_a"].segments


def test_activitynet_no_warning_inside_duration(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_activitynet_json(write_json(tmp_path / "a.json", anet_db()))


def _mutate(fn):
    db = anet_db()
    fn(db["database"])
    return db


@pytest.mark.parametrize("data, message", [
    ({"videos": {}}, "missing top-level object 'database'"),
    ([1, 2], "missing top-level object 'database'"),
    (_mutate(lambda d: d["vid_a"].pop("subset")), "video vid_a: missing field 'subset'"),
    (_mutate(lambda d: d["vid_a"].pop("annotations")), "video vid_a: missing field 'annotations'"),
    (_mutate(lambda d: d["vid_a"]["annotations"][0].pop("label")),
     "video vid_a annotation #0: missing field 'label'"),
    (_mutate(lambda d: d["vid_a"]["annotations"][0].pop("segment")),
     "video vid_a annotation #0: missing field 'segment'"),
    (_mutate(lambda d: d["vid_a"]["annotations"][0].update(segment=[1])), "is not \\[start, end\\]"),
    (_mutate(lambda d: d["vid_a"]["annotations"][0].update(segment=[5, 4])),
     "vid_a annotation #0: end 4.0 < start 5.0"),
    (_mutate(lambda d: d["vid_a"]["annotations"][0].update(segment=[-1, 5])),
     "vid_a annotation #0: negative start -1.0"),
    (_mutate(lambda d: d["vid_a"]["annotations"][0].update(segment=["x", 5])),
     "start 'x' is not a number"),
    (_mutate(lambda d: d["vid_a"]["annotations"][0].update(label=3)), "label 3 is not"),
    (_mutate(lambda d: d["vid_a"].update(duration=0)), "vid_a: duration 0.0 is not positive"),
    (_mutate(lambda d: d["vid_a"].update(subset=None)), "vid_a: subset None"),
    (_mutate(lambda d: d["vid_a"].update(annotations={})), "'annotations' is not a list"),
])
def test_activitynet_errors(tmp_path, data, message):
    with pytest.raises(AnnotationError, match=message) as info:
        load_activitynet_json(write_json(tmp_path / "bad.json", data))
    assert "bad.json" in str(info.value) and "\n" not in str(info.value)


def test_activitynet_malformed_json_duplicates_unknown_label(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"database": {')
    with pytest.raises(AnnotationError, match="broken.json: not valid JSON"):
        load_activitynet_json(bad)
    dup = tmp_path / "dup.json"
    dup.write_text('{"database": {"v": {"subset": "training", "annotations": []},'
                   ' "v": {"subset": "testing", "annotations": []}}}')
    with pytest.raises(AnnotationError, match="dup.json: duplicate key 'v'"):
        load_activitynet_json(dup)
    src = write_json(tmp_path / "a.json", anet_db())
    with pytest.raises(AnnotationError, match="video vid_b .* unknown label 'Long jump'"):
        load_activitynet_json(src, ["Archery"])
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_activitynet_json(tmp_path / "nope.json")


def test_class_list_errors(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("a\nb\na\n")
    with pytest.raises(AnnotationError, match="c.txt: duplicate class 'a'"):
        load_class_list(f)
    f.write_text("\n  \n")
    with pytest.raises(AnnotationError, match="class list is empty"):
        load_class_list(f)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_class_list(tmp_path / "missing.txt")


# ---------------------------------------------------------------------------- THUMOS folder


def thumos_folder(root: Path) -> Path:
    root.mkdir()
    (root / "BaseballPitch_test.txt").write_text(
        "video_test_0000004 0.2 1.1\nvideo_test_0000004  25.5  27.1 \n\nvideo_test_0000007 3 4\n")
    (root / "CliffDiving_test.txt").write_text("video_test_0000007\t10.0\t12.5\n")
    (root / "Ambiguous_test.txt").write_text("video_test_0001292 5.0 6.0\n"
                                             "video_test_0000004 30 31\n")
    (root / "BaseballPitch_val.txt").write_text("video_validation_0000051 1 2\n")
    (root / "CliffDiving_val.txt").write_text("")  # every class has a file per split
    (root / "README.md").write_text("not an annotation file")
    return root


def test_thumos_folder_load(tmp_path):
    ann = load_thumos_folder(thumos_folder(tmp_path / "th"))
    assert ann.classes == ["BaseballPitch", "CliffDiving"]                 # no Ambiguous
    assert ann.videos_in("test") == ["video_test_0000004", "video_test_0000007",
                                     "video_test_0001292"]
    assert ann.videos_in("testing") == ann.videos_in("test")
    assert ann.videos_in("validation") == ["video_validation_0000051"]
    v4 = ann.videos["video_test_0000004"]
    assert v4.segments == [(0.2, 1.1, "BaseballPitch"), (25.5, 27.1, "BaseballPitch")]
    assert v4.ambiguous == [(30.0, 31.0)] and v4.duration is None
    v1292 = ann.videos["video_test_0001292"]
    assert v1292.segments == [] and v1292.ambiguous == [(5.0, 6.0)]
    js = ann.to_activitynet_json()
    assert js["database"]["video_test_0001292"]["ambiguous"] == [[5.0, 6.0]]
    assert load_annotations(tmp_path / "th").videos == ann.videos      # auto → THUMOS


def test_thumos_folder_errors(tmp_path):
    root = thumos_folder(tmp_path / "th")
    (root / "CliffDiving_test.txt").write_text("video_test_0000007 10.0\n")
    with pytest.raises(AnnotationError, match=r"CliffDiving_test.txt:1: expected 'video start end'"):
        load_thumos_folder(root)
    (root / "CliffDiving_test.txt").write_text("video_test_0000007 10.0 9.0\n")
    with pytest.raises(AnnotationError, match=r"CliffDiving_test.txt:1: end 9.0 < start 10.0"):
        load_thumos_folder(root)
    (root / "CliffDiving_test.txt").write_text("video_validation_0000051 1 3\n")
    with pytest.raises(AnnotationError, match="video_validation_0000051 is in split 'test' here"):
        load_thumos_folder(root)
    (root / "CliffDiving_test.txt").unlink()
    (root / "CliffDiving_val.txt").unlink()
    (root / "notes.txt").write_text("x")
    with pytest.raises(AnnotationError, match="notes.txt: name is not <Class>_<split>.txt"):
        load_thumos_folder(root)
    with pytest.raises(AnnotationError, match="unknown label 'BaseballPitch'"):
        (root / "notes.txt").unlink()
        load_thumos_folder(root, ["CliffDiving"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AnnotationError, match="no <Class>_<split>.txt files"):
        load_thumos_folder(empty)


def test_thumos_exclusion_policies():
    assert thumos_exclusions("none") == frozenset()
    assert thumos_exclusions("actionformer") == {"video_test_0001292"}
    assert thumos_exclusions("opentad") == {"video_test_0001292", "video_test_0000270"}
    with pytest.raises(ValueError, match="unknown exclusion policy 'x'; valid: none"):
        thumos_exclusions("x")


def test_exclude_returns_copy(tmp_path):
    ann = load_thumos_folder(thumos_folder(tmp_path / "th"))
    kept = ann.exclude(thumos_exclusions("actionformer"))
    assert "video_test_0001292" not in kept.videos and "video_test_0001292" in ann.videos
    assert len(kept.videos_in("test")) == 2


# ---------------------------------------------------------------------------------------- CSV


def test_csv_load(tmp_path):
    f = tmp_path / "ann.csv"
    f.write_text("video,start,end,label,subset,duration\n"
                 "clip1,1.5,3,wave,training,10\n"
                 "clip1,0,1,jump,training,\n"
                 "clip2,,,,testing,8\n"                      # video without actions
                 "clip3,2,9,wave,testing,8\n")
    with pytest.warns(UserWarning, match=r"segment \[2.0, 9.0\] of video clip3 clipped"):
        ann = load_annotations(f)
    assert ann.classes == ["jump", "wave"]
    assert ann.videos["clip1"].segments == [(0.0, 1.0, "jump"), (1.5, 3.0, "wave")]
    assert ann.videos["clip1"].duration == 10.0
    assert ann.videos["clip2"].segments == [] and ann.videos_in("test") == ["clip2", "clip3"]
    assert ann.videos["clip3"].segments == [(2.0, 8.0, "wave")]


def test_csv_without_subset_column(tmp_path):
    f = tmp_path / "ann.csv"
    f.write_text("label,video,end,start\nwave,a,2,1\n")             # column order is free
    ann = load_csv(f)
    assert ann.subsets() == ["all"] and ann.videos["a"].segments == [(1.0, 2.0, "wave")]


@pytest.mark.parametrize("text, message", [
    ("video,start,label\na,1,x\n", "header is missing column\\(s\\) end"),
    ("video,start,end,label,subest\na,1,2,x,t\n", "unknown column\\(s\\) subest"),
    ("video,start,end,label,subset\na,1,2,x,training\na,3,4,x,testing\n",
     "ann.csv:3: video a is in subset 'testing' here but 'training'"),
    ("video,start,end,label\na,1,2\n", "ann.csv:2: expected 4 columns"),
    ("video,start,end,label\na,1,2,x,extra\n", "ann.csv:2: expected 4 columns"),
    ("video,start,end,label\na,one,2,x\n", "ann.csv:2: start 'one' is not a number"),
    ("video,start,end,label\na,2,1.5,x\n", "ann.csv:2: end 1.5 < start 2.0"),
    ("video,start,end,label\na,-0.5,2,x\n", "ann.csv:2: negative start -0.5"),
    ("video,start,end,label\na,1,2,\n", "ann.csv:2: empty label"),
    ("video,start,end,label\n,1,2,x\n", "ann.csv:2: empty video id"),
    ("video,start,end,label,duration\na,1,2,x,5\na,3,4,x,6\n", "ann.csv:3: video a has duration"),
    ("video,start,end,label,fps\na,1,2,x,0\n", "ann.csv:2: fps 0.0 is not positive"),
])
def test_csv_errors(tmp_path, text, message):
    f = tmp_path / "ann.csv"
    f.write_text(text)
    with pytest.raises(AnnotationError, match=message):
        load_csv(f)


def test_csv_unknown_label_with_class_list(tmp_path):
    f = tmp_path / "ann.csv"
    f.write_text("video,start,end,label\na,1,2,wave\n")
    with pytest.raises(AnnotationError, match="video a segment \\[1.0, 2.0\\] has unknown label 'wave'"):
        load_csv(f, ["jump"])


def test_load_annotations_dispatch_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotations not found"):
        load_annotations(tmp_path / "missing.json")
    f = write_json(tmp_path / "a.json", anet_db())
    with pytest.raises(ValueError, match="unknown annotation format 'xml'"):
        load_annotations(f, fmt="xml")
    assert load_annotations(f, fmt="activitynet").classes == ["Archery", "Long jump"]


def test_video_annotation_item_access():
    v = VideoAnnotation(subset="training", duration=3.0)
    assert v["subset"] == "training" and v["fps"] is None
    with pytest.raises(KeyError):
        v["label"]
