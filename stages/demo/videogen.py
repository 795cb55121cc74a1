"""Small helpers to write synthetic H.264 videos (PyAV) for tests and the demo dataset.

`write_mp4` encodes an in-memory uint8 clip with libx264 / yuv420p using fixed, single-threaded,
SIMD-free encoder settings, so the same frames always give the same bitstream.  The file is written under a
temporary name in the destination folder and moved into place (`storage.atomic`), so a reader never
sees a half-written video.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from stages.errors import StageError
from storage.atomic import atomic_path

import numpy as np

__all__ = [
    "SHAPES",
    "draw_shape",
    "drift_crop",
    "fps_fraction",
    "moving_square_frames",
    "random_colour",
    "smooth_texture",
    "write_mp4",
]

SHAPES = ("square", "triangle", "bar", "ellipse")


def fps_fraction(fps: float) -> Fraction:
    """Exact rational frame rate for `fps` (29.97 → 30000/1001, 15 → 15/1)."""
    if not np.isfinite(fps) or fps <= 0:
        raise StageError(f"fps must be a positive finite number, got {fps!r}")
    return Fraction(float(fps)).limit_denominator(1001)


def _check_frames(path: Path, frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: frames must have shape [T, H, W, 3], got {list(frames.shape)}")
    t, h, w, _ = frames.shape
    if t == 0:
        raise ValueError(f"{path}: cannot write a video with zero frames")
    if h % 2 or w % 2 or h < 2 or w < 2:
        raise ValueError(f"{path}: yuv420p needs even frame sizes, got {w}x{h}")
    return np.ascontiguousarray(frames)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 23) -> None:
    """Encode `frames` (uint8 [T, H, W, 3], RGB) to an H.264 mp4 at `path`.

    libx264, yuv420p, constant-rate-factor `crf` (0..51), preset "veryfast", one encoder thread and
    no SIMD, so identical frames always give a byte-identical file (on any CPU).  H and W must be even.  The parent folder is created if needed.
    """
    import av  # local import: PyAV is only needed when videos are written

    path = Path(path)
    frames = _check_frames(path, frames)
    if not 0 <= int(crf) <= 51:
        raise StageError(f"{path}: crf must be in 0..51, got {crf}")
    rate = fps_fraction(fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, mkdir=False) as tmp:
        tmp_name = str(tmp)
        with av.open(tmp_name, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width = int(frames.shape[2])
            stream.height = int(frames.shape[1])
            stream.pix_fmt = "yuv420p"
            stream.time_base = 1 / rate
            stream.codec_context.thread_count = 1
            stream.codec_context.thread_type = "NONE"
            # x264's SIMD (AVX-512 seen here) made run-to-run different bitstreams from identical
            # frames; the C reference path (asm=0) is reproducible on every CPU, ~3x slower.
            stream.options = {
                "crf": str(int(crf)),
                "preset": "veryfast",
                "threads": "1",
                "x264-params": "asm=0",
            }
            for i, img in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def moving_square_frames(num_frames: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """A tiny deterministic clip: a coloured square bouncing over a smooth gradient background.

    Returns uint8 [num_frames, size, size, 3].  Different seeds give different colours, start
    positions and velocities; the same seed always gives identical frames.
    """
    if num_frames < 1:
        raise StageError(f"num_frames must be >= 1, got {num_frames}")
    if size < 8:
        raise StageError(f"size must be >= 8, got {size}")
    rng = np.random.default_rng(seed)
    side = max(4, size // 5)
    colour = rng.integers(60, 256, size=3).astype(np.uint8)
    pos = rng.uniform(0, size - side, size=2)
    vel = rng.uniform(0.8, 2.5, size=2) * rng.choice([-1.0, 1.0], size=2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    base = np.stack([40 + 60 * xx, 40 + 60 * yy, 80 + 40 * xx * yy], axis=-1)
    out = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    span = size - side
    for t in range(num_frames):
        raw = pos + vel * t
        # reflect into [0, span] so the square bounces off the borders
        p = np.abs(np.mod(raw, 2 * span) - span)
        p = span - p
        y0, x0 = round(float(p[0])), round(float(p[1]))
        img = base.copy()
        img[y0 : y0 + side, x0 : x0 + side] = colour
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------------
# Drawing primitives (float32 RGB canvases in 0..255) used by the demo dataset generator.
# --------------------------------------------------------------------------------------------

_TRI_NORMALS = np.array(
    [[np.cos(a), np.sin(a)] for a in np.deg2rad([90.0, 210.0, 330.0])], dtype=np.float64
)


def _gauge(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shape "norm" in units of the radius: < 1 inside, 1 on the boundary (roughly distance-like)."""
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) / 0.8
    if shape == "triangle":  # equilateral, circumradius 1 (inradius 0.5)
        d = u[..., None] * _TRI_NORMALS[:, 0] + v[..., None] * _TRI_NORMALS[:, 1]
        return 2.0 * d.max(axis=-1)
    if shape == "bar":
        return np.maximum(np.abs(u) / 1.0, np.abs(v) / 0.45)
    if shape == "ellipse":
        return np.sqrt(u * u + (v / 0.55) ** 2)
    raise StageError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def draw_shape(
    img: np.ndarray,
    shape: str,
    cx: float,
    cy: float,
    radius: float,
    angle: float,
    colour: np.ndarray,
    flash: float = 0.0,
) -> np.ndarray:
    """Alpha-composite an anti-aliased shape onto `img` (float32 [H, W, 3], modified in place).

    `angle` in radians; a darker stripe along the shape's long axis makes rotation visible.
    `flash` in [-1, 1] moves the colour towards white (> 0) or black (< 0).  Returns the alpha
    map of the drawn object over the whole canvas (float32 [H, W], mostly zeros).
    """
    h, w = img.shape[:2]
    alpha_full = np.zeros((h, w), dtype=np.float32)
    reach = radius * 1.2 + 2.0
    x0, x1 = max(0, int(np.floor(cx - reach))), min(w, int(np.ceil(cx + reach)) + 1)
    y0, y1 = max(0, int(np.floor(cy - reach))), min(h, int(np.ceil(cy + reach)) + 1)
    if x0 >= x1 or y0 >= y1 or radius <= 0:
        return alpha_full
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dx, dy = xs - cx, ys - cy
    ca, sa = np.cos(angle), np.sin(angle)
    u = (ca * dx + sa * dy) / radius
    v = (-sa * dx + ca * dy) / radius
    alpha = np.clip((1.0 - _gauge(shape, u, v)) * radius + 0.5, 0.0, 1.0)
    stripe = np.clip((0.16 - np.abs(v)) * radius + 0.5, 0.0, 1.0)
    col = np.asarray(colour, dtype=np.float64)
    if flash > 0:
        col = col + flash * (255.0 - col)
    elif flash < 0:
        col = col * (1.0 + flash)
    shade = (1.0 - 0.45 * stripe)[..., None] * col
    region = img[y0:y1, x0:x1]
    a = alpha[..., None]
    region[...] = (region * (1.0 - a) + shade * a).astype(np.float32)
    alpha_full[y0:y1, x0:x1] = alpha
    return alpha_full


def random_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float],
                  hue: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Random RGB colour (float64 [3], 0..255) with hue uniform in ``hue`` (turns, taken modulo 1)
    and the given HSV ranges."""
    hue = rng.uniform(*hue) % 1.0
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    rgb = v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return 255.0 * rgb


def _upsample(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear upsampling of a [h, w, C] grid (h, w >= 2) to [out_h, out_w, C]."""
    gh, gw = grid.shape[:2]
    y = np.linspace(0.0, gh - 1.0, out_h)
    x = np.linspace(0.0, gw - 1.0, out_w)
    y0 = np.minimum(np.floor(y).astype(int), gh - 2)
    x0 = np.minimum(np.floor(x).astype(int), gw - 2)
    fy = (y - y0)[:, None, None]
    fx = (x - x0)[None, :, None]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


def smooth_texture(
    rng: np.random.Generator, height: int, width: int, base: np.ndarray, contrast: float = 28.0
) -> np.ndarray:
    """Textured background (float32 [height, width, 3]): coarse blobs + finer mottling + grain."""
    out = np.broadcast_to(np.asarray(base, dtype=np.float64), (height, width, 3)).copy()
    for cell, amp in ((24, 1.0), (8, 0.45)):
        gh, gw = max(2, height // cell + 2), max(2, width // cell + 2)
        luma = rng.normal(0.0, 1.0, size=(gh, gw, 1))
        tint = rng.normal(0.0, 0.35, size=(gh, gw, 3))
        out += contrast * amp * _upsample(luma + tint, height, width)
    out += rng.normal(0.0, contrast * 0.12, size=(height, width, 1))
    return np.clip(out, 0.0, 255.0).astype(np.float32)


def drift_crop(texture: np.ndarray, oy: float, ox: float, height: int, width: int) -> np.ndarray:
    """Sub-pixel crop `texture[oy:oy+height, ox:ox+width]` by bilinear blending (float32 copy)."""
    iy, ix = int(np.floor(oy)), int(np.floor(ox))
    fy, fx = float(oy - iy), float(ox - ix)
    if iy < 0 or ix < 0 or iy + height + 1 > texture.shape[0] or ix + width + 1 > texture.shape[1]:
        raise ValueError(f"crop at ({oy:.1f}, {ox:.1f}) leaves the {texture.shape[:2]} texture")
    t = texture[iy : iy + height + 1, ix : ix + width + 1]
    top = t[:-1, :-1] * (1 - fx) + t[:-1, 1:] * fx
    bot = t[1:, :-1] * (1 - fx) + t[1:, 1:] * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32)
