"""Home page and the shared sidebar: the model card, and every bad input shown as a message in the page."""

from __future__ import annotations

import io

import pytest
import torch
from apptools import APP, TIMEOUT, assert_clean, charts, open_page, shown
from streamlit.testing.v1 import AppTest
from torch import nn

from analysis import load_data, load_model


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_home_shows_the_model_card_of_the_default_model():
    at = open_page()
    model = load_model("zoo:digits-cnn")
    data = load_data("digits", model.input_shape)
    with torch.no_grad():
        correct = sum(
            int((model(x[None]).argmax(1) == y).item()) for x, y in zip(data.x, data.y, strict=True)
        )
    assert _metric(at, "Parameters") == f"{sum(p.numel() for p in model.parameters()):,}"
    assert _metric(at, "Accuracy (top-1)") == f"{correct / len(data.y):.2%}"
    assert _metric(at, "Latency (median)").endswith(" ms")
    # MACs by hand: convs 16x16x32x(1x9) + 16x16x32x(32x9) + 8x8x64x(32x9) + 8x8x64x(64x9), then 1024x128 + 128x10.
    macs = 16 * 16 * 32 * 9 + 16 * 16 * 32 * 288 + 8 * 8 * 64 * 288 + 8 * 8 * 64 * 576 + 1024 * 128 + 128 * 10
    assert _metric(at, "MACs per sample") == f"{macs / 1e6:,.2f} M"
    assert _metric(at, "FLOPs per sample") == f"{2 * macs / 1e6:,.2f} M"
    assert len(charts(at)) == 1
    links = at.get("page_link")
    assert len(links) == 7 and "history" in links[-1].proto.page  # every page, History too


def _sidebar_error(at: AppTest) -> str:
    assert not at.exception, [e.value for e in at.exception]
    assert at.error, "expected an error message in the page"
    return shown(at.error[0].value)


def test_weights_that_do_not_fit_show_an_error():
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    buffer = io.BytesIO()
    torch.save({"features.0.weight": torch.zeros(3, 3)}, buffer)
    at.sidebar.get("file_uploader")[0].upload("bad.pt", buffer.getvalue())
    assert "do not fit the architecture" in _sidebar_error(at.run())


def test_garbage_weights_file_shows_an_error():
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.sidebar.get("file_uploader")[0].upload("garbage.safetensors", b"not a safetensors file")
    assert "cannot read weights" in _sidebar_error(at.run())


def test_pickled_model_needs_trust_and_loads_with_it():
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.radio(key="model_source").set_value("Pickled module").run()
    buffer = io.BytesIO()
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(256, 10)), buffer)
    at.get("file_uploader")[0].upload("tiny.pt", buffer.getvalue())
    assert "trust" in _sidebar_error(at.run())
    at.checkbox(key="trust_pickle").check().run()
    assert_clean(at)
    assert next(m.value for m in at.metric if m.label == "Parameters") == f"{256 * 10 + 10:,}"


def test_unknown_callable_and_missing_torchvision_show_errors():
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.radio(key="model_source").set_value("Python callable").run()
    at.text_input(key="callable_spec").set_value("no_such_module_xyz:build")
    assert "cannot import module" in _sidebar_error(at.run())
    at.text_input(key="callable_spec").set_value("pandas:DataFrame")  # stdlib callables are refused outright
    assert "not a torch.nn.Module" in _sidebar_error(at.run())
    at.text_input(key="callable_spec").set_value("torch.nn:Module")  # forward() is not implemented
    assert "cannot run on input" in _sidebar_error(at.run())
    at.text_input(key="callable_spec").set_value("torch.nn:Identity")  # an image out: scored by PSNR
    at.run()
    assert_clean(at)
    assert next(m.value for m in at.metric if m.label == "PSNR (dB)") == "100.00 dB"  # against itself
    at.radio(key="model_source").set_value("torchvision").run()
    message = _sidebar_error(at)
    assert "torchvision" in message


def test_data_spec_that_does_not_exist_shows_an_error():
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.radio(key="data_source").set_value("Path").run()
    at.text_input(key="data_spec").set_value("tensors:/no/such/file.pt")
    assert "not found" in _sidebar_error(at.run())


def test_data_upload_without_labels_is_scored_against_the_original():
    import numpy as np

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.radio(key="data_source").set_value("Upload tensors").run()
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((4, 1, 16, 16), dtype=np.float32))
    at.get("file_uploader")[-1].upload("nolabels.npz", buffer.getvalue())
    at.run()
    assert_clean(at)  # unlabelled data is enough: the classifier is scored by agreement with itself
    assert next(m.value for m in at.metric if m.label == "Agreement") == "100.00%"
    assert any("Scores: agreement" in c.value for c in at.sidebar.caption)


def test_measure_again_times_anew_and_a_noisy_timing_reads_as_a_range(monkeypatch):
    import dataclasses

    import analysis.runtime

    real, calls = analysis.runtime.compare_runtime_latency, []

    def noisy(*args, **kwargs):  # the real timings, with a spread a busy machine gives (p90/p10 = 4)
        calls.append(1)
        out = real(*args, **kwargs)
        return {
            n: dataclasses.replace(r, p10_ms=r.median_ms / 2, p90_ms=r.median_ms * 2) for n, r in out.items()
        }

    monkeypatch.setattr(analysis.runtime, "compare_runtime_latency", noisy)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.number_input(key="batch_size").set_value(3).run()  # a batch size no other test has cached
    assert_clean(at)
    first = len(calls)
    latency = next(m for m in at.metric if m.label == "Latency (median)")
    low, high = (float(v) for v in latency.value.removesuffix(" ms").split("-"))
    assert (
        high == pytest.approx(4 * low, rel=0.02) and "noisy: median" in latency.delta
    )  # the range is p10-p90, the median beside it
    [warning] = [shown(w.value) for w in at.warning if "Noisy timing" in shown(w.value)]
    assert warning.startswith("Noisy timing in measurement 1 (batch 3") and "eager p90/p10 = 4.0" in warning
    [button] = [b for b in at.button if b.label == "Measure again"]
    button.click().run()
    assert_clean(at)
    assert len(calls) == first + 1  # timed anew, not the cached measurement
    warnings = [shown(w.value) for w in at.warning if "Noisy timing" in shown(w.value)]
    assert len(warnings) == 1 and warnings[0].startswith(
        "Noisy timing in measurement 2"
    )  # replaced, not stacked
