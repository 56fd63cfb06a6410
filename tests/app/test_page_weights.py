"""Weights page: statistics against numpy, histogram views, and the quantization grid for chosen bits."""

from __future__ import annotations

import numpy as np
from apptools import assert_clean, charts, open_page

from analysis import load_model


def test_weight_statistics_match_numpy():
    at = open_page("weights")
    assert len(charts(at)) == 2  # histograms + quantization
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
    assert len(charts(at)) == 2
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
