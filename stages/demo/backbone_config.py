"""Settings of the demo backbone's pre-training (`BackboneTrainSettings`), torch-free knob schema.

`losa-demo-backbone` builds its options and params.yaml's ``demo_backbone`` section from it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from losa.schema import knob, settings
from stages.errors import StageError

__all__ = ["BackboneTrainSettings", "parse_merge"]


def parse_merge(text: str) -> list[list[str]]:
    """``"a+b,c+d"`` → ``[["a", "b"], ["c", "d"]]`` (empty text: no merged groups)."""
    groups = [[c.strip() for c in g.split("+") if c.strip()] for g in text.split(",") if g.strip()]
    for g in groups:
        if len(g) < 2:
            raise StageError(f"merge group {'+'.join(g)!r} needs at least two classes joined by '+'")
    seen = [c for g in groups for c in g]
    dup = sorted({c for c in seen if seen.count(c) > 1})
    if dup:
        raise StageError(f"merge: class {dup[0]!r} appears in more than one group")
    return groups


@settings(what="demo_backbone", error=StageError)
class BackboneTrainSettings:
    """Knobs of the demo backbone's supervised pre-training on trimmed clips of the training videos."""

    videos: Path | None = knob(None, "Folder of <video id>.mp4 files.")
    annotations: Path | None = knob(None, "ActivityNet-format JSON naming each video's subset and actions.")
    out: Path | None = knob(None, "Output .pth (official VideoMAEv2 layout: {'model': state dict}).")
    metrics: Path | None = knob(None, "Optional JSON with the pre-training curve and clip accuracies.")
    preset: Literal["tiny", "vit-s", "vit-b", "vit-l", "vit-h", "vit-g"] = knob("tiny", "Backbone size.")
    frames: int = knob(16, "Frames per clip (as extraction).", ge=2)
    resolution: int = knob(112, "Clip side in pixels (as extraction).", ge=16)
    resize: Literal["squash", "short-crop"] = knob("squash", "Frame resize (as extraction).")
    norm: Literal["imagenet", "255"] = knob("imagenet", "Pixel normalisation (as extraction).")
    subset: str = knob("training", "Annotation subset whose videos are cut into clips.")
    merge: str = knob("move_left+move_right", "Classes sharing one pre-training label, 'a+b,c+d' "
                      "(direction-blind labels, like Kinetics'); empty: every class its own.")
    flip: bool = knob(True, "Random horizontal flips and time reversals (need labels merged over each "
                                  "mirror pair); colour permutations and shifts are always applied.")
    min_cover: float = knob(0.75, "A clip takes an action's label when the action covers this fraction of it.",
                            gt=0, le=1)
    pool: Literal["cell-max", "max", "mean"] = knob(
        "cell-max", "Token pooling of the pre-training classifier: cell-max = max over the cells the store "
                    "keeps (grid x grid per tubelet slot, cell means); max over tokens; mean = VideoMAEv2's "
                    "fc_norm feature (learns slowest on small objects).")
    grid: int = knob(2, "Cells per side for pool cell-max (as extraction's grid).", ge=1)
    steps: int = knob(90, "Optimisation steps.", ge=1)
    batch_clips: int = knob(32, "Clips per step (balanced over labels, background included).", ge=1)
    lr: float = knob(1e-3, "AdamW peak learning rate (linear warm-up, cosine decay).", gt=0)
    weight_decay: float = knob(0.05, "AdamW weight decay.", ge=0)
    warmup_steps: int = knob(10, "Linear warm-up steps.", ge=0)
    seed: int = knob(0, "Seed of the initial weights and of the clip sampling.")
    eval_clips: int = knob(256, "Clips of the evaluation subset scored at the end (0: none).", ge=0)
    eval_subset: str = knob("testing", "Subset for the reported clip accuracy (a figure only; nothing is "
                                       "selected on it).")
    device: str = knob("auto", "auto | cpu | cuda[:N].")
    progress: bool = knob(True, "Print the loss and accuracy every 10 steps.")
