"""Video decoding for extraction: stream batches of uint8 clips of a probed file.

Decoding uses decord (bundled FFmpeg); PyAV is used only when decord cannot be imported.  Probing
(`probe_video`, `VideoError`, `VideoInfo`) lives in `probe.py` and the prefetch thread
(`BackgroundIterator`) in `prefetch.py`; both are re-exported here.

Geometry (`resize`):
- "short-crop": scale so the short side equals `resolution` (aspect kept), then centre-crop to
  `resolution` x `resolution`.
- "squash": scale both sides to `resolution` (aspect not kept) in the decoder.
- "squash-bilinear": decode at the native size; the encoder then scales the float frames to
  `resolution` x `resolution` with bilinear interpolation (align_corners False, no antialias), the
  way VideoMAEv2's TAD feature extractor made the released THUMOS-14 features.  Batches hold
  native-size frames (`frame_size`).

Scaling is done by the decoder (FFmpeg swscale, decord's ``width``/``height`` arguments).  decord
0.6 mis-sizes its output buffer for a few target widths; when the scaled reader cannot decode, the
video is decoded at its native size and scaled with antialiased bilinear interpolation instead
(the choice is deterministic per video, so reruns give identical frames).

`iter_clip_batches` decodes the frames of a batch of clips with one ``get_batch`` call on their
unique indices and gathers the (overlapping) clips by index.  Frames that later clips still read
are kept, and frames skipped by this batch but read by later ones (``frame_step`` > 1) are decoded
now, so every frame is decoded exactly once and reads only move forward (no seek back to a
keyframe); memory is bounded by about one batch, whatever the video length.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from stages.errors import StageError
from stages.extract.prefetch import BackgroundIterator
from stages.extract.probe import VideoError, VideoInfo, _decord, backend_name, probe_video

if TYPE_CHECKING:
    from losa.encoder.sampling import ClipSampling

__all__ = [
    "RESIZE_MODES",
    "VideoError",
    "VideoInfo",
    "backend_name",
    "probe_video",
    "scaled_size",
    "crop_box",
    "frame_size",
    "iter_clip_batches",
    "iter_frame_batches",
    "decode_frames",
    "BackgroundIterator",
]

RESIZE_MODES = ("short-crop", "squash", "squash-bilinear")


# -------------------------------------------------------------------------------------- geometry
def scaled_size(width: int, height: int, resolution: int, resize: str) -> tuple[int, int]:
    """(width, height) the decoder scales to before any crop."""
    if resize not in RESIZE_MODES:
        raise StageError(f"unknown resize mode {resize!r} (expected one of {RESIZE_MODES})")
    if resolution < 1:
        raise StageError(f"resolution must be positive, got {resolution}")
    if resize == "squash":
        return resolution, resolution
    if resize == "squash-bilinear":  # scaled later, in float, by the encoder
        return width, height
    if width <= height:
        return resolution, max(resolution, int(round(height * resolution / width)))
    return max(resolution, int(round(width * resolution / height))), resolution


def crop_box(width: int, height: int, resolution: int) -> tuple[int, int]:
    """Top-left (y0, x0) of the centred `resolution`² crop inside a width x height frame."""
    return (height - resolution) // 2, (width - resolution) // 2


def frame_size(width: int, height: int, resolution: int, resize: str) -> tuple[int, int]:
    """(height, width) of the frames `iter_clip_batches` yields for a width x height video."""
    if resize == "squash-bilinear":
        return height, width
    return resolution, resolution


def _crop(frames: np.ndarray, width: int, height: int, resolution: int, resize: str) -> np.ndarray:
    if resize == "squash-bilinear":
        return frames
    y0, x0 = crop_box(width, height, resolution)
    return frames[:, y0 : y0 + resolution, x0 : x0 + resolution]


class _FrameSource(Protocol):
    def get(self, indices: np.ndarray) -> np.ndarray:
        """uint8 [n, H, W, 3] for sorted unique frame indices (never below a previous call's min)."""


def _resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Antialiased bilinear resize of uint8 [n, h, w, 3] frames (fallback path only)."""
    import torch
    import torch.nn.functional as F

    if frames.shape[1] == height and frames.shape[2] == width:
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


class _DecordSource:
    """decord reader scaled to (width, height); native decode + resize when decord's scaler fails."""

    def __init__(self, path: Path, width: int, height: int, threads: int) -> None:
        self.width, self.height = width, height
        self.rescale = False
        try:
            self.vr = _decord.VideoReader(
                str(path), ctx=_decord.cpu(0), width=width, height=height, num_threads=threads
            )
            self.vr.get_batch([0])  # validates the scaled output size (see module docstring)
            self.vr.seek(0)
        except Exception:
            self.vr = _decord.VideoReader(str(path), ctx=_decord.cpu(0), num_threads=threads)
            self.rescale = True

    def get(self, indices: np.ndarray) -> np.ndarray:
        frames = self.vr.get_batch([int(i) for i in indices]).asnumpy()
        if self.rescale:
            frames = _resize_frames(frames, self.width, self.height)
        return frames


class _PyAVSource:  # pragma: no cover - used only when decord is not importable
    """Sequential PyAV decoder: decodes forward, returning the requested frames."""

    def __init__(self, path: Path, width: int, height: int, threads: int) -> None:
        import av

        self.width, self.height = width, height
        self.container = av.open(str(path))
        stream = self.container.streams.video[0]
        stream.thread_type = "AUTO" if threads != 1 else "SLICE"
        self.frames = self.container.decode(stream)
        self.pos = -1
        self.last: np.ndarray | None = None

    def get(self, indices: np.ndarray) -> np.ndarray:
        out = []
        for idx in indices:
            while self.pos < idx:
                try:
                    frame = next(self.frames)
                except StopIteration:  # container reported more frames than it holds
                    break
                self.pos += 1
                self.last = frame.to_ndarray(format="rgb24", width=self.width, height=self.height)
            if self.last is None:
                raise VideoError(f"frame {idx} could not be decoded")
            out.append(self.last)
        return np.stack(out)

    def __del__(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass


def _open_source(path: Path, info: VideoInfo, resolution: int, resize: str, threads: int):
    width, height = scaled_size(info.width, info.height, resolution, resize)
    cls = _DecordSource if _decord is not None else _PyAVSource
    return cls(path, width, height, threads), width, height


def decode_frames(
    path: str | os.PathLike,
    indices: np.ndarray,
    resolution: int,
    resize: str = "short-crop",
    info: VideoInfo | None = None,
) -> np.ndarray:
    """Decode the given (sorted, unique) frame indices as uint8 [n, res, res, 3]."""
    path = Path(path)
    info = info or probe_video(path)
    source, width, height = _open_source(path, info, resolution, resize, threads=0)
    frames = source.get(np.asarray(indices, dtype=np.int64))
    return np.ascontiguousarray(_crop(frames, width, height, resolution, resize))


def iter_clip_batches(
    path: str | os.PathLike,
    sampling: ClipSampling,
    resolution: int,
    resize: str,
    batch_clips: int,
    info: VideoInfo | None = None,
    threads: int = 0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first clip index, uint8 [n, frames_per_clip, res, res, 3]) for consecutive clips
    (native-size frames ``[n, F, H, W, 3]`` for resize "squash-bilinear").

    Clips follow `sampling.frame_indices(num_frames)`; `info` avoids a second probe when the caller
    already has it; `threads` is decord's decoder thread count (0 = FFmpeg's choice).
    """
    for start, frames, index in iter_frame_batches(path, sampling, resolution, resize, batch_clips, info, threads):
        yield start, frames[index]


def iter_frame_batches(
    path: str | os.PathLike,
    sampling: ClipSampling,
    resolution: int,
    resize: str,
    batch_clips: int,
    info: VideoInfo | None = None,
    threads: int = 0,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Like `iter_clip_batches`, without gathering the overlapping clips: yields (first clip index,
    the batch's distinct frames uint8 [U, res, res, 3], index int64 [n, frames_per_clip] into them).

    ``frames[index]`` is the clip batch; a consumer can convert each frame once (U ≈ n·stride + span
    frames instead of n·F) and gather after.  Consecutive batches share the span − stride overlap."""
    path = Path(path)
    if batch_clips < 1:
        raise StageError(f"batch_clips must be >= 1, got {batch_clips}")
    info = info or probe_video(path)
    clip_frames = np.asarray(sampling.frame_indices(info.num_frames), dtype=np.int64)
    source, width, height = _open_source(path, info, resolution, resize, threads)
    out_h, out_w = frame_size(width, height, resolution, resize)
    needed = np.unique(clip_frames)  # every frame any clip reads, ascending
    done_upto = -1  # highest frame index decoded so far
    cache_idx = np.empty(0, dtype=np.int64)  # decoded frames still needed (cropped)
    cache = np.empty((0, out_h, out_w, 3), dtype=np.uint8)
    for start in range(0, len(clip_frames), batch_clips):
        idx = clip_frames[start : start + batch_clips]
        hi = int(idx.max())
        # decode every needed frame up to this batch's last one, so reads only ever move forward
        new = needed[(needed > done_upto) & (needed <= hi)]
        if len(new):
            decoded = source.get(new)
            if decoded.shape[0] != len(new):
                raise VideoError(f"{path}: decoder returned {decoded.shape[0]} of {len(new)} frames")
            cache_idx = np.concatenate([cache_idx, new])
            cache = np.concatenate([cache, _crop(decoded, width, height, resolution, resize)])
            done_upto = hi
        pos = np.searchsorted(cache_idx, idx)  # [n, F] positions of the clips' frames in the cache
        lo, hi_pos = int(pos.min()), int(pos.max()) + 1
        yield start, cache[lo:hi_pos], pos - lo
        if start + batch_clips < len(clip_frames):  # keep only frames later clips still read
            keep = cache_idx >= clip_frames[start + batch_clips, 0]
            cache_idx, cache = cache_idx[keep], cache[keep]
