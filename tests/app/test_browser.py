"""The app in a real browser: `streamlit run app.py` served once, Chromium (Debian's) driven by Playwright.

Every URL path is opened, its plotly charts must be drawn, and a screenshot of each page is saved under
the test's temp dir. On /compress, Apply must show the accuracy and the latency in ms.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browsertools import ARGS, CHROMIUM, ROOT, chromium, docs_shot, serve
from browsertools import free_port as _free_port

__all__ = ["ARGS", "CHROMIUM", "LOAD_MS", "ROOT", "_free_port"]  # test_browser_history uses these

pytestmark = pytest.mark.browser

LOAD_MS = 120_000  # first visits compute (model card, sweeps) on a possibly busy 2-core machine
CHART = ".js-plotly-plot"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("server") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 2200})
    page = context.new_page()
    page.set_default_timeout(LOAD_MS)
    yield page
    context.close()


def _open(page, server: str, path: str):
    page.goto(f"{server}/{path}")
    page.wait_for_selector("h1", timeout=LOAD_MS)


READY = """([n]) => {
  if (!document.querySelector('[data-testid="stMain"] h1')) return false;
  if (document.querySelector('[data-testid^="stStatusWidgetRunning"]')) return false;
  const live = [...document.querySelectorAll('[data-testid="stElementContainer"]')]
    .filter((e) => e.getAttribute('data-stale') !== 'true');
  return live.reduce((k, e) => k + e.querySelectorAll('.js-plotly-plot').length, 0) >= n;
}"""


FIRST_RATIO_IS = """(value) => {
  const slider = document.querySelector('input[type="range"][aria-label="prune ratio"]');
  return slider !== null && slider.getAttribute('value') === value;
}"""


def _charts(page, count: int = 1) -> int:
    """Wait until the script run has finished and `count` charts (not left-overs of the last run) are drawn."""
    page.wait_for_function(READY, arg=[count], timeout=LOAD_MS)
    page.wait_for_timeout(500)  # let plotly finish drawing before the screenshot
    return page.locator(CHART).count()


def _no_errors(page) -> None:
    alerts = page.locator('[data-testid="stAlertContentError"]')
    assert alerts.count() == 0, alerts.all_inner_texts()
    assert page.locator('[data-testid="stException"]').count() == 0


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    docs_shot(page, name)  # only with WORKBENCH_DOCS_SHOTS set (`make screenshots`)
    return path


def test_home(server, page, tmp_path):
    _open(page, server, "")
    assert _charts(page) >= 1
    assert page.get_by_text("Accuracy (top-1)").count() == 1
    _no_errors(page)
    _shot(page, tmp_path, "home")


@pytest.mark.parametrize(("path", "charts"), [("overview", 3), ("weights", 2)])
def test_pages_with_charts_on_arrival(server, page, tmp_path, path, charts):
    _open(page, server, path)
    assert _charts(page, charts) >= charts
    _no_errors(page)
    _shot(page, tmp_path, path)


def test_sensitivity_sweep_then_report(server, page, tmp_path):
    _open(page, server, "sensitivity")
    page.get_by_label("Ratios (pruning)").fill("0.25, 0.5")
    page.get_by_role("button", name="Run sweep").click()
    assert _charts(page, 2) >= 2
    _no_errors(page)
    _shot(page, tmp_path, "sensitivity")

    page.get_by_test_id("stSidebarNavItems").get_by_role(
        "link", name="Report"
    ).click()  # in-app navigation keeps the session's sweep
    page.wait_for_url(f"{server}/report")
    page.get_by_role("button", name="Build report").click()
    page.get_by_role("button", name="Download HTML").wait_for()
    frame = page.frame_locator("iframe").first
    frame.locator(CHART).first.wait_for(timeout=LOAD_MS)  # the report draws its charts, offline
    _no_errors(page)
    _shot(page, tmp_path, "report")


def test_rankings(server, page, tmp_path):
    _open(page, server, "rankings")
    page.get_by_label("Calibration samples").fill("128")
    page.get_by_label("Oracle samples").fill("64")
    page.get_by_role("button", name="Rank channels").click()
    assert _charts(page, 3) >= 3
    _no_errors(page)
    _shot(page, tmp_path, "rankings")


def test_compress_apply_shows_accuracy_and_latency(server, page, tmp_path):
    _open(page, server, "compress")
    page.get_by_role("button", name="Set every layer").click()
    # the preset's rerun has reached the sliders (on a busy machine it may start after any fixed wait)
    page.wait_for_function(FIRST_RATIO_IS, arg="0.25", timeout=LOAD_MS)
    _charts(page, 0)  # ...and has finished
    page.get_by_role("button", name="Apply").click()
    assert _charts(page) >= 1  # the accuracy-vs-latency scatter
    metrics = page.locator('[data-testid="stMetric"]').all_inner_texts()
    accuracy = next(m for m in metrics if m.startswith("Accuracy"))
    latency = next(m for m in metrics if m.startswith("Latency"))
    assert "%" in accuracy and "points" in accuracy
    assert " ms" in latency and "speedup" in latency
    _no_errors(page)
    _shot(page, tmp_path, "compress")
