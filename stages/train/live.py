"""Training curves with DVCLive: one step per epoch under ``<run>/dvclive`` (`stages.rundir.LIVE_DIR`).

The log is rebuilt from the run's history at every start, so a resumed run's curves hold each epoch
exactly once (epochs logged after the last checkpoint of an interrupted run are re-trained and
re-logged, not duplicated).  DVCLive is told not to touch the repository: no dvc.yaml edits
(``dvcyaml=None``; the project's dvc.yaml declares the plots) and no experiment commits
(``save_dvc_exp=False``; `dvc exp run` records the experiment itself).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from stages.rundir import LIVE_DIR


class CurveLog:
    """Per-epoch scalars of a training run, logged with DVCLive (x axis: ``step`` = epoch)."""

    def __init__(self, run_dir: str | Path, history: Sequence[Mapping[str, Any]] = ()) -> None:
        from dvclive import Live

        self.live = Live(str(Path(run_dir) / LIVE_DIR), resume=False, report=None, save_dvc_exp=False,
                         dvcyaml=None, monitor_system=False)
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
