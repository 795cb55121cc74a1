"""The frozen backbone of extraction: uint8 clips → pooled activations in the store dtype.

`ClipEncoder` builds the VideoMAEv2 backbone on its device (official checkpoint loaded, pixel
normalisation folded into the patch embedding), runs it under `torch.inference_mode()` with the
configured precision, pools the tapped blocks' tokens and casts them to the store representation
(float16, or bfloat16 bits as uint16), plus the named features stored beside the layers.
`check_checkpoint` validates a checkpoint against the backbone without materialising weights.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from stages.errors import StageError
from stages.extract.config import ExtractConfig

__all__ = ["ClipEncoder", "check_checkpoint"]


class ClipEncoder:
    """Frozen backbone on its device: uint8 clips → pooled activations in the store dtype.

    `__call__(clips uint8 [n, F, H, W, 3])` returns {layer: np.ndarray [n, cells, C]}: float16, or
    raw bfloat16 bits as uint16 (the store's representation).  Under fp32 precision TF32 is off.
    With `cfg.reference_feature` the result also holds {"fc_norm": float32 [n, C]}, VideoMAEv2's
    clip feature (the last block is then run even when it is not stored).  Resize
    "squash-bilinear" scales the native-size float frames here, after normalisation.
    """

    def __init__(self, cfg: ExtractConfig) -> None:
        import torch

        from losa.encoder.backbone import build_backbone

        self.cfg = cfg
        self.device = torch.device(cfg.resolve_device())
        self.device_name = (torch.cuda.get_device_name(self.device)
                            if self.device.type == "cuda" else self.device.type)
        self.precision = cfg.resolve_precision(self.device.type)
        model = build_backbone(cfg.preset, num_frames=cfg.sampling.frames_per_clip,
                               img_size=cfg.resolution, seed=cfg.seed, pos_table=cfg.pos_table)
        if cfg.checkpoint is not None:
            from losa.encoder.checkpoint import load_official_checkpoint

            _fit_checkpoint(cfg, load_official_checkpoint, model)
        # The pixel normalisation is folded into the patch embedding (exact: a linear conv with
        # stride = kernel, no padding): the model takes 0..255 values, converted once per frame.
        # Not for "squash-bilinear", whose reference recipe resizes the normalised float frames.
        self.folded = cfg.resize != "squash-bilinear"
        if self.folded:
            from losa.encoder.sampling import input_affine

            model.fold_input_affine(*input_affine(cfg.norm))
        self.model = model.to(self.device).eval()
        self.layers = cfg.all_layers
        depth = cfg.backbone.depth
        self.run_layers = sorted({*self.layers, depth}) if cfg.reference_feature else self.layers
        self.mean_layer = _cell_mean_layer(cfg)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def _precision_context(self):
        import torch

        if self.autocast_dtype is not None:
            return torch.autocast(self.device.type, dtype=self.autocast_dtype)
        if self.device.type == "cuda":  # true fp32: no TF32 in matmuls/convolutions
            return _no_tf32()
        return contextlib.nullcontext()

    def __call__(self, clips: np.ndarray) -> dict[int, np.ndarray]:
        """uint8 clips [n, F, H, W, 3] → {layer: [n, cells, C]} (see `encode`)."""
        n, f = clips.shape[:2]
        return self.encode(clips.reshape(n * f, *clips.shape[2:]), np.arange(n * f).reshape(n, f))

    def _input(self, frames: np.ndarray, index: np.ndarray):
        """Distinct uint8 frames [U, H, W, 3] + clip index [n, F] → model input [n, 3, F, H, W].

        Only the U distinct frames cross to the device.  Folded: the clips are gathered as uint8 and
        converted in the one copy that lays them out (no normalisation pass at all).  Unfolded
        ("squash-bilinear"): each frame is normalised once, then the clips are gathered."""
        import torch

        from losa.encoder.sampling import normalise

        x = torch.from_numpy(np.ascontiguousarray(frames))
        idx = torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
            idx = idx.to(self.device, non_blocking=True)
        if self.folded:
            # normalisation folded into the weights: gather the uint8 clips (1 byte a value), then
            # ONE pass converts to the compute dtype (0..255 are exact in bf16 / fp16) and lays out
            # [n, 3, F, H, W]
            src = x[idx].permute(0, 4, 1, 2, 3)                              # uint8 view
            clips = torch.empty(src.shape, dtype=self.autocast_dtype or torch.float32, device=x.device)
            return clips.copy_(src)
        x = normalise(x, self.cfg.norm)                                      # [3, U, H, W], once a frame
        clips = x[:, idx].transpose(0, 1)                                    # [n, 3, F, H, W]
        if self.cfg.resize == "squash-bilinear":
            clips = _squash_bilinear(clips, self.cfg.resolution)
        return clips.contiguous()

    def encode(self, frames: np.ndarray, index: np.ndarray) -> dict[int, np.ndarray]:
        """Distinct uint8 frames [U, H, W, 3] and clip index [n, F] into them (`iter_frame_batches`)
        → {layer: np.ndarray [n, cells, C]} in the store representation."""
        import torch

        from losa.encoder.tokens import pool_tokens

        with torch.inference_mode():
            x = self._input(frames, index)
            with self._precision_context():
                tokens = self.model.forward_layers(x, self.run_layers)
            out: dict = {}
            if self.cfg.reference_feature:
                from stages.extract.config import REFERENCE_FEATURE

                feature = self.model.pool_feature(tokens[self.cfg.backbone.depth])
                out[REFERENCE_FEATURE] = feature.float().cpu().numpy()
            for layer, t in tokens.items():
                if layer not in self.layers:
                    continue
                pooled = pool_tokens(t, self.cfg.grid, self.cfg.temporal).float()
                out[layer] = self._to_store_dtype(pooled, layer)
                if layer == self.mean_layer:  # mean of the cells AS STORED (what a reader would get)
                    from storage.features import cell_mean_feature
                    from storage.reader import decode_rows

                    stored = decode_rows(out[layer], self.cfg.store_dtype)
                    out[cell_mean_feature(layer)] = stored.mean(axis=1, dtype=np.float32)
        return out

    def _to_store_dtype(self, x, layer: int) -> np.ndarray:
        import torch

        if self.cfg.store_dtype == "bfloat16":
            return x.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)
        half = x.to(torch.float16)
        # one reduction: values below 65520 round to finite float16 (NaN compares False, as before)
        if float(x.abs().amax()) >= 65520.0 and bool((torch.isinf(half) & torch.isfinite(x)).any()):
            peak = float(x[torch.isfinite(x)].abs().max())
            raise StageError(f"layer {layer}: activations up to {peak:.4g} overflow float16 "
                             "(max 65504); extract with store dtype bfloat16")
        return half.cpu().numpy()


def _cell_mean_layer(cfg: ExtractConfig) -> int | None:
    """The layer whose cell mean is stored as a feature: the last stored one, when cells > 1."""
    return max(cfg.all_layers) if cfg.cells > 1 else None


def _stored_features(cfg: ExtractConfig) -> dict[str, int]:
    """Named features written next to the layers: {"fc_norm": C} with the reference feature, and
    the last layer's cell mean {"cellmean_XX": C} when a step has several cells."""
    from stages.extract.config import REFERENCE_FEATURE
    from storage.features import cell_mean_feature

    out = {REFERENCE_FEATURE: cfg.backbone.embed_dim} if cfg.reference_feature else {}
    if _cell_mean_layer(cfg) is not None:
        out[cell_mean_feature(_cell_mean_layer(cfg))] = cfg.backbone.embed_dim
    return out


def _squash_bilinear(x, resolution: int):
    """Float clips [n, 3, T, H, W] → [n, 3, T, res, res], bilinear, align_corners False, no
    antialias (VideoMAEv2's TAD extractor scales its /255 frames this way)."""
    import torch.nn.functional as F

    n, c, t, h, w = x.shape
    if (h, w) == (resolution, resolution):
        return x
    y = F.interpolate(x.reshape(n, c * t, h, w), size=(resolution, resolution), mode="bilinear",
                      align_corners=False)
    return y.reshape(n, c, t, resolution, resolution)


def _load_state(path: Path) -> dict:
    """torch.load a checkpoint (weights only); one line naming the file when it is not one."""
    from stages.extract.weights import load_checkpoint

    return dict(load_checkpoint(path))


def _fit_checkpoint(cfg: ExtractConfig, fit, model) -> None:
    """`fit(model, state_dict, require_fc_norm)` (load or convert); its error names the file."""
    from losa.encoder.checkpoint import CheckpointError

    state = _load_state(cfg.checkpoint)
    try:
        fit(model, state, cfg.reference_feature)
    except CheckpointError as exc:
        raise StageError(f"checkpoint {cfg.checkpoint}: {exc}") from None


def check_checkpoint(cfg: ExtractConfig) -> None:
    """Raise ValueError if `cfg.checkpoint` cannot be loaded into the backbone (no weights are
    materialised: the model is built on the meta device)."""
    if cfg.checkpoint is None:
        return
    import torch

    from losa.encoder.backbone import VideoViT
    from losa.encoder.checkpoint import convert_official_state_dict

    with torch.device("meta"):
        model = VideoViT(cfg.backbone, num_frames=cfg.sampling.frames_per_clip, img_size=cfg.resolution)
    _fit_checkpoint(cfg, lambda m, sd, need: convert_official_state_dict(sd, m, need), model)


@contextlib.contextmanager
def _no_tf32():
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
