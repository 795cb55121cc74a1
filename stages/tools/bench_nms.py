"""Soft-NMS and prediction benchmark: this project vs ActionFormer's compiled op, side by side.

``bench_nms`` times, on the same candidates and interleaved (A, B, A, B, ...), the project's Soft-NMS
(vectorised rounds, and optionally the greedy reference loop) and — given the path of a checkout of
ActionFormer whose ``libs/utils`` holds the built ``nms_1d_cpu`` extension — ActionFormer's
``batched_nms``.  With ``predict=True`` it also times prediction end to end (head forward, decoding,
Soft-NMS) of a head-only model against ActionFormer's ``LocPointTransformer`` at the same settings on
the same features (random weights: timing only).  The ActionFormer code is imported from the given
path at run time and never enters this project.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from losa.post.nms import soft_nms, soft_nms_videos
from stages.errors import StageError

__all__ = ["synthetic_candidates", "load_actionformer", "bench_nms", "to_markdown"]


def synthetic_candidates(num_videos: int, candidates: int, classes: int, steps: int, seed: int = 0
                         ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per video ``(segments [N, 2], scores [N], labels [N])`` shaped like decoded head outputs:
    many overlapping segments around a few actions plus background clutter, scores skewed low."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num_videos):
        n_act = 8
        centres = torch.rand(n_act, generator=g) * steps
        lengths = 5 + torch.rand(n_act, generator=g) * steps / 10
        pick = torch.randint(0, n_act, (candidates,), generator=g)
        jitter = torch.randn(candidates, 2, generator=g) * lengths[pick, None] * 0.2
        segs = torch.stack([centres[pick] - lengths[pick] / 2, centres[pick] + lengths[pick] / 2], 1) + jitter
        clutter = torch.rand(candidates, generator=g) < 0.5
        c = torch.rand(candidates, generator=g) * steps
        ln = 1 + torch.rand(candidates, generator=g) ** 2 * steps / 8
        segs[clutter] = torch.stack([c - ln / 2, c + ln / 2], 1)[clutter]
        segs = torch.stack([segs.min(1).values, segs.max(1).values], 1)
        scores = 0.0011 + torch.rand(candidates, generator=g) ** 4 * 0.95
        labels = torch.randint(0, classes, (candidates,), generator=g)
        out.append((segs.float(), scores.float(), labels))
    return out


def load_actionformer(path: str | Path) -> Any:
    """ActionFormer's ``libs/utils/nms.py`` module from a checkout with the built extension."""
    utils = Path(path) / "libs" / "utils"
    if not (utils / "nms.py").is_file():
        raise StageError(f"{path}: not an ActionFormer checkout (no libs/utils/nms.py)")
    if not any(utils.glob("nms_1d_cpu*.so")) and not any(utils.glob("nms_1d_cpu*.pyd")):
        raise StageError(f"{utils}: nms_1d_cpu is not built (cd {utils} && python setup.py build_ext --inplace)")
    for p in (str(utils), str(Path(path))):
        if p not in sys.path:
            sys.path.insert(0, p)
    spec = importlib.util.spec_from_file_location("actionformer_nms", utils / "nms.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():                                   # warm-up
        fn()
    names = list(fns)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def _nms_part(cands, af, settings: dict, repeats: int, greedy: bool, batch_size: int) -> dict[str, Any]:
    mc, vote = settings["multiclass"], settings["voting_thresh"]
    kw = dict(iou_threshold=settings["iou_threshold"], sigma=settings["sigma"], min_score=settings["min_score"],
              max_num=settings["max_seg_num"], multiclass=mc, voting_thresh=vote)

    def ours(algorithm: str = "rounds"):
        if algorithm == "greedy":
            return [soft_nms(s, sc, lab, algorithm="greedy", **kw) for s, sc, lab in cands]
        out = []   # as prediction calls it: the videos of one inference batch together
        for k in range(0, len(cands), batch_size):
            out += soft_nms_videos(cands[k:k + batch_size], **kw)
        return out

    fns: dict[str, Callable[[], Any]] = {"ours": ours}
    if greedy:
        fns["ours (greedy loop)"] = lambda: ours("greedy")
    if af is not None:
        fns["actionformer"] = lambda: [
            af.batched_nms(s.clone(), sc.clone(), lab.clone(), settings["iou_threshold"], settings["min_score"],
                           settings["max_seg_num"], use_soft_nms=True, multiclass=mc, sigma=settings["sigma"],
                           voting_thresh=vote) for s, sc, lab in cands]
    times = _interleaved(fns, repeats)
    res: dict[str, Any] = {"ms": {k: 1e3 * statistics.median(v) for k, v in times.items()}}
    if af is not None:
        a, b = ours(), fns["actionformer"]()
        same = all(x[1].shape == y[1].shape for x, y in zip(a, b))
        res["max_abs_score_diff"] = max(float((x[1] - y[1]).abs().max()) if x[1].numel() else 0.0
                                        for x, y in zip(a, b)) if same else None
        res["ratio"] = res["ms"]["ours"] / res["ms"]["actionformer"]
    return res


def _predict_part(path: str | Path, num_videos: int, steps: int, channels: int, classes: int,
                  head: dict, settings: dict, repeats: int, batch_size: int, seed: int) -> dict[str, Any]:
    from libs.core.config import _update_config, load_default_config
    from libs.modeling import make_meta_arch

    from losa.model import LoSAConfig, TALModel

    levels = int(head["n_levels"])
    ranges = [list(r) for r in head["regression_ranges"]]
    cfg = load_default_config()
    cfg["dataset"].update(num_classes=classes, input_dim=channels, max_seq_len=steps, feat_stride=4,
                          num_frames=16)
    cfg["model"].update(backbone_arch=(2, 2, levels - 1), regression_range=ranges, n_mha_win_size=head["window"],
                        embd_dim=head["embd_dim"], fpn_dim=head["fpn_dim"], head_dim=head["head_dim"])
    cfg["test_cfg"].update(pre_nms_topk=settings["pre_nms_topk"], max_seg_num=settings["max_seg_num"],
                           min_score=settings["min_score"], iou_threshold=settings["iou_threshold"],
                           nms_sigma=settings["sigma"], multiclass_nms=settings["multiclass"],
                           voting_thresh=settings["voting_thresh"])
    cfg = _update_config(cfg)
    torch.manual_seed(seed)
    theirs = make_meta_arch(cfg["model_name"], **cfg["model"]).eval()
    ours = TALModel(LoSAConfig(mode="head-only", last_layer=1, channels=channels, num_classes=classes,
                               head={**head, "max_seq_len": steps})).eval()
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(steps // 2, steps + 1, (num_videos,), generator=g).tolist()
    feats = [torch.randn(channels, n, generator=g) for n in lengths]
    nms = {k: settings[k] for k in ("pre_nms_topk", "max_seg_num", "min_score", "iou_threshold", "sigma",
                                    "multiclass", "voting_thresh")}
    nms["pre_nms_thresh"] = 1e-3
    stride = ours.head.strides[-1]
    order = sorted(range(num_videos), key=lambda i: lengths[i])

    @torch.no_grad()
    def run_ours():
        out = []
        for k in range(0, num_videos, batch_size):
            idx = order[k:k + batch_size]
            t = -(-max(lengths[i] for i in idx) // stride) * stride
            x = torch.zeros(len(idx), t, 1, channels)
            mask = torch.zeros(len(idx), t, dtype=torch.bool)
            for j, i in enumerate(idx):
                x[j, :lengths[i], 0] = feats[i].T
                mask[j, :lengths[i]] = True
            out += ours.predict({1: x}, mask, nms)
        return out

    @torch.no_grad()
    def run_theirs():
        return [theirs([{"video_id": str(i), "feats": feats[i], "segments": None, "labels": None,
                         "fps": 30.0, "duration": lengths[i] * 4 / 30.0, "feat_stride": 4,
                         "feat_num_frames": 16}]) for i in range(num_videos)]

    times = _interleaved({"ours": run_ours, "actionformer": run_theirs}, repeats)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return {"ms": ms, "ratio": ms["ours"] / ms["actionformer"], "videos": num_videos, "steps": lengths,
            "batch_size": batch_size}


def bench_nms(actionformer: str | Path | None = None, *, num_videos: int = 16, candidates: int = 2000,
              classes: int = 20, steps: int = 256, repeats: int = 5, greedy: bool = False,
              predict: bool = False, channels: int = 96, head: dict | None = None,
              settings: dict | None = None, batch_size: int = 4, seed: int = 0) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-able dict (see :func:`to_markdown`)."""
    settings = {"iou_threshold": 0.1, "sigma": 0.5, "min_score": 1e-3, "max_seg_num": 200,
                "multiclass": True, "voting_thresh": 0.7, "pre_nms_topk": 2000, **(settings or {})}
    head = head or {"embd_dim": 128, "fpn_dim": 128, "head_dim": 128, "n_levels": 5, "window": 9,
                    "regression_ranges": [[0, 4], [4, 8], [8, 16], [16, 32], [32, 10000]]}
    af = load_actionformer(actionformer) if actionformer is not None else None
    if predict and af is None:
        raise StageError("the prediction benchmark needs --actionformer PATH (a built checkout)")
    cands = synthetic_candidates(num_videos, candidates, classes, steps, seed)
    res: dict[str, Any] = {"threads": torch.get_num_threads(), "videos": num_videos,
                           "candidates_per_video": candidates, "classes": classes, "settings": settings,
                           "repeats": repeats, "batch_size": batch_size}
    res["nms_multiclass"] = _nms_part(cands, af, settings, repeats, greedy, batch_size)
    res["nms_agnostic_voting"] = _nms_part(cands, af, {**settings, "multiclass": False}, repeats, greedy,
                                           batch_size)
    if predict:
        res["predict"] = _predict_part(actionformer, num_videos, steps, channels, classes, head, settings,
                                       repeats, batch_size, seed)
    return res


def to_markdown(res: dict[str, Any]) -> str:
    lines = [f"## Soft-NMS benchmark ({res['videos']} videos × {res['candidates_per_video']} candidates, "
             f"{res['classes']} classes, {res['threads']} threads, median of {res['repeats']} interleaved runs; "
             f"ours takes {res['batch_size']} videos per call, as prediction does)",
             "", "| case | " + " | ".join(res["nms_multiclass"]["ms"]) + " | ours / ActionFormer | max |Δscore| |",
             "|---|" + "---|" * (len(res["nms_multiclass"]["ms"]) + 2)]
    for case in ("nms_multiclass", "nms_agnostic_voting"):
        r = res[case]
        cells = " | ".join(f"{v:.1f} ms" for v in r["ms"].values())
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "–"
        diff = r.get("max_abs_score_diff")
        lines.append(f"| {case[4:].replace('_', ' + ')} | {cells} | {ratio} | "
                     f"{'–' if diff is None else f'{diff:.1e}'} |")
    if "predict" in res:
        p = res["predict"]
        lines += ["", f"Prediction end to end ({p['videos']} videos, random weights, ours batch {p['batch_size']}): "
                      f"ours {p['ms']['ours']:.0f} ms, ActionFormer {p['ms']['actionformer']:.0f} ms, "
                      f"ratio {p['ratio']:.2f}"]
    return "\n".join(lines) + "\n"
