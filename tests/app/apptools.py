"""AppTest helpers shared by the page tests: the app as a user opens it, one page at a time."""

from __future__ import annotations

import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "app.py"
TIMEOUT = 120  # seconds per script run: generous, the machine may be busy


def open_page(page: str | None = None) -> AppTest:
    """A fresh session of the app, switched to `pages/<page>.py` (Home when None), after one run."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    """No uncaught exception and no error message in the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def charts(at: AppTest) -> list:
    return list(at.get("plotly_chart"))


def submit(at: AppTest, label: str) -> AppTest:
    """Press the form submit button labelled `label` and rerun."""
    buttons = [b for b in at.get("form_submit_button") if b.label == label]
    assert buttons, f"no submit button {label!r}"
    buttons[0].click()
    return at.run()


def click(at: AppTest, label: str) -> AppTest:
    buttons = [b for b in at.button if b.label == label]
    assert buttons, f"no button {label!r}"
    buttons[0].click()
    return at.run()


def shown(markdown: str) -> str:
    """The text a user reads for an error/warning body the app escaped for Markdown (`_shared.plain`)."""
    return re.sub(r"\\(.)", r"\1", markdown)
