"""The user's work in a real browser (issue 21): values set on every page survive leaving and returning, Apply
applies what the preview shows, and every file the Compress page offers for a 50%-pruned zoo:digits-cnn, on
eager and on ONNX Runtime, arrives and loads with `python -m analysis evaluate --model FILE`."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys

import pytest
from browsertools import LOAD_MS, ROOT, chromium, errors, nav_to, serve, wait_idle, wait_title

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    with serve(
        tmp_path_factory.mktemp("server") / "streamlit.log", env={"WORKBENCH_DATA_DIR": str(data)}
    ) as url:
        yield url


@pytest.fixture()
def page(server):
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1600, "height": 2400}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(LOAD_MS)
        yield page
        context.close()


def _widget(page, key: str):
    """The element of the widget made with `key` (Streamlit marks it with the class st-key-<key>)."""
    return page.locator(f".st-key-{re.sub(r'[^A-Za-z0-9_-]', '-', key)}")


def _settle(page) -> None:
    """Wait for the rerun an input started (it may take a moment to begin), then for its end."""
    with contextlib.suppress(Exception):  # a quick rerun may be over before it is seen
        page.wait_for_selector('[data-testid^="stStatusWidgetRunning"]', timeout=1500)
    wait_idle(page)


def _slide(page, key: str, steps: int) -> None:
    """Move a slider `steps` notches with the keyboard (negative: to the left)."""
    thumb = _widget(page, key).locator('input[type="range"]').first
    thumb.focus()
    for _ in range(abs(steps)):
        thumb.press("ArrowRight" if steps > 0 else "ArrowLeft")
    thumb.blur()  # the slider sends its value when it loses focus
    _settle(page)


def _slider_value(page, key: str) -> str:
    return _widget(page, key).locator('input[type="range"]').first.get_attribute("aria-valuetext")


def _type(page, key: str, text: str) -> None:
    box = _widget(page, key).locator("input").first
    box.fill(text)
    box.press("Tab")  # a form's field keeps it until submitted; elsewhere the blur sends it
    _settle(page)


def _value(page, key: str) -> str:
    return _widget(page, key).locator("input").first.input_value()


def _go(page, title: str, h1: str | None = None) -> None:
    nav_to(page, title)
    wait_title(page, h1 or title)


def _metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]', has=page.get_by_text(label, exact=True)).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _preview(page) -> dict[str, str]:
    """The preview's counts once the reruns of the last inputs have all drawn (two readings agree)."""
    seen = None
    for _ in range(20):
        wait_idle(page)
        now = {label: _metric(page, label) for label in ("MACs per sample", "Params")}
        if now == seen:
            return now
        seen = now
        page.wait_for_timeout(1000)
    raise AssertionError(f"the preview kept changing: {seen}")


def test_values_survive_leaving_and_apply_applies_the_preview(server, page, tmp_path):
    page.goto(f"{server}/sensitivity")
    wait_title(page, "Sensitivity")
    _widget(page, "sens_kind").get_by_text("unstructured", exact=True).click()
    _type(page, "sens_ratios", "0.3")
    page.get_by_role("button", name="Run sweep").click()
    _settle(page)
    page.locator(".js-plotly-plot").first.wait_for()

    _go(page, "Rankings")
    _widget(page, "rank_oracle").get_by_text("Oracle").click()  # untick
    _type(page, "rank_samples", "288")
    page.get_by_role("button", name="Rank channels").click()
    _settle(page)
    page.locator(".js-plotly-plot").first.wait_for()

    _go(page, "Overview")
    _slide(page, "overview_runs", -1)  # 10 -> 5
    _go(page, "Weights")
    _slide(page, "weights_bits", -1)  # 8 -> 7

    _go(page, "Compress")
    page.get_by_role("button", name="Apply").wait_for()
    _slide(page, "prune::features.3", 3)  # 0.15
    _type(page, "plan_epochs", "1")
    preview = _preview(page)

    for title in ("Weights", "Home", "Compress"):  # leave and come back
        _go(page, title, "Compression workbench" if title == "Home" else None)
    page.get_by_role("button", name="Apply").wait_for()
    wait_idle(page)
    assert _slider_value(page, "prune::features.3") == "0.15"
    assert _value(page, "plan_epochs") == "1"
    assert _slider_value(page, "bits::features.3") == "32"  # not the select slider's first option
    assert _preview(page) == preview
    page.get_by_role("button", name="Apply").click()
    page.get_by_role("button", name="Make .pt (pickle)").wait_for()
    wait_idle(page)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download plan.json").click()
    plan = json.loads(download.value.path().read_text())
    assert plan["layers"]["features.3"]["prune"] == pytest.approx(0.15)
    assert plan["finetune"]["epochs"] == 1
    assert _metric(page, "Params") == preview["Params"]  # the result's count is the preview's

    for title, key, want in (("Overview", "overview_runs", "5"), ("Weights", "weights_bits", "7")):
        _go(page, title)
        assert _slider_value(page, key) == want, title
    _go(page, "Sensitivity")
    assert _widget(page, "sens_kind").locator("input[type=radio]:checked").count() == 1
    assert (
        _widget(page, "sens_kind").locator("label:has(input:checked)").inner_text().strip() == "unstructured"
    )
    assert _value(page, "sens_ratios") == "0.3"
    _go(page, "Rankings")
    assert not _widget(page, "rank_oracle").locator("input").is_checked()
    assert _value(page, "rank_samples") == "288"
    assert not errors(page)


def _evaluate(path) -> dict:
    command = [
        sys.executable,
        "-m",
        "analysis",
        "evaluate",
        "--no-record",
        "--json",
        "-",
        "--model",
        str(path),
    ]
    if path.suffix == ".pt":
        command.append("--trust-pickle")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (path.name, done.stderr[-2000:])
    return json.loads(done.stdout)


FRESH_FILES = """() => {
  const labels = [...document.querySelectorAll('button')].map((b) => b.innerText.trim());
  return labels.filter((t) => t.startsWith('Make ')).length === 4
    && !labels.some((t) => t.startsWith('Download compressed'));
}"""


def _download_every_file(page, folder) -> dict[str, dict]:
    """Press every Make button, download what it made, evaluate each file: {file name: evaluate's JSON}."""
    # This result's Files section: four Make buttons and no file made yet. The page finishes drawing it a
    # moment after the metrics (an earlier result's section, its files made, can still be on screen).
    page.wait_for_function(FRESH_FILES, timeout=LOAD_MS)
    wait_idle(page)
    made = [b for b in page.get_by_role("button").all_inner_texts() if b.startswith("Make ")]
    assert len(made) == 4, made
    loaded = {}
    for label in made:
        page.get_by_role("button", name=label, exact=True).click()
        name = f"compressed{label.split()[1]}"
        button = page.get_by_role("button", name=f"Download {name}", exact=True)
        button.wait_for()
        wait_idle(page)
        assert not errors(page), label
        with page.expect_download() as download:
            button.click()
        path = folder / name
        download.value.save_as(path)
        loaded[name] = _evaluate(path)
    return loaded


def test_every_file_offered_for_a_pruned_cnn_arrives_and_loads(server, page, tmp_path):
    page.goto(f"{server}/compress")
    wait_title(page, "Compress")
    page.get_by_role("button", name="Apply").wait_for()
    _slide(page, "uni_prune", 5)  # 0.25 -> 0.5
    page.get_by_role("button", name="Set every layer").click()
    _settle(page)
    for runtime in ("eager", "onnxruntime"):
        if runtime != "eager":
            _widget(page, "runtime").click()
            page.get_by_role("option", name=runtime).click()
            _settle(page)
        page.get_by_role("button", name="Apply").click()
        _settle(page)  # the last result's buttons stay on screen until this run has drawn the new ones
        page.get_by_role("button", name="Make .pt (pickle)").wait_for()
        wait_idle(page)
        accuracy = float(_metric(page, "Accuracy").rstrip("%")) / 100
        folder = tmp_path / runtime
        folder.mkdir()
        loaded = _download_every_file(page, folder)
        assert sorted(loaded) == sorted(
            ["compressed.onnx", "compressed.pt2", "compressed.pruned.safetensors", "compressed.pt"]
        )
        for name, result in loaded.items():  # each file is the model Apply measured (on the float weights)
            assert result["accuracy"] == pytest.approx(accuracy, abs=0.006), (runtime, name)
