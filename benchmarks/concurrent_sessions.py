"""Load test of the app: several browser sessions at once (Chromium through Playwright), each with its own
batch size, visit every page of a fresh `streamlit run app.py`, `--rounds` times over; prints per session the
errors seen, Home's MACs/accuracy and latency, Overview's MACs, whether they all equal a single-session run
(MACs by hand for digits-cnn, accuracy by a plain loop), and the wall time.

    python benchmarks/concurrent_sessions.py [--sessions 6] [--rounds 2]

Exit status 1 if any session saw an error or a number that differs. The test suite runs the same driver
with 3 sessions and 1 round (tests/app/test_concurrency_browser.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "app")]

from browsertools import chromium, concurrent_sessions, serve  # noqa: E402
from test_concurrency_browser import MACS, _accuracy  # noqa: E402

BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=6, help="browser sessions at once (default 6)")
    parser.add_argument("--rounds", type=int, default=2, help="visits of every page per session (default 2)")
    args = parser.parse_args()
    if not 1 <= args.sessions <= 64 or args.rounds < 1:
        parser.error("--sessions must be 1..64 and --rounds at least 1")
    sizes = [BATCH_SIZES[i % len(BATCH_SIZES)] for i in range(args.sessions)]
    accuracy = _accuracy()
    start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(Path(tmp) / "streamlit.log") as url,
        chromium() as browser,
    ):
        sessions = concurrent_sessions(browser, url, sizes, rounds=args.rounds)
    wall = time.perf_counter() - start
    bad = 0
    for s in sessions:
        homes, overviews = s["metrics"].get("Home", []), s["metrics"].get("Overview", [])
        same = all(
            h.get("MACs per sample") == f"{MACS / 1e6:,.2f} M" and h.get("Accuracy (top-1)") == accuracy
            for h in homes
        ) and all(o.get("MACs per sample") == f"{MACS:,}" for o in overviews)
        bad += bool(s["errors"]) or not same or not homes or not overviews
        print(
            json.dumps(
                {
                    "batch_size": s["batch_size"],
                    "errors": s["errors"],
                    "equal_to_single_session": same,
                    "home_latency": [h.get("Latency (median)") for h in homes],
                    "home_accuracy": [h.get("Accuracy (top-1)") for h in homes],
                }
            )
        )
    print(f"{args.sessions} sessions x {args.rounds} rounds: {wall:.1f} s, {bad} session(s) with a problem")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
