"""Rankings page: scores per criterion, agreement with the oracle, and top-k overlap."""

from __future__ import annotations

import numpy as np
import pytest
from apptools import assert_clean, charts, open_page, submit

from analysis import load_model


@pytest.fixture(autouse=True)
def _store(tmp_path, monkeypatch):
    """Each test records into its own results store."""
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))


def test_rankings_from_the_form():
    at = open_page("rankings")
    assert not charts(at)
    at.multiselect(key="rank_criteria").set_value(["l1", "apoz", "taylor"])
    at.multiselect(key="rank_layers").set_value(["features.10"])
    at.number_input(key="rank_samples").set_value(128)
    at.number_input(key="rank_osamples").set_value(64)
    submit(at, "Rank channels")
    assert_clean(at)
    assert len(charts(at)) == 3  # distributions, rho vs oracle, top-k overlap
    scores = at.session_state["_result_rankings"]["result"].to_frame()
    w = load_model("zoo:digits-cnn").get_submodule("features.10").weight.detach().numpy()
    np.testing.assert_allclose(scores["l1"], np.abs(w).reshape(64, -1).sum(axis=1), rtol=1e-5)
    rho = at.dataframe[0].value.set_index("layer")
    assert list(rho.columns) == ["l1", "apoz", "taylor"]
    assert {"features.10", "pooled"} <= set(rho.index)
    assert ((rho.abs() <= 1 + 1e-9) | rho.isna()).all().all()
    [said] = [c.value for c in at.caption if "Spearman's rho" in c.value]
    assert "-APoZ" in said and "**mean per layer**" in said and "**pooled**" in said
    assert any("one evaluation per channel: 64 channels" in c.value for c in at.caption)  # the oracle ran


def test_rankings_without_oracle_say_so():
    at = open_page("rankings")
    at.multiselect(key="rank_criteria").set_value(["l1", "l2"])
    at.multiselect(key="rank_layers").set_value(["features.0"])
    at.checkbox(key="rank_oracle").uncheck()
    submit(at, "Rank channels")
    assert_clean(at)
    assert len(charts(at)) == 2
    assert any("Oracle" in i.value for i in at.info)
    assert not any("one evaluation per channel" in c.value for c in at.caption)  # no oracle, no oracle cost
