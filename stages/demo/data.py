"""Deterministic synthetic temporal-action-localization dataset (the shipped demo).

Each video shows a slowly drifting background (faint by default; with ``clutter="high"`` a strong
texture plus static look-alike distractor shapes, see `CLUTTER`) and 2–5 non-overlapping actions of
2–8 s separated by background.  Every action is performed by one object of a random shape (see
`ACTION_STYLE` for the distributions):

* ``move_left`` / ``move_right`` — the object moves horizontally across the frame centre: by default
  (``move="ratchet"``) it steps through 8 positions, one per 2-frame tubelet, snaps back and repeats
  every 16 frames, so the direction lives only inside a clip (a clip's time average is the same for
  both directions and does not drift); ``move="slide"`` slides it once across.  The two classes have
  the same position, size, shape and colour distributions (ratchets: mirror images of each other about
  the travel's centre, frame by frame; slides: exact time reversals), so no single frame tells them
  apart; only the direction of motion does.
* ``pulse`` — the object's size oscillates;  ``flash`` — its brightness flickers;
  ``spin`` — it rotates.  Each of these three also has its own hue band, as real classes usually
  differ in appearance as well as in motion.

Objects may sit idle on screen for up to 1.5 s before/after their action (``clutter="high"``), and
about half of the actions ease in/out, so action boundaries can only be found from temporal context.
Classes are balanced within the training and the testing subset.  The same arguments always give
identical frames, files and annotations (``annotations.json`` in ActivityNet format, ``classes.txt``).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.demo.videogen import SHAPES, draw_shape, drift_crop, random_colour, smooth_texture, write_mp4
from stages.demo.config import DemoSettings
from stages.demo.motion import ActionInstance, object_state
from stages.errors import StageError
from storage.atomic import atomic_write

__all__ = [
    "CLASSES",
    "FORMAT_VERSION",
    "ActionInstance",
    "DemoSummary",
    "Distractor",
    "VideoPlan",
    "generate_demo",
    "object_state",
    "plan_demo",
    "render_video",
]

CLASSES: tuple[str, ...] = ("move_left", "move_right", "pulse", "flash", "spin")
FORMAT_VERSION = "losa-demo-1"
MIN_ACTION_S, MAX_ACTION_S, MIN_GAP_S, MAX_IDLE_S = 2.0, 8.0, 1.0, 1.5
MIN_ACTIONS, MAX_ACTIONS = 2, 5
_ID_RE = re.compile(r"^demo_\d{3,}\.mp4$")


@dataclass(frozen=True)
class Distractor:
    """A static shape drawn over the background for the whole video."""

    shape: str
    colour: tuple[float, float, float]
    radius: float
    x: float
    y: float
    angle: float


@dataclass(frozen=True)
class VideoPlan:
    """Everything needed to render one video bit-exactly."""

    video_id: str
    subset: str  # "training" | "testing"
    fps: float
    size: int
    num_frames: int
    texture_seed: int
    base_colour: tuple[float, float, float]
    drift: tuple[float, float]  # background (vy, vx) in pixels per frame
    distractors: tuple[Distractor, ...]
    actions: tuple[ActionInstance, ...]
    contrast: float = 28.0  # background texture contrast (see `CLUTTER`)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


@dataclass
class DemoSummary:
    """What `generate_demo` wrote."""

    out_dir: Path
    num_videos: int
    subsets: dict[str, int]
    actions_per_class: dict[str, int]
    total_duration: float
    seconds: float = 0.0
    video_ids: list[str] = field(default_factory=list)

    def describe(self) -> str:
        per_class = " ".join(f"{k}={v}" for k, v in self.actions_per_class.items())
        subsets = " / ".join(f"{v} {k}" for k, v in self.subsets.items())
        return (
            f"wrote {self.num_videos} videos ({subsets}) to {self.out_dir}: actions {per_class}; "
            f"{self.total_duration / 60:.1f} min of video in {self.seconds:.1f} s"
        )


# ----------------------------------------------------------------------------------- planning


def _object_style(rng: np.random.Generator, size: int, radius: tuple[float, float] = (0.07, 0.11),
                  hue: tuple[float, float] = (0.0, 1.0)) -> tuple[str, tuple[float, float, float], float]:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = tuple(float(c) for c in random_colour(rng, sat=(0.55, 1.0), val=(0.7, 1.0), hue=hue))
    return shape, colour, float(rng.uniform(*radius) * size)


def _sample_action(
    rng: np.random.Generator, label: str, start: int, end: int, idle: tuple[int, int], fps: float, size: int,
    clutter: str = "high", move: str = "ratchet",
) -> ActionInstance:
    """Random instance of `label` over frames [start, end); idle = free frames before/after."""
    style = ACTION_STYLE
    shape, colour, radius = _object_style(rng, size, CLUTTER[clutter]["radius"], style["hues"][label])
    pre = int(rng.integers(0, idle[0] + 1)) if rng.random() < 0.6 else 0
    post = int(rng.integers(0, idle[1] + 1)) if rng.random() < 0.6 else 0
    ramp_in = float(rng.uniform(0.1, 0.3)) if rng.random() < 0.5 else 0.0
    ramp_out = float(rng.uniform(0.1, 0.3)) if rng.random() < 0.5 else 0.0
    margin = radius * 1.3 + 2.0
    y = float(rng.uniform(margin, size - margin))
    angle0 = float(rng.uniform(0.0, 2 * math.pi))
    x_from = x_to = float(rng.uniform(margin, size - margin))
    freq = amp = spin = 0.0
    ratchet, hold = 0, 1
    nyquist_safe = fps / 4.0
    if label in ("move_left", "move_right"):
        # a travel interval symmetric in distribution about the frame centre; direction is the label
        travel = float(rng.uniform(*style["travel"])) * size
        centre = float(rng.uniform(travel / 2, size - travel / 2))
        lo, hi = centre - travel / 2, centre + travel / 2
        x_from, x_to = (lo, hi) if label == "move_right" else (hi, lo)
        if move == "ratchet":
            ratchet, hold = RATCHET
    elif label == "pulse":
        freq = float(min(rng.uniform(*style["pulse_freq"]), nyquist_safe))
        amp = float(rng.uniform(*style["pulse_amp"]))
    elif label == "flash":
        freq = float(min(rng.uniform(*style["flash_freq"]), nyquist_safe))
        amp = float(rng.uniform(*style["flash_amp"]))
    elif label == "spin":
        spin = float(rng.uniform(*style["spin"]) * rng.choice([-1.0, 1.0]))
    return ActionInstance(
        label=label, start=start, end=end, show=start - pre, hide=end + post, shape=shape,
        colour=colour, radius=radius, x_from=x_from, x_to=x_to, y=y, angle0=angle0,
        ramp_in=ramp_in, ramp_out=ramp_out, freq=freq, amp=amp, spin=spin, ratchet=ratchet, hold=hold,
    )  # fmt: skip


def _capacity(num_frames: int, dmin: int, gmin: int) -> int:
    k = MAX_ACTIONS
    while k > 0 and k * dmin + (k + 1) * gmin > num_frames:
        k -= 1
    return k


def _plan_video(
    index: int, subset: str, labels: list[str], num_frames: int, seed: int, fps: float, size: int,
    clutter: str = "high", move: str = "ratchet",
) -> VideoPlan:
    rng = np.random.default_rng([seed, index])
    dmin, dmax = math.ceil(MIN_ACTION_S * fps), math.floor(MAX_ACTION_S * fps)
    gmin = math.ceil(MIN_GAP_S * fps)
    k = len(labels)
    dur = rng.integers(dmin, dmax + 1, size=k)
    room = num_frames - (k + 1) * gmin
    if dur.sum() > room:  # shrink the part above the minimum so everything fits
        alpha = (room - k * dmin) / max(1, int((dur - dmin).sum()))
        dur = dmin + np.floor((dur - dmin) * alpha).astype(int)
    slack = int(room - dur.sum())
    gaps = gmin + rng.multinomial(slack, rng.dirichlet(np.ones(k + 1)))
    actions: list[ActionInstance] = []
    t = int(gaps[0])
    max_idle = math.floor(MAX_IDLE_S * fps) if CLUTTER[clutter]["idle"] else 0
    for i, label in enumerate(labels):
        idle = (min(max_idle, int(gaps[i] * 0.45)), min(max_idle, int(gaps[i + 1] * 0.45)))
        actions.append(_sample_action(rng, label, t, t + int(dur[i]), idle, fps, size, clutter, move))
        t += int(dur[i] + gaps[i + 1])
    distractors = []
    lo, hi = CLUTTER[clutter]["distractors"]
    for _ in range(int(rng.integers(lo, hi + 1))):
        shape, colour, radius = _object_style(rng, size, CLUTTER[clutter]["radius"])
        m = radius * 1.2
        distractors.append(Distractor(shape, colour, radius, float(rng.uniform(m, size - m)),
                                      float(rng.uniform(m, size - m)), float(rng.uniform(0, 2 * math.pi))))
    speed, heading = rng.uniform(0.08, 0.35), rng.uniform(0.0, 2 * math.pi)
    base = random_colour(rng, sat=(0.1, 0.4), val=(0.3, 0.55))
    return VideoPlan(
        video_id=f"demo_{index:03d}", subset=subset, fps=float(fps), size=int(size),
        num_frames=int(num_frames), texture_seed=int(rng.integers(2**31)),
        base_colour=tuple(float(c) for c in base),
        drift=(float(speed * math.sin(heading)), float(speed * math.cos(heading))),
        distractors=tuple(distractors), actions=tuple(actions), contrast=CLUTTER[clutter]["contrast"],
    )  # fmt: skip


#: Scene difficulty.  "low" (the demo default): a faint background, no distractor shapes, and the
#: acting object is on screen only during its action — what a randomly initialised backbone can
#: still see.  "high": a strong drifting texture, 2–4 static look-alike distractors and objects that
#: idle on screen before/after acting — meant for real (pretrained) backbones.
CLUTTER: dict[str, dict] = {
    "low": {"contrast": 6.0, "distractors": (0, 0), "idle": False, "radius": (0.12, 0.17)},
    "high": {"contrast": 28.0, "distractors": (2, 4), "idle": True, "radius": (0.07, 0.11)},
}

#: How each class acts, in both scenes.  Object hue bands (turns): the three non-motion classes
#: differ in appearance as well as in dynamics, as most real classes do; the motion pair shares one
#: band and every other distribution, so only the direction of motion tells it apart.  Moves cross
#: ``travel`` × the frame width, always over the frame centre, the object's centre allowed up to
#: the frame's edge; pulse / flash / spin amplitudes are large enough for a 1 s clip to show them.
#: A ratcheting move (``move="ratchet"``): positions per period, frames each is held.  8 x 2 = 16
#: frames = one clip of the demo's extraction, one position per 2-frame tubelet.
RATCHET = (8, 2)

ACTION_STYLE: dict[str, tuple[float, float] | dict] = {
    "travel": (0.5, 0.85),
    "pulse_amp": (0.45, 0.65), "pulse_freq": (1.2, 2.5),
    "flash_amp": (0.55, 0.85), "flash_freq": (1.5, 3.5),
    "spin": (4.0, 8.0),
    "hues": {"pulse": (-0.04, 0.04), "flash": (0.29, 0.37), "spin": (0.58, 0.66),
             "move_left": (0.12, 0.2), "move_right": (0.12, 0.2)},
}


def plan_demo(
    num_videos: int = 32, seed: int = 0, fps: float = 15, size: int = 112,
    min_len: float = 20, max_len: float = 45, test_fraction: float = 0.25, clutter: str = "low",
    move: str = "ratchet",
) -> list[VideoPlan]:  # fmt: skip
    """Plan the whole dataset (cheap, no pixels).  Same arguments → identical plans."""
    DemoSettings(num_videos=num_videos, seed=seed, fps=fps, size=size, min_len=min_len, max_len=max_len,
                 test_fraction=test_fraction, clutter=clutter, move=move)  # types and ranges: the knob schema
    dmin, gmin = math.ceil(MIN_ACTION_S * fps), math.ceil(MIN_GAP_S * fps)
    if min_len > max_len or _capacity(round(min_len * fps), dmin, gmin) < MIN_ACTIONS:
        need = MIN_ACTIONS * MIN_ACTION_S + (MIN_ACTIONS + 1) * MIN_GAP_S
        raise StageError(f"video lengths [{min_len}, {max_len}] s invalid: need {need:g} <= min_len <= max_len")
    rng = np.random.default_rng(seed)
    n_test = min(num_videos - 1, max(1, round(num_videos * test_fraction)))
    test_idx = {int(i) for i in rng.choice(num_videos, size=n_test, replace=False)}
    lengths = [round(float(rng.uniform(min_len, max_len)) * fps) for _ in range(num_videos)]
    caps = [_capacity(n, dmin, gmin) for n in lengths]
    counts = [int(rng.integers(MIN_ACTIONS, c + 1)) for c in caps]
    labels: dict[int, list[str]] = {}
    for subset in ("training", "testing"):
        members = [i for i in range(num_videos) if (i in test_idx) == (subset == "testing")]
        while sum(counts[i] for i in members) < len(CLASSES):  # every class in every subset
            free = [i for i in members if counts[i] < caps[i]]
            if not free:
                raise StageError(f"subset {subset!r} is too small to hold all {len(CLASSES)} classes")
            counts[max(free, key=lambda i: caps[i] - counts[i])] += 1
        pool: list[str] = []
        while len(pool) < sum(counts[i] for i in members):  # balanced: classes cycle in random order
            pool.extend(CLASSES[j] for j in rng.permutation(len(CLASSES)))
        for i in members:
            labels[i], pool = pool[: counts[i]], pool[counts[i] :]
    return [
        _plan_video(i, "testing" if i in test_idx else "training", labels[i], lengths[i], seed, fps, size,
                    clutter, move)
        for i in range(num_videos)
    ]


# ----------------------------------------------------------------------------------- rendering


def render_video(plan: VideoPlan, return_masks: bool = False):
    """Render a plan to uint8 frames [T, H, W, 3] (and, if asked, the acting object's alpha
    [T, H, W] float32, zero when no object is on screen)."""
    rng = np.random.default_rng(plan.texture_seed)
    s, n = plan.size, plan.num_frames
    vy, vx = plan.drift
    pad_y, pad_x = math.ceil(abs(vy) * n) + 2, math.ceil(abs(vx) * n) + 2
    texture = smooth_texture(rng, s + pad_y, s + pad_x, np.array(plan.base_colour), contrast=plan.contrast)
    oy0 = 0.0 if vy >= 0 else abs(vy) * (n - 1)
    ox0 = 0.0 if vx >= 0 else abs(vx) * (n - 1)
    layer = np.zeros((s, s, 3), dtype=np.float32)  # premultiplied distractor colours
    cover = np.zeros((s, s), dtype=np.float32)
    for d in plan.distractors:
        a = draw_shape(layer, d.shape, d.x, d.y, d.radius, d.angle, np.array(d.colour))
        cover = cover * (1.0 - a) + a
    keep = (1.0 - cover)[..., None]
    frames = np.empty((n, s, s, 3), dtype=np.uint8)
    masks = np.zeros((n, s, s), dtype=np.float32) if return_masks else None
    active = iter(plan.actions)
    inst = next(active, None)
    for t in range(n):
        img = drift_crop(texture, oy0 + vy * t, ox0 + vx * t, s, s) * keep + layer
        while inst is not None and t >= inst.hide:
            inst = next(active, None)
        if inst is not None and t >= inst.show:
            cx, cy, radius, angle, flash = object_state(inst, t, plan.fps)
            alpha = draw_shape(img, inst.shape, cx, cy, radius, angle, np.array(inst.colour), flash)
            if masks is not None:
                masks[t] = alpha
        frames[t] = np.clip(img + 0.5, 0.0, 255.0).astype(np.uint8)
    return (frames, masks) if return_masks else frames


# ----------------------------------------------------------------------------------- writing


def _annotations(plans: list[VideoPlan]) -> dict:
    database = {}
    for p in plans:
        database[p.video_id] = {
            "subset": p.subset,
            "duration": round(p.duration, 4),
            "fps": p.fps,
            "num_frames": p.num_frames,
            "resolution": f"{p.size}x{p.size}",
            "annotations": [
                {
                    "label": a.label,
                    "segment": [round(a.start / p.fps, 4), round(a.end / p.fps, 4)],
                    "label_id": CLASSES.index(a.label),
                }
                for a in p.actions
            ],
        }
    taxonomy = [{"nodeId": i, "nodeName": c, "parentId": None, "parentName": None} for i, c in enumerate(CLASSES)]
    return {"version": FORMAT_VERSION, "classes": list(CLASSES), "taxonomy": taxonomy, "database": database}


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text, fsync=False)


def _render_and_write(plan: VideoPlan, path: Path, crf: int) -> None:
    write_mp4(path, render_video(plan), fps=plan.fps, crf=crf)


def generate_demo(
    out_dir: str | os.PathLike, num_videos: int = 32, seed: int = 0, fps: float = 15, size: int = 112,
    min_len: float = 20, max_len: float = 45, test_fraction: float = 0.25, crf: int = 23, workers: int = 1,
    clutter: str = "low", move: str = "ratchet",
) -> DemoSummary:  # fmt: skip
    """Write the demo dataset to `out_dir`: ``videos/<id>.mp4``, ``annotations.json``, ``classes.txt``.

    Deterministic: the same arguments give identical frames and annotations.  Stale
    ``videos/demo_NNN.mp4`` files from an earlier, larger generation are removed.  `workers` > 1
    renders/encodes videos in parallel processes (joblib); the output does not depend on it.
    """
    t0 = time.perf_counter()
    plans = plan_demo(num_videos, seed, fps, size, min_len, max_len, test_fraction, clutter, move)
    out = Path(out_dir)
    vid_dir = out / "videos"
    vid_dir.mkdir(parents=True, exist_ok=True)
    wanted = {f"{p.video_id}.mp4" for p in plans}
    for stale in vid_dir.iterdir():
        if _ID_RE.match(stale.name) and stale.name not in wanted:
            stale.unlink()
    jobs = [(p, vid_dir / f"{p.video_id}.mp4") for p in plans]
    if workers > 1:
        from joblib import Parallel, delayed

        Parallel(n_jobs=workers)(delayed(_render_and_write)(p, path, crf) for p, path in jobs)
    else:
        for p, path in jobs:
            _render_and_write(p, path, crf)
    _write_text(out / "classes.txt", "".join(f"{c}\n" for c in CLASSES))
    _write_text(out / "annotations.json", json.dumps(_annotations(plans), indent=1) + "\n")
    counts = Counter(a.label for p in plans for a in p.actions)
    return DemoSummary(
        out_dir=out,
        num_videos=len(plans),
        subsets={s: sum(p.subset == s for p in plans) for s in ("training", "testing")},
        actions_per_class={c: counts.get(c, 0) for c in CLASSES},
        total_duration=sum(p.duration for p in plans),
        seconds=time.perf_counter() - t0,
        video_ids=[p.video_id for p in plans],
    )
