"""Training curves with DVCLive: one step per epoch under ``<run>/dvclive`` (`stages.rundir.LIVE_DIR`).

The log is rebuilt from the run's history at every start, so a resumed run's curves hold each epoch
exactly once (epochs logged after the last checkpoint of an interrupted run are re-trained and
re-logged, not duplicated).  DVCLive only writes its files here: no dvc.yaml edits (``dvcyaml=None``;
the project's dvc.yaml declares the plots), no experiment commits (``save_dvc_exp=False``; `dvc exp
run` records the experiment itself) and no repository detection (`_FilesOnlyLive`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from stages.rundir import LIVE_DIR


def _files_only_live() -> type:
    from dvclive import Live

    class _FilesOnlyLive(Live):
        """DVCLive without its repository hooks: looking for a DVC repo, dvclive 3 runs ``dvc init`` in an
        enclosing git repository that has none, and fails in a git repository without commits."""

        def _init_dvc(self) -> None:
            self._dvc_file = self._init_dvc_file()

    return _FilesOnlyLive


class CurveLog:
    """Per-epoch scalars of a training run, logged with DVCLive (x axis: ``step`` = epoch)."""

    def __init__(self, run_dir: str | Path, history: Sequence[Mapping[str, Any]] = ()) -> None:
        self.live = _files_only_live()(str(Path(run_dir) / LIVE_DIR), resume=False, report=None,
                                       save_dvc_exp=False, dvcyaml=None, monitor_system=False)
        for row in history:
            self.log(row)

    def log(self, row: Mapping[str, Any]) -> None:
        """Log one history row (``epoch`` plus numbers); non-numeric values are skipped."""
        self.live.step = int(row["epoch"])
        for name, value in row.items():
            if name != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.live.log_metric(name, value)
        self.live.next_step()

    def close(self) -> None:
        self.live.end()
