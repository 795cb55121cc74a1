"""Figures: a detection timeline per video and training curves per epoch (matplotlib, Agg).

`plot_timeline` draws one row per class: ground-truth bars (one colour) in the upper half of the row
and detections in the lower half, their opacity growing with the score, on a time axis in seconds.
`plot_training_curves` turns a run's ``metrics.csv`` / ``train_metrics.json`` into a PNG (losses,
and the validation mAP and learning rate when present), e.g. as a DVC plot.

Figures are built with `matplotlib.figure.Figure` + the Agg canvas (no pyplot global state, safe in
threads and headless) and written atomically.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from stages.errors import StageError
from storage.atomic import atomic_path

__all__ = [
    "DET_COLOUR",
    "GT_COLOUR",
    "load_metrics",
    "plot_timeline",
    "plot_training_curves",
    "select_detections",
]

GT_COLOUR = "#2b8a3e"  # ground truth: one colour for every class
DET_COLOUR = "#1c56c9"  # detections: opacity encodes the score
MAX_LABEL_CHARS = 28


def select_detections(detections: Sequence[Mapping[str, Any]], top_k: int | None = 30,
                      min_score: float = 0.0) -> list[dict]:
    """Detections with ``score >= min_score``, best first, at most ``top_k`` (None: all).

    Each item needs ``label``, ``score`` and ``segment`` [start, end] (seconds); a malformed item
    raises ValueError naming its position.
    """
    kept = []
    for i, det in enumerate(detections):
        try:
            start, end = (float(x) for x in det["segment"])
            score, label = float(det["score"]), str(det["label"])
        except (KeyError, TypeError, ValueError):
            raise StageError(f"detection {i} is not {{label, score, segment: [start, end]}}: {det!r}") from None
        if score >= min_score:
            kept.append({"label": label, "score": score, "segment": [start, end]})
    kept.sort(key=lambda d: -d["score"])
    return kept if top_k is None else kept[: max(0, int(top_k))]


def _atomic_savefig(fig: Any, path: Path, dpi: int) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def plot_timeline(
    path_png: str | os.PathLike,
    duration: float | None,
    detections: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[tuple[float, float, str]] | None = None,
    classes: Sequence[str] | None = None,
    title: str | None = None,
    top_k: int | None = 30,
    min_score: float = 0.0,
    dpi: int = 110,
) -> Path:
    """Draw a video's detections (and ground truth) as a timeline PNG; returns the path.

    Rows are the classes that have a kept detection or a ground-truth segment, in ``classes``
    order (labels outside ``classes`` follow, sorted). ``top_k`` / ``min_score`` select the
    detections drawn (`select_detections`). ``duration`` None or <= 0: the furthest segment end.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    dets = select_detections(detections, top_k, min_score)
    gt = [(float(s), float(e), str(lab)) for s, e, lab in (ground_truth or [])]
    order = [str(c) for c in (classes or [])]
    present = {d["label"] for d in dets} | {lab for _, _, lab in gt}
    rows = [c for c in order if c in present] + sorted(present - set(order))
    ends = [d["segment"][1] for d in dets] + [e for _, e, _ in gt]
    if duration is not None and math.isfinite(float(duration)) and float(duration) > 0:
        span = float(duration)
    else:
        span = max(ends, default=1.0) or 1.0

    n_rows = max(1, len(rows))
    fig = Figure(figsize=(11.0, 1.3 + 0.42 * n_rows))
    ax = fig.add_subplot(1, 1, 1)
    row_of = {c: i for i, c in enumerate(rows)}
    top = max((d["score"] for d in dets), default=1.0)
    for s, e, lab in gt:  # upper half of the row
        y = row_of[lab]
        ax.broken_barh([(s, max(e - s, span * 1e-3))], (y + 0.05, 0.4), facecolors=GT_COLOUR,
                       edgecolors="none")
    for d in reversed(dets):  # lower half; best drawn last (on top)
        s, e = d["segment"]
        alpha = 0.15 + 0.85 * max(0.0, min(1.0, d["score"] / top if top > 0 else 0.0))
        ax.broken_barh([(s, max(e - s, span * 1e-3))], (row_of[d["label"]] - 0.45, 0.4),
                       facecolors=DET_COLOUR, alpha=alpha, edgecolors="none")
    if dets:  # label the best detection of each class with its score
        best: dict[str, dict] = {}
        for d in dets:
            best.setdefault(d["label"], d)
        for lab, d in best.items():
            s, e = d["segment"]
            ax.text(min(max((s + e) / 2, 0.0), span), row_of[lab] - 0.25, f"{d['score']:.2f}",
                    ha="center", va="center", fontsize=7, color="white" if d["score"] / top > 0.5
                    else "black", clip_on=True)
    ax.set_xlim(0.0, span)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_short(r) for r in rows], fontsize=8)
    for y in range(n_rows - 1):
        ax.axhline(y + 0.5, color="#dddddd", linewidth=0.6)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)
    if not rows:
        ax.text(0.5, 0.5, "no detections" + (f" with score >= {min_score:g}" if min_score > 0 else ""),
                transform=ax.transAxes, ha="center", va="center", color="#666666")
    handles = [Patch(facecolor=DET_COLOUR, label=f"detections ({len(dets)} shown, opacity ∝ score)")]
    if ground_truth is not None:
        handles.insert(0, Patch(facecolor=GT_COLOUR, label=f"ground truth ({len(gt)})"))
    ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=len(handles),
              fontsize=8, frameon=False, borderaxespad=0.2)
    ax.set_title(title or "", loc="left", fontsize=10)
    fig.tight_layout()
    return _atomic_savefig(fig, Path(path_png), dpi)


# ------------------------------------------------------------------------------ training curves
def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def load_metrics(source: str | os.PathLike | Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """Per-epoch rows from ``metrics.csv``, ``train_metrics.json`` / ``val_metrics.json`` (a list
    of dicts, or ``{"history": [...]}``), a run directory, or rows given directly.

    A run directory is read from ``metrics.csv`` (all columns), else ``train_metrics.json``.
    Values that are empty or not numbers become NaN. Every row needs an ``epoch``.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            path = next((path / n for n in ("metrics.csv", "train_metrics.json") if (path / n).is_file()),
                        path / "metrics.csv")
        if not path.is_file():
            raise FileNotFoundError(f"metrics file not found: {path}")
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                rows: Any = list(csv.DictReader(fh))
        else:
            try:
                rows = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise StageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
            if isinstance(rows, Mapping):
                rows = rows.get("history", rows.get("metrics"))
        where = str(path)
    else:
        rows, where = source, "metrics"
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)) or not rows:
        raise StageError(f"{where}: no per-epoch rows to plot")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "epoch" not in row:
            raise StageError(f"{where}: row {i + 1} has no 'epoch' column")
        out.append({str(k): _as_float(v) for k, v in row.items()})
    return out


def plot_training_curves(metrics_csv_or_json: str | os.PathLike | Sequence[Mapping[str, Any]],
                         png: str | os.PathLike, title: str | None = None, dpi: int = 110) -> Path:
    """Loss curves per epoch (total, classification, regression), plus panels for validation mAP
    (``val_*`` columns) and the learning rate when present; returns the PNG path."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = load_metrics(metrics_csv_or_json)
    epochs = [r["epoch"] for r in rows]

    def series(key: str) -> list[float] | None:
        values = [r.get(key, math.nan) for r in rows]
        return values if any(math.isfinite(v) for v in values) else None

    keys = sorted({k for r in rows for k in r})
    losses = [k for k in ("loss", "cls_loss", "reg_loss") if series(k)]
    losses += [k for k in keys if k.endswith("loss") and k not in losses and series(k)]
    vals = [k for k in keys if k.startswith("val_") and series(k)]
    panels = [("loss", losses)] + ([("validation", vals)] if vals else [])
    panels += [("learning rate", ["lr"])] if series("lr") else []
    if not losses:
        raise StageError("metrics have no loss column to plot (expected loss, cls_loss, reg_loss)")

    fig = Figure(figsize=(4.2 * len(panels) + 1.0, 3.6))
    for i, (name, cols) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for col in cols:
            ys = series(col)
            pts = [(x, y) for x, y in zip(epochs, ys or []) if math.isfinite(y)]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 40 else None,
                    markersize=3, linewidth=1.4 if col in ("loss", "val_mAP") else 1.0, label=col)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        lo, hi = min(epochs), max(epochs)
        pad = 0.5 if hi - lo < 2 else 0.0
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_title(name, fontsize=10)
        if len(cols) == 1:
            ax.set_ylabel(cols[0], fontsize=8)
        ax.grid(color="#eeeeee", linewidth=0.6)
        if name == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        elif len(cols) > 1:
            ax.legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _atomic_savefig(fig, Path(png), dpi)
