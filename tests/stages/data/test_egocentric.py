"""EPIC-Kitchens-100 CSVs and Ego4D Moment Queries JSON (small files in the real layouts)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.data.annotations import AnnotationError, load_annotations
from stages.data.egocentric import load_ego4d_mq, load_epic_csv, parse_timestamp

EPIC_HEADER = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,"
               "start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n")
EPIC_TRAIN = EPIC_HEADER + (
    "P01_01_0,P01,P01_01,00:00:01.089,00:00:00.14,00:00:03.37,8,202,open door,open,3,door,3,['door'],[3]\n"
    "P01_01_1,P01,P01_01,00:00:02.629,00:00:02.00,00:00:05.50,120,330,take cup,take,0,cup,13,['cup'],[13]\n"
    'P01_01_2,P01,P01_01,00:01:02.000,00:01:01.50,00:01:04.25,3690,3855,put bag in fridge,put,1,bag,7,'
    "\"['bag', 'fridge']\",\"[7, 12]\"\n"
    "P02_03_0,P02,P02_03,00:00:10.00,00:00:09.50,00:00:12.00,570,720,wash cup,wash,2,cup,13,['cup'],[13]\n")
EPIC_VAL = EPIC_HEADER + (
    "P01_11_0,P01,P01_11,00:00:00.50,00:00:00.25,00:00:02.75,15,165,take plate,take,0,plate,4,['plate'],[4]\n")
VERB_CLASSES = ('id,key,instances,category\n0,take,"[\'take\', \'grab\']",retrieve\n1,put,"[\'put\']",leave\n'
                '2,wash,"[\'wash\']",clean\n3,open,"[\'open\']",access\n')


def _epic_folder(tmp_path: Path, classes: bool = True) -> Path:
    folder = tmp_path / "epic"
    folder.mkdir()
    (folder / "EPIC_100_train.csv").write_text(EPIC_TRAIN)
    (folder / "EPIC_100_validation.csv").write_text(EPIC_VAL)
    (folder / "EPIC_100_video_info.csv").write_text(
        "video_id,duration,fps,resolution\nP01_01,65.0,59.94,1920x1080\nP02_03,20.0,50.0,1920x1080\n")
    if classes:
        (folder / "EPIC_100_verb_classes.csv").write_text(VERB_CLASSES)
    return folder


def test_timestamps():
    assert parse_timestamp("00:01:02.50", "x") == pytest.approx(62.5)
    assert parse_timestamp("01:00:00.1", "x") == pytest.approx(3600.1)
    assert parse_timestamp("3.25", "x") == 3.25
    with pytest.raises(AnnotationError, match="f.csv:3: timestamp"):
        parse_timestamp("1:2:x", "f.csv:3")


def test_epic_csv_with_class_file_durations_and_overlaps(tmp_path):
    folder = _epic_folder(tmp_path)
    ann = load_annotations(folder / "EPIC_100_train.csv")          # auto: header has start_timestamp
    assert ann.classes == ["take", "put", "wash", "open"]           # EPIC id order
    assert ann.videos_in("training") == ["P01_01", "P02_03"] and ann.subsets() == ["training"]
    v = ann.videos["P01_01"]
    assert v.duration == 65.0
    # "open door" [0.14, 3.37] and "take cup" [2.0, 5.5] overlap: both kept, sorted by start
    assert v.segments == [(0.14, 3.37, "open"), (2.0, 5.5, "take"), (61.5, 64.25, "put")]


def test_epic_folder_both_splits_noun_task_and_ids_without_class_file(tmp_path):
    folder = _epic_folder(tmp_path, classes=False)
    ann = load_annotations(folder)                                  # auto: a folder of EPIC files
    assert ann.subsets() == ["training", "validation"] and ann.videos_in("validation") == ["P01_11"]
    assert ann.classes == ["0", "1", "2", "3"]                      # class index = EPIC verb id
    nouns = load_epic_csv(folder, task="noun")
    assert len(nouns.classes) == 14 and nouns.videos["P02_03"].segments == [(9.5, 12.0, "13")]


def test_epic_errors_name_the_row(tmp_path):
    bad = tmp_path / "EPIC_100_train.csv"
    bad.write_text(EPIC_HEADER + "a,P01,P01_01,0,00:00:03.0,00:00:01.0,1,2,x,take,0,cup,1,[],[]\n")
    with pytest.raises(AnnotationError, match=r"EPIC_100_train.csv:2: end 1.0 < start 3.0"):
        load_epic_csv(bad)
    bad.write_text(EPIC_HEADER.replace("verb_class,", "") + "a\n")
    with pytest.raises(AnnotationError, match="missing column"):
        load_epic_csv(bad)
    bad.write_text(EPIC_HEADER + "a,P01,P01_01,0,00:00:01.0,00:00:02.0,1,2,x,take,7,cup,1,[],[]\n")
    (tmp_path / "EPIC_100_verb_classes.csv").write_text(VERB_CLASSES)
    with pytest.raises(AnnotationError, match="verb_class 7 is not in the class list"):
        load_epic_csv(bad)


def _moments(split="val") -> dict:
    def label(name, s, e, primary=True):
        return {"start_time": s, "end_time": e, "video_start_time": s + 100, "video_end_time": e + 100,
                "video_start_frame": int(30 * (s + 100)), "video_end_frame": int(30 * (e + 100)),
                "label": name, "primary": primary}
    return {"version": "v1", "date": "2021", "description": "moments", "manifest": "x", "videos": [
        {"video_uid": "vid-1", "split": split, "clips": [
            {"clip_uid": "clip-a", "video_start_sec": 100.0, "video_end_sec": 580.0,
             "video_start_frame": 3000, "video_end_frame": 17400, "clip_start_sec": 0.0,
             "clip_end_sec": 480.0, "clip_start_frame": 0, "clip_end_frame": 14400,
             "annotations": [
                 {"annotator_uid": "ann-1", "labels": [label("cut_dough", 10.0, 30.0),
                                                       label("knead_dough", 20.0, 45.5, False)]},
                 {"annotator_uid": "ann-2", "labels": [label("cut_dough", 11.0, 29.0)]}]},
            {"clip_uid": "clip-b", "clip_start_sec": 0.0, "clip_end_sec": 60.0,
             "annotations": [{"annotator_uid": "ann-1", "labels": [label("wash_dishes", 50.0, 70.0)]}]},
        ]}]}


def test_ego4d_moments_clips_overlaps_and_clipping(tmp_path):
    path = tmp_path / "moments_val.json"
    path.write_text(json.dumps(_moments()))
    with pytest.warns(UserWarning, match="clipped"):
        ann = load_annotations(path)                                # auto: moments_*.json
    assert ann.classes == ["cut_dough", "knead_dough", "wash_dishes"]
    assert ann.videos_in("validation") == ["clip-a", "clip-b"]
    a = ann.videos["clip-a"]
    assert a.duration == 480.0
    assert a.segments == [(10.0, 30.0, "cut_dough"), (11.0, 29.0, "cut_dough"), (20.0, 45.5, "knead_dough")]
    assert ann.videos["clip-b"].segments == [(50.0, 60.0, "wash_dishes")]


def test_ego4d_folder_and_errors(tmp_path):
    (tmp_path / "moments_train.json").write_text(json.dumps(_moments(split="train")))
    data = _moments()
    data["videos"][0]["clips"] = data["videos"][0]["clips"][:1]
    data["videos"][0]["clips"][0]["clip_uid"] = "clip-v"
    (tmp_path / "moments_val.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning):
        ann = load_annotations(tmp_path)
    assert ann.subsets() == ["training", "validation"] and ann.videos_in("validation") == ["clip-v"]
    del data["videos"][0]["clips"][0]["annotations"][0]["labels"][0]["end_time"]
    bad = tmp_path / "bad" / "moments_val.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match="clip clip-v label #0 of annotator ann-1: missing 'end_time'"):
        load_ego4d_mq(bad)
