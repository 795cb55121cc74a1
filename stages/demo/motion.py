"""Motion model of the demo's acting objects: one action instance and its state frame by frame.

An `ActionInstance` fixes a labelled action (frames, object style, trajectory, easing ramps);
`object_state` gives the object's centre, size, angle and brightness swing at any frame, with eased
ramps (closed-form integrals, so a "move" covers exactly its distance whatever the easing).

A move either **slides** once from ``x_from`` to ``x_to`` (``ratchet = 0``), or **ratchets**
(``ratchet = R > 0``): it steps through ``R`` evenly spaced positions from ``x_from`` towards ``x_to``,
each held for ``hold`` frames, then snaps back and repeats, so one period is ``R * hold`` frames
(the demo: 8 x 2 = 16 = one clip, one position per tubelet).  Any window of one period holds
every position once, whatever its phase: the time average of a clip - what a pooled feature sees - is
the same for both directions and does not drift from clip to clip; the direction is only in the
order of the positions inside a clip.  The excursion grows and shrinks with the easing envelope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stages.errors import StageError

__all__ = ["ActionInstance", "object_state"]


@dataclass(frozen=True)
class ActionInstance:
    """One action: frames ``[start, end)``; the object is on screen during ``[show, hide)``."""

    label: str
    start: int
    end: int
    show: int
    hide: int
    shape: str
    colour: tuple[float, float, float]
    radius: float
    x_from: float
    x_to: float
    y: float
    angle0: float
    ramp_in: float  # fraction of the action spent easing in (0 = abrupt start)
    ramp_out: float  # fraction spent easing out (0 = abrupt end)
    freq: float = 0.0  # Hz (pulse, flash)
    amp: float = 0.0  # relative size swing (pulse) or brightness swing (flash)
    spin: float = 0.0  # rad/s at full speed (spin)
    ratchet: int = 0  # move: positions per period (0 = one slide from x_from to x_to)
    hold: int = 1  # move, ratchet > 0: frames each position is held



def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def _smooth_integral(x: float) -> float:
    """Integral of smoothstep from 0 to x (x in [0, 1]); equals 0.5 at x = 1."""
    x = min(max(x, 0.0), 1.0)
    return x**3 - 0.5 * x**4


def _envelope(p: float, ramp_in: float, ramp_out: float) -> float:
    """Action intensity at progress p in [0, 1]: eased ramps at both ends, 1 in between."""
    e = 1.0
    if ramp_in > 0:
        e = min(e, _smoothstep(p / ramp_in))
    if ramp_out > 0:
        e = min(e, _smoothstep((1.0 - p) / ramp_out))
    return e


def _envelope_integral(p: float, ramp_in: float, ramp_out: float) -> float:
    """Integral of `_envelope` over [0, p] (closed form; ramps never overlap)."""
    p = min(max(p, 0.0), 1.0)
    total = ramp_in * _smooth_integral(p / ramp_in) if ramp_in > 0 else 0.0
    total += max(0.0, min(p, 1.0 - ramp_out) - ramp_in)
    if ramp_out > 0 and p > 1.0 - ramp_out:
        total += ramp_out * (0.5 - _smooth_integral((1.0 - p) / ramp_out))
    return total


def _ratchet_x(inst: ActionInstance, frame: int) -> float:
    """Centre of a ratcheting move at `frame` (the rest position, the centre of the travel, outside
    ``[start, end)``).  The phase is the absolute frame index, so periods line up with clips that start
    at multiples of ``ratchet * hold`` frames."""
    centre = 0.5 * (inst.x_from + inst.x_to)
    if not inst.start <= frame < inst.end:
        return centre
    period = inst.ratchet * inst.hold
    k = (frame // inst.hold) % inst.ratchet
    frac = k / (inst.ratchet - 1) - 0.5 if inst.ratchet > 1 else 0.0
    # the easing envelope, sampled once per period (at its middle frame): positions are held exactly
    # through every tubelet and stay in order through every period, ramps included
    mid = min(max(frame - frame % period + period // 2, inst.start), inst.end - 1)
    n = inst.end - inst.start
    env = _envelope((mid - inst.start + 0.5) / n, inst.ramp_in, inst.ramp_out)
    return centre + (inst.x_to - inst.x_from) * frac * env


def object_state(inst: ActionInstance, frame: int, fps: float) -> tuple[float, float, float, float, float]:
    """(cx, cy, radius, angle, flash) of the acting object at `frame`.

    Before the action the object rests in its initial state, after it in its final state.
    """
    n = inst.end - inst.start
    p = min(max((frame - inst.start + 0.5) / n, 0.0), 1.0)
    env = _envelope(p, inst.ramp_in, inst.ramp_out)
    tau = p * n / fps  # seconds since the action started
    cx, radius, angle, flash = inst.x_from, inst.radius, inst.angle0, 0.0
    if inst.label in ("move_left", "move_right") and inst.ratchet > 0:
        cx = _ratchet_x(inst, frame)
    elif inst.label in ("move_left", "move_right"):
        total = _envelope_integral(1.0, inst.ramp_in, inst.ramp_out)
        cx = inst.x_from + (inst.x_to - inst.x_from) * _envelope_integral(p, inst.ramp_in, inst.ramp_out) / total
    elif inst.label == "pulse":
        radius = inst.radius * (1.0 + inst.amp * env * math.sin(2 * math.pi * inst.freq * tau))
    elif inst.label == "flash":
        flash = inst.amp * env * math.sin(2 * math.pi * inst.freq * tau)
    elif inst.label == "spin":
        angle = inst.angle0 + inst.spin * (n / fps) * _envelope_integral(p, inst.ramp_in, inst.ramp_out)
    else:
        raise StageError(f"unknown demo action class {inst.label!r}")
    return cx, inst.y, radius, angle, flash
