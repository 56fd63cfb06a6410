"""Low-rank factorization, k-means weight sharing with Huffman coding, binary/ternary/pow2 weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.sensitivity.transform_sweeps import lowrank_sensitivity, quant_vs_kmeans, share_sensitivity
from analysis.transforms import lowbit, lowrank, sharing
from analysis.transforms.fields import apply_transforms, validate_transform_settings


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Tiny(nn.Module):
    input_shape = (2, 6, 6)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8 * 36, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        x = torch.relu(self.dw(torch.relu(self.conv(x))))
        return self.out(torch.relu(self.fc(x.flatten(1))))


def _tiny() -> Tiny:
    torch.manual_seed(0)
    return Tiny().eval()


def _data(n: int = 48) -> Dataset:
    g = _gen(1)
    x = torch.randn(n, 2, 6, 6, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return Dataset("synthetic", x, y, x, y, 3)


# ------------------------------------------------------------------------------------------------ low rank


def test_truncation_error_is_the_discarded_energy_eckart_young():
    w = torch.randn(20, 12, generator=_gen(), dtype=torch.float64)
    layer = nn.Linear(12, 20).double()
    with torch.no_grad():
        layer.weight.copy_(w)
    s = np.linalg.svd(w.numpy(), compute_uv=False)  # numpy's SVD, independent of the code's torch call
    for r in (1, 4, 9):
        err = float(((w - lowrank.truncated_weight(layer, r)) ** 2).sum())
        assert err == pytest.approx(float((s[r:] ** 2).sum()), rel=1e-9)


def test_factored_linear_computes_the_truncated_weight_and_bias():
    torch.manual_seed(0)
    layer = nn.Linear(30, 12).double()
    fact = lowrank.factor_layer(layer, 4)
    assert isinstance(fact, nn.Sequential) and fact[0].bias is None and fact[1].bias is not None
    u, s, vh = np.linalg.svd(layer.weight.detach().numpy(), full_matrices=False)
    w_r = torch.from_numpy((u[:, :4] * s[:4]) @ vh[:4])
    x = torch.randn(5, 30, generator=_gen(), dtype=torch.float64)
    expected = x @ w_r.T + layer.bias.detach()
    assert torch.allclose(fact(x), expected, atol=1e-10)
    assert fact[0].weight.shape == (4, 30) and fact[1].weight.shape == (12, 4)


def test_factored_conv_equals_conv_with_truncated_weight():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 10, 3, stride=2, padding=2, dilation=2).double()
    fact = lowrank.factor_layer(conv, 3)
    assert (fact[0].kernel_size, fact[0].stride, fact[0].padding, fact[0].dilation) == (
        (3, 3), (2, 2), (2, 2), (2, 2)
    )  # fmt: skip
    assert fact[1].kernel_size == (1, 1) and fact[0].out_channels == 3
    u, s, vh = np.linalg.svd(conv.weight.detach().reshape(10, -1).numpy(), full_matrices=False)
    w_r = torch.from_numpy((u[:, :3] * s[:3]) @ vh[:3]).reshape(conv.weight.shape)
    x = torch.randn(2, 4, 9, 9, generator=_gen(), dtype=torch.float64)
    expected = torch.nn.functional.conv2d(x, w_r, conv.bias, stride=2, padding=2, dilation=2)
    assert torch.allclose(fact(x), expected, atol=1e-10)


def test_factorize_copies_renames_and_saves_params():
    model = _tiny()
    before = copy.deepcopy(model.state_dict())
    new = lowrank.factorize(model, {"fc": 0.25, "conv": {"rank": 0.5}})
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the model handed in is not mutated
    assert isinstance(model.fc, nn.Linear)
    keys = set(new.state_dict())
    assert {"fc.0.weight", "fc.1.weight", "fc.1.bias", "conv.0.weight", "conv.1.bias"} <= keys
    assert new.fc[0].out_features == 4  # round(0.25 * 16)
    choice = lowrank.plan_factorization(model, {"fc": 0.25}, Tiny.input_shape)["fc"]
    assert choice.params_after == 4 * (288 + 16) + 16 and choice.params_before == 288 * 16 + 16
    assert choice.macs_before - choice.macs_after == 288 * 16 - 4 * (288 + 16)
    assert new(torch.zeros(1, 2, 6, 6)).shape == (1, 3)


def _outputs(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's outputs before its bias, one row per sample and position (a plain reference)."""
    y = layer(x) - layer.bias.reshape(1, -1, *[1] * (x.dim() - 2))
    return (y.movedim(1, -1) if x.dim() == 4 else y).reshape(-1, y.shape[1])


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_calibrated_truncation_is_the_best_rank_r_approximation_of_the_outputs(kind):
    """With calibration inputs, the output error of the rank-r weight is the discarded energy of the
    outputs' singular values (Eckart-Young on Y, by torch.linalg.svd of the output matrix): it falls as
    the rank grows, reaches 0 at full rank, and never exceeds the plain SVD's output error."""
    torch.manual_seed(0)
    layer = (nn.Linear(12, 20) if kind == "linear" else nn.Conv2d(3, 16, 3, padding=1)).double()
    g = _gen(2)
    x = torch.randn(64, 12, generator=g) if kind == "linear" else torch.randn(16, 3, 6, 6, generator=g)
    x = (x * torch.linspace(0.1, 3, x.shape[1]).reshape(1, -1, *[1] * (x.dim() - 2))).double()
    moment = lowrank.output_moments(layer, [""], x)[""]
    with torch.no_grad():
        y = _outputs(layer, x)
    s = torch.linalg.svdvals(y) ** 2 / len(y)
    full = min(layer.weight.shape[0], layer.weight[0].numel())
    errors = []
    for r in range(1, full + 1):
        w_r = lowrank.truncated_weight(layer, r, moment)
        plain = lowrank.truncated_weight(layer, r)
        with torch.no_grad():
            err = float(((y - _outputs(_with_weight(layer, w_r), x)) ** 2).sum() / len(y))
            err_plain = float(((y - _outputs(_with_weight(layer, plain), x)) ** 2).sum() / len(y))
        assert err == pytest.approx(float(s[r:].sum()), rel=1e-6, abs=1e-9)
        assert err <= err_plain + 1e-9
        errors.append(err)
    assert errors == sorted(errors, reverse=True) and errors[-1] == pytest.approx(0.0, abs=1e-9)
    fact = lowrank.factor_layer(layer, 2, moment)
    with torch.no_grad():
        assert torch.allclose(fact(x), _with_weight(layer, lowrank.truncated_weight(layer, 2, moment))(x))


def _with_weight(layer: nn.Module, w: torch.Tensor) -> nn.Module:
    new = copy.deepcopy(layer)
    with torch.no_grad():
        new.weight.copy_(w)
    return new


def test_rank_energy_picks_the_smallest_rank_keeping_that_share():
    layer = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.5])))
    total = 9 + 4 + 1 + 0.25
    assert lowrank.rank_for(lowrank.LowRankSpec(rank_energy=13 / total), lowrank.singular_values(layer)) == 2
    assert (
        lowrank.rank_for(lowrank.LowRankSpec(rank_energy=13.01 / total), lowrank.singular_values(layer)) == 3
    )


def test_refused_rank_and_bad_specs_are_one_line_errors():
    model = _tiny()
    with pytest.raises(WorkbenchError) as err:
        lowrank.factorize(model, {"out": 0.9})  # 16 -> 3: rank 3 of 3 saves nothing
    assert "would not save" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(WorkbenchError, match="groups=1"):
        lowrank.factorize(model, {"dw": 0.5})
    for bad in (0.0, 1.0, -0.1, "half", float("nan")):
        with pytest.raises(WorkbenchError) as err:
            lowrank.LowRankSpec(rank=bad)
        assert "\n" not in str(err.value)
    with pytest.raises(WorkbenchError):
        lowrank.LowRankSpec(rank_energy=1.5)
    with pytest.raises(WorkbenchError):
        lowrank.LowRankSpec()


# ------------------------------------------------------------------------------------------------- sharing


def test_kmeans_matches_scikit_learn_with_the_same_linear_init():
    from sklearn.cluster import KMeans

    values = torch.randn(400, generator=_gen(3), dtype=torch.float64)
    k = 8
    centroids, labels = sharing.kmeans_1d(values, k)
    init = np.linspace(values.min().item(), values.max().item(), k)[:, None]
    km = KMeans(k, init=init, n_init=1, tol=0.0, algorithm="lloyd", max_iter=300).fit(values.numpy()[:, None])
    assert np.allclose(np.sort(km.cluster_centers_[:, 0]), centroids.numpy(), atol=1e-12)
    order = np.argsort(km.cluster_centers_[:, 0])
    assert np.array_equal(np.argsort(order)[km.labels_], labels.numpy())


def test_sharing_has_at_most_2_pow_b_values_and_keeps_zeros():
    model = _tiny()
    with torch.no_grad():
        model.fc.weight[:, ::3] = 0.0
    zeros = model.fc.weight == 0
    new, shared = sharing.share_weights(model, 2)
    for name in ("conv", "fc", "out", "dw"):
        assert len(torch.unique(new.get_submodule(name).weight)) <= 4 + (name == "fc")
    assert torch.equal(new.fc.weight == 0, zeros)  # zeros stay, and no centroid happens to be zero
    assert (shared["fc"].labels[zeros] == -1).all() and len(shared["fc"].centroids) == 4
    assert not torch.equal(model.conv.weight, new.conv.weight)  # the copy changed, the original did not
    with pytest.raises(WorkbenchError):
        sharing.share_weights(model, 9)


def test_huffman_lengths_match_a_hand_built_code():
    # CLRS's example: a:45 b:13 c:12 d:16 e:9 f:5 -> a 0, b 101, c 100, d 111, e 1101, f 1100
    counts = {"a": 45, "b": 13, "c": 12, "d": 16, "e": 9, "f": 5}
    assert sharing.huffman_code_lengths(counts) == {"a": 1, "b": 3, "c": 3, "d": 3, "e": 4, "f": 4}
    assert sharing.huffman_bits(counts) == 45 + 3 * (13 + 12 + 16) + 4 * (9 + 5)  # 224
    assert sharing.huffman_code_lengths({"x": 7}) == {"x": 1}


def test_shared_size_counts_indices_codebook_and_huffman():
    labels = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 2], [3, 0, 0, 1]])
    sw = sharing.SharedWeight(2, torch.tensor([0.1, 0.2, 0.3, 0.4]), labels)
    plain = sw.size_bytes()
    assert plain["format"] == "dense" and plain["bytes"] == 12 * 2 // 8 + 4 * 4
    # counts 0:8, 1:2, 2:1, 3:1 -> lengths 1, 2, 3, 3 -> 8 + 4 + 3 + 3 = 18 bits = 3 bytes, + 4 table bytes
    huff = sw.size_bytes(huffman=True)
    assert huff["values_bits"] == 18 and huff["bytes"] == 3 + 16 + 4


def test_relative_index_gaps_with_escapes():
    # positions 0, 2, 20 with 3-bit gaps (escape 7): skips 0, 1, 17 = 7 + 7 + 3
    codes = sharing.gap_codes(torch.tensor([0, 2, 20]), 3)
    assert codes == {0: 1, 1: 1, 3: 1, 7: 2}


def test_centroid_finetuning_moves_centroids_by_summed_gradients():
    model = nn.Sequential(nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 0.0]]))
    new, shared = sharing.share_weights(model, 1)
    x = torch.randn(4, 3, generator=_gen())
    y = torch.tensor([0, 1, 1, 0])
    data = Dataset("t", x, y, x, y, 2)
    tuned, tuned_shared = sharing.finetune_centroids(
        new, shared, data, batches=1, lr=0.1, momentum=0.0, batch_size=4
    )
    # reference: plain autograd on the weight, gradients summed per cluster by hand
    w = new[0].weight.detach().clone().requires_grad_(True)
    order = torch.randperm(4, generator=torch.Generator().manual_seed(0))
    loss = torch.nn.functional.cross_entropy(x[order] @ w.T, y[order])
    loss.backward()
    labels = shared["0"].labels
    for c in range(2):
        expected = shared["0"].centroids[c] - 0.1 * w.grad[labels == c].sum()
        assert tuned_shared["0"].centroids[c] == pytest.approx(float(expected), abs=1e-6)
    assert (tuned[0].weight == 0).sum() == (new[0].weight == 0).sum()
    assert len(torch.unique(tuned[0].weight[labels >= 0])) <= 2


# ---------------------------------------------------------------------------------------------- low bits


def test_binary_values_and_scales_follow_bwn():
    w = torch.tensor([[0.5, -1.5, 0.0, 1.0], [-0.2, -0.2, 0.6, 0.2]])
    values, alpha = lowbit.binarize(w)
    assert torch.allclose(alpha, torch.tensor([0.75, 0.3]))  # mean |w| per row: 3/4, 1.2/4
    assert torch.allclose(values, torch.tensor([[0.75, -0.75, 0.75, 0.75], [-0.3, -0.3, 0.3, 0.3]]))
    assert lowbit.lowbit_size_bytes(w, "binary") == 1 + 2 * 4


def test_ternary_values_and_scales_follow_twn():
    w = torch.tensor([[0.5, -1.5, 0.0, 1.0], [-0.2, -0.1, 0.9, 0.2]])
    values, alpha = lowbit.ternarize(w)
    # row 0: mean|w| = 0.75, delta = 0.525 -> |-1.5|, |1.0| kept, alpha = 1.25
    # row 1: mean|w| = 0.35, delta = 0.245 -> |0.9| kept, alpha = 0.9
    assert torch.allclose(alpha, torch.tensor([1.25, 0.9]))
    assert torch.allclose(values, torch.tensor([[0.0, -1.25, 0.0, 1.25], [0.0, 0.0, 0.9, 0.0]]))
    assert lowbit.lowbit_size_bytes(w, "ternary") == 2 + 2 * 4


def test_pow2_follows_inq():
    w = torch.tensor([0.9, -0.3, 0.07, 0.01, -0.5, 0.0])
    q, n1 = lowbit.pow2_quantize(w, bits=4)
    # s = 0.9: n1 = floor(log2(1.2)) = 0; 4 bits -> 4 exponents 0..-3; n2 = -3 (0.125)
    assert n1 == 0 and lowbit.pow2_exponents(w, 4) == (0, -3)
    # 0.9 -> 1 (>= 0.75); 0.3 -> 0.25; 0.07 -> 0.125 (>= 0.0625); 0.01 -> 0; 0.5 -> 0.5
    assert torch.allclose(q, torch.tensor([1.0, -0.25, 0.125, 0.0, -0.5, 0.0]))


# ---------------------------------------------------------------------------------------- plans and sweeps


def test_validation_refuses_bad_values_and_combinations_in_one_line():
    ok = validate_transform_settings("fc", {"rank": 0.25, "prune": 0.5, "structured": True, "bits": 32})
    assert ok == {"rank": 0.25}
    assert validate_transform_settings("fc", {"share_bits": 4, "prune": 0.9, "structured": False}) == {
        "share_bits": 4
    }
    bad = [
        {"rank": 1.0},
        {"rank_energy": 0.0},
        {"share_bits": 0},
        {"share_bits": 9},
        {"weights": "quaternary"},
        {"rank": 0.5, "share_bits": 4},
        {"rank": 0.5, "weights": "binary"},
        {"rank": 0.5, "rank_energy": 0.9},
        {"rank": 0.5, "prune": 0.5, "structured": False},
        {"share_bits": 4, "bits": 8},
        {"share_bits": 4, "weights": "ternary"},
        {"weights": "ternary", "bits": 4},
        {"weights": "binary", "prune": 0.5, "structured": False},
    ]
    for settings in bad:
        with pytest.raises(WorkbenchError) as err:
            validate_transform_settings("fc", settings)
        assert "\n" not in str(err.value) and "'fc'" in str(err.value)


def test_apply_transforms_sizes_and_no_mutation():
    model = _tiny()
    before = copy.deepcopy(model.state_dict())
    applied = apply_transforms(
        model,
        {"fc": {"rank": 0.25}, "conv": {"share_bits": 2}, "out": {"weights": "ternary"}, "dw": {}},
        huffman=False,
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    new, notes, sizes = applied
    assert isinstance(new.fc, nn.Sequential) and len(torch.unique(new.conv.weight)) <= 4
    assert sizes["layers"]["conv"]["bytes"] == 144 * 2 // 8 + 4 * 4
    assert sizes["layers"]["out"]["bytes"] == 12 + 3 * 4  # 48 weights x 2 bits + 3 scales
    float_bytes = sum(t.numel() * 4 for t in new.state_dict().values())
    saved = (144 * 4 - 52) + (48 * 4 - 24)
    assert sizes["size_bytes"] == float_bytes - saved
    assert any("fc.0" in n for n in notes)


def test_sensitivity_kinds_return_sweep_results():
    model, data = _tiny(), _data()
    lr = lowrank_sensitivity(model, data, [0.5, 0.25], layers=["fc", "conv"])
    assert lr.kind == "lowrank" and lr.layers["fc"].values == (0.5, 0.25)
    assert lr.ranks["fc"] == (8, 4) and lr.macs_saved["fc"][1] == 288 * 16 - 4 * 304
    # the cached sweep equals evaluating the really factored model
    from analysis.evaluate import evaluate

    direct = evaluate(
        lowrank.factorize(model, {"fc": 0.25}, data.x_train[: lowrank.CALIBRATION_SAMPLES]), data
    )
    assert lr.layers["fc"].accuracy[1] == direct.accuracy
    assert lr.layers["fc"].loss[1] == pytest.approx(direct.loss, abs=1e-5)
    assert lr.to_dict()["layers"]["fc"]["macs_saved"] == list(lr.macs_saved["fc"])
    sh = share_sensitivity(model, data, [4, 1], layers=["fc"])
    assert sh.kind == "share" and sh.layers["fc"].values == (4.0, 1.0)
    shared_model, _ = sharing.share_weights(model, 1, layers=["fc"])
    assert sh.layers["fc"].accuracy[1] == evaluate(shared_model, data).accuracy
    cmp = quant_vs_kmeans(model, data, bits=3, layers=["fc", "out"])
    rows = {r["layer"]: r for r in cmp.rows}
    assert set(rows) == {"fc", "out", "(all layers)"}
    w = model.fc.weight.detach().double()
    from analysis.transforms.quantization import fake_quantize

    q = fake_quantize(model.fc.weight, 3)[0].double()
    assert rows["fc"]["sqnr_uniform_db"] == pytest.approx(
        10 * np.log10(float((w**2).sum()) / float(((w - q) ** 2).sum()))
    )
