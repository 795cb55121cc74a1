"""Turn user-facing errors into one-line click errors with a documented exit code.

User-facing errors are exactly: the project's error bases — `losa.errors.LosaError`,
`storage.StoreError`, `stages.errors.StageError`, `pipeline.config.ParamsError` — plus
`FileNotFoundError` / `PermissionError` and any `OSError` that names a file.  Everything else
(a plain ValueError, KeyError, RuntimeError, ...) is a bug and keeps its traceback.

Exit codes (docs/reliability.md): 1 a user error, 2 a usage error (click), 4 the output cannot be
written (read-only file system, disk full: `StoreNotWritable`, EROFS / ENOSPC / EDQUOT).
Stage-specific codes (3 diverged, 130 interrupted) are set by the CLIs themselves.

Usage in a CLI::

    @click.command()
    @handle_user_errors
    def main(...): ...

or ``with user_errors(): ...`` around the body.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import click

from losa.errors import LosaError
from pipeline.config import ParamsError
from stages.errors import StageError
from storage.errors import StoreError, StoreNotWritable

F = TypeVar("F", bound=Callable)

#: Exception bases that carry a message meant for the user.
USER_ERRORS: tuple[type[BaseException], ...] = (LosaError, StoreError, StageError, ParamsError,
                                                FileNotFoundError, PermissionError)
#: Exit code when an output cannot be written (read-only file system, disk full).
EXIT_NOT_WRITABLE = 4
_NOT_WRITABLE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def is_user_error(err: BaseException) -> bool:
    """True for the errors printed as one line (see the module docstring)."""
    if isinstance(err, USER_ERRORS):
        return True
    return isinstance(err, OSError) and err.filename is not None


def exit_code_of(err: BaseException, default: int = 1) -> int:
    """`EXIT_NOT_WRITABLE` for an output that cannot be written, else `default`."""
    if isinstance(err, StoreNotWritable):
        return EXIT_NOT_WRITABLE
    if isinstance(err, OSError) and err.errno in _NOT_WRITABLE_ERRNOS:
        return EXIT_NOT_WRITABLE
    return default


class CliError(click.ClickException):
    """A ClickException with a configurable exit code (click prints ``Error: <message>``)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def message_of(err: BaseException) -> str:
    """The one-line message shown for a user error."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename}"
    text = str(err).strip() or type(err).__name__
    return " ".join(text.splitlines())


_message = message_of  # older name


@contextmanager
def user_errors(exit_code: int = 1) -> Iterator[None]:
    """Re-raise user errors (see :func:`is_user_error`) as :class:`CliError` (one line,
    ``exit_code``, or `EXIT_NOT_WRITABLE`); anything else propagates with its traceback."""
    try:
        yield
    except click.ClickException:
        raise
    except Exception as err:
        if not is_user_error(err):
            raise
        raise CliError(message_of(err), exit_code_of(err, exit_code)) from err


def handle_user_errors(func: F | None = None, *, exit_code: int = 1) -> F | Callable[[F], F]:
    """Decorator form of :func:`user_errors`; use as ``@handle_user_errors`` or
    ``@handle_user_errors(exit_code=2)`` (place it below the click decorators)."""

    def wrap(f: F) -> F:
        @functools.wraps(f)
        def inner(*args, **kwargs):
            with user_errors(exit_code):
                return f(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap(func) if func is not None else wrap
