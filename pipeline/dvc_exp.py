"""DVC's experiment queue, driven through its command line and read through ``dvc exp show --json``.

`queue_command` / `run_all_command` / `show_command` build the commands; `parse_exp_show` turns the
JSON of ``dvc exp show --json`` into one `Experiment` per named experiment (its params, scalar
metrics, output hashes and executor state); `read_file_at` reads a git-tracked file (a metrics JSON
with ``cache: false``) as committed in an experiment.  Nothing here parses DVC's log text, and
nothing touches the workspace: queued experiments run in DVC's temporary copies of the repository,
so a user's uncommitted edits stay as they are.
"""
from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Experiment", "exp_name", "parse_exp_show", "queue_command", "read_file_at", "run_all_command",
           "show_command", "run_dvc"]


@dataclass(frozen=True)
class Experiment:
    """One experiment of ``dvc exp show --json`` (the workspace and baselines are not experiments)."""

    name: str
    rev: str
    baseline: str                       # the commit it was run on
    state: str                          # executor state: success, failed, queued, running, ...
    params: dict[str, Any] = field(default_factory=dict)    # params.yaml, nested as in the file
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # file → scalar metrics
    outs: dict[str, str | None] = field(default_factory=dict)         # out path → hash
    log: str | None = None              # the executor's log file (for a failed experiment)
    timestamp: str | None = None        # commit time (ISO 8601): when the experiment ended
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "success" and self.error is None


def exp_name(*parts: str) -> str:
    """A valid, readable experiment (git ref) name from free text: ``abl-losa-long-only-s2025``."""
    slug = "-".join(re.sub(r"[^A-Za-z0-9]+", "-", p).strip("-").lower() for p in parts if p)
    return re.sub(r"-{2,}", "-", slug)[:100] or "exp"


def queue_command(name: str, sets: Sequence[str]) -> list[str]:
    """``dvc exp run --queue -n NAME -S k=v ...``: queue one experiment with param overrides."""
    cmd = ["dvc", "exp", "run", "--queue", "--name", name]
    for s in sets:
        if "=" not in s:
            raise ValueError(f"param override {s!r} is not KEY=VALUE")
        cmd += ["--set-param", s]
    return cmd


def run_all_command(jobs: int = 1) -> list[str]:
    """``dvc exp run --run-all --jobs N``: run every queued experiment (blocks until all are done)."""
    return ["dvc", "exp", "run", "--run-all", "--jobs", str(int(jobs))]


def show_command(rev: str | None = None) -> list[str]:
    """``dvc exp show --json``: the workspace, the baseline commit and its experiments as JSON;
    ``rev``: the experiments of that baseline commit (``--rev``), wherever HEAD is now."""
    return ["dvc", "exp", "show", "--json", *([] if rev is None else ["--rev", rev])]


def run_dvc(cmd: Sequence[str], cwd: str | Path | None = None) -> str:
    """Run a dvc / git command; its stdout, or a RuntimeError quoting the end of its output."""
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def _params(data: Mapping[str, Any]) -> dict[str, Any]:
    return dict(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})


def _metrics(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {path: dict(v.get("data") or {}) for path, v in (data.get("metrics") or {}).items()}


def _outs(data: Mapping[str, Any]) -> dict[str, str | None]:
    return {path: (v or {}).get("hash") for path, v in (data.get("outs") or {}).items()}


def parse_exp_show(rows: str | Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], list[Experiment]]:
    """(baseline commit's row as an `Experiment` named after its branch, named experiments) from the
    output of ``dvc exp show --json`` (text or parsed)."""
    rows = json.loads(rows) if isinstance(rows, str) else rows
    baseline: dict[str, Any] = {}
    found: list[Experiment] = []
    for row in rows:
        if row.get("rev") == "workspace":
            continue
        data = row.get("data") or {}
        if not baseline:
            baseline = {"rev": row["rev"], "name": row.get("name"), "params": _params(data),
                        "metrics": _metrics(data), "outs": _outs(data)}
        for group in row.get("experiments") or []:
            executor = group.get("executor") or {}
            local = executor.get("local") or {}
            for rev in group.get("revs") or []:
                rdata = rev.get("data") or {}
                err = rev.get("error")
                found.append(Experiment(
                    name=str(rev.get("name") or rev["rev"][:7]), rev=str(rev["rev"]), baseline=str(row["rev"]),
                    state=str(executor.get("state") or ("failed" if err else "success")),
                    params=_params(rdata), metrics=_metrics(rdata), outs=_outs(rdata),
                    log=local.get("log"), timestamp=rdata.get("timestamp"), error=(err or {}).get("msg") if isinstance(err, Mapping) else err))
    return baseline, found


def read_file_at(rev: str, path: str, cwd: str | Path | None = None) -> str:
    """A git-tracked file as committed in ``rev`` (an experiment's full metrics JSON)."""
    return run_dvc(["git", "show", f"{rev}:{path}"], cwd=cwd)
