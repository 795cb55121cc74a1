"""Tests for the synthetic video writer and the deterministic demo dataset generator."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import decord
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli_demo import main as demo_cli
from stages.demo.data import CLASSES, FORMAT_VERSION, generate_demo, object_state, plan_demo, render_video
from stages.demo.videogen import moving_square_frames, write_mp4

# Small but complete: 1 testing + 3 training videos, each long enough to hold all 5 classes.
SMALL = {"num_videos": 4, "seed": 7, "fps": 10, "size": 64, "min_len": 16, "max_len": 20, "test_fraction": 0.25}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate_demo(out, **SMALL)
    return out


@pytest.fixture(scope="module")
def demo_again(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo_again")
    generate_demo(out, **SMALL)
    return out


def _load(out: Path) -> dict:
    return json.loads((out / "annotations.json").read_text())


def _decode(path: Path) -> tuple[np.ndarray, float]:
    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy(), vr.get_avg_fps()


# ------------------------------------------------------------------------------ write_mp4 / fixtures


def test_write_mp4_roundtrip_and_byte_determinism(tmp_path: Path) -> None:
    frames = moving_square_frames(20, size=64, seed=3)
    assert np.array_equal(frames, moving_square_frames(20, size=64, seed=3))
    assert not np.array_equal(frames, moving_square_frames(20, size=64, seed=4))
    write_mp4(tmp_path / "a.mp4", frames, fps=12.5)
    write_mp4(tmp_path / "sub" / "b.mp4", frames.copy(), fps=12.5)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "sub" / "b.mp4").read_bytes()
    decoded, fps = _decode(tmp_path / "a.mp4")
    assert decoded.shape == frames.shape and fps == pytest.approx(12.5)
    assert np.abs(decoded.astype(int) - frames).mean() < 4.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "sub"]  # no temp files left


@pytest.mark.parametrize(
    "frames, match",
    [
        (np.zeros((3, 31, 32, 3), np.uint8), "even"),
        (np.zeros((3, 32, 32, 3), np.float32), "uint8"),
        (np.zeros((3, 32, 32), np.uint8), r"\[T, H, W, 3\]"),
        (np.zeros((0, 32, 32, 3), np.uint8), "zero frames"),
    ],
)
def test_write_mp4_rejects_bad_frames(tmp_path: Path, frames: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_mp4(tmp_path / "bad.mp4", frames, fps=10)
    assert not list(tmp_path.iterdir())


def test_fixtures_are_readable_by_decord(video_dir: Path, make_video) -> None:
    lengths = {p.name: len(decord.VideoReader(str(p))) for p in sorted(video_dir.glob("*.mp4"))}
    assert lengths == {"clip_a.mp4": 30, "clip_b.mp4": 24, "clip_c.mp4": 45}
    path = make_video("x/y", seconds=1.0, fps=8, size=32, seed=5)
    vr = decord.VideoReader(str(path))
    assert path.name == "y.mp4" and len(vr) == 8 and vr.get_avg_fps() == 8 and vr[0].shape == (32, 32, 3)


# ------------------------------------------------------------------------------ demo dataset


def test_layout_and_format(demo: Path) -> None:
    ann = _load(demo)
    assert ann["version"] == FORMAT_VERSION and ann["classes"] == list(CLASSES)
    assert [n["nodeName"] for n in ann["taxonomy"]] == list(CLASSES)
    assert (demo / "classes.txt").read_text().splitlines() == list(CLASSES)
    ids = sorted(ann["database"])
    assert ids == [f"demo_{i:03d}" for i in range(4)]
    assert sorted(p.stem for p in (demo / "videos").glob("*.mp4")) == ids
    assert not [p for p in demo.rglob("*") if p.name.startswith(".")]  # no temp files


def test_annotations_load_with_the_project_loader(demo: Path) -> None:
    from stages.data.annotations import load_activitynet_json

    ann = load_activitynet_json(demo / "annotations.json")
    assert ann.classes == list(CLASSES)  # the top-level "classes" list keeps label_id order
    assert len(ann.videos_in("testing")) == 1 and len(ann.videos_in("training")) == 3


def test_annotations_are_valid_and_balanced(demo: Path) -> None:
    db = _load(demo)["database"]
    per_subset: dict[str, Counter] = {"training": Counter(), "testing": Counter()}
    for vid, entry in db.items():
        assert entry["fps"] == 10 and entry["resolution"] == "64x64"
        assert entry["duration"] == pytest.approx(entry["num_frames"] / 10)
        assert 16 - 0.1 <= entry["duration"] <= 20 + 0.1
        segs = [a["segment"] for a in entry["annotations"]]
        assert 2 <= len(segs) <= 5, vid
        assert segs == sorted(segs)
        prev_end = 0.0
        for a, (s, e) in zip(entry["annotations"], segs):
            assert a["label_id"] == CLASSES.index(a["label"])
            assert 0.0 < s < e < entry["duration"], (vid, s, e)
            assert 2.0 - 1e-6 <= e - s <= 8.0 + 1e-6, (vid, s, e)
            assert s - prev_end >= 1.0 - 1e-6, f"{vid}: actions overlap or touch at {s}"
            prev_end = e
            per_subset[entry["subset"]][a["label"]] += 1
    for subset, counts in per_subset.items():
        assert set(counts) == set(CLASSES), subset
        assert max(counts.values()) - min(counts.values()) <= 1, (subset, counts)


def test_same_seed_is_identical_other_seed_differs(demo: Path, demo_again: Path, tmp_path: Path) -> None:
    assert (demo / "annotations.json").read_bytes() == (demo_again / "annotations.json").read_bytes()
    a, _ = _decode(demo / "videos" / "demo_001.mp4")
    b, _ = _decode(demo_again / "videos" / "demo_001.mp4")
    assert np.array_equal(a, b)
    for p in (demo / "videos").glob("*.mp4"):
        assert p.read_bytes() == (demo_again / "videos" / p.name).read_bytes(), p.name
    other = plan_demo(**{**SMALL, "seed": 8})
    assert [x.actions for x in other] != [x.actions for x in plan_demo(**SMALL)]


def test_videos_decode_with_right_length_fps_and_content(demo: Path) -> None:
    db = _load(demo)["database"]
    plans = {p.video_id: p for p in plan_demo(**SMALL)}
    for vid, entry in db.items():
        frames, fps = _decode(demo / "videos" / f"{vid}.mp4")
        assert frames.shape == (entry["num_frames"], 64, 64, 3), vid
        assert fps == pytest.approx(10.0)
        rendered = render_video(plans[vid])
        assert np.abs(frames.astype(np.int16) - rendered).mean() < 8.0, vid  # lossy, but the same video


def test_stale_demo_videos_are_removed(tmp_path: Path) -> None:
    small = {**SMALL, "num_videos": 2, "min_len": 16, "max_len": 16}
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "demo_007.mp4").write_bytes(b"old")
    (tmp_path / "videos" / "mine.mp4").write_bytes(b"user file")
    summary = generate_demo(tmp_path, **small)
    names = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert names == ["demo_000.mp4", "demo_001.mp4", "mine.mp4"]
    assert summary.num_videos == 2 and sum(summary.actions_per_class.values()) == 10


# ------------------------------------------------------------------------------ left vs right


def _mirror(inst):
    """The time-reversed instance: a move_right run backwards is a move_left and vice versa."""
    flip = {"move_left": "move_right", "move_right": "move_left"}[inst.label]
    return dataclasses.replace(inst, label=flip, x_from=inst.x_to, x_to=inst.x_from,
                               ramp_in=inst.ramp_out, ramp_out=inst.ramp_in)  # fmt: skip


def _moves(plans):
    return [(p, a) for p in plans for a in p.actions if a.label in ("move_left", "move_right")]


def test_slides_left_right_are_time_reversals_of_each_other() -> None:
    plans = plan_demo(num_videos=24, seed=3, fps=15, size=112, move="slide")
    moves = _moves(plans)
    assert {a.label for _, a in moves} == {"move_left", "move_right"}
    for p, a in moves:
        assert a.ratchet == 0
        m = _mirror(a)
        for f in range(a.start, a.end):
            fwd = object_state(a, f, p.fps)
            back = object_state(m, a.start + a.end - 1 - f, p.fps)
            assert np.allclose(fwd, back, atol=1e-9), (p.video_id, a.label, f)


def test_ratchet_left_right_are_mirror_images_frame_by_frame() -> None:
    plans = plan_demo(num_videos=24, seed=3, fps=15, size=112)  # move="ratchet" is the default
    moves = _moves(plans)
    assert {a.label for _, a in moves} == {"move_left", "move_right"}
    for p, a in moves:
        flip = {"move_left": "move_right", "move_right": "move_left"}[a.label]
        m, c = dataclasses.replace(a, label=flip, x_from=a.x_to, x_to=a.x_from), 0.5 * (a.x_from + a.x_to)
        for f in range(a.show, a.hide):
            fwd, other = object_state(a, f, p.fps), object_state(m, f, p.fps)
            assert np.isclose(fwd[0] + other[0], 2 * c, atol=1e-9), (p.video_id, a.label, f)
            assert np.allclose(fwd[1:], other[1:], atol=1e-9)


def test_ratchet_steps_one_way_inside_every_clip_and_never_drifts() -> None:
    plans = plan_demo(num_videos=24, seed=3, fps=15, size=112)
    periods = level = 0
    for p, a in _moves(plans):
        assert (a.ratchet, a.hold) == (8, 2)
        assert abs(a.x_to - a.x_from) >= 0.5 * p.size - 1e-9
        c, sign = 0.5 * (a.x_from + a.x_to), (1 if a.label == "move_right" else -1)
        for f0 in range(a.start + (-a.start) % 16, a.end - 15, 16):  # clips aligned with the periods
            x = np.array([object_state(a, f, p.fps)[0] for f in range(f0, f0 + 16)])
            assert np.allclose(x[0::2], x[1::2])  # one position per 2-frame tubelet
            assert (sign * np.diff(x[0::2]) > 0).all(), (p.video_id, a.label, f0)  # one way, no snap inside
            periods += 1
        if a.ramp_in == 0 and a.ramp_out == 0:  # full excursion throughout: every window averages to c
            for f0 in range(a.start, a.end - 15):
                x = [object_state(a, f, p.fps)[0] for f in range(f0, f0 + 16)]
                assert np.isclose(np.mean(x), c, atol=1e-9), (p.video_id, a.label, f0)
                level += 1
    assert periods > 50 and level > 100


@pytest.mark.parametrize("move", ["ratchet", "slide"])
def test_left_right_single_frame_statistics_match_but_motion_differs(move: str) -> None:
    plans = plan_demo(num_videos=200, seed=11, fps=15, size=112, move=move)
    xs: dict[str, list[float]] = {"move_left": [], "move_right": []}
    radius: dict[str, list[float]] = {"move_left": [], "move_right": []}
    bright: dict[str, list[float]] = {"move_left": [], "move_right": []}
    for p, a in _moves(plans):
        states = np.array([object_state(a, f, p.fps) for f in range(a.start, a.end)])
        if move == "slide":
            disp = states[-1, 0] - states[0, 0]
            assert np.sign(disp) == (1 if a.label == "move_right" else -1), (p.video_id, a.label)
            assert abs(disp) > 0.2 * p.size
        assert np.allclose(states[:, 1], a.y)  # purely horizontal
        xs[a.label].extend(states[:, 0])
        radius[a.label].append(a.radius)
        bright[a.label].append(float(np.mean(a.colour)))
    size = 112
    for stat in (xs, radius, bright):
        left, right = np.array(stat["move_left"]), np.array(stat["move_right"])
        assert len(left) > 50 and len(right) > 50
        pooled_sd = np.sqrt((left.var() + right.var()) / 2)
        assert abs(left.mean() - right.mean()) < 0.35 * pooled_sd
    # the per-frame position histograms overlap almost completely
    bins = np.linspace(0, size, 15)
    hl = np.histogram(xs["move_left"], bins)[0] / len(xs["move_left"])
    hr = np.histogram(xs["move_right"], bins)[0] / len(xs["move_right"])
    assert 0.5 * np.abs(hl - hr).sum() < 0.1


@pytest.mark.parametrize("move", ["ratchet", "slide"])
def test_rendered_object_moves_in_the_labelled_direction(move: str) -> None:
    cols = np.arange(SMALL["size"])
    for p in plan_demo(**SMALL, move=move):
        _, masks = render_video(p, return_masks=True)
        visible = np.zeros(p.num_frames, dtype=bool)
        for a in p.actions:
            visible[a.show : a.hide] = True
        assert np.array_equal(masks.sum(axis=(1, 2)) > 0, visible), p.video_id  # on screen as planned

        def cx(t: int, masks: np.ndarray = masks) -> float:
            m = masks[t].sum(axis=0)
            return float((m * cols).sum() / m.sum())

        for a in p.actions:
            if a.label not in ("move_left", "move_right"):
                continue
            if move == "slide":
                first, last = a.start, a.end - 1
            else:  # the period nearest the middle of the action, first vs last tubelet
                first = (a.start + a.end) // 2 // 16 * 16
                last = first + 14
            disp = cx(last) - cx(first)
            assert (disp > 0) == (a.label == "move_right"), (p.video_id, a.label, disp)
            assert abs(disp) > 0.2 * p.size


# ------------------------------------------------------------------------------ errors and CLI


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 63}, "size"),
        ({"min_len": 5}, "min_len"),
        ({"num_videos": 1}, "num_videos"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"fps": 0}, "fps"),
    ],
)
def test_plan_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_demo(**kwargs)


def test_cli_writes_dataset_and_reports(tmp_path: Path) -> None:
    args = ["--out", str(tmp_path / "d"), "--num-videos", "2", "--seed", "1", "--fps", "8",
            "--size", "32", "--min-len", "16", "--max-len", "16"]  # fmt: skip
    res = CliRunner().invoke(demo_cli, args)
    assert res.exit_code == 0, res.output
    assert res.output.count("\n") == 1 and "wrote 2 videos" in res.output and "move_left=2" in res.output
    assert len(_load(tmp_path / "d")["database"]) == 2
    bad = CliRunner().invoke(demo_cli, ["--out", str(tmp_path / "e"), "--size", "33"])
    assert bad.exit_code != 0 and "size must be an even number" in bad.output
