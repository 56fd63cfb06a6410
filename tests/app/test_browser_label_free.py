"""The app in Chromium with `zoo:digits-autoencoder` picked in the sidebar: a model with an image out and no
classes. Every page opens without an error and names the metric (PSNR, against the original model); the
Sensitivity page sweeps in PSNR and the Compress page applies a plan and shows the PSNR before and after."""

from __future__ import annotations

import pytest
from browsertools import LOAD_MS, PAGE_TITLES, chromium, errors, nav_to, serve, wait_idle, wait_title

pytestmark = pytest.mark.browser

NAMED = "Scores: psnr (PSNR (dB), higher is better), against the original model's outputs."


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("store")
    with (
        serve(
            tmp_path_factory.mktemp("server") / "streamlit.log", env={"WORKBENCH_DATA_DIR": str(data_dir)}
        ) as url,
        chromium() as browser,
    ):
        context = browser.new_context(viewport={"width": 1400, "height": 2000})
        page = context.new_page()
        page.set_default_timeout(LOAD_MS)
        page.goto(f"{url}/")
        wait_title(page, "Compression workbench")
        box = page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").filter(has_text="Zoo model")
        box.click()
        page.get_by_role("option", name="digits-autoencoder").click()
        page.get_by_text(NAMED).first.wait_for(timeout=LOAD_MS)
        wait_idle(page)
        yield page
        context.close()


def _check(page, shots, name: str) -> None:
    assert not errors(page), errors(page)
    # the sidebar names the metric on every page (drawn a moment after the title on a busy machine)
    page.get_by_text(NAMED).first.wait_for(timeout=LOAD_MS)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def test_every_page_names_psnr(page, tmp_path):
    page.locator('[data-testid="stMetric"]', has_text="PSNR (dB)").first.wait_for(timeout=LOAD_MS)
    wait_idle(page)
    home = page.locator('[data-testid="stMetric"]').all_inner_texts()
    assert any(m.startswith("PSNR (dB)") and "100.00 dB" in m for m in home), home
    _check(page, tmp_path, "home")
    for title in PAGE_TITLES[1:]:
        nav_to(page, title)
        wait_title(page, title)
        _check(page, tmp_path, title.lower())


def test_sensitivity_sweeps_in_psnr_then_compress(page, tmp_path):
    nav_to(page, "Sensitivity")
    wait_title(page, "Sensitivity")
    page.get_by_label("Ratios (pruning)").fill("0.25, 0.5")
    page.get_by_role("button", name="Run sweep").click()
    page.get_by_text("metric psnr (PSNR (dB), higher is better)").first.wait_for(timeout=LOAD_MS)
    wait_idle(page)
    page.locator(".js-plotly-plot").first.wait_for()
    assert page.locator("text=PSNR (dB), higher is better").count() >= 1  # the curves' axis
    _check(page, tmp_path, "sensitivity-swept")

    nav_to(page, "Compress")
    wait_title(page, "Compress")
    page.get_by_role("button", name="Set every layer").click()
    wait_idle(page)
    page.get_by_role("button", name="Apply").click()
    page.locator(".js-plotly-plot").first.wait_for(timeout=LOAD_MS)
    wait_idle(page)
    shown = page.locator('[data-testid="stMetric"]').all_inner_texts()
    psnr = [m for m in shown if m.startswith("PSNR (dB)")]
    assert psnr and " dB" in psnr[0], shown
    assert any(m.startswith("Predicted psnr drop") for m in shown), shown
    _check(page, tmp_path, "compress-applied")
