"""Probing a video file for extraction: is it usable, and its frame count, frame rate and size.

`probe_video` checks the file (exists, regular, non-empty, UTF-8 name) and opens it with the
decoding backend — decord (bundled FFmpeg), PyAV only when decord cannot be imported — raising a
one-line `VideoError` that names the reason (for a cut-short MP4, which box is missing or
truncated).  `backend_name` says which backend is in use.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from stages.errors import StageError

try:  # decord is the primary decoder; PyAV is the fallback only when decord is missing
    import decord as _decord

    _decord.bridge.set_bridge("native")
    _decord.logging.set_level(_decord.logging.QUIET)  # FFmpeg chatter; failures raise anyway
except ImportError:  # pragma: no cover - exercised only on installs without decord
    _decord = None

__all__ = ["VideoError", "VideoInfo", "backend_name", "probe_video"]


class VideoError(StageError):
    """A file that cannot be used as a video (unreadable, empty, not a video, no frames)."""


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` learns about a file: frame count, frame rate and native size."""

    num_frames: int
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        """Duration in seconds (num_frames / fps)."""
        return self.num_frames / self.fps


def backend_name() -> str:
    """Name of the decoding backend in use ("decord" or "pyav")."""
    return "decord" if _decord is not None else "pyav"


def _check_file(path: Path) -> None:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # decord takes str paths only, and these cannot become C strings
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise VideoError(f"{shown}: file name is not valid UTF-8, the decoder cannot open it "
                         "(rename the file)") from None
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if not path.is_file():
        raise VideoError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")


def _first_line(exc: BaseException) -> str:
    """A short, single-line reason from a (often multi-line) decoder exception."""
    text = " ".join(str(exc).split())
    if "ERROR" in text:  # decord's C++ errors carry a long stack after the message
        text = text.split("Stack trace", 1)[0]
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


# --------------------------------------------------------------------------------------- probing
def _mp4_diagnosis(path: Path) -> str | None:
    """Why an MP4/MOV file (ISO boxes: ``ftyp`` first) cannot be opened, when its top-level boxes
    tell: no ``moov`` box (the index) or a box cut short — typically an interrupted download or a
    recording that was never finalised.  None for other files."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8 or head[4:8] != b"ftyp":
            return None
        pos, boxes = 0, []
        while pos + 8 <= size:
            fh.seek(pos)
            hdr = fh.read(16)
            length, kind = int.from_bytes(hdr[:4], "big"), hdr[4:8]
            if length == 1 and len(hdr) >= 16:  # 64-bit size
                length = int.from_bytes(hdr[8:16], "big")
            elif length == 0:  # box runs to the end of the file
                length = size - pos
            if length < 8:
                break
            boxes.append(kind)
            if pos + length > size:
                what = kind.decode("latin-1")
                return (f"truncated MP4: the {what!r} box needs {pos + length - size} more bytes than "
                        f"the file has{'' if b'moov' in boxes else ' and there is no moov atom'}; "
                        "the file was cut short (interrupted download or recording): re-download or remux it")
            pos += length
    if b"moov" not in boxes:
        return ("MP4 without a moov atom (the index of the frames): the file was cut short or never "
                "finalised; re-download it or remux it (e.g. ffmpeg -i in.mp4 -c copy out.mp4)")
    return None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps and native size of `path`; raises `VideoError` naming the reason."""
    path = Path(path)
    _check_file(path)
    if _decord is not None:
        try:
            vr = _decord.VideoReader(str(path), ctx=_decord.cpu(0), num_threads=1)
            num_frames = len(vr)
            fps = float(vr.get_avg_fps())
            first = vr[0].shape if num_frames > 0 else None
        except Exception as exc:  # decord raises DECORDError/RuntimeError for bad input
            reason = _mp4_diagnosis(path) or _first_line(exc).replace(str(path), "file")
            raise VideoError(f"{path}: cannot open as a video ({reason})") from None
        if first is None:
            raise VideoError(f"{path}: video stream has no frames")
        height, width = int(first[0]), int(first[1])
    else:  # pragma: no cover - PyAV fallback
        num_frames, fps, width, height = _pyav_probe(path)
    if num_frames <= 0:
        raise VideoError(f"{path}: video stream has no frames")
    if not math.isfinite(fps) or fps <= 0:
        raise VideoError(f"{path}: invalid frame rate {fps!r}")
    return VideoInfo(num_frames=int(num_frames), fps=fps, width=width, height=height)



def _pyav_probe(path: Path) -> tuple[int, float, int, int]:  # pragma: no cover
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            count = int(stream.frames or 0)
            if count <= 0:  # no frame count in the header: count by decoding
                count = sum(1 for _ in container.decode(stream))
            return count, fps, int(stream.codec_context.width), int(stream.codec_context.height)
    except VideoError:
        raise
    except Exception as exc:
        reason = _first_line(exc).replace(f"'{path}'", "file")
        raise VideoError(f"{path}: cannot open as a video ({reason})") from None
