"""DDP on CPU: two gloo processes launched by torchrun train one short epoch; both ranks must end
with bit-identical weights (raw and EMA) and only rank 0 writes the run files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch

from losa.model import TALModel
from stages.demo.synthetic_store import make_synthetic_store
from stages.infer.predict import model_config_from_store
from stages.train.run import seed_everything
from storage import open_store

HEAD = dict(embd_dim=32, fpn_dim=32, head_dim=32, n_heads=2, window=9, n_embd_layers=1, n_head_layers=2,
            path_drop=0.1)
MODEL = dict(mode="losa", head=HEAD, adapter_dim=16, adapter_heads=2)

WORKER = textwrap.dedent(
    """
    import json, os, sys, torch
    torch.set_num_threads(1)
    from stages.train.run import train
    store, ann, run, out, model = sys.argv[1:6]
    res = train(store, ann, run, json.loads(model),
                dict(epochs=1, batch_size=2, lr=1e-3, warmup_epochs=0, max_seq_len=48, seed=3,
                     ema_decay=0.9, device="cpu"), progress=False)
    rank = os.environ["RANK"]
    torch.save({"model": dict(res.model.named_parameters()), "ema": dict(res.ema.named_parameters()),
                "iterations": res.summary["iterations"], "loss": res.summary["final"]["loss"]},
               os.path.join(out, f"rank{rank}.pt"))
    """
)


def test_two_process_gloo_training_gives_identical_weights(tmp_path):
    data = make_synthetic_store(tmp_path / "f.zarr", num_videos=8, num_steps=(40, 80), channels=16,
                                layers=(4, 8), num_classes=2, seed=2)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc_per_node", "2", str(script), str(data.store), str(data.annotations),
           str(tmp_path / "run"), str(tmp_path), json.dumps(MODEL)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # 8 videos over 2 ranks, batch 2: 2 iterations per rank, and the loss is the global mean
    assert r0["iterations"] == r1["iterations"] == 2
    assert r0["loss"] == r1["loss"]
    for part in ("model", "ema"):
        assert r0[part].keys() == r1[part].keys()
        for name in r0[part]:
            assert torch.equal(r0[part][name], r1[part][name]), (part, name)
    # training did move the weights away from the (seeded, shared) initialisation
    seed_everything(3)
    init = TALModel(model_config_from_store(open_store(data.store), MODEL, 2)).state_dict()
    assert sum(not torch.equal(init[n], r0["model"][n]) for n in r0["model"]) > len(init) // 2
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["world_size"] == 2
    assert not list((tmp_path / "run").glob("*.tmp"))
