"""Make tests/golden/actionformer_resample.npz: ActionFormer's ActivityNet loader
(``force_upsampling``) on small random features, the reference for fixed-length resampling.

Usage (not run in CI)::

    python tests/golden/make_resample.py /path/to/actionformer_release

The script writes a tiny ActivityNet JSON and ``.npy`` features to a temporary folder, builds
ActionFormer's ``ActivityNetDataset`` (test mode: no random crop) with ``feat_stride = num_frames =
16``, ``default_fps = 15`` and ``max_seq_len = 192`` (its ``anet_tsp.yaml``), and stores for every
video the input features, the resampled ones and the segments in feature-grid units.
"""
from __future__ import annotations

import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np


def main(af_root: str) -> None:
    sys.path.insert(0, str(Path(af_root).resolve()))
    # the loader does not need ActionFormer's compiled NMS, which `libs.utils` imports eagerly
    sys.modules.setdefault("nms_1d_cpu", types.ModuleType("nms_1d_cpu"))
    from libs.datasets.anet import ActivityNetDataset

    rng = np.random.default_rng(0)
    stride, nf, fps, n = 16, 16, 15.0, 192
    lengths = {"vid_short": 37, "vid_long": 403, "vid_exact": 192}
    out: dict[str, np.ndarray] = {"meta": np.array([stride, nf, fps, n], dtype=np.float64)}
    with tempfile.TemporaryDirectory() as tmp:
        feats_dir = Path(tmp) / "feats"
        feats_dir.mkdir()
        database = {}
        for vid, t in lengths.items():
            feats = rng.standard_normal((t, 8)).astype(np.float32)
            np.save(feats_dir / f"{vid}.npy", feats)
            duration = ((t - 1) * stride + nf) / fps
            segs = sorted(rng.uniform(0, duration, size=(3, 2)).tolist())
            segs = [[min(a, b), max(a, b)] for a, b in segs]
            database[vid] = {"subset": "validation", "duration": duration, "fps": fps,
                             "annotations": [{"label": "x", "segment": s, "label_id": 0} for s in segs]}
            out[f"{vid}/input"] = feats
            out[f"{vid}/seconds"] = np.asarray(segs, dtype=np.float64)
        ann = Path(tmp) / "ann.json"
        ann.write_text(json.dumps({"database": database}))
        ds = ActivityNetDataset(
            is_training=False, split=["validation"], feat_folder=str(feats_dir), json_file=str(ann),
            feat_stride=stride, num_frames=nf, default_fps=fps, downsample_rate=1, max_seq_len=n,
            trunc_thresh=0.5, crop_ratio=None, input_dim=8, num_classes=1, file_prefix="",
            file_ext=".npy", force_upsampling=True)
        for i in range(len(ds)):
            item = ds[i]
            vid = item["video_id"]
            out[f"{vid}/resampled"] = item["feats"].numpy().T            # [N, C]
            out[f"{vid}/grid_segments"] = item["segments"].numpy().astype(np.float64)
            out[f"{vid}/feat_stride"] = np.array(item["feat_stride"], dtype=np.float64)
    target = Path(__file__).with_name("actionformer_resample.npz")
    np.savez_compressed(target, **out)
    print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1])
