"""The History page in a real browser: compressions recorded by the command line (`python -m analysis
compress`, which records by default) appear in a fresh server's /history, and choosing two of them shows the
comparison table and the plans diffed layer by layer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from browsertools import ARGS, CHROMIUM, LOAD_MS, ROOT, docs_shot, serve

pytestmark = pytest.mark.browser
MODEL = "zoo:digits-cnn"


def _cli_compress(data_dir, tmp_path, prune: float) -> int:
    """One `compress` run through the CLI, recorded in `data_dir`'s store; its run id."""
    plan = tmp_path / f"plan-{prune}.json"
    plan.write_text(json.dumps({"default": {"prune": prune, "criterion": "l1"}}))
    out = tmp_path / f"result-{prune}.json"
    command = [sys.executable, "-m", "analysis", "compress", "--model", MODEL, "--plan", str(plan)]
    command += ["--rounds", "2", "--json", str(out)]
    env = os.environ | {"WORKBENCH_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    return int(json.loads(out.read_text())["run_id"])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is not installed: run `make test` or `apt-get install -y chromium`")
    data = tmp_path_factory.mktemp("data")
    work = tmp_path_factory.mktemp("cli")
    ids = [_cli_compress(data, work, prune) for prune in (0.5, 0.25)]
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    with serve(log, env={"WORKBENCH_DATA_DIR": str(data)}) as url:
        yield url, ids


def test_history_lists_recorded_runs_and_compares_two(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, ids = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2600})
        page.set_default_timeout(LOAD_MS)
        page.goto(f"{url}/history")
        page.get_by_role("heading", name="History").wait_for()
        page.get_by_text("Runs (2 of 2)").wait_for()
        page.locator(".js-plotly-plot").first.wait_for()  # the scatter of every recorded plan
        box = page.get_by_role("combobox", name="Compression runs (two or more)")
        for run_id in ids:
            box.click()
            page.get_by_role("option", name=re.compile(rf"^#{run_id} compression")).click()  # named, not bare
        page.get_by_text("Plans, layer by layer").wait_for()
        tables = page.locator('[data-testid="stDataFrame"]')
        assert tables.count() >= 3  # runs, comparison, plan diff
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0
        page.screenshot(path=str(tmp_path / "history.png"), full_page=True)
        docs_shot(page, "history")  # only with WORKBENCH_DOCS_SHOTS set (`make screenshots`)
        browser.close()
