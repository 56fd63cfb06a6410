"""Weight quantization (docs/contract.md section 5) against plain loops, sizes by hand, and real int8 Linear."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis.compression.compress import compress
from analysis.compression.plan import CompressionPlan
from analysis.transforms.quantization import (
    fake_quantize,
    int8_backend,
    quantize_weights,
    quantized_size_bytes,
    to_int8_linear,
)

FAST = {"latency_rounds": 1, "runs_per_round": 1, "warmup": 1}


def _reference(weight: torch.Tensor, bits: int) -> list[list[float]]:
    """Plain Python: per row, scale = max|w| / (2^(b-1) - 1), w -> clamp(round(w / scale)) * scale."""
    q = 2 ** (bits - 1) - 1
    out = []
    for row in weight.reshape(weight.shape[0], -1).tolist():
        scale = max(abs(v) for v in row) / q
        if scale == 0:
            out.append([0.0] * len(row))
            continue
        # torch.round rounds halves to even, as Python's round does
        out.append([max(-q, min(q, round(v / scale))) * scale for v in row])
    return out


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_fake_quantization_matches_a_plain_loop(bits):
    w = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(bits))
    w[2] = 0.0  # an all-zero channel stays zero
    got, scales = fake_quantize(w, bits)
    expected = torch.tensor(_reference(w, bits)).reshape(w.shape)
    assert torch.allclose(got, expected, atol=1e-6)
    assert got.shape == w.shape and scales.shape == (6,)
    assert torch.equal(got[2], torch.zeros_like(got[2]))


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8, 12, 16])
def test_each_channel_takes_at_most_2_to_the_b_minus_1_values(bits):
    w = torch.randn(8, 4096, generator=torch.Generator().manual_seed(0))
    got, scales = fake_quantize(w, bits)
    q = 2 ** (bits - 1) - 1
    for c in range(w.shape[0]):
        values = set(got[c].tolist())
        assert len(values) <= 2**bits - 1
        ints = got[c] / scales[c]
        assert torch.allclose(ints, ints.round(), atol=1e-3)  # every value is a whole multiple of the scale
        assert ints.abs().max() <= q + 1e-3
    if bits <= 5:  # 4096 uniform samples fill every level of a coarse grid: the bound is reached
        uniform, _ = fake_quantize(
            torch.rand(1, 4096, generator=torch.Generator().manual_seed(1)) * 2 - 1, bits
        )
        assert len(set(uniform[0].tolist())) == 2**bits - 1


def test_quantize_weights_changes_only_the_named_layers_and_size_is_counted_by_hand():
    model = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    done = quantize_weights(model, {"0": 4, "2": 32})
    assert set(done) == {"0"} and done["0"].bits == 4
    assert not torch.equal(model[0].weight, before["0.weight"])
    assert torch.equal(model[2].weight, before["2.weight"]) and torch.equal(model[0].bias, before["0.bias"])
    # layer 0: 60 weights at 4 bits = 30 bytes + 6 scales x 4 bytes; its bias and layer 2 stay float32
    expected = 30 + 6 * 4 + 6 * 4 + (18 + 3) * 4
    assert quantized_size_bytes(model, {"0": 4, "2": 32}) == expected
    assert quantized_size_bytes(model, {}) == sum(p.numel() * 4 for p in model.parameters())
    odd = nn.Linear(7, 1, bias=False)  # 7 weights x 3 bits = 21 bits: rounds up to 3 bytes, plus one scale
    assert quantized_size_bytes(odd, {"": 3}) == 3 + 4


def test_eight_bit_weights_keep_accuracy_and_shrink_the_model(cnn, digits):
    result = compress(cnn, CompressionPlan.uniform(bits=8), digits, **FAST)
    assert abs(result.after.accuracy - result.before.accuracy) <= 0.005
    if result.simulated is not None:  # weights-only (all-float) 8-bit model, docs/contract.md's definition
        assert abs(result.simulated.accuracy - result.before.accuracy) <= 0.005
    assert result.after.size_bytes <= 0.30 * result.before.size_bytes
    assert result.quantized and all(b == 8 for b in result.quantized.values())
    assert result.after.macs == result.before.macs


@pytest.mark.skipif(int8_backend() is None, reason="no int8 CPU kernel in this torch build")
def test_real_int8_linear_uses_exactly_the_fake_quantized_integers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    quantize_weights(model, {"0": 8, "2": 8})
    reference = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    swapped = to_int8_linear(model, {"0": 8, "2": 8})
    assert swapped == ["0", "2"]
    for layer, expected in zip((model[0], model[2]), reference, strict=True):
        assert type(layer).__name__ == "Linear" and type(layer) is not nn.Linear
        w = layer.weight()
        assert w.dtype == torch.qint8
        assert torch.allclose(w.dequantize(), expected, atol=1e-6)
    x = torch.randn(5, 16)
    with torch.inference_mode():
        assert model(x).shape == (5, 4)


@pytest.mark.skipif(int8_backend() is None, reason="no int8 CPU kernel in this torch build")
def test_compress_labels_int8_linear_latency_real_and_convs_simulated(digits):
    from analysis import load_model

    mlp = load_model("zoo:digits-mlp")
    real = compress(mlp, CompressionPlan.uniform(bits=8), digits, **FAST)
    assert real.after.latency_label == "real" and real.int8_layers == ["net.1", "net.3", "net.5"]
    assert real.simulated is not None and real.simulated.latency_label == "simulated"
    four = compress(mlp, CompressionPlan.uniform(bits=4), digits, **FAST)
    assert four.after.latency_label == "simulated" and four.int8_layers == []
    assert any("simulated" in note for note in four.notes)
    off = compress(mlp, CompressionPlan.uniform(bits=8), digits, real_int8=False, **FAST)
    assert off.after.latency_label == "simulated" and off.int8_layers == []
