"""Tests for the full TAL model (losa/model.py): modes, masking, initial equivalence, optimisation."""

from __future__ import annotations

import json

import pytest
import torch

from losa.head.actionformer import HeadConfig
from losa.model import LoSAConfig, TALModel, TALOutput

torch.set_num_threads(2)

C, T, K = 32, 24, 3
HEAD = HeadConfig(
    embd_dim=16, fpn_dim=16, head_dim=16, n_levels=3, n_heads=2, window=4,
    regression_ranges=((0, 4), (4, 8), (8, 10000)), path_drop=0.0,
)
TAPS, LAST = (3, 5), 6


def _cfg(**kw) -> LoSAConfig:
    base = {
        "tapped_layers": TAPS, "last_layer": LAST, "channels": C, "num_classes": K,
        "adapter_heads": 2, "head": HEAD,
    }
    base.update(kw)
    if "grid" in kw or "t_sub" in kw:
        base["cells"] = base.get("t_sub", 1) * base.get("grid", 1) ** 2
    return LoSAConfig(**base)


def _batch(cells: int = 1, t: int = T, valid: tuple[int, ...] = (T, 15), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = {layer: torch.randn(len(valid), t, cells, C, generator=g) for layer in (*TAPS, LAST)}
    mask = torch.zeros(len(valid), t, dtype=torch.bool)
    for i, n in enumerate(valid):
        mask[i, :n] = True
    return feats, mask


def _targets():
    return [
        (torch.tensor([[2.0, 7.0], [12.0, 20.0]]), torch.tensor([0, 2])),
        (torch.tensor([[4.0, 9.0]]), torch.tensor([1])),
    ]


def _open_gates(model: TALModel) -> None:
    """Give the zero-initialised gates / side up-projections non-zero values so adapters matter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("fusion.gates") or name.startswith("side_adapters") and ".up." in name:
                p.normal_(0.0, 0.5)


MODE_CASES = [
    {"mode": "losa"},
    {"mode": "losa", "adapters": "long"},
    {"mode": "losa", "adapters": "short", "fusion": "sum"},
    {"mode": "losa", "fusion": "sigmoid"},
    {"mode": "losa", "fusion": "concat"},
    {"mode": "side"},
    {"mode": "head-only"},
]


@pytest.mark.parametrize("grid,t_sub", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_shapes_with_padding(grid: int, t_sub: int) -> None:
    torch.manual_seed(0)
    model = TALModel(_cfg(grid=grid, t_sub=t_sub)).eval()
    feats, mask = _batch(cells=t_sub * grid * grid)
    out = model(feats, mask)
    assert isinstance(out, TALOutput)
    assert [c.shape for c in out.cls_logits] == [(2, T, K), (2, T // 2, K), (2, T // 4, K)]
    assert [o.shape for o in out.offsets] == [(2, T, 2), (2, T // 2, 2), (2, T // 4, 2)]
    assert [p.shape for p in out.points] == [(T, 4), (T // 2, 4), (T // 4, 4)]
    assert out.masks[0].tolist() == mask.tolist()
    assert all(torch.isfinite(c).all() for c in out.cls_logits)
    fused = model.fuse(feats, mask)
    assert fused.shape == (2, T, C) and torch.equal(fused[~mask], torch.zeros_like(fused[~mask]))


@pytest.mark.parametrize("case", MODE_CASES, ids=lambda c: "-".join(c.values()))
@pytest.mark.parametrize("grid,t_sub", [(1, 1), (2, 2)])
def test_padding_never_affects_valid_outputs(case: dict, grid: int, t_sub: int) -> None:
    torch.manual_seed(0)
    model = TALModel(_cfg(grid=grid, t_sub=t_sub, **case)).eval()
    _open_gates(model)
    feats, mask = _batch(cells=t_sub * grid * grid)
    noisy = {}
    for layer, x in feats.items():
        x = x.clone()
        x[~mask] = torch.randn_like(x[~mask]) * 30 - 4
        noisy[layer] = x
    a, b = model(feats, mask), model(noisy, mask)
    for la, lb, ma in zip(a.cls_logits + a.offsets, b.cls_logits + b.offsets, a.masks + a.masks):
        torch.testing.assert_close(lb[ma], la[ma], rtol=0, atol=1e-5)
    fa, fb = model.fuse(feats, mask), model.fuse(noisy, mask)
    torch.testing.assert_close(fb[mask], fa[mask], rtol=0, atol=1e-6)
    assert torch.equal(fb[~mask], torch.zeros_like(fb[~mask]))


@pytest.mark.parametrize("case", [{"fusion": "gated"}, {"fusion": "sigmoid"}, {"fusion": "concat"},
                                  {"mode": "side"}], ids=lambda c: "-".join(c.values()))
def test_starts_exactly_as_head_only(case: dict) -> None:
    torch.manual_seed(0)
    adapted = TALModel(_cfg(**case)).eval()
    head_only = TALModel(_cfg(mode="head-only")).eval()
    head_only.head.load_state_dict(adapted.head.state_dict())
    feats, mask = _batch(cells=1)
    a, b = adapted(feats, mask), head_only(feats, mask)
    for x, y in zip(a.cls_logits + a.offsets, b.cls_logits + b.offsets):
        assert torch.equal(x, y)
    # and the adapters do change the output once the gates open
    _open_gates(adapted)
    if case.get("fusion") in ("sigmoid", "concat"):
        with torch.no_grad():
            for name, p in adapted.named_parameters():
                if "gate_alpha" in name or "merge.weight" in name:
                    p.add_(torch.randn_like(p) * 0.3)
    assert not torch.equal(adapted(feats, mask).cls_logits[0], b.cls_logits[0])


def test_gradients_reach_gates_and_adapters() -> None:
    torch.manual_seed(0)
    model = TALModel(_cfg()).eval()  # eval: deterministic (no dropout), gradients still flow
    feats, mask = _batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def step() -> None:
        opt.zero_grad()
        model.loss(model(feats, mask), _targets())["final_loss"].backward()

    step()
    assert model.fusion.gates.grad.abs().sum() > 0
    opt.step()
    step()
    for group in ("long_adapters", "short_adapters"):
        for name, p in getattr(model, group).named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{group}.{name} got no gradient"
    assert model.fusion.gates.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in model.fusion.proj.parameters())


@pytest.mark.parametrize("case", [{"mode": "losa"}, {"mode": "side"}, {"mode": "head-only"},
                                  {"fusion": "sigmoid"}], ids=lambda c: "-".join(c.values()))
def test_param_groups_cover_every_parameter_once(case: dict) -> None:
    model = TALModel(_cfg(**case))
    groups = model.param_groups(weight_decay=0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    no_decay = {id(p) for p in groups[1]["params"]}
    named = dict(model.named_parameters())
    for name, p in named.items():
        if name.endswith((".bias", "gates", "gate_alpha", "rel_pos", ".scale")) or "norm" in name:
            assert id(p) in no_decay, name
    assert id(named["head.embd.0.conv.weight"]) not in no_decay
    counts = model.count_parameters()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


@pytest.mark.parametrize("case", [{"mode": "losa"}, {"mode": "side"}, {"mode": "head-only"}],
                         ids=lambda c: c["mode"])
def test_param_groups_with_adapter_lr(case: dict) -> None:
    model = TALModel(_cfg(**case))
    plain = model.param_groups(weight_decay=0.05)
    groups = model.param_groups(weight_decay=0.05, adapter_lr=3e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    head = {id(p) for p in model.head.parameters()}
    for g in groups:  # a group is all head (optimiser lr) or all adapters/fusion (adapter_lr)
        in_head = {id(p) in head for p in g["params"]}
        assert len(in_head) == 1
        assert g.get("lr") == (None if in_head == {True} else 3e-3)
    # the same decay split as without adapter_lr
    decays = {id(p) for g in plain if g["weight_decay"] for p in g["params"]}
    assert decays == {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    if case["mode"] == "head-only":
        assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    else:
        assert [(g["weight_decay"], "lr" in g) for g in groups] == [(0.05, False), (0.0, False),
                                                                    (0.05, True), (0.0, True)]
    opt = torch.optim.AdamW(groups, lr=1e-4)  # torch accepts the layout; per-group lr kept
    assert sorted({g["lr"] for g in opt.param_groups}) == ([1e-4] if case["mode"] == "head-only" else [1e-4, 3e-3])


@pytest.mark.parametrize("case", [{"mode": "losa"}, {"mode": "side"}], ids=lambda c: c["mode"])
def test_three_steps_decrease_loss(case: dict) -> None:
    torch.manual_seed(0)
    model = TALModel(_cfg(**case)).eval()  # eval keeps the loss normaliser fixed between steps
    _open_gates(model)
    feats, mask = _batch()
    opt = torch.optim.AdamW(model.param_groups(1e-4), lr=2e-3)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = model.loss(model(feats, mask), _targets())["final_loss"]
        losses.append(loss.item())
        loss.backward()
        opt.step()
    assert losses[3] < losses[0], losses


def test_predict_returns_detections_in_valid_range() -> None:
    torch.manual_seed(0)
    model = TALModel(_cfg()).train()
    feats, mask = _batch(valid=(T, 10))
    dets = model.predict(feats, mask, {"max_seg_num": 7, "pre_nms_thresh": 0.0})
    assert model.training  # mode restored
    assert len(dets) == 2
    for d in dets:
        assert set(d) == {"segments", "scores", "labels"}
        n = d["scores"].shape[0]
        assert 0 < n <= 7 and d["segments"].shape == (n, 2) and d["labels"].shape == (n,)
        assert bool((d["scores"][:-1] >= d["scores"][1:]).all())
        assert int(d["labels"].max()) < K


def test_head_only_ignores_tapped_layers_and_missing_layer_error() -> None:
    feats, mask = _batch()
    only_last = {LAST: feats[LAST]}
    TALModel(_cfg(mode="head-only"))(only_last, mask)
    with pytest.raises(ValueError, match="lack layer 3"):
        TALModel(_cfg())(only_last, mask)
    with pytest.raises(ValueError, match="layer 6 have shape"):
        TALModel(_cfg())({**feats, LAST: feats[LAST][..., :-1]}, mask)


def test_config_round_trip_and_validation() -> None:
    cfg = _cfg(grid=2, t_sub=2, adapters="short", long_window=8, fusion="sigmoid")
    restored = LoSAConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert restored == cfg
    model = TALModel(cfg)
    TALModel(restored).load_state_dict(model.state_dict())  # same parameter names and shapes
    assert cfg.dim == C // 4 and _cfg(adapter_dim=12).dim == 12
    with pytest.raises(ValueError, match="cells"):
        LoSAConfig(channels=C, grid=2, cells=1, tapped_layers=(1,))
    with pytest.raises(ValueError, match="mode"):
        _cfg(mode="full")
    with pytest.raises(ValueError, match="tapped_layers"):
        _cfg(tapped_layers=())
    with pytest.raises(ValueError, match="unknown model setting"):
        LoSAConfig.from_dict({"chanels": 3})
