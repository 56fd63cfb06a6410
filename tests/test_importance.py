"""Each criterion against a plain, obviously-correct reference; Spearman and top-k overlap against hand
examples; the one-pass promise; RankingResult's JSON round trip; the `rank` command."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from importance_models import build
from torch.utils._python_dispatch import TorchDispatchMode

from analysis import WorkbenchError, evaluate, load_model
from analysis.importance import RankingResult, get_importance, rank_channels, spearman
from analysis.importance.base import ScoringContext
from analysis.importance.calibration import calibrate
from analysis.importance.features import find_features
from analysis.importance.oracle import oracle_scores
from analysis.importance.rankings import jaccard, prune_first, rankdata
from analysis.io import to_json

N = 40  # calibration samples in these tests


# ---- weight criteria ------------------------------------------------------------------------------------


def test_l1_l2_are_the_filter_norms():
    model = load_model("zoo:digits-cnn")
    l1 = get_importance("l1")(model)
    l2 = get_importance("l2")(model)
    for name in ["features.0", "features.10", "classifier.0"]:
        w = model.get_submodule(name).weight.detach()
        for i in range(w.shape[0]):
            filt = [abs(float(v)) for v in w[i].flatten()]
            assert math.isclose(l1[name][i].item(), sum(filt), rel_tol=1e-5)
            assert math.isclose(l2[name][i].item(), math.sqrt(sum(v * v for v in filt)), rel_tol=1e-5)


def test_l1_and_bn_scale_match_torch_pruning():
    tp = pytest.importorskip("torch_pruning")
    model = load_model("zoo:digits-cnn")
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 1, 16, 16))
    l1 = get_importance("l1")(model)
    bn = get_importance("bn-scale")(model)
    magnitude = tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="first")
    slimming = tp.importance.BNScaleImportance(normalizer=None, group_reduction="first")
    for name in ["features.0", "features.7"]:
        layer = model.get_submodule(name)
        group = graph.get_pruning_group(
            layer, tp.prune_conv_out_channels, idxs=list(range(layer.out_channels))
        )
        torch.testing.assert_close(l1[name], magnitude(group).float())
        torch.testing.assert_close(bn[name], slimming(group).float())


def test_fpgm_is_summed_distance_to_the_other_filters():
    model, _ = build("functional")
    scores = get_importance("fpgm")(model)
    for name in ["conv_b", "dw", "fc1"]:
        w = model.get_submodule(name).weight.detach().double()
        expected = [sum(torch.dist(w[i], w[j]).item() for j in range(w.shape[0])) for i in range(w.shape[0])]
        torch.testing.assert_close(
            scores[name].double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6
        )


def test_bn_scale_follows_the_graph_not_module_order():
    model, _ = build("functional")  # bn_b is declared before bn_a
    scores = get_importance("bn-scale")(model)
    torch.testing.assert_close(scores["conv_a"], model.bn_a.weight.detach().abs())
    torch.testing.assert_close(scores["conv_b"], model.bn_b.weight.detach().abs())
    torch.testing.assert_close(scores["dw"], model.bn_dw.weight.detach().abs())
    assert torch.isnan(scores["conv_c"]).all()


def test_features_are_found_from_the_traced_graph():
    model, _ = build("functional")
    layers = find_features(model).layers
    assert (layers["conv_a"].norm_module, layers["conv_a"].activation) == ("bn_a", "F.relu")
    assert (layers["conv_b"].norm_module, layers["conv_b"].activation) == ("bn_b", "torch.relu")
    assert (layers["dw"].norm_module, layers["dw"].activation) == ("bn_dw", "Tensor.relu")
    assert (layers["conv_c"].norm, layers["conv_c"].activation) == (None, None)  # feeds a residual add
    resnet = find_features(load_model("zoo:digits-resnet")).layers
    assert resnet["layer1.0.conv1"].activation == "torch.relu"
    assert resnet["layer1.0.conv2"].norm_module == "layer1.0.bn2"
    assert resnet["layer1.0.conv2"].activation is None  # its ReLU comes after the residual add


# ---- activation criteria --------------------------------------------------------------------------------


def _post_norm_maps(model, x):
    """FunctionalNet's forward written out by hand: (post-norm, post-activation) per layer."""
    pa = model.bn_a(model.conv_a(x))
    a = F.relu(pa)
    pb = model.bn_b(model.conv_b(a))
    b = torch.relu(pb)
    pd = model.bn_dw(model.dw(b))
    d = pd.relu()
    pc = model.conv_c(d)
    c = F.adaptive_avg_pool2d(pc + b, 2).flatten(1)
    p1 = model.fc1(c)
    h = F.relu(p1)
    out = model.fc2(h)
    post_norm = {"conv_a": pa, "conv_b": pb, "dw": pd, "conv_c": pc, "fc1": p1, "fc2": out}
    post_act = {"conv_a": a, "conv_b": b, "dw": d, "conv_c": pc, "fc1": h, "fc2": out}
    return post_norm, post_act, out


def test_apoz_and_mean_activation_match_a_plain_loop_with_functional_relus():
    model, data = build("functional")
    zeros = {n: 0.0 for n in ["conv_a", "conv_b", "dw", "conv_c", "fc1", "fc2"]}
    zeros = {n: torch.zeros(model.get_submodule(n).weight.shape[0], dtype=torch.float64) for n in zeros}
    means = {n: torch.zeros_like(v) for n, v in zeros.items()}
    with torch.no_grad():
        for i in range(N):  # one sample at a time
            _, post_act, _ = _post_norm_maps(model, data.x_train[i : i + 1])
            for n, t in post_act.items():
                t = t[0].double()
                per_channel = t.reshape(t.shape[0], -1)
                zeros[n] += (per_channel == 0).double().mean(dim=1)
                means[n] += per_channel.mean(dim=1)
    apoz = get_importance("apoz")(model, data, max_samples=N)
    mean_activation = get_importance("mean-activation")(model, data, max_samples=N)
    for n in zeros:
        torch.testing.assert_close(apoz[n].double(), zeros[n] / N, rtol=0, atol=1e-6)
        torch.testing.assert_close(mean_activation[n].double(), means[n] / N, rtol=1e-4, atol=1e-5)
    assert apoz["conv_a"].max() > 0.05  # the randomised BNs make real zeros: the check is not vacuous


def test_taylor_matches_a_plain_activation_times_gradient_loop():
    model, data = build("functional")
    expected = {n: torch.zeros(model.get_submodule(n).weight.shape[0], dtype=torch.float64) for n in
                ["conv_a", "conv_b", "dw", "conv_c", "fc1", "fc2"]}  # fmt: skip
    for i in range(N):
        post_norm, _, out = _post_norm_maps(model, data.x_train[i : i + 1])
        loss = F.cross_entropy(out, data.y_train[i : i + 1])
        names = list(post_norm)
        grads = torch.autograd.grad(loss, [post_norm[n] for n in names])
        for n, g in zip(names, grads, strict=True):
            product = (post_norm[n] * g)[0].double()
            expected[n] += product.reshape(product.shape[0], -1).sum(dim=1).abs()
    taylor = get_importance("taylor")(model, data, max_samples=N)
    for n, value in expected.items():
        torch.testing.assert_close(taylor[n].double(), value / N, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


def test_taylor_does_not_depend_on_the_batch_size():
    model, data = build("tokens")
    taylor = get_importance("taylor")

    def at(batch_size: int) -> dict[str, torch.Tensor]:
        pass_ = calibrate(model, data, needs=taylor.needs, max_samples=N, batch_size=batch_size)
        return taylor(model, data, max_samples=N, context=ScoringContext(calibration=pass_))

    small, large = at(7), at(40)
    for n in small:
        torch.testing.assert_close(small[n], large[n], rtol=1e-4, atol=1e-7)


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def test_all_activation_criteria_share_one_forward_and_one_backward_per_batch():
    model, data = build("functional")  # 4 convolutions and 2 Linear layers per forward
    with _CountOps() as counter:
        result = calibrate(model, data, max_samples=N, batch_size=16)  # 3 batches
    needs = {s for c in ("apoz", "mean-activation", "taylor") for s in get_importance(c).needs}
    assert needs <= set(result.statistics)
    assert counter.ops["aten.convolution.default"] == 4 * 3
    assert counter.ops["aten.addmm.default"] == 2 * 3
    assert 0 < counter.ops["aten.convolution_backward.default"] <= 4 * 3


# ---- oracle ---------------------------------------------------------------------------------------------


def _zeroing_reference(model, data, points):
    """|loss change| from zeroing each channel at `points[layer]` (module, where) with a hook, evaluated fully.

    `where` is "out" (the module's output) or "first" (the first element of a tuple output).
    """
    base = evaluate(model, data, split="train", limit=N).loss
    result = {}
    for layer, (module_name, where) in points.items():
        module = model.get_submodule(module_name)
        channels = model.get_submodule(layer).weight.shape[0]
        values = []
        for c in range(channels):

            def zero(mod, args, out, c=c, where=where):
                if where == "first":
                    out = (out[0].clone(), *out[1:])
                    out[0][..., c] = 0
                    return out
                out = out.clone()
                out[:, c] = 0
                return out

            handle = module.register_forward_hook(zero)
            try:
                values.append(abs(evaluate(model, data, split="train", limit=N).loss - base))
            finally:
                handle.remove()
        result[layer] = torch.tensor(values, dtype=torch.float64)
    return result


@pytest.mark.parametrize("use_runner", [True, False])
def test_oracle_matches_zeroing_channels_one_by_one(use_runner):
    model, data = build("functional")
    points = {"conv_a": ("bn_a", "out"), "conv_b": ("bn_b", "out"), "dw": ("bn_dw", "out"),
              "conv_c": ("conv_c", "out"), "fc1": ("fc1", "out"), "fc2": ("fc2", "out")}  # fmt: skip
    expected = _zeroing_reference(model, data, points)
    got = oracle_scores(model, data, max_samples=N, use_runner=use_runner)
    for layer, value in expected.items():
        torch.testing.assert_close(got.scores[layer].double(), value, rtol=1e-3, atol=2e-6)
    assert max(v.max().item() for v in expected.values()) > 1e-3  # not vacuous
    if use_runner:
        assert set(got.method.values()) == {"cached downstream runner"}


def test_oracle_on_tokens_with_attention_and_layernorm():
    model, data = build("tokens")
    # Linear outputs are channels-last: the hook zeroes [..., c].
    points = {"attn.out_proj": ("attn", "first")}
    expected = _zeroing_reference(model, data, points)
    got = oracle_scores(model, data, ["attn.out_proj", "proj"], max_samples=N)
    torch.testing.assert_close(
        got.scores["attn.out_proj"].double(), expected["attn.out_proj"], rtol=1e-3, atol=2e-6
    )
    assert got.scores["proj"].shape == (12,)


def test_oracle_sample_cap_and_layer_subset():
    model, data = build("functional")
    got = oracle_scores(model, data, ["fc1"], max_samples=10)
    assert got.samples == 10 and list(got.scores) == ["fc1"]


# ---- statistics -----------------------------------------------------------------------------------------


def test_spearman_hand_example():
    # ranks of b with a tie: [1, 2, 3.5, 5, 3.5]; centred products sum to 8; squares 10 and 9.5.
    assert math.isclose(spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]), 8 / math.sqrt(95), rel_tol=1e-12)
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    # The NaN pair is dropped: ranks [1, 2, 3, 4] vs [2, 1, 3, 4], 1 - 6 x 2 / (4 x 15) = 0.8.
    assert spearman([1, 2, float("nan"), 4, 5], [2, 1, 100, 3, 4]) == pytest.approx(0.8)
    assert list(rankdata(np.array([10.0, 30.0, 20.0, 20.0]))) == [1.0, 4.0, 2.5, 2.5]


def test_spearman_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 30).astype(float), rng.normal(size=30)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_topk_overlap_hand_example():
    assert prune_first(np.array([0.5, 0.1, 0.9, 0.2]), True, 2) == {1, 3}
    assert prune_first(np.array([0.5, 0.1, 0.9, 0.2]), False, 2) == {0, 2}  # apoz: highest pruned first
    assert jaccard({1, 3}, {1, 2}) == pytest.approx(1 / 3)
    result = RankingResult.from_scores(
        {"l1": {"a": [0.5, 0.1, 0.9, 0.2]}, "apoz": {"a": [0.1, 0.9, 0.0, 0.5]}}, topk_fraction=0.5
    )
    # l1 prunes {1, 3}; apoz prunes its highest zero fractions {1, 3}: full agreement.
    assert result.topk_overlap["l1"]["apoz"] == pytest.approx(1.0)


def test_apoz_is_negated_against_the_oracle():
    oracle = {"a": [0.3, 0.1, 0.2, 0.4], "b": [1.0, 3.0, 2.0]}
    apoz = {"a": [0.2, 0.9, 0.5, 0.1], "b": [0.9, 0.1, 0.5]}  # more zeros <-> smaller loss change
    result = RankingResult.from_scores({"apoz": apoz, "oracle": oracle})
    assert result.spearman_per_layer["a"]["apoz"] == pytest.approx(1.0)
    assert result.spearman_mean_per_layer["apoz"] == pytest.approx(1.0)


def test_pooled_spearman_normalises_each_layer():
    # Within each layer l1 orders channels exactly as the oracle; layer b's l1 is 100x larger. Pooled over
    # raw scores that would misorder layers; after per-layer L2 normalisation the orders agree.
    oracle = {"a": [1.0, 2.0, 3.0], "b": [0.5, 1.5, 2.5]}
    l1 = {"a": [0.1, 0.2, 0.3], "b": [5.0, 15.0, 25.0]}
    result = RankingResult.from_scores({"l1": l1, "oracle": oracle})
    assert result.spearman_vs_oracle["l1"] > 0.9


# ---- rank_channels, RankingResult, CLI --------------------------------------------------------------------


@pytest.fixture(scope="module")
def ranking():
    model, data = build("functional")
    return rank_channels(model, data, max_samples=N)


def test_rank_channels_has_every_criterion_and_layer(ranking):
    assert ranking.criteria == ("l1", "l2", "fpgm", "bn-scale", "apoz", "mean-activation", "taylor", "oracle")
    assert list(ranking.layers) == ["conv_a", "conv_b", "dw", "conv_c", "fc1", "fc2"]
    assert set(ranking.spearman_vs_oracle) == set(ranking.criteria) - {"oracle"}
    assert ranking.samples == N and ranking.oracle_samples == N
    assert ranking.topk_overlap["taylor"]["taylor"] == 1.0
    frame = ranking.to_frame()
    assert len(frame) == 6 + 6 + 6 + 6 + 10 + 3
    assert list(frame.columns[:2]) == ["layer", "channel"]
    assert ranking.spearman_frame().loc["pooled", "taylor"] == pytest.approx(
        ranking.spearman_vs_oracle["taylor"]
    )


def test_ranking_result_json_round_trip(ranking):
    text = to_json(ranking.to_dict())

    def strict(token):
        raise AssertionError(f"{token} in the JSON: NaN must be written as null")

    back = RankingResult.from_dict(json.loads(text, parse_constant=strict))
    assert back.to_dict() == ranking.to_dict()
    for layer, crit in ranking.layers.items():
        for c, values in crit.items():
            np.testing.assert_array_equal(np.array(back.layers[layer][c]), np.array(values))


def test_from_dict_rejects_other_json():
    with pytest.raises(WorkbenchError, match="not a ranking result"):
        RankingResult.from_dict({"accuracy": 1.0})


def test_rank_channels_rejects_unknown_criterion():
    model, data = build("tabular")
    with pytest.raises(WorkbenchError, match="unknown importance criterion"):
        rank_channels(model, data, criteria=["l1", "random"])


def test_rank_command_writes_the_contract_keys(tmp_path):
    from analysis.__main__ import main

    out = tmp_path / "rank.json"
    code = main(["rank", "--model", "zoo:digits-mlp", "--criteria", "l1", "taylor", "--max-samples", "32",
                 "--layers", "net.3", "net.5", "--json", str(out)])  # fmt: skip
    assert code == 0
    payload = json.loads(out.read_text())
    assert set(payload["layers"]) == {"net.3", "net.5"}
    assert set(payload["layers"]["net.3"]) == {"l1", "taylor", "oracle"}
    assert len(payload["layers"]["net.3"]["l1"]) == 64
    assert set(payload["spearman_vs_oracle"]) == {"l1", "taylor"}


def test_rank_command_bad_criterion_is_one_line(capsys):
    from analysis.__main__ import main

    assert main(["rank", "--model", "zoo:digits-mlp", "--criteria", "nope", "--json", "-"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown importance criterion" in err[0]
