"""History on a shared server, in a real browser (issue 20): a fresh Chromium session's /history shows no
server path, no run it did not make and no Delete button, although the store holds a run whose data spec
names a server path (recorded by the command line on the server)."""

from __future__ import annotations

import os

import pytest
from browsertools import ARGS, CHROMIUM, LOAD_MS, serve

from analysis import ResultsStore

pytestmark = pytest.mark.browser
SECRET = "/srv/secret-data/train.npz"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is not installed: run `make test` or `apt-get install -y chromium`")
    data = tmp_path_factory.mktemp("data")
    store = ResultsStore(data / "results.sqlite3")
    run_id = store.record("compression", "zoo:digits-cnn", f"tensors:{SECRET}", {"plan": {}},
                          {"before": {"accuracy": 0.9}, "after": {"accuracy": 0.8}, "plan": {}},
                          environment={"platform": "Linux-secret-host", "torch": "2.13"})  # fmt: skip
    env = {"WORKBENCH_DATA_DIR": str(data), "WORKBENCH_MODE": "shared",
           "WORKBENCH_UPLOAD_DIR": str(tmp_path_factory.mktemp("uploads"))}  # fmt: skip
    with serve(tmp_path_factory.mktemp("server") / "streamlit.log", env=env) as url:
        yield url, data, run_id


def test_fresh_browser_sees_no_path_no_foreign_run_no_delete(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, data, run_id = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(LOAD_MS)
        page.goto(f"{url}/history")
        page.get_by_role("heading", name="History").wait_for()
        page.get_by_text("you see the runs you made in this browser session").wait_for()
        page.get_by_text("All models").click()
        page.get_by_text("No recorded runs yet").wait_for()
        text = page.locator("body").inner_text()
        page.screenshot(path=str(tmp_path / "history-shared.png"), full_page=True)
        browser.close()
    assert str(data) not in text and "results.sqlite3" not in text
    assert "secret" not in text.lower() and f"#{run_id}" not in text
    assert "Delete" not in text
    assert "Traceback" not in text
