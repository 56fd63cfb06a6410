"""Weights page: statistics against numpy, histogram views, and the quantization grid for chosen bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from apptools import assert_clean, charts, open_page

from analysis import load_model


def test_weight_statistics_match_numpy():
    at = open_page("weights")
    assert len(charts(at)) == 4  # histograms, quantization, BN scales, filter norms
    stats = at.dataframe[0].value.set_index("layer")
    model = load_model("zoo:digits-cnn")
    for name in ("features.3", "classifier.0"):
        w = model.get_submodule(name).weight.detach().numpy().astype(np.float64).ravel()
        assert stats.loc[name, "weights"] == w.size
        assert abs(stats.loc[name, "std"] - w.std()) < 1e-6
        assert stats.loc[name, "sparsity"] == np.mean(w == 0)
        assert stats.loc[name, "outliers"] == int(np.sum(np.abs(w - w.mean()) > 3 * w.std()))


def test_small_multiples_and_layer_choice():
    at = open_page("weights")
    at.radio(key="weights_view").set_value("Small multiples")
    at.multiselect(key="weights_layers").set_value(["features.0", "features.7"]).run()
    assert_clean(at)
    assert len(charts(at)) == 4
    assert list(at.dataframe[0].value["layer"]) == ["features.0", "features.7"]


def test_bits_change_the_grid():
    at = open_page("weights")
    at.selectbox(key="weights_qlayer").set_value("features.3")
    at.select_slider(key="weights_bits").set_value(3).run()
    assert_clean(at)
    distinct = next(m.value for m in at.metric if m.label.startswith("Distinct values"))
    assert int(distinct) <= 2**3 - 1  # symmetric grid: 3 levels each side and zero
    sqnr_3 = float(next(m.value for m in at.metric if m.label == "SQNR").split()[0])
    at.select_slider(key="weights_bits").set_value(8).run()
    sqnr_8 = float(next(m.value for m in at.metric if m.label == "SQNR").split()[0])
    assert sqnr_8 > sqnr_3 + 20  # about 6 dB per bit


def test_uniform_vs_kmeans_table_matches_a_plain_loop():
    import torch
    from apptools import click

    from analysis import load_data

    at = open_page("weights")
    at.multiselect(key="weights_layers").set_value(["features.7", "classifier.0"]).run()
    at.select_slider(key="weights_kbits").set_value(3).run()
    click(at, "Compare on the chosen layers")
    assert_clean(at)
    table = at.dataframe[1].value.set_index("layer")
    assert list(table.index) == ["features.7", "classifier.0", "(all layers)"]
    assert set(table["better"]) <= {"uniform", "k-means", "tie"}
    # Uniform 3-bit of classifier.0 alone, by a plain symmetric per-channel loop.
    model = load_model("zoo:digits-cnn")
    data = load_data("digits", model.input_shape)
    layer = model.get_submodule("classifier.0")
    w = layer.weight.detach().clone()
    scale = w.abs().amax(dim=1, keepdim=True) / 3
    q = torch.clamp(torch.round(w / scale), -3, 3) * scale
    sqnr = 10 * np.log10(float((w.double() ** 2).sum()) / float(((w - q).double() ** 2).sum()))
    assert table.loc["classifier.0", "sqnr_uniform_db"] == pytest.approx(sqnr, abs=1e-3)
    with torch.no_grad():
        layer.weight.copy_(q)
        accuracy = (model(data.x).argmax(1) == data.y).float().mean().item()
    assert table.loc["classifier.0", "accuracy_uniform"] == pytest.approx(accuracy, abs=1e-4)
    assert len(charts(at)) == 5  # + SQNR bars
    [caption] = [c.value for c in at.caption if "`better`" in c.value]
    assert "kept). `better`" in caption  # each note a sentence of its own, not run into the next


def test_bn_scale_histogram_holds_every_channel():
    import json

    at = open_page("weights")
    spec = json.loads(next(c for c in charts(at) if "BatchNorm scales" in c.proto.spec).proto.spec)
    plotted = sorted(spec["data"][0]["x"])
    model = load_model("zoo:digits-cnn")
    gammas = sorted(
        abs(float(v)) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for v in m.weight
    )
    assert plotted == pytest.approx(gammas)
