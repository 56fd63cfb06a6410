"""Overview page: per-layer cost charts and the table, checked against MACs counted by hand."""

from __future__ import annotations

from apptools import assert_clean, charts, open_page
from torch import nn

from analysis import load_model


def _hand_macs(model: nn.Module) -> dict[str, int]:
    """MACs of each conv / linear layer of the default CNN for one 1x16x16 sample, from the shapes alone."""
    side = {"features.0": 16, "features.3": 16, "features.7": 8, "features.10": 8}
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = side[name] ** 2 * m.out_channels * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            out[name] = m.in_features * m.out_features
    return out


def test_overview_charts_and_table_match_hand_counts():
    at = open_page("overview")
    assert len(charts(at)) == 3
    table = at.dataframe[0].value.set_index("name")
    model = load_model("zoo:digits-cnn")
    for name, macs in _hand_macs(model).items():
        assert table.loc[name, "macs"] == macs
        assert table.loc[name, "params"] == sum(p.numel() for p in model.get_submodule(name).parameters())
    assert abs(table["MACs %"].sum() - 100) < 0.1
    assert abs(table["time %"].sum() - 100) < 0.1
    assert (table["time_ms"] >= 0).all()
    assert [d.label for d in at.get("download_button")] == ["Download layers.csv"]


def test_overview_runs_slider_reruns_cleanly():
    at = open_page("overview")
    at.slider[0].set_value(5).run()
    assert_clean(at)
    assert len(charts(at)) == 3
