"""Training recipe pieces: timm's EMA as used by training, and why the schedule and the weight-decay
groups stay the project's own (timm's differ from the recipe)."""
from __future__ import annotations

import torch
from torch import nn

from losa.config import LoSAConfig
from losa.model import TALModel
from stages.train.run import WarmupCosine, make_ema


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("mean", torch.zeros(2))


def test_ema_lerps_float_state_and_copies_integer_buffers():
    torch.manual_seed(0)
    net = _Net()
    ema = make_ema(net, 0.9)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(1, 4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net.mean.add_(1.5)
            net.steps.fill_(step)
        ema.update(net)
        for k, v in net.state_dict().items():
            expected[k] = expected[k].lerp(v, 0.1) if v.is_floating_point() else v.clone()
    for k, v in ema.module.state_dict().items():
        assert torch.equal(v, expected[k]), k  # bit-identical to the recipe's update
    assert int(ema.module.steps) == 3
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training


def test_schedule_reaches_the_base_lr_at_the_end_of_warmup():
    f = WarmupCosine(warmup=3, total=12)
    assert [f(i) for i in range(4)] == [1 / 3, 2 / 3, 1.0, 1.0]  # timm's CosineLRScheduler: 0, 1/3, 2/3, 1


def test_decay_groups_exclude_actionformer_layernorm_weights():
    """ActionFormer's LayerNorm weights are (1, C, 1) tensors: a 1-d rule (timm) would decay them."""
    head = dict(embd_dim=32, fpn_dim=32, head_dim=32, n_heads=2, window=9, n_embd_layers=1, n_head_layers=2,
                path_drop=0.0)
    model = TALModel(LoSAConfig.from_dict(dict(mode="losa", head=head, adapter_dim=16, adapter_heads=2,
                                               tapped_layers=(4,), last_layer=8, channels=16, cells=4, grid=2,
                                               t_sub=1, num_classes=3)))
    decay, no_decay = model.param_groups(0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    multi_dim = [n for n in no_decay_names if dict(model.named_parameters())[n].ndim > 1]
    assert any(n.endswith("ln1.weight") for n in multi_dim), sorted(no_decay_names)
    assert all(dict(model.named_parameters())[names[id(p)]].ndim > 1 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
