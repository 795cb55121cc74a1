"""Tests for the VideoMAEv2 backbone, checkpoint conversion and token pooling (CPU, tiny model)."""
from __future__ import annotations

import math

import pytest
import torch

from losa.encoder.backbone import (
    PRESETS,
    BackboneConfig,
    VideoViT,
    build_backbone,
    flops_per_clip,
    get_preset,
    get_sinusoid_encoding_table,
)
from losa.encoder.checkpoint import (
    CheckpointError,
    convert_official_state_dict,
    load_official_checkpoint,
    to_official_state_dict,
)
from losa.encoder.tokens import pool_tokens, pooled_cells

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tiny() -> VideoViT:
    return build_backbone("tiny", num_frames=8, img_size=64, seed=1)


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- presets / config

@pytest.mark.parametrize("name,shape", [
    ("vit-s", (16, 384, 12, 6, 1536)), ("vit-b", (16, 768, 12, 12, 3072)),
    ("vit-l", (16, 1024, 24, 16, 4096)), ("vit-h", (16, 1280, 32, 16, 5120)),
    ("vit-g", (14, 1408, 40, 16, 6144)), ("tiny", (16, 96, 4, 3, 384)),
])
def test_presets_have_official_shapes(name: str, shape: tuple[int, ...]) -> None:
    cfg = PRESETS[name]
    assert (cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_hidden) == shape
    assert (cfg.tubelet_size, cfg.num_frames, cfg.img_size) == (2, 16, 224)
    assert cfg.to_dict()["name"] == name


def test_vit_g_mlp_width_and_size_on_meta_device() -> None:
    with torch.device("meta"):
        model = VideoViT(get_preset("vit-g"))
    assert model.blocks[0].mlp.fc1.out_features == 6144
    assert model.blocks[0].attn.qkv.bias is not None
    assert model.blocks[0].norm1.eps == 1e-6
    assert len(model.blocks) == 40
    assert model.grid == (8, 16, 16)
    n_params = sum(p.numel() for p in model.parameters())
    assert 1.0e9 < n_params < 1.02e9          # ViT-g: ~1.01 B parameters


def test_get_preset_errors_list_valid_names() -> None:
    assert get_preset("ViT_G") is PRESETS["vit-g"]
    with pytest.raises(ValueError, match="vit-x.*vit-s"):
        get_preset("vit-x")


def test_geometry_validation() -> None:
    with pytest.raises(ValueError, match="resolution 230 .*patch size 16"):
        build_backbone("tiny", num_frames=8, img_size=230)
    with pytest.raises(ValueError, match="num_frames 7 .*tubelet size 2"):
        build_backbone("tiny", num_frames=7, img_size=64)
    with pytest.raises(ValueError, match="not divisible"):
        BackboneConfig("bad", patch_size=16, embed_dim=100, depth=1, num_heads=3, mlp_hidden=10)


# ----------------------------------------------------------------------------- forward_layers

@pytest.mark.parametrize("layers", [[1], [4], [2, 3], [3, 1, 3]])
def test_forward_layers_shapes(tiny: VideoViT, clip: torch.Tensor, layers: list[int]) -> None:
    with torch.no_grad():
        out = tiny.forward_layers(clip, layers)
    assert sorted(out) == sorted(set(layers))
    for tokens in out.values():
        assert tokens.shape == (2, 4, 4, 4, 96)
        assert torch.isfinite(tokens).all()


def test_forward_layers_consistent_and_last_equals_forward(tiny: VideoViT, clip: torch.Tensor) -> None:
    with torch.no_grad():
        many = tiny.forward_layers(clip, [1, 2, 4])
        two = tiny.forward_layers(clip, [2])
        last = tiny(clip)
    torch.testing.assert_close(many[2], two[2], rtol=0, atol=0)
    torch.testing.assert_close(many[4], last, rtol=0, atol=0)
    assert not torch.equal(many[1], many[2])


def test_forward_layers_stops_after_deepest_block(tiny: VideoViT, clip: torch.Tensor) -> None:
    calls: list[int] = []
    handles = [blk.register_forward_hook(lambda m, i, o, k=k: calls.append(k))
               for k, blk in enumerate(tiny.blocks, start=1)]
    try:
        with torch.no_grad():
            tiny.forward_layers(clip, [2, 1])
    finally:
        for h in handles:
            h.remove()
    assert calls == [1, 2]


@pytest.mark.parametrize("bad", [[0], [5], [1, 5], [-1], [1.5], [True]])
def test_invalid_layers_name_valid_range(tiny: VideoViT, clip: torch.Tensor, bad: list) -> None:
    with pytest.raises(ValueError, match=r"out of range 1\.\.4 for tiny"):
        tiny.forward_layers(clip, bad)


def test_empty_layers_and_wrong_input_geometry(tiny: VideoViT) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        tiny.forward_layers(torch.zeros(1, 3, 8, 64, 64), [])
    with pytest.raises(ValueError, match="does not match"):
        tiny.forward_layers(torch.zeros(1, 3, 8, 48, 48), [1])


def test_error_message_for_vit_g_range() -> None:
    with torch.device("meta"):
        model = VideoViT(get_preset("vit-g"))
    with pytest.raises(ValueError, match=r"layer 41 out of range 1\.\.40 for vit-g"):
        model._check_layers([41])


# ----------------------------------------------------------------------------- init / frozen

def test_deterministic_init_and_global_rng_untouched() -> None:
    state = torch.random.get_rng_state()
    a = build_backbone("tiny", 8, 64, seed=3)
    b = build_backbone("tiny", 8, 64, seed=3)
    c = build_backbone("tiny", 8, 64, seed=4)
    assert torch.equal(state, torch.random.get_rng_state())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["blocks.0.attn.qkv.weight"], sc["blocks.0.attn.qkv.weight"])


def test_init_statistics_and_frozen(tiny: VideoViT) -> None:
    assert not tiny.training
    assert not any(p.requires_grad for p in tiny.parameters())
    fc1 = tiny.blocks[0].mlp.fc1
    # timm ViT init: trunc_normal_(std=.02) truncates at +-2 absolute, i.e. a plain N(0, .02)
    assert 0.015 < fc1.weight.std().item() < 0.025
    assert torch.count_nonzero(fc1.bias) == 0
    assert torch.equal(tiny.blocks[0].norm1.weight, torch.ones(96))
    assert "pos_embed" not in tiny.state_dict()         # fixed, non-persistent buffer


# ----------------------------------------------------------------------------- position table

def test_sinusoid_table_formula() -> None:
    table = get_sinusoid_encoding_table(10, 6)
    pos, i = 7, 3
    angle = pos / 10000 ** (2 * (i // 2) / 6)
    assert table[pos, i].item() == pytest.approx(math.cos(angle))
    assert table[pos, 2].item() == pytest.approx(math.sin(pos / 10000 ** (2 / 6)))
    assert torch.equal(table[0, 0::2], torch.zeros(3)) and torch.equal(table[0, 1::2], torch.ones(3))


def test_pos_table_native_and_resized() -> None:
    cfg = get_preset("tiny")
    native = VideoViT(cfg, num_frames=16, img_size=224)
    expected = get_sinusoid_encoding_table(8 * 14 * 14, 96).float()
    torch.testing.assert_close(native.pos_embed[0], expected, rtol=0, atol=0)

    # default (official VideoMAEv2): a fresh 1-D table for the actual token count
    small = VideoViT(cfg, num_frames=8, img_size=160)
    assert small.pos_table == "official"
    assert small.grid == (4, 10, 10) and small.pos_embed.shape == (1, 400, 96)
    torch.testing.assert_close(small.pos_embed[0], get_sinusoid_encoding_table(400, 96).float(),
                               rtol=0, atol=0)
    # recorded alternative 1: trilinear resize of the 16x224 table
    tri = VideoViT(cfg, num_frames=8, img_size=160, pos_table="trilinear")
    vol = expected.double().reshape(1, 8, 14, 14, 96).permute(0, 4, 1, 2, 3)
    ref = torch.nn.functional.interpolate(vol, size=(4, 10, 10), mode="trilinear", align_corners=False)
    ref = ref.permute(0, 2, 3, 4, 1).reshape(400, 96).float()
    torch.testing.assert_close(tri.pos_embed[0], ref)
    # halving time only (align_corners=False): new slot j = mean of old slots 2j and 2j+1
    half = VideoViT(cfg, num_frames=8, img_size=224, pos_table="trilinear").pos_embed[0]
    grid0 = expected.reshape(8, 14, 14, 96)
    torch.testing.assert_close(half.reshape(4, 14, 14, 96)[1], (grid0[2] + grid0[3]) / 2)
    # recorded alternative 2 (AdaTAD): table for t'=4 slots at 14x14, bicubic per slot to 10x10
    bic = VideoViT(cfg, num_frames=8, img_size=160, pos_table="bicubic")
    slots = get_sinusoid_encoding_table(4 * 14 * 14, 96).float().reshape(4, 14, 14, 96).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(slots, size=(10, 10), mode="bicubic", align_corners=False)
    torch.testing.assert_close(bic.pos_embed[0], ref.permute(0, 2, 3, 1).reshape(400, 96))
    assert not torch.allclose(bic.pos_embed, small.pos_embed)
    assert not torch.allclose(tri.pos_embed, small.pos_embed)
    # at the native geometry all three are the same table
    for mode in ("trilinear", "bicubic"):
        torch.testing.assert_close(VideoViT(cfg, 16, 224, pos_table=mode).pos_embed, native.pos_embed,
                                   rtol=0, atol=0)
    out = small.forward_layers(torch.zeros(1, 3, 8, 160, 160), [1])[1]
    assert out.shape == (1, 4, 10, 10, 96)
    with pytest.raises(ValueError, match="position table 'nearest' is not one of official"):
        build_backbone("tiny", 8, 64, pos_table="nearest")


# ----------------------------------------------------------------------------- FLOPs

def test_flops_vit_g_matches_hand_formula() -> None:
    n, d, m, depth = 2048, 1408, 6144, 40
    per_block = 2 * (n * d * 3 * d + n * d * d + 2 * n * d * m) + 2 * 2 * n * n * d
    patch = 2 * n * d * (3 * 2 * 14 * 14)
    expected = depth * per_block + patch
    got = flops_per_clip(get_preset("vit-g"), 16, 224)
    assert got == pytest.approx(expected, rel=1e-12)
    assert 4.9e12 < got < 5.2e12
    # attention grows quadratically: 8 frames at 224 is less than half of 16 frames
    assert flops_per_clip(get_preset("vit-g"), 8, 224) < got / 2


# ----------------------------------------------------------------------------- checkpoints

def _official(model: VideoViT) -> dict[str, torch.Tensor]:
    sd = to_official_state_dict(model)
    assert "blocks.0.attn.q_bias" in sd and "blocks.0.attn.qkv.bias" not in sd
    return sd


def test_checkpoint_round_trip_through_file(tmp_path, clip: torch.Tensor) -> None:
    a = build_backbone("tiny", 8, 64, seed=1)
    with torch.no_grad():   # non-zero biases so the q/v split is really exercised
        for blk in a.blocks:
            blk.attn.qkv.bias.copy_(torch.linspace(-0.5, 0.5, blk.attn.qkv.bias.numel()))
    path = tmp_path / "vit_tiny.pth"
    torch.save({"model": _official(a), "epoch": 3}, path)
    b = build_backbone("tiny", 8, 64, seed=2)
    with torch.no_grad():
        before = b(clip)
    load_official_checkpoint(b, torch.load(path, map_location="cpu", weights_only=True))
    with torch.no_grad():
        ya, yb = a.forward_layers(clip, [2, 4]), b.forward_layers(clip, [2, 4])
    assert not torch.allclose(before, ya[4])
    for k in ya:
        torch.testing.assert_close(yb[k], ya[k], rtol=1e-5, atol=1e-5)
    # the k third of the fused bias is zero, q and v thirds come from the checkpoint
    bias = b.blocks[0].attn.qkv.bias
    assert torch.count_nonzero(bias[96:192]) == 0
    assert torch.equal(bias[:96], a.blocks[0].attn.qkv.bias[:96])


@pytest.mark.parametrize("wrap", ["flat", "module", "state_dict", "pretrain", "ddp"])
def test_checkpoint_nesting_and_prefix_variants(tiny: VideoViT, wrap: str) -> None:
    sd = _official(tiny)
    sd_full = {**sd, "norm.weight": torch.ones(96), "head.weight": torch.zeros(5, 96)}
    if wrap == "module":
        ckpt = {"module": sd_full}
    elif wrap == "state_dict":
        ckpt = {"state_dict": {"model": sd_full}}
    elif wrap == "ddp":
        ckpt = {"model": {"module." + k: v for k, v in sd_full.items()}}
    elif wrap == "pretrain":
        ckpt = {"model": {**{"encoder." + k: v for k, v in sd.items()},
                          "encoder.norm.weight": torch.ones(96),
                          "decoder.blocks.0.norm1.weight": torch.ones(8),
                          "encoder_to_decoder.weight": torch.zeros(8, 96),
                          "mask_token": torch.zeros(1, 1, 8)}}
    else:
        ckpt = sd_full
    converted = convert_official_state_dict(ckpt, tiny)
    ours = tiny.state_dict()
    assert set(converted) == set(ours)
    assert all(torch.equal(converted[k], ours[k]) for k in ours)


def _reference_encoder(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int) -> torch.Tensor:
    """Official VideoMAEv2 encoder math written out with plain ops on an official state dict."""
    f = torch.nn.functional
    w = sd["patch_embed.proj.weight"]
    tok = f.conv3d(x, w, sd["patch_embed.proj.bias"], stride=w.shape[2:]).flatten(2).transpose(1, 2)
    b, n, d = tok.shape
    tok = tok + get_sinusoid_encoding_table(n, d).float()          # native geometry: no resize
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        p = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        h = f.layer_norm(tok, (d,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        bias = torch.cat([p["attn.q_bias"], torch.zeros_like(p["attn.q_bias"]), p["attn.v_bias"]])
        qkv = f.linear(h, p["attn.qkv.weight"], bias).reshape(b, n, 3, heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q * q.shape[-1] ** -0.5 @ k.transpose(-2, -1)).softmax(-1)
        h = (attn @ v).transpose(1, 2).reshape(b, n, d)
        tok = tok + f.linear(h, p["attn.proj.weight"], p["attn.proj.bias"])
        h = f.layer_norm(tok, (d,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        h = f.linear(f.gelu(f.linear(h, p["mlp.fc1.weight"], p["mlp.fc1.bias"])),
                     p["mlp.fc2.weight"], p["mlp.fc2.bias"])
        tok = tok + h
    return tok


def test_matches_official_videomaev2_math() -> None:
    model = build_backbone("tiny", num_frames=16, img_size=224, seed=5)
    sd = _official(model)
    gen = torch.Generator().manual_seed(1)
    for k in sd:                      # non-trivial norms and biases everywhere
        if k.endswith("bias") or "norm" in k:
            sd[k] = sd[k] + 0.1 * torch.randn(sd[k].shape, generator=gen)
    load_official_checkpoint(model, sd)
    x = torch.randn(1, 3, 16, 224, 224, generator=gen)
    with torch.no_grad():
        ours = model(x)
        ref = _reference_encoder(sd, x, heads=3)
    torch.testing.assert_close(ours.reshape(1, -1, 96), ref, rtol=1e-4, atol=1e-4)


def test_checkpoint_errors_listed_together(tiny: VideoViT) -> None:
    sd = _official(tiny)
    sd["blocks.1.mlp.fc1.weight"] = torch.zeros(383, 96)       # corrupted shape
    del sd["blocks.2.norm2.bias"]                               # missing
    del sd["blocks.3.attn.v_bias"]                              # missing half of the bias
    sd["blocks.0.attn.rel_pos"] = torch.zeros(3)                # unknown
    with pytest.raises(CheckpointError) as err:
        convert_official_state_dict(sd, tiny)
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg
    assert "1 unknown key: blocks.0.attn.rel_pos" in msg
    assert "2 missing keys" in msg and "blocks.2.norm2.bias" in msg and "blocks.3.attn.v_bias" in msg
    assert "blocks.1.mlp.fc1.weight (383, 96) != (384, 96)" in msg


def test_checkpoint_with_more_or_fewer_blocks(tiny: VideoViT) -> None:
    deeper = build_backbone("tiny", 8, 64)
    sd = _official(tiny)
    extra = {k.replace("blocks.0.", "blocks.4.", 1): v for k, v in sd.items() if k.startswith("blocks.0.")}
    with pytest.raises(CheckpointError, match=r"checkpoint has 5 blocks, tiny has 4.*unknown keys: blocks\.4\."):
        convert_official_state_dict({**sd, **extra}, deeper)
    fewer = {k: v for k, v in sd.items() if not k.startswith("blocks.3.")}
    with pytest.raises(CheckpointError, match=r"checkpoint has 3 blocks.*missing keys: blocks\.3\.") as err:
        convert_official_state_dict(fewer, tiny)
    assert "(+" in str(err.value)       # 10 missing keys, the list is truncated with a count


def test_checkpoint_without_tensors(tiny: VideoViT) -> None:
    with pytest.raises(CheckpointError, match="no tensors"):
        convert_official_state_dict({"epoch": 3, "args": {}}, tiny)


# ----------------------------------------------------------------------------- token pooling

def test_pool_tokens_shapes() -> None:
    x = torch.randn(2, 4, 8, 8, 5)
    assert pool_tokens(x, 1, "pool").shape == (2, 1, 5)
    assert pool_tokens(x, 2, "pool").shape == (2, 4, 5)
    assert pool_tokens(x, 4, "keep").shape == (2, 64, 5)
    assert pooled_cells(4, "keep", 4) == 64 and pooled_cells(2, "pool", 4) == 4
    assert pool_tokens(x.to(torch.bfloat16), 2, "keep").dtype == torch.float32


def test_pool_tokens_values() -> None:
    x = torch.arange(2 * 2 * 4 * 4 * 3, dtype=torch.float32).reshape(2, 2, 4, 4, 3)
    torch.testing.assert_close(pool_tokens(x, 1, "pool")[:, 0], x.mean(dim=(1, 2, 3)))
    keep = pool_tokens(x, 2, "keep").reshape(2, 2, 2, 2, 3)           # [B, t, gy, gx, C]
    torch.testing.assert_close(keep[1, 1, 0, 1], x[1, 1, 0:2, 2:4].mean(dim=(0, 1)))
    torch.testing.assert_close(keep[0, 0, 1, 0], x[0, 0, 2:4, 0:2].mean(dim=(0, 1)))
    pooled = pool_tokens(x, 2, "pool").reshape(2, 2, 2, 3)
    torch.testing.assert_close(pooled[1, 1, 1], x[1, :, 2:4, 2:4].mean(dim=(0, 1, 2)))
    # uneven grid (10 -> 4) still averages everything exactly once on the 1x1 level
    y = torch.randn(1, 1, 10, 10, 2)
    torch.testing.assert_close(pool_tokens(y, 1, "keep")[0, 0], y[0, 0].mean(dim=(0, 1)))
    assert pool_tokens(y, 4, "keep").shape == (1, 16, 2)


def test_pool_tokens_errors() -> None:
    x = torch.zeros(1, 2, 2, 2, 3)
    with pytest.raises(ValueError, match="grid 4 is larger than the 2x2"):
        pool_tokens(x, 4, "pool")
    with pytest.raises(ValueError, match="temporal mode 'avg'"):
        pool_tokens(x, 1, "avg")
    with pytest.raises(ValueError, match="positive int"):
        pool_tokens(x, 0, "keep")
