"""Serving the app for browser tests: a fresh `streamlit run app.py` per fixture, and Chromium through Playwright."""

from __future__ import annotations

import contextlib
import io
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


# Opt-in: with WORKBENCH_DOCS_SHOTS set to a folder (`make screenshots` sets docs/img), the browser tests also
# save the screenshots they take there, for the documentation's page-by-page guide of the app.
DOCS_SHOTS_ENV = "WORKBENCH_DOCS_SHOTS"
DOCS_SHOT_WIDTH = 1000  # px: the site's content column, and a few hundred kB a picture


def docs_shot(page, name: str) -> Path | None:
    """Save `page` as `<name>.png` in $WORKBENCH_DOCS_SHOTS (when set): the whole page, the empty space
    below the main column's content cut off, scaled to the docs' width and reduced to 256 colours."""
    folder = os.environ.get(DOCS_SHOTS_ENV)
    if not folder:
        return None
    from PIL import Image, ImageChops

    image = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    background = Image.new("RGB", image.size, image.getpixel((image.width - 1, image.height - 1)))
    # Where the content ends, judged right of the sidebar (whose own background runs to the bottom)
    box = ImageChops.difference(image, background).crop((image.width // 4, 0, *image.size)).getbbox()
    if box:
        image = image.crop((0, 0, image.width, min(image.height, box[3] + 24)))
    image.thumbnail((DOCS_SHOT_WIDTH, 4 * DOCS_SHOT_WIDTH))
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=256).save(path, optimize=True)
    return path


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
PAGE_TITLES = ["Home", "Overview", "Sensitivity", "Weights", "Rankings", "Compress", "Report", "History"]

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


def nav_to(page, title: str) -> None:
    """Click `title` in the sidebar navigation (the session, and its sidebar values, stay)."""
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name=title).click()


def wait_title(page, title: str, timeout_ms: int = LOAD_MS) -> None:
    page.locator('[data-testid="stMain"] h1', has_text=title).first.wait_for(timeout=timeout_ms)
    wait_idle(page, timeout_ms)


def concurrent_sessions(
    browser, url: str, batch_sizes: list[int], rounds: int = 1, shots: Path | None = None
) -> list[dict]:
    """One browser context per batch size, all at once: set the batch size on Home, then visit every page
    through the navigation, each step started in every context before any is waited for. Returns, per
    session, its batch size, the errors seen and the metrics of each page (title -> {label: value})."""
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1600}) for _ in batch_sizes]
    pages = [c.new_page() for c in contexts]
    seen = [{"batch_size": b, "errors": [], "metrics": {}} for b in batch_sizes]
    try:
        for page in pages:
            page.set_default_timeout(LOAD_MS)
            page.goto(f"{url}/")
        for page in pages:
            wait_title(page, "Compression workbench")
        for page, b in zip(pages, batch_sizes, strict=True):
            box = page.get_by_label("Batch size")
            box.fill(str(b))
            box.press("Enter")
        for page, b in zip(pages, batch_sizes, strict=True):
            page.get_by_text(f"a batch of {b} under inference mode").wait_for(timeout=LOAD_MS)
            wait_idle(page)
        for _ in range(rounds):
            for title in PAGE_TITLES:
                if title != "Home" or _ > 0:
                    for page in pages:
                        nav_to(page, title)
                for page, record in zip(pages, seen, strict=True):
                    wait_title(page, "Compression workbench" if title == "Home" else title)
                    if title in ("Home", "Overview"):  # their numbers are drawn (not a rerun's gap)
                        page.get_by_text("MACs per sample", exact=True).first.wait_for(timeout=LOAD_MS)
                        wait_idle(page)
                    record["errors"] += [f"{title}: {e}" for e in errors(page)]
                    record["metrics"].setdefault(title, []).append(metrics(page))
    except Exception:
        if shots is not None:  # what each session showed when it went wrong
            for i, page in enumerate(pages):
                page.screenshot(path=str(shots / f"session-{i}.png"), full_page=True)
        raise
    finally:
        for c in contexts:
            c.close()
    return seen
