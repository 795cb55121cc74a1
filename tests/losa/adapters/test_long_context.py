"""Long-range adapter with a bounded context (losa/adapters/long.py): a video several times the
training window runs in overlapping windows of exactly what training sees."""

from __future__ import annotations

import pytest
import torch

import losa.adapters.long as long_mod
from losa.adapters import LongRangeAdapter

C, D, L = 16, 8, 16


def _adapter(context: int | None) -> LongRangeAdapter:
    torch.manual_seed(0)
    return LongRangeAdapter(C, D, heads=2, context=context).eval()


def test_long_video_equals_its_training_windows(monkeypatch) -> None:
    ad = _adapter(L)
    ref = _adapter(None)                                   # same weights, no bound
    g = torch.Generator().manual_seed(1)
    t = 5 * L + 3
    x = torch.randn(2, t, 1, C, generator=g)
    mask = torch.ones(2, t, dtype=torch.bool)
    mask[1, 30:] = False                                   # a shorter video in the same batch
    lengths: list[int] = []
    real = long_mod.sinusoidal_positions
    monkeypatch.setattr(long_mod, "sinusoidal_positions",
                        lambda n, *a, **k: lengths.append(n) or real(n, *a, **k))
    with torch.no_grad():
        out = ad(x, mask)
    assert max(lengths) == L                               # no position beyond the training range
    alone: dict[tuple[int, int], torch.Tensor] = {}
    with torch.no_grad():
        for i, n in ((0, t), (1, 30)):
            starts = ad.window_starts(n)
            assert starts[0] == 0 and starts[-1] == n - L and len(starts) > 2
            for step in range(n):
                # the window in which the step is most central, run alone as a training window
                s = max(starts, key=lambda s0: (min(step - s0, s0 + L - 1 - step)
                                                if s0 <= step < s0 + L else -1, -s0))
                if step >= L // 4 and step < n - L // 4:
                    assert min(step - s, s + L - 1 - step) >= L // 4 - 1
                if (i, s) not in alone:
                    alone[i, s] = ref(x[i:i + 1, s:s + L], torch.ones(1, L, dtype=torch.bool))[0]
                torch.testing.assert_close(out[i, step], alone[i, s][step - s], rtol=0, atol=1e-5)
        assert torch.equal(out[1, 30:], torch.zeros_like(out[1, 30:]))
        # unbounded attention over the whole video gives something else
        assert (ref(x, mask)[0] - out[0]).abs().max() > 1e-3


@pytest.mark.parametrize("t", [L, L - 5])
def test_inputs_within_the_window_are_unchanged(t: int) -> None:
    x = torch.randn(2, t, 4, C)
    mask = torch.ones(2, t, dtype=torch.bool)
    mask[1, t - 3:] = False
    with torch.no_grad():
        torch.testing.assert_close(_adapter(L)(x, mask), _adapter(None)(x, mask), rtol=0, atol=0)


def test_model_predictions_are_fp32_under_autocast() -> None:
    """Detections are scored in float32 even inside a caller's bf16 autocast (ActionFormer scores
    in fp32; bf16 logits tie)."""
    from losa.model import LoSAConfig, TALModel

    torch.manual_seed(0)
    cfg = LoSAConfig(mode="losa", tapped_layers=(1,), last_layer=2, channels=C, num_classes=3,
                     adapter_dim=D, adapter_heads=2, long_context=L,
                     head={"embd_dim": 16, "fpn_dim": 16, "head_dim": 16, "n_levels": 2, "window": 5,
                           "regression_ranges": [[0, 4], [4, 10000]]})
    model = TALModel(cfg).eval()
    assert model.long_adapters["layer_01"].context == L
    feats = {1: torch.randn(1, 3 * L, 1, C), 2: torch.randn(1, 3 * L, 1, C)}
    mask = torch.ones(1, 3 * L, dtype=torch.bool)
    want = model.predict(feats, mask)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model.predict(feats, mask)[0]
    assert got["scores"].dtype == torch.float32
    torch.testing.assert_close(got["scores"], want["scores"], rtol=0, atol=0)


def test_runs_from_before_long_context_get_their_training_window(tmp_path) -> None:
    from losa.model import LoSAConfig, TALModel
    from stages.infer.predict import load_run

    cfg = LoSAConfig(mode="losa", tapped_layers=(1,), last_layer=2, channels=C, num_classes=2,
                     adapter_dim=D, adapter_heads=2,
                     head={"embd_dim": 16, "fpn_dim": 16, "head_dim": 16, "n_levels": 2, "window": 5,
                           "regression_ranges": [[0, 4], [4, 10000]]})
    old = cfg.to_dict()
    old.pop("long_context")
    info = {"model_cfg": old, "train_cfg": {"max_seq_len": 48}}
    torch.save({"format": "losa-model", "info": info, "model": TALModel(cfg).state_dict()},
               tmp_path / "model.pt")
    model, _ = load_run(tmp_path)
    assert model.cfg.long_context == 48 and model.long_adapters["layer_01"].context == 48
