"""Shared pytest fixtures: tiny synthetic mp4 videos written with PyAV (libx264)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# Keep CPU tests polite on small machines (set before torch spins up its pools).
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

from stages.demo.videogen import moving_square_frames, write_mp4

MakeVideo = Callable[..., Path]


@pytest.fixture
def make_video(tmp_path: Path) -> MakeVideo:
    """Factory `(name, seconds=2.0, fps=15, size=64, seed=0) -> Path` writing `tmp_path/<name>`.

    `name` may contain sub-folders ("a/b.mp4"); ".mp4" is appended when it has no suffix.
    The clip is `moving_square_frames(round(seconds * fps), size, seed)`.
    """

    def _make(
        name: str, seconds: float = 2.0, fps: float = 15, size: int = 64, seed: int = 0
    ) -> Path:
        path = tmp_path / name
        if not path.suffix:
            path = path.with_suffix(".mp4")
        num_frames = max(1, round(seconds * fps))
        write_mp4(path, moving_square_frames(num_frames, size=size, seed=seed), fps=fps)
        return path

    return _make


@pytest.fixture
def video_dir(tmp_path: Path, make_video: MakeVideo) -> Path:
    """A folder `tmp_path/videos` with three short clips of different lengths and seeds:
    `clip_a.mp4` (2 s, 30 frames), `clip_b.mp4` (1.6 s, 24 frames) and
    `clip_c.mp4` (3 s, 45 frames), all 15 fps, 64x64, flat (no sub-folders)."""
    make_video("videos/clip_a.mp4", seconds=2.0, seed=1)
    make_video("videos/clip_b.mp4", seconds=1.6, seed=2)
    make_video("videos/clip_c.mp4", seconds=3.0, seed=3)
    return tmp_path / "videos"


@pytest.fixture
def one_torch_thread():
    """Single-threaded torch for a test: tiny models run fastest that way, and it keeps tests from
    oversubscribing a busy 2-core machine (use via ``pytestmark = pytest.mark.usefixtures(...)``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
