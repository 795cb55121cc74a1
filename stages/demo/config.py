"""Settings of the synthetic demo dataset (`DemoSettings`), torch-free knob-schema class.

`losa-demo-data` builds its options and params.yaml's ``demo`` section from it, and
`stages.demo.data.plan_demo` validates its arguments with it (the video-length rule, which depends on
the action and gap lengths, stays there).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from losa.schema import knob, settings
from stages.errors import StageError

__all__ = ["DemoSettings"]


@settings(what="demo", error=StageError)
class DemoSettings:
    """Knobs of the synthetic demo dataset (params.yaml section ``demo``)."""

    out_dir: Path | None = knob(None, "Output folder (videos/, annotations.json, classes.txt are written inside).",
                                flag="out")
    num_videos: int = knob(32, "Videos to generate (at least one training and one testing).", ge=2)
    seed: int = knob(0, "Same seed → identical dataset.")
    fps: float = knob(15.0, "Frames per second.", ge=4, le=120)
    size: int = knob(112, "Frame width = height (even, >= 32).", ge=32)
    min_len: float = knob(20.0, "Shortest video (s).", gt=0)
    max_len: float = knob(45.0, "Longest video (s).", gt=0)
    test_fraction: float = knob(0.25, "Fraction of videos in the testing subset.", gt=0, lt=1)
    crf: int = knob(23, "x264 quality (0 = lossless, 51 = worst).", ge=0, le=51)
    workers: int = knob(1, "Parallel processes (output does not depend on it).", ge=1)
    clutter: Literal["low", "high"] = knob("low", "Scene difficulty: low suits random-weight backbones, high "
                                                  "pretrained ones.")
    move: Literal["ratchet", "slide"] = knob(
        "ratchet", "How move_left / move_right move: ratchet = 8 positions, one per 2-frame tubelet, then "
                   "a snap back, every 16 frames (the direction is only inside a clip; a clip's time "
                   "average does not drift); slide = one continuous slide across the frame (its drift "
                   "from clip to clip shows the direction to pooled features too).")

    def __post_init__(self) -> None:
        if self.size % 2:
            raise StageError(f"size must be an even number >= 32, got {self.size}")
