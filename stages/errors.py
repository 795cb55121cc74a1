"""Base class of the user-facing errors raised by the stages (extract, data, train, infer, ...).

`StageError` is for failures the user caused and can fix (bad input file, unusable run directory,
features from another recipe); its message is one line naming the item.  The storage package has
its own base (`storage.StoreError`) and the model package its own (`losa.errors.LosaError`): the
two packages may not import each other.  `pipeline/errors.py` turns exactly these bases (plus
OS errors that name a file) into one-line CLI errors; any other exception is a bug and keeps its
traceback.  `StageError` subclasses `ValueError` so existing ``except ValueError`` callers still work.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["StageError", "ProvenanceConflict", "os_reason", "find_os_error", "is_store_wide"]


class StageError(ValueError):
    """A user-caused failure in a stage (one line naming the file, video or key)."""


class ProvenanceConflict(StageError):
    """A run and a store (or two stores) were made with different feature recipes."""


#: errno values after which no further video can be written to the store's file system
_STORE_WIDE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
#: errno values that stop the run when they concern a file inside the store
_STORE_LOCAL = {errno.EACCES, errno.EPERM, errno.EIO}


def find_os_error(exc: BaseException) -> OSError | None:
    """The first `OSError` in `exc`'s cause/context chain (libraries often wrap them)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError) and cur.errno is not None:
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def os_reason(err: OSError) -> str:
    """'No space left on device (ENOSPC): /store/_tmp/x' — the OS reason and the file, one line."""
    name = errno.errorcode.get(err.errno or 0, "")
    text = err.strerror or str(err)
    out = f"{text} ({name})" if name else text
    if err.filename:
        out += f": {err.filename}"
    return out


def is_store_wide(exc: BaseException, store: str | os.PathLike) -> bool:
    """True when `exc` means the store cannot take any further writes (disk full, read-only file
    system, or a permission / I/O error on a file inside the store)."""
    err = find_os_error(exc)
    if err is None:
        return False
    if err.errno in _STORE_WIDE:
        return True
    if err.errno in _STORE_LOCAL and err.filename:
        try:
            Path(os.path.abspath(err.filename)).relative_to(os.path.abspath(store))
            return True
        except ValueError:
            return False
    return False
