"""Input discovery for extraction: files and folders → sorted `VideoItem`s, and sharding.

A folder is searched recursively for video files, a file given explicitly is always taken; every
video gets a storable, unique id (its relative path without suffix, non-UTF-8 bytes as ``\\xNN``).
`select_shard` splits the items across independent runs by a stable hash of the id, so a shard's
videos do not depend on the order or the rest of the input list.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stages.errors import StageError

__all__ = ["VIDEO_SUFFIXES", "VideoItem", "discover_videos", "select_shard", "storable_id"]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class VideoItem:
    """One input video: its id in the store and its file."""

    video_id: str
    path: Path



def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def discover_videos(inputs: Path | str | Sequence[Path | str]) -> list[VideoItem]:
    """Expand files and folders into `VideoItem`s sorted by id.

    A folder is searched recursively for files with a video suffix (hidden files and folders are
    skipped); id = path relative to the folder without suffix, '/'-separated.  A file given
    explicitly is always taken (whatever its suffix, so a bad file becomes a recorded failure);
    its id is its name without suffix.  Name bytes that are not UTF-8 become ``\\xNN`` in the id
    (`storable_id`); every id has a store key (`storage.safe_key`, hashed when over-long), so no
    file name can stop a run.  Raises FileNotFoundError for a missing input and StageError when
    two inputs map to the same id.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    items: dict[str, VideoItem] = {}

    def add(video_id: str, path: Path) -> None:
        video_id = storable_id(video_id)
        if video_id in items and items[video_id].path.resolve() != path.resolve():
            raise StageError(
                f"two inputs share the video id {video_id!r}: {items[video_id].path} and {path}"
            )
        items[video_id] = VideoItem(video_id, path)

    for raw in inputs:
        root = Path(raw)
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file() and not _is_hidden(rel):
                    add(rel.with_suffix("").as_posix(), path)
        elif root.exists():
            add(root.name[: -len(root.suffix)] if root.suffix else root.name, root)
        else:
            raise FileNotFoundError(f"input not found: {root}")
    return [items[k] for k in sorted(items)]


def storable_id(video_id: str) -> str:
    """`video_id` as a valid Unicode string: bytes of a file name that are not UTF-8 (Python keeps
    them as lone surrogates, which JSON, the store attrs and the terminal refuse) are written as
    ``\\xNN``, so such a file is extracted like any other instead of failing where it is logged."""
    try:
        video_id.encode("utf-8")
        return video_id
    except UnicodeEncodeError:
        return os.fsencode(video_id).decode("utf-8", "backslashreplace")


def _stable_bucket(video_id: str, n: int) -> int:
    # surrogatepass: a file name with undecodable bytes (lone surrogates) must not stop the run
    digest = hashlib.sha1(video_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % n


def select_shard(items: Sequence[VideoItem], shard: tuple[int, int]) -> list[VideoItem]:
    """Videos of shard i of n: stable hash of the video id mod n (independent of the input list)."""
    index, count = int(shard[0]), int(shard[1])
    if count < 1 or not 0 <= index < count:
        raise StageError(f"shard {index}/{count} is invalid: need 0 <= i < n")
    return [it for it in items if _stable_bucket(it.video_id, count) == index]
