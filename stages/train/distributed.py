"""What each process of a (possibly ``torchrun``-launched, DDP) training run owns: its process group
and device (`Dist`, summing values across ranks), and its random state — seeding at start and per
epoch from ``(seed, epoch, rank)``, and the RNG states a checkpoint saves and a resume restores, so a
resumed run ends with exactly the weights of an uninterrupted one.
"""
from __future__ import annotations

import os
import random
from typing import Any, Mapping

import numpy as np
import torch

from stages.runtime import resolve_device


class Dist:
    """Process-group context: set up from torchrun's environment when WORLD_SIZE > 1."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device)
        if self.world > 1 and dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        self.device = dev
        self.owns_group = False
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed of ``rank`` at the start of ``epoch`` (a pure function of the three)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG's state (torch, CUDA, numpy, python) as a checkpoint can store it."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the RNG states saved by `rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
