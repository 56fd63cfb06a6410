"""How fast the app's pages render in a real browser, on the default model.

Serves `streamlit run app.py`, drives Debian's Chromium through Playwright, and prints for every page the time
to its charts on first use (which computes) and once its analysis is cached (navigating back within the same
session), plus the first structured sensitivity sweep with default settings and how its progress bar moved.

    python benchmarks/app_timings.py            # targets: cached pages < 3 s, first sweep < 30 s
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARGS += ["--disable-component-update", "--disable-sync"]
CHART = ".js-plotly-plot"
TIMEOUT_MS = 300_000


def _serve() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true"]
    command += ["--server.port", str(port)]
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    raise SystemExit("streamlit did not start")


READY = """([title, n]) => {
  const h1 = document.querySelector('[data-testid="stMain"] h1');
  if (!h1 || (title && !h1.innerText.startsWith(title))) return false;
  if (document.querySelector('[data-testid^="stStatusWidgetRunning"]')) return false;
  const live = [...document.querySelectorAll('[data-testid="stElementContainer"]')]
    .filter((e) => e.getAttribute('data-stale') !== 'true');
  return live.reduce((k, e) => k + e.querySelectorAll('.js-plotly-plot').length, 0) >= n;
}"""
TITLES = {"Home": "Compression workbench"}


def _charts(page, count: int, title: str = "") -> None:
    """Wait until the page titled `title` finished its run and shows `count` live (not stale) charts."""
    page.wait_for_function(READY, arg=[TITLES.get(title, title), count], timeout=TIMEOUT_MS)


def _timed(action, page, count: int, title: str = "") -> float:
    print(f"  waiting for {title or 'the page'} ({count} charts)", file=sys.stderr, flush=True)
    start = time.perf_counter()
    action()
    _charts(page, count, title)
    return time.perf_counter() - start


def _link(page, title: str):
    return page.get_by_test_id("stSidebarNavItems").get_by_role("link", name=title)


def _nav(page, title: str, count: int) -> float:
    """Seconds from clicking the sidebar link (same session, results kept) to the page's charts drawn."""
    _link(page, "Home").click()
    _charts(page, 1, "Home")
    return _timed(lambda: _link(page, title).click(), page, count, title)


def main() -> None:
    proc, url = _serve()
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            first = _timed(lambda: page.goto(url), page, 1, "Home")
            rows.append(("Home", first, _nav(page, "Home", 1)))
            for title, count in (("Overview", 3), ("Weights", 2)):
                rows.append((title, _timed(lambda t=title: _link(page, t).click(), page, count, title),
                             _nav(page, title, count)))  # fmt: skip

            _link(page, "Sensitivity").click()
            page.get_by_role("button", name="Run sweep").wait_for()
            seen: list[float] = []
            start = time.perf_counter()
            page.get_by_role("button", name="Run sweep").click()
            while page.locator(CHART).count() < 2:
                bar = page.locator('[data-testid="stProgress"] [role="progressbar"]')
                if bar.count():
                    value = bar.first.get_attribute("aria-valuenow")
                    if value is not None and (not seen or float(value) != seen[-1]):
                        seen.append(float(value))
                page.wait_for_timeout(100)
            sweep = time.perf_counter() - start
            rows.append(("Sensitivity", sweep, _nav(page, "Sensitivity", 2)))

            _link(page, "Rankings").click()
            page.get_by_label("Calibration samples").fill("256")
            page.get_by_label("Oracle samples").fill("128")
            click = page.get_by_role("button", name="Rank channels").click
            rows.append(("Rankings (256/128 samples)", _timed(click, page, 3), _nav(page, "Rankings", 3)))

            _link(page, "Compress").click()
            page.get_by_role("button", name="Set every layer").click()
            page.wait_for_timeout(1000)
            click = page.get_by_role("button", name="Apply").click
            rows.append(("Compress (uniform 0.25)", _timed(click, page, 1), _nav(page, "Compress", 1)))

            _link(page, "Report").click()
            start = time.perf_counter()
            page.get_by_role("button", name="Build report").click()
            page.frame_locator("iframe").first.locator(CHART).first.wait_for(timeout=TIMEOUT_MS)
            build = time.perf_counter() - start
            _link(page, "Home").click()
            _charts(page, 1, "Home")
            start = time.perf_counter()
            _link(page, "Report").click()
            page.frame_locator("iframe").first.locator(CHART).first.wait_for(timeout=TIMEOUT_MS)
            rows.append(("Report", build, time.perf_counter() - start))
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

    print(f"{'page':28} {'first use (s)':>14} {'cached (s)':>11}")
    for name, cold, warm in rows:
        print(f"{name:28} {cold:14.2f} {warm:11.2f}")
    print(f"\nfirst structured sweep, default ratios, all groups: {sweep:.1f} s (target < 30 s)")
    print(f"progress bar values seen while it ran: {len(seen)} distinct: {[round(v) for v in seen]}")
    print(f"slowest cached page: {max(w for _, _, w in rows):.2f} s (target < 3 s); {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
