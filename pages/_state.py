"""Form state you keep: widget values that survive page switches and failed runs, and go when the model
changes.

Not a page (st.navigation lists the pages explicitly); `pages._shared` re-exports every name here.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

# Streamlit drops a widget's value from st.session_state after a run in which the widget was not drawn
# (another page, or a page that stopped early on a bad spec). `keep(*keys)` copies each widget key to a
# shadow key on every run and puts the value back before the widget is drawn again. Call it before drawing
# the widgets; values go when the model changes (`forget_on_model_change`).

_SHADOW = "_kept_"


def keep(*keys: str) -> None:
    """Keep the values of widgets `keys` across pages and failed runs (call before drawing them).

    The keys are remembered: app.py calls `keep_all()` on every run, whichever page it shows, so a value
    changed just before leaving a page is kept too."""
    registry = st.session_state.setdefault("_kept_keys", [])
    for key in keys:
        if key not in registry:
            registry.append(key)
        shadow = _SHADOW + key
        if key in st.session_state:
            st.session_state[shadow] = st.session_state[key]
        elif shadow in st.session_state:
            st.session_state[key] = st.session_state[shadow]


def keep_all() -> None:
    """`keep` every key any page has asked to keep in this session (app.py, before the page runs)."""
    keep(*st.session_state.get("_kept_keys", []))


def persist(key: str) -> str:
    """`keep(key)` and return `key`, for `st.slider(..., key=persist("ratio"))`."""
    keep(key)
    return key


def forget_on_model_change(model_key: str, keys_prefix: tuple[str, ...] = ()) -> None:
    """Drop kept page values (not the sidebar's) when a different model has loaded (`workbench()` calls
    this after each successful load, so a bad spec on the way keeps them); `keys_prefix` limits which."""
    last = st.session_state.get("_kept_model")
    if last is not None and last != model_key:
        for shadow in [k for k in st.session_state if isinstance(k, str) and k.startswith(_SHADOW)]:
            key = shadow.removeprefix(_SHADOW)
            if key in SIDEBAR_KEYS or (keys_prefix and not key.startswith(keys_prefix)):
                continue
            del st.session_state[shadow]
            st.session_state.pop(key, None)
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


def sticky(key: str, default: Any) -> None:
    """`keep(key)` with a first value: the widget keeps its value across page switches (create it without
    a default value)."""
    keep(key)
    st.session_state.setdefault(key, default)
