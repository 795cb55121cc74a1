"""Per-layer linear probes: rank the stored layers before training adapters on them.

For every stored layer, each temporal step's features (averaged over its spatial/temporal cells)
are classified by a multinomial logistic regression (scikit-learn) into "background" or the action
class whose ground-truth segment covers the step's centre time.  The probe is fitted on one subset
and scored on another: step accuracy, macro-F1 over classes + background, and actionness ROC-AUC
(1 − P(background) against "inside any action").  Seconds per layer on a CPU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from stages.data.holdout import split_holdout
from stages.errors import StageError


@dataclass
class ProbeResult:
    layer: int
    accuracy: float
    macro_f1: float
    actionness_auc: float
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def step_labels(times: np.ndarray, segments: Sequence[tuple[float, float, str]],
                class_index: dict[str, int]) -> np.ndarray:
    """Label each step by the (shortest) segment covering its centre time; background = len(classes)."""
    background = len(class_index)
    labels = np.full(len(times), background, dtype=np.int64)
    best_len = np.full(len(times), np.inf)
    for start, end, label in segments:
        inside = (times >= start) & (times <= end)
        length = end - start
        take = inside & (length < best_len)
        labels[take] = class_index[label]
        best_len[take] = length
    return labels


def _collect(reader, videos, layers, label_fn, max_steps: int | None, rng, input_norm: str = "none"):
    feats = {layer: [] for layer in layers}
    labels = []
    for vid in videos:
        times = reader.times(vid)
        idx = np.arange(len(times))
        if max_steps is not None and len(idx) > max_steps:
            idx = np.sort(rng.choice(idx, size=max_steps, replace=False))
        arrays = reader.read(vid, layers=list(layers))
        for layer in layers:
            x = arrays[layer].mean(axis=1)
            if input_norm == "sequence":  # as the model's input_norm: remove the per-video mean
                x = x - x.mean(axis=0, keepdims=True)
            feats[layer].append(x[idx])
        labels.append(label_fn(vid, times)[idx])
    return {k: np.concatenate(v) for k, v in feats.items()}, np.concatenate(labels)


def run_probe(reader, annotations, train_subset: str, test_subset: str | None,
              layers: Sequence[int] | None = None, max_steps_per_video: int | None = 2000,
              C: float = 1.0, seed: int = 0, input_norm: str = "none", holdout: float = 0.0,
              holdout_seed: int = 0) -> list[ProbeResult]:
    """Fit one logistic-regression probe per layer; results sorted best first (macro-F1).

    ``input_norm="sequence"`` subtracts each video's mean feature first (as the model option).
    ``holdout > 0``: fit on the rest of ``train_subset`` and score on its seeded held-out part
    (:func:`stages.data.holdout.split_holdout`, the split training uses); ``test_subset`` is then
    not read — choose layers there, report test once."""
    if input_norm not in ("none", "sequence"):
        raise StageError(f"input_norm must be none or sequence, got {input_norm!r}")
    layers = list(layers) if layers else list(reader.layers())
    stored = set(reader.layers())
    missing = [l for l in layers if l not in stored]
    if missing:
        raise StageError(f"layer(s) {missing} not in the store (stored: {sorted(stored)})")
    classes = list(annotations.classes)
    cidx = {c: i for i, c in enumerate(classes)}
    in_store = set(reader.videos())

    def videos_of(subset: str) -> list[str]:
        vids = [v for v in annotations.videos_in(subset) if v in in_store]
        if not vids:
            raise StageError(f"no video of subset '{subset}' is in the store")
        return vids

    def label_fn(vid, times):
        return step_labels(times, annotations.videos[vid]["segments"], cidx)

    rng = np.random.default_rng(seed)
    if holdout > 0:
        fit, held = split_holdout(annotations.videos_in(train_subset), holdout, holdout_seed)
        fit_videos = [v for v in fit if v in in_store]
        test_videos = [v for v in held if v in in_store]
        if not fit_videos or not test_videos:
            raise StageError(f"holdout {holdout} of subset '{train_subset}' leaves no stored video "
                             f"to {'fit on' if not fit_videos else 'score on'}")
    else:
        if test_subset is None:
            raise StageError("give a test subset or a holdout fraction to score the probes on")
        fit_videos, test_videos = videos_of(train_subset), videos_of(test_subset)
    xtr, ytr = _collect(reader, fit_videos, layers, label_fn, max_steps_per_video, rng, input_norm)
    xte, yte = _collect(reader, test_videos, layers, label_fn, max_steps_per_video, rng, input_norm)
    background = len(classes)
    results = []
    for layer in layers:
        t0 = time.perf_counter()
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
        clf.fit(xtr[layer], ytr)
        pred = clf.predict(xte[layer])
        proba = clf.predict_proba(xte[layer])
        cols = list(clf.classes_)
        p_bg = proba[:, cols.index(background)] if background in cols else np.zeros(len(yte))
        is_action = (yte != background).astype(int)
        auc = float(roc_auc_score(is_action, 1.0 - p_bg)) if 0 < is_action.sum() < len(yte) else float("nan")
        results.append(ProbeResult(
            layer=layer,
            accuracy=float((pred == yte).mean()),
            macro_f1=float(f1_score(yte, pred, average="macro", labels=list(range(background + 1)),
                                    zero_division=0)),
            actionness_auc=auc,
            seconds=time.perf_counter() - t0,
        ))
    results.sort(key=lambda r: -r.macro_f1)
    return results


def format_probe_table(results: Sequence[ProbeResult]) -> str:
    lines = ["| layer | step accuracy | macro-F1 | actionness AUC | fit s |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.layer} | {r.accuracy:.3f} | {r.macro_f1:.3f} | {r.actionness_auc:.3f} | {r.seconds:.1f} |")
    return "\n".join(lines)


def plot_probe(results: Sequence[ProbeResult], path) -> None:
    """Bar chart of macro-F1 and actionness AUC per layer (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = sorted(results, key=lambda r: r.layer)
    x = np.arange(len(rs))
    fig, ax = plt.subplots(figsize=(max(4, 1.0 * len(rs) + 2), 3))
    ax.bar(x - 0.2, [r.macro_f1 for r in rs], 0.4, label="macro-F1")
    ax.bar(x + 0.2, [r.actionness_auc for r in rs], 0.4, label="actionness AUC")
    ax.set_xticks(x, [str(r.layer) for r in rs])
    ax.set_xlabel("backbone block")
    ax.set_ylim(0, 1)
    ax.set_title("Linear probes per stored layer")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
