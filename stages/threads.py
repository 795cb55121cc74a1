"""CPU thread policy of every heavy command (extract, train, eval, detect, probe, bench).

PyTorch's default (one intra-op thread per core, OpenMP threads that spin while waiting) collapses
when the cores are shared: on this project's 2-core machine with one core busy, a conv + linear
training step took ~450 ms with 2 threads against ~14 ms with 1 (docs/configuration.md).  So:

* ``threads="auto"`` (the default): ``OMP_NUM_THREADS`` when the user set it, else 1 thread on a
  machine with at most 2 usable cores and ``cores - 1`` on a larger one (one core stays free for
  decoding threads, the data loader and other users);
* an explicit number is used as given;
* applied once at the start of a command (:func:`apply_threads`): ``torch.set_num_threads`` and
  ``torch.set_num_interop_threads``, plus ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` for worker processes
  started later, and ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep instead of spinning) when more
  than one thread is used and torch is not imported yet (OpenMP reads it when it loads).

Torch-free at import: the CLIs define their ``--threads`` option from :data:`THREADS_HELP` and call
:func:`apply_threads` before importing the stages that load torch.
"""
from __future__ import annotations

import os
import sys
from typing import Union

from losa.schema import knob, settings
from stages.errors import StageError

__all__ = ["THREADS_HELP", "ThreadSettings", "Threads", "apply_threads", "resolve_threads", "usable_cpus"]

#: Type of a ``threads`` setting: a positive count or "auto".
Threads = Union[int, str]

THREADS_HELP = ("CPU threads for torch: auto = OMP_NUM_THREADS if set, else 1 on a machine with <= 2 cores "
                "and cores - 1 above; or a number.")


@settings(what="runtime", error=StageError)
class ThreadSettings:
    """The ``threads`` knob every heavy command offers (``--threads``, params key ``threads``)."""

    threads: Union[int, str] = knob("auto", THREADS_HELP)

    def __post_init__(self) -> None:
        resolve_threads(self.threads, cpus=1, environ={})  # refuse a bad value before any work starts


def usable_cpus() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | str | None = "auto", cpus: int | None = None,
                    environ: dict | None = None) -> int:
    """The thread count a ``threads`` setting means on this machine (see the module docstring)."""
    env = os.environ if environ is None else environ
    if threads is None or str(threads).strip().lower() in ("auto", ""):
        given = str(env.get("OMP_NUM_THREADS", "")).strip()
        if given.isdigit() and int(given) >= 1:
            return int(given)
        n = usable_cpus() if cpus is None else int(cpus)
        return 1 if n <= 2 else n - 1
    try:
        count = int(str(threads).strip())
    except ValueError:
        raise StageError(f"threads {threads!r} is not a positive number or 'auto'") from None
    if count < 1:
        raise StageError(f"threads {threads!r} is not a positive number or 'auto'")
    return count


def apply_threads(threads: int | str | None = "auto") -> int:
    """Apply the thread policy to this process (and the environment of its future workers);
    returns the thread count."""
    n = resolve_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)
    if n > 1 and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already set, or inter-op work already started: keep what is there
        pass
    return n
