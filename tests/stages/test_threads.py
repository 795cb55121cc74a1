"""The thread policy (stages/threads.py): what "auto" means, validation, and what is applied."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stages.errors import StageError
from stages.threads import ThreadSettings, apply_threads, resolve_threads


def test_auto_does_not_use_every_core_of_a_small_shared_machine():
    assert resolve_threads("auto", cpus=1, environ={}) == 1
    assert resolve_threads("auto", cpus=2, environ={}) == 1  # 2 threads collapsed 30x under load
    assert resolve_threads("auto", cpus=16, environ={}) == 15
    assert resolve_threads(None, cpus=16, environ={}) == 15
    assert resolve_threads("auto", cpus=16, environ={"OMP_NUM_THREADS": "4"}) == 4  # the user's choice
    assert resolve_threads("auto", cpus=16, environ={"OMP_NUM_THREADS": "junk"}) == 15
    assert resolve_threads(3, cpus=2, environ={"OMP_NUM_THREADS": "1"}) == 3  # explicit wins
    assert resolve_threads("2", cpus=2, environ={}) == 2


@pytest.mark.parametrize("bad", [0, -1, "x", "1.5"])
def test_bad_thread_counts_are_one_line_errors(bad):
    with pytest.raises(StageError, match="threads"):
        ThreadSettings(threads=bad)


def test_apply_threads_sets_torch_and_the_environment_of_workers():
    code = ("import os, sys\n"
            "from stages.threads import apply_threads\n"
            "n = apply_threads(sys.argv[1])\n"
            "import torch\n"
            "print(n, torch.get_num_threads(), torch.get_num_interop_threads(), os.environ['OMP_NUM_THREADS'],"
            " os.environ['MKL_NUM_THREADS'], os.environ.get('OMP_WAIT_POLICY', '-'))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code, "2"], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["2", "2", "2", "2", "2", "PASSIVE"]  # set before torch loaded OpenMP
    out = subprocess.run([sys.executable, "-c", code, "1"], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["1", "1", "1", "1", "1", "-"]


def test_apply_threads_in_a_process_that_already_ran_torch(one_torch_thread):
    import torch

    before = torch.get_num_threads()
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    try:
        assert apply_threads(2) == 2 and torch.get_num_threads() == 2  # interop already fixed: no error
    finally:
        torch.set_num_threads(before)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
