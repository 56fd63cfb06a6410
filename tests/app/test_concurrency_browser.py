"""Several browser sessions at once on a fresh server, each with its own batch size, open every page: no
error anywhere, and the numbers equal a single-session run (MACs exactly, accuracy exactly), computed here
independently (MACs by hand, accuracy by a plain loop over the samples).

The larger load test is `python benchmarks/concurrent_sessions.py --sessions 6 --rounds 2`."""

from __future__ import annotations

import pytest
import torch
from browsertools import PAGE_TITLES, chromium, concurrent_sessions, serve

from analysis import load_data, load_model

pytestmark = pytest.mark.browser

# digits-cnn by hand: convs 16x16x32x(1x9) + 16x16x32x(32x9) + 8x8x64x(32x9) + 8x8x64x(64x9), then the
# classifier 1024x128 + 128x10.
MACS = 16 * 16 * 32 * 9 + 16 * 16 * 32 * 288 + 8 * 8 * 64 * 288 + 8 * 8 * 64 * 576 + 1024 * 128 + 128 * 10


def _accuracy() -> str:
    model = load_model("zoo:digits-cnn")
    data = load_data("digits", model.input_shape)
    with torch.no_grad():
        correct = sum(
            int((model(x[None]).argmax(1) == y).item()) for x, y in zip(data.x, data.y, strict=True)
        )
    return f"{correct / len(data.y):.2%}"


def test_three_sessions_at_once_match_a_single_session(tmp_path):
    accuracy = _accuracy()
    with serve(tmp_path / "streamlit.log") as url, chromium() as browser:
        sessions = concurrent_sessions(browser, url, [1, 8, 32])
    for s in sessions:
        assert not s["errors"], s["errors"]
        assert set(s["metrics"]) == set(PAGE_TITLES)
        home = s["metrics"]["Home"][0]
        assert "MACs per sample" in home, s["metrics"]
        assert home["MACs per sample"] == f"{MACS / 1e6:,.2f} M"
        assert home["Accuracy (top-1)"] == accuracy
        assert home["Latency (median)"].endswith(" ms")
        assert s["metrics"]["Overview"][0]["MACs per sample"] == f"{MACS:,}"
