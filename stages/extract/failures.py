"""What happens when one video cannot be extracted: its failure is logged, the run goes on —
unless the store itself can no longer be written (disk full, read-only file system, permission),
in which case the run stops cleanly with the OS reason (complete videos stay published, a rerun
resumes).  Nothing here raises: a failure that cannot even be logged is kept in the summary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stages.errors import StageError, find_os_error, is_store_wide, os_reason

__all__ = ["failure_reason", "record_video_failure"]


def failure_reason(exc: BaseException) -> str:
    """One line: the user-facing message of a project error, else ``Type: message`` with the OS
    reason of any OSError in the chain."""
    from storage import StoreError

    if isinstance(exc, (StageError, StoreError)):
        shown = str(exc)
    else:
        err = find_os_error(exc)
        shown = f"{type(exc).__name__}: {exc}" if err is None else f"{type(err).__name__}: {os_reason(err)}"
    return " ".join(shown.split()) or type(exc).__name__


def record_video_failure(store: Any, video_id: str, path: str | os.PathLike, exc: BaseException,
                         summary: Any) -> str | None:
    """Log `exc` as the failure of `video_id` (store's failure log, summary counts); returns why
    the run must stop (the store cannot be written any more), or None to go on."""
    reason = failure_reason(exc)
    summary.failed += 1
    summary.failed_videos.append(video_id)
    stop = None
    if is_store_wide(exc, store.path):
        stop = f"cannot write to store {store.path}: {reason}"
    source = os.fsencode(os.path.abspath(path)).decode("utf-8", "backslashreplace")  # printable
    try:
        store.record_failure(video_id, source, reason)
    except Exception as rec:  # the log itself cannot be written (same full disk, odd name, ...)
        summary.unrecorded.append(f"{video_id}: {reason}")
        if stop is None and is_store_wide(rec, Path(store.path)):
            stop = f"cannot write to store {store.path}: {failure_reason(rec)}"
    return stop
