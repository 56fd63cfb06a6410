"""Every entry point goes through app.py: `routed()`, the first call of every page, and `routing()`, inside
which app.py runs the chosen page.

Not a page (st.navigation lists the pages explicitly); `pages._shared` re-exports every name here.
"""

from __future__ import annotations

import contextlib
import runpy
import threading
from collections.abc import Iterator
from pathlib import Path

import streamlit as st

APP_PATH = Path(__file__).resolve().parents[1] / "app.py"
_ROUTER = threading.local()  # per script-run thread: whether app.py's router is running this page

# On a fresh server, the first visit to a non-root path (a bookmark, a tab left open across a restart) runs
# the page file directly: Streamlit sees the `pages/` folder and uses its automatic multipage mode until
# `st.navigation` has run once. `routed()`, the first call of every page, then runs app.py (its router
# draws the sidebar, sends the real navigation and runs this page inside it) and stops the direct run.


@contextlib.contextmanager
def routing() -> Iterator[None]:
    """app.py runs the chosen page inside this."""
    before = getattr(_ROUTER, "active", False)
    _ROUTER.active = True
    try:
        yield
    finally:
        _ROUTER.active = before


def routed() -> None:
    """Call first in every page: when the page was run without app.py, run app.py instead and stop.

    `workbench()` calls it too, so a page that draws only its title before `workbench()` is covered: the
    router's run starts again at the top of the page (its elements replace the title already drawn)."""
    if getattr(_ROUTER, "active", False):
        return
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is not None:
        ctx.cursors.clear()  # write from the top again: the router's elements replace this run's so far
    runpy.run_path(str(APP_PATH), run_name="__main__")
    st.stop()
