"""Pre-train the demo's small backbone on trimmed clips of the training videos (`pretrain_backbone`).

A random-weight backbone makes the demo a test of noise: its tapped layers are near-copies of the
last one and its features tell the dynamic classes apart poorly.  This stage gives the demo a
backbone worth adapting, the way real ones are made — supervised clip classification on trimmed
clips — and saves it in the official VideoMAEv2 checkpoint layout, so that the main job also loads a
``--checkpoint`` exactly as a user loads ``vit_g_hybrid_pt_1200e_k710_ft.pth``.

Labels: each 16-frame clip takes the class of the action covering at least ``min_cover`` of it,
``background`` when no action touches it (clips partly covered are not used).  By default
``move_left`` and ``move_right`` share one label ``move_left+move_right``: like Kinetics' classes,
the pre-training labels are blind to the direction of motion, and horizontal flips (a
label-preserving augmentation once every mirror pair is merged) make the clip classifier mirror-
invariant too.  So the last layer's pooled feature — what a head-only model sees — is trained
not to care about direction, while every token still describes what is where at each tubelet slot.
That is the situation LoSA's short-range adapter is built for (issue 8).

Steps sample labels uniformly (background included), then a random clip of that label from any
training video; AdamW with linear warm-up and cosine decay; the backbone's own ``fc_norm`` on the
token mean feeds a linear classifier (saved as ``head``, as in official fine-tuned checkpoints).
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from losa.encoder.backbone import build_backbone
from losa.encoder.checkpoint import to_official_state_dict
from losa.encoder.sampling import normalise
from losa.encoder.tokens import pool_tokens
from stages.data.annotations import load_annotations
from stages.demo.backbone_config import BackboneTrainSettings, parse_merge
from stages.errors import StageError
from stages.extract.decode import decode_frames
from stages.extract.probe import probe_video
from stages.runtime import resolve_device
from stages.train.schedule import WarmupCosine
from storage.atomic import atomic_write

__all__ = ["BACKGROUND", "ClipBank", "PretrainResult", "clip_labels", "pretrain_backbone"]

BACKGROUND = "background"


@dataclass
class ClipBank:
    """Decoded frames of some videos and every usable clip start, grouped by pre-training label."""

    labels: list[str]
    frames: list[np.ndarray]  # per video uint8 [n, H, W, 3]
    clips: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # label -> [(video, start)]

    def counts(self) -> dict[str, int]:
        return {self.labels[k]: len(v) for k, v in sorted(self.clips.items())}


def clip_labels(num_frames: int, fps: float, segments: list[tuple[float, float, str]], clip_len: int,
                label_of: dict[str, str], min_cover: float, step: int = 2) -> list[tuple[int, str]]:
    """``[(start frame, label)]`` for clips ``[start, start + clip_len)`` every ``step`` frames:
    the class of the action covering ≥ ``min_cover`` of the clip, ``background`` when no action
    touches it; partly covered clips are left out."""
    out: list[tuple[int, str]] = []
    spans = [(s * fps, e * fps, label_of[lab]) for s, e, lab in segments]
    for start in range(0, num_frames - clip_len + 1, step):
        lo, hi = start, start + clip_len
        cover = [(max(0.0, min(hi, e) - max(lo, s)) / clip_len, lab) for s, e, lab in spans]
        best = max(cover, default=(0.0, BACKGROUND))
        if best[0] >= min_cover:
            out.append((start, best[1]))
        elif all(c <= 0.0 for c, _ in cover):
            out.append((start, BACKGROUND))
    return out


def _label_map(classes: list[str], merge: str) -> tuple[dict[str, str], list[str]]:
    groups = parse_merge(merge)
    label_of = {c: c for c in classes}
    for g in groups:
        missing = [c for c in g if c not in label_of]
        if missing:
            raise StageError(f"merge group {'+'.join(g)!r}: class {missing[0]!r} is not in the annotations "
                             f"(classes: {', '.join(classes)})")
        for c in g:
            label_of[c] = "+".join(g)
    labels = [BACKGROUND] + sorted(set(label_of.values()))
    return label_of, labels


def _bank(videos_dir: Path, ann, subset: str, cfg: BackboneTrainSettings, label_of: dict[str, str],
          labels: list[str]) -> ClipBank:
    bank = ClipBank(labels=labels, frames=[])
    index = {lab: i for i, lab in enumerate(labels)}
    for vid in ann.videos_in(subset):
        path = videos_dir / f"{vid}.mp4"
        if not path.is_file():
            raise StageError(f"video {vid!r} of subset {subset!r} not found: {path}")
        info = probe_video(path)
        fps = ann.videos[vid].fps or info.fps
        usable = clip_labels(info.num_frames, fps, ann.videos[vid].segments, cfg.frames, label_of, cfg.min_cover)
        if not usable:
            continue
        frames = decode_frames(path, np.arange(info.num_frames), cfg.resolution, cfg.resize, info=info)
        v = len(bank.frames)
        bank.frames.append(frames)
        for start, lab in usable:
            bank.clips.setdefault(index[lab], []).append((v, start))
    if len(bank.clips) < 2:
        raise StageError(f"subset {subset!r} gives clips of fewer than two labels: nothing to learn")
    return bank


def _augment(clip: np.ndarray, rng: np.random.Generator, flip: bool) -> np.ndarray:
    """Label-preserving augmentations of a uint8 clip ``[T, H, W, 3]`` (labels merged over every
    mirror / time-reversal pair): horizontal flip, time reversal, a colour-channel permutation and
    a random translation (edge-padded) of up to 1/8 of the side."""
    if flip and rng.random() < 0.5:
        clip = clip[:, :, ::-1]
    if flip and rng.random() < 0.5:
        clip = clip[::-1]
    clip = clip[..., rng.permutation(3)]
    h, w = clip.shape[1:3]
    dy, dx = (int(v) for v in rng.integers(-(h // 8), h // 8 + 1, size=2))
    if dy or dx:
        pad = np.pad(clip, ((0, 0), (abs(dy), abs(dy)), (abs(dx), abs(dx)), (0, 0)), mode="edge")
        clip = pad[:, abs(dy) + dy : abs(dy) + dy + h, abs(dx) + dx : abs(dx) + dx + w]
    return clip


def _batch(bank: ClipBank, rng: np.random.Generator, n: int, frames: int, flip: bool, augment: bool = True
           ) -> tuple[torch.Tensor, torch.Tensor]:
    keys = sorted(bank.clips)
    labs = rng.choice(keys, size=n)
    clips, out = [], []
    for lab in labs:
        v, start = bank.clips[int(lab)][int(rng.integers(len(bank.clips[int(lab)])))]
        clip = bank.frames[v][start : start + frames]
        if augment:
            clip = _augment(clip, rng, flip)
        clips.append(np.ascontiguousarray(clip))
        out.append(int(lab))
    return torch.from_numpy(np.stack(clips)), torch.tensor(out)


@dataclass
class PretrainResult:
    """What `pretrain_backbone` wrote and measured."""

    out: Path
    labels: list[str]
    clips_per_label: dict[str, int]
    curve: list[dict]
    eval_accuracy: float | None
    seconds: float

    def describe(self) -> str:
        last = self.curve[-1] if self.curve else {}
        acc = "" if self.eval_accuracy is None else f", {self.eval_accuracy:.3f} clip accuracy on the eval subset"
        return (f"wrote {self.out}: {len(self.labels)} labels, final train loss {last.get('loss', float('nan')):.3f}"
                f"{acc}, {self.seconds:.0f} s")

    def to_dict(self) -> dict:
        return {"labels": self.labels, "clips_per_label": self.clips_per_label, "curve": self.curve,
                "eval_clip_accuracy": self.eval_accuracy, "seconds": round(self.seconds, 1)}


def _feature(model, x: torch.Tensor, pool: str, grid: int) -> torch.Tensor:
    """Clip feature for the pre-training classifier: ``fc_norm`` of the mean of the last block's
    tokens (VideoMAEv2), of their channel-wise max, or of the max over the cell means the store
    keeps (``grid`` x ``grid`` per tubelet slot)."""
    if pool == "mean":
        return model.forward_features(x)
    tokens = model(x)
    pooled = pool_tokens(tokens, grid, "keep") if pool == "cell-max" else tokens.flatten(1, 3)
    return model.fc_norm(pooled.amax(dim=1))


@torch.no_grad()
def _accuracy(model, head, bank: ClipBank, cfg: BackboneTrainSettings, device, n: int, seed: int) -> float:
    rng = np.random.default_rng([seed, 1])
    model.eval()
    hits = total = 0
    for lo in range(0, n, cfg.batch_clips):
        x, y = _batch(bank, rng, min(cfg.batch_clips, n - lo), cfg.frames, flip=False, augment=False)
        logits = head(_feature(model, normalise(x.to(device), cfg.norm), cfg.pool, cfg.grid))
        hits += int((logits.argmax(1).cpu() == y).sum())
        total += len(y)
    model.train()
    return hits / max(1, total)


def pretrain_backbone(videos_dir: str | Path, annotations: str | Path, cfg: BackboneTrainSettings,
                      progress=None) -> PretrainResult:
    """Train ``cfg.preset`` on labelled clips of ``cfg.subset`` of the videos in ``videos_dir`` and
    write it to ``cfg.out``; ``progress(row)`` is called every 10 steps."""
    if cfg.out is None:
        raise StageError("missing output path (--out)")
    t0 = time.perf_counter()
    videos_dir = Path(videos_dir)
    ann = load_annotations(annotations)
    label_of, labels = _label_map(list(ann.classes), cfg.merge)
    if cfg.flip:
        unmerged = [p for p in (("move_left", "move_right"),) if all(label_of.get(c) == c for c in p)]
        if unmerged:
            raise StageError(f"flip needs mirror-invariant labels, but {' and '.join(unmerged[0])} are separate "
                             "labels: merge them (--merge move_left+move_right) or use --no-flip")
    device = resolve_device(cfg.device)
    bank = _bank(videos_dir, ann, cfg.subset, cfg, label_of, labels)
    model = build_backbone(cfg.preset, cfg.frames, cfg.resolution, seed=cfg.seed).to(device)
    model.requires_grad_(True)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        head = torch.nn.Linear(model.embed_dim, len(labels)).to(device)
        torch.nn.init.trunc_normal_(head.weight, std=0.02)
        torch.nn.init.zeros_(head.bias)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2] + [head.weight]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2] + [head.bias]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)

    lr_factor = WarmupCosine(cfg.warmup_steps, cfg.steps)

    rng = np.random.default_rng([cfg.seed, 0])
    curve: list[dict] = []
    window: list[tuple[float, float]] = []
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(step)
        x, y = _batch(bank, rng, cfg.batch_clips, cfg.frames, cfg.flip)
        x, y = normalise(x.to(device), cfg.norm), y.to(device)
        logits = head(_feature(model, x, cfg.pool, cfg.grid))
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(head.parameters()), 1.0)
        opt.step()
        if not torch.isfinite(loss):
            raise StageError(f"pre-training diverged at step {step + 1} (loss {float(loss)}): lower --lr")
        window.append((float(loss.detach()), float((logits.argmax(1) == y).float().mean())))
        if (step + 1) % 10 == 0 or step + 1 == cfg.steps:
            curve.append({"step": step + 1, "loss": float(np.mean([w[0] for w in window])),
                          "accuracy": float(np.mean([w[1] for w in window]))})
            window = []
            if progress:
                progress(curve[-1])
    eval_acc = None
    if cfg.eval_clips and cfg.eval_subset:
        eval_bank = _bank(videos_dir, ann, cfg.eval_subset, cfg, label_of, labels)
        eval_acc = _accuracy(model, head, eval_bank, cfg, device, cfg.eval_clips, cfg.seed)
    sd = to_official_state_dict(model.cpu())
    sd["head.weight"] = head.weight.detach().cpu().clone()
    sd["head.bias"] = head.bias.detach().cpu().clone()
    out = Path(cfg.out)
    buf = io.BytesIO()  # not the temporary file's name: torch.save names the archive after its file,
    torch.save({"model": sd}, buf)  # so the same weights always give the same bytes (DVC's hash)
    atomic_write(out, buf.getvalue(), fsync=False)
    result = PretrainResult(out=out, labels=labels, clips_per_label=bank.counts(), curve=curve,
                            eval_accuracy=eval_acc, seconds=time.perf_counter() - t0)
    if cfg.metrics is not None:
        atomic_write(Path(cfg.metrics), json.dumps(result.to_dict(), indent=1) + "\n", fsync=False)
    return result
