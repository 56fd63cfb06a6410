"""The app's library helpers (workbench, tables, cards, weight_stats, charts) against plain reference code."""

from __future__ import annotations

import copy
import textwrap

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from torch import nn

from analysis import WorkbenchError, load_model
from analysis.app_support import WorkbenchSpec, load_workbench, save_upload, state_digest
from analysis.report import (
    cost_vs_time,
    model_card,
    pareto_front,
    plan_from_table,
    safe_points,
    uniform_layer_table,
)
from analysis.report.charts import (
    histogram_grid,
    histogram_overlay,
    pareto_scatter,
    quantization_figure,
    sensitivity_curves,
    sensitivity_heatmap,
    share_comparison,
    sorted_bar,
)
from analysis.report.weights import quantization_view, weight_histograms, weight_stats
from analysis.sensitivity.sweep import SensitivityCurve, SensitivityResult
from analysis.validate import parse_values


def _front_by_sweep(acc, lat):
    """Reference: walk points by latency (ties: best accuracy first); a point is on the front when it beats
    the best accuracy seen at any strictly lower latency and is the best at its own latency."""
    order = sorted(range(len(acc)), key=lambda i: (lat[i], -acc[i]))
    best_below, mask = -np.inf, [False] * len(acc)
    i = 0
    while i < len(order):
        same = [j for j in order[i:] if lat[j] == lat[order[i]]]
        top = max(acc[j] for j in same)
        for j in same:
            mask[j] = acc[j] == top and top > best_below
        best_below = max(best_below, top)
        i += len(same)
    return mask


def test_pareto_front_matches_a_sorted_sweep():
    rng = np.random.default_rng(0)
    for _ in range(50):
        acc = rng.integers(0, 6, size=12) / 5
        lat = rng.integers(0, 6, size=12).astype(float)
        assert list(pareto_front(acc, lat)) == _front_by_sweep(list(acc), list(lat))


def test_weight_stats_match_numpy_and_count_exact_zeros():
    model = load_model("zoo:digits-cnn")
    work = copy.deepcopy(model)
    with torch.no_grad():
        work.features[3].weight[:4] = 0  # 4 of 32 filters zeroed: sparsity 1/8
    stats = weight_stats(work).set_index("layer")
    w = work.features[3].weight.detach().double().numpy().ravel()
    assert stats.loc["features.3", "sparsity"] == pytest.approx(4 / 32)
    assert stats.loc["features.3", "std"] == pytest.approx(w.std(), rel=1e-9)
    assert stats.loc["features.3", "outliers"] == np.sum(np.abs(w - w.mean()) > 3 * w.std())
    assert state_digest(model) == state_digest(load_model("zoo:digits-cnn"))
    hists = weight_histograms(work, ["features.3", "classifier.0"], bins=10)
    assert [int(h.counts.sum()) for h in hists] == [32 * 32 * 9, 1024 * 128]


def test_quantization_view_by_hand():
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.7, -0.35, 0.1, 0.0], [0.2, 0.05, -0.1, 0.15]]))
    view = quantization_view(model, "0", bits=3)  # 3 levels each side
    assert view.grid[1] - view.grid[0] == pytest.approx(0.7 / 3)
    assert view.scale_min == pytest.approx(0.2 / 3) and view.scale_max == pytest.approx(0.7 / 3)
    w = model[0].weight.detach().numpy().astype(np.float64)
    scale = np.abs(w).max(axis=1, keepdims=True) / 3
    q = np.clip(np.round(w / scale), -3, 3) * scale
    assert view.sqnr_db == pytest.approx(10 * np.log10((w**2).sum() / ((w - q) ** 2).sum()), rel=1e-5)
    assert view.distinct_values_max <= 2**3 - 1
    assert isinstance(quantization_figure(view), go.Figure)


def test_plan_from_table_never_prunes_the_classifier(cnn, digits):
    table = uniform_layer_table(cnn, digits.input_shape, prune=0.5, bits=8)
    assert table.loc[table["final"], "layer"].tolist() == ["classifier.2"]
    assert table.loc[table["final"], "prune"].tolist() == [0.0]
    table.loc[table["layer"] == "classifier.2", "prune"] = 0.9  # a user's edit the plan must ignore
    table.loc[table["layer"] == "features.0", ["prune", "bits"]] = [0.0, 32]
    plan = plan_from_table(table, criterion="l2")
    assert "features.0" not in plan.layers
    assert plan.settings_for("classifier.2").prune == 0.0 and plan.settings_for("classifier.2").bits == 8
    assert plan.settings_for("features.3").prune == 0.5 and plan.settings_for("features.3").criterion == "l2"


def test_model_card_counts_by_hand_and_says_where_its_latency_was_measured(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    with torch.no_grad():
        model[1].weight[:3] = 0  # zeros the nonzero count must leave out
    card = model_card(model, digits, digits.input_shape, batch_size=4, threads=1, runs=3)
    with torch.no_grad():
        correct = sum(
            int(model(x[None]).argmax(1).item() == y) for x, y in zip(digits.x, digits.y, strict=True)
        )
    m = card.metrics
    assert (m.params, m.nonzero_params, m.macs, m.flops) == (2570, 2570 - 3 * 256, 2560, 5120)
    assert m.size_bytes == 2570 * 4 and m.accuracy == pytest.approx(correct / len(digits.y))
    where = (m.runtime, m.runtime_version, m.provider, m.latency_kind)
    assert where == ("eager", torch.__version__, "CPU", "real")  # every latency says where it was measured
    assert m.latency_p10_ms <= m.latency_ms <= m.latency_p90_ms and m.latency_spread is not None
    assert (card.batch_size, card.threads, card.samples) == (4, 1, len(digits.y))
    old_keys = {"params", "macs", "flops", "size_bytes", "accuracy", "loss", "samples", "latency_ms",
                "latency_p10_ms", "latency_p90_ms", "batch_size", "threads", "torch_version", "cpu", "layers",
                "prunable_layers", "extra", "metric"}  # fmt: skip
    out = card.to_dict()
    assert old_keys <= set(out) and {"runtime", "provider", "latency_kind", "latency_spread"} <= set(out)
    assert out["metric"] == {"name": "accuracy", "direction": "higher", "value": m.accuracy}


def test_save_upload_is_content_addressed(tmp_path):
    a = save_upload("w.safetensors", b"abc", tmp_path)
    assert save_upload("w.safetensors", b"abc", tmp_path) == a
    b = save_upload("w.safetensors", b"abd", tmp_path)
    assert b != a and b.read_bytes() == b"abd"
    assert save_upload("../../evil name.pt", b"x", tmp_path).parent.parent == tmp_path


def test_spec_keys(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"1")
    spec = WorkbenchSpec(weights=str(weights))
    assert spec.model_key() == WorkbenchSpec(weights=str(weights), batch_size=8).model_key()
    assert spec.timing_key() != WorkbenchSpec(weights=str(weights), batch_size=8).timing_key()
    key = spec.model_key()
    weights.write_bytes(b"22")
    assert spec.model_key() != key


def test_linear_model_on_tabular_tensors(tmp_path, monkeypatch):
    (tmp_path / "tabular_model.py").write_text(
        textwrap.dedent(
            """
            from torch import nn
            def build():
                return nn.Sequential(nn.Linear(7, 16), nn.ReLU(), nn.Linear(16, 3))
            """
        )
    )
    generator = torch.Generator().manual_seed(0)
    torch.save({"x": torch.randn(40, 7, generator=generator), "y": torch.arange(40) % 3}, tmp_path / "t.pt")
    monkeypatch.chdir(tmp_path)
    wb = load_workbench(WorkbenchSpec(model="tabular_model:build", data=f"tensors:{tmp_path / 't.pt'}"))
    assert wb.input_shape == (7,)
    frame = cost_vs_time(wb.model, wb.input_shape, batch_size=4, runs=2)
    assert frame.set_index("name").loc["0", "macs"] == 7 * 16
    assert frame.set_index("name").loc["2", "macs"] == 16 * 3
    assert isinstance(share_comparison(frame), go.Figure)
    assert isinstance(sorted_bar(frame, "macs"), go.Figure)
    with pytest.raises(WorkbenchError, match="cannot run on input"):
        load_workbench(
            WorkbenchSpec("tabular_model:build", data=f"tensors:{tmp_path / 't.pt'}", input_shape="1,5")
        )
    with pytest.raises(WorkbenchError, match="64 features"):
        load_workbench(WorkbenchSpec(model="tabular_model:build", input_shape="1,5"))


@pytest.mark.parametrize("name", ["zoo:digits-resnet", "zoo:digits-mobilenet", "zoo:digits-mlp"])
def test_charts_on_other_architectures(name):
    model = load_model(name)
    hists = weight_histograms(model)
    assert len(hists) == len(weight_stats(model))
    assert isinstance(histogram_overlay(hists), go.Figure)
    assert isinstance(histogram_grid(hists), go.Figure)


def test_safe_points_and_sensitivity_charts():
    curve = SensitivityCurve((0.25, 0.5, 0.75), (0.98, 0.95, 0.5), (0.1, 0.2, 0.9), ("a", "b"))
    result = SensitivityResult("structured", 0.99, 0.05, 1.0, {"a": curve})
    row = safe_points(result).iloc[0]
    assert row["max ratio @ 1 pt"] == 0.25  # 0.99 -> 0.98 is one point: safe; 0.95 is 4 points: not
    assert row["max ratio @ 2 pt"] == 0.25
    assert row["worst drop (pt)"] == pytest.approx(49.0)
    assert row["members"] == "a, b"
    frame = result.to_frame()
    heat = sensitivity_heatmap(frame, 0.99)
    assert np.allclose(heat.data[0].z, [[1.0, 4.0, 49.0]])
    assert isinstance(sensitivity_curves(frame, 0.99), go.Figure)


def test_parse_values_and_pareto_scatter():
    assert parse_values("0.1, 0.2 0.5") == [0.1, 0.2, 0.5]
    assert parse_values("8,4", int) == [8, 4]
    with pytest.raises(WorkbenchError):
        parse_values("0.1, half")
    import pandas as pd

    points = pd.DataFrame(
        {"label": ["a", "b", "c"], "latency_ms": [1.0, 2.0, 3.0], "accuracy": [0.9, 0.8, 0.95]}
    ).assign(pareto=lambda f: pareto_front(f["accuracy"], f["latency_ms"]))
    assert list(points["pareto"]) == [True, False, True]
    fig = pareto_scatter(points)
    assert list(fig.data[1].text) == ["a", "c"]
