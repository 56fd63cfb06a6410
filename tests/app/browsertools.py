"""Serving the app for browser tests: a fresh `streamlit run app.py` per fixture, and Chromium through Playwright."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(log_path: Path, env: dict[str, str] | None = None, start_s: float = 90) -> Iterator[str]:
    """A fresh server of the app on a free port; yields its URL and stops it (its process group) afterwards."""
    if not os.path.exists(CHROMIUM):
        # A failure, not a skip: `make test` installs it, and a skipped browser test would hide a broken page.
        raise RuntimeError(f"{CHROMIUM} is not installed: run `make test` or `apt-get install -y chromium`")
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true"]
    command += ["--server.port", str(port), "--browser.gatherUsageStats", "false"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_s
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start; see {log_path}")
                time.sleep(0.5)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the group we started: streamlit and nothing else
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def nav_entries(page) -> list[str]:
    """The page names in the sidebar's navigation (without their icons' ligature text)."""
    links = page.get_by_test_id("stSidebarNavItems").get_by_role("link").all_inner_texts()
    return [t.strip().splitlines()[-1].strip() for t in links]


LOAD_MS = 120_000  # first visits compute (model card, ONNX export) on a possibly busy 2-core machine
PAGE_TITLES = ["Home", "Overview", "Sensitivity", "Weights", "Rankings", "Compress", "Report"]

# The script run has finished (no running indicator) and the page's title is drawn (not a stale one).
IDLE = """() => {
  if (!document.querySelector('[data-testid="stMain"] h1')) return false;
  if (document.querySelector('[data-testid^="stStatusWidgetRunning"]')) return false;
  const live = [...document.querySelectorAll('[data-testid="stElementContainer"]')]
    .filter((e) => e.getAttribute('data-stale') !== 'true');
  return live.length > 0;
}"""


def wait_idle(page, timeout_ms: int = LOAD_MS) -> None:
    page.wait_for_function(IDLE, timeout=timeout_ms)
    page.wait_for_timeout(300)
    page.wait_for_function(IDLE, timeout=timeout_ms)  # a rerun right after the first (a widget's default)


def errors(page) -> list[str]:
    """Error boxes and exceptions shown in the page."""
    found = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
    found += page.locator('[data-testid="stException"]').all_inner_texts()
    return found


def metrics(page) -> dict[str, str]:
    """Metric label -> value as shown."""
    out = {}
    for box in page.locator('[data-testid="stMetric"]').all():
        label = box.locator('[data-testid="stMetricLabel"]').inner_text().strip()
        out[label] = box.locator('[data-testid="stMetricValue"]').inner_text().strip()
    return out
