"""Every entry point goes through app.py: on a FRESH server, a bookmarked non-root path opened first gets the
sidebar and the real navigation (Streamlit's automatic `pages/` mode would list every file, `_shared` too).
Also, in a real browser: an error naming `Linear.__init__()` keeps its underscores (text, not Markdown)."""

from __future__ import annotations

import pytest
from browsertools import LOAD_MS, PAGE_TITLES, chromium, errors, nav_entries, serve, wait_idle

pytestmark = pytest.mark.browser


def _check_routed(page, title: str) -> None:
    wait_idle(page)
    assert page.locator('[data-testid="stMain"] h1').first.inner_text().strip() == title
    sidebar = page.get_by_test_id("stSidebar")
    assert sidebar.get_by_text("Model", exact=True).count() >= 1  # the app's sidebar, drawn by app.py
    assert sidebar.get_by_text("Timing", exact=True).count() == 1
    entries = nav_entries(page)
    assert entries == PAGE_TITLES, entries
    assert not [e for e in entries if "shared" in e.lower() or e in ("app", "home", "overview")]
    assert page.locator('[data-testid="stMain"] h1').count() == 1  # the page ran once, not twice
    assert not errors(page)


# overview calls `_routing.routed()` first; weights relies on the same guard inside `_shared.workbench()`.
@pytest.mark.parametrize(("path", "title"), [("overview", "Overview"), ("weights", "Weights")])
def test_bookmarked_page_on_a_fresh_server_goes_through_the_app(tmp_path, path, title):
    with serve(tmp_path / "streamlit.log") as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.set_default_timeout(LOAD_MS)
        page.goto(f"{url}/{path}")  # the very first request this server gets
        _check_routed(page, title)
        if path != "overview":
            return
        # The same server, a second tab: an error message keeps Python's underscores.
        other = browser.new_page(viewport={"width": 1400, "height": 1600})
        other.set_default_timeout(LOAD_MS)
        other.goto(f"{url}/")
        wait_idle(other)
        other.get_by_test_id("stSidebar").get_by_text("Python callable").click()
        wait_idle(other)
        box = other.get_by_role("textbox", name="Callable")
        box.fill("torch.nn:Linear")  # Linear() without its sizes
        box.press("Enter")
        other.locator('[data-testid="stAlertContentError"]').first.wait_for(timeout=LOAD_MS)
        text = " ".join(errors(other))
        assert "Linear.__init__()" in text, text
