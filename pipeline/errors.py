"""Turn user-facing errors (ValueError / FileNotFoundError) into one-line click errors.

Usage in a CLI::

    @click.command()
    @handle_user_errors
    def main(...): ...

or ``with user_errors(): ...`` around the body. Other exceptions (bugs) keep their traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable)

#: Exceptions that carry a message meant for the user.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


class CliError(click.ClickException):
    """A ClickException with a configurable exit code (click prints ``Error: <message>``)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _message(err: BaseException) -> str:
    if isinstance(err, FileNotFoundError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename}"
    text = str(err).strip() or type(err).__name__
    return " ".join(text.splitlines())


@contextmanager
def user_errors(exit_code: int = 1) -> Iterator[None]:
    """Re-raise ValueError / FileNotFoundError as :class:`CliError` (one line, ``exit_code``)."""
    try:
        yield
    except click.ClickException:
        raise
    except USER_ERRORS as err:
        raise CliError(_message(err), exit_code) from err


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
