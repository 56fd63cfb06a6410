"""Form state you keep: widget values that survive page switches, reruns and failed runs, and go when the
model changes.

Not a page (st.navigation lists the pages explicitly); `pages._shared` re-exports every name here.

Streamlit drops a widget's value after a run that did not draw it (another page, or a page that stopped
early on a bad spec). Its own remedy, which every widget of the app uses, is `persist_state="session"`
(Streamlit's "Working with widgets in multipage apps", Option 2): the value is kept for the session and
comes back when the widget is drawn again. A page makes each widget with `**kept(key, first_value)`, which
is `key=key, persist_state="session"` plus the first value and a note that the value belongs to the page
(forgotten when the model changes); the sidebar passes `persist_state=KEEP` itself. A test checks that
every keyed widget of app.py and pages/ has it.

An earlier version copied each widget's value to a shadow key on every run and put it back; it lost the
user's value: on the first run after a page switch, reading the widget's key returns the value written
before the widget was first drawn (the page's `setdefault`), so the shadow took the first value back and
the page came back at its defaults while the preview, computed from other state, showed the old plan.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

KEEP = "session"  # persist_state for every widget: kept across pages for the whole session
_PAGE_KEYS = "_page_keys"  # the keys `kept` gave out: page values, forgotten with the model
_NO_DEFAULT = object()


def kept(key: str, default: Any = _NO_DEFAULT) -> dict[str, Any]:
    """The widget keyword arguments that keep its value across pages and reruns (`key`,
    `persist_state`), after giving `key` its first value `default` (create the widget without `value=`)."""
    st.session_state.setdefault(_PAGE_KEYS, set()).add(key)
    if default is not _NO_DEFAULT:
        st.session_state.setdefault(key, default)
    return {"key": key, "persist_state": KEEP}


def sticky(key: str, default: Any) -> None:
    """`kept(key, default)` for a widget drawn later (a form's fields, given their first values first)."""
    kept(key, default)


def forget_on_model_change(model_key: str, keys_prefix: tuple[str, ...] = ()) -> None:
    """Drop the page values `kept` gave out (not the sidebar's) when a different model has loaded
    (`workbench()` calls this after each successful load, so a bad spec on the way keeps them);
    `keys_prefix` limits which."""
    last = st.session_state.get("_kept_model")
    if last is not None and last != model_key:
        keys = st.session_state.get(_PAGE_KEYS, set())
        for key in [k for k in keys if not keys_prefix or k.startswith(keys_prefix)]:
            if key not in SIDEBAR_KEYS:
                st.session_state.pop(key, None)
                keys.discard(key)
    st.session_state["_kept_model"] = model_key


SIDEBAR_KEYS = (
    "model_source",
    "zoo_name",
    "callable_spec",
    "tv_name",
    "arch_name",
    "trust_pickle",
    "input_shape",
    "data_source",
    "data_spec",
    "threads",
    "batch_size",
    "runtime",
    "device",
    "ray_address",
    "metric",
    "metric_callable",
)
