"""Local or shared serving (analysis.app_support.policy) for the pages: the mode the operator set, what a spec may
name in that mode, and each session's private upload folder.

Not a page (st.navigation lists the pages explicitly); `pages._shared` re-exports every name here.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from typing import Any

import streamlit as st

from analysis import WorkbenchError
from analysis.app_support import (
    ServeMode,
    UploadStore,
    WorkbenchSpec,
    check_data_spec,
    check_model_spec,
    parse_mode,
    purge_older_than,
    serve_mode,
    strip_paths,
)

UPLOAD_MAX_AGE_S = (
    24 * 3600
)  # uploads of sessions that ended without closing (a killed server) go after a day


def mode() -> ServeMode:
    """The serving mode the operator set on the server: `WORKBENCH_MODE`, else `mode` in st.secrets.
    Never anything the browser sends."""
    env = serve_mode()
    if env is ServeMode.SHARED:
        return env
    try:
        if st.secrets.load_if_toml_exists():
            return parse_mode(str(st.secrets.get("mode", "")))
    except WorkbenchError:
        raise
    except Exception:  # an unreadable secrets file: the environment's setting stands
        pass
    return env


def shared() -> bool:
    return mode() is ServeMode.SHARED


def shown_spec(text: str) -> str:
    """A model or data spec as the page may show it: a shared server cuts server paths to their last part
    (an upload's content hash)."""
    return strip_paths(text) if shared() else text


class _SessionUploads:
    """Holds a session's UploadStore; the store's folder is removed when Streamlit drops the session state
    (the session ended) -- Streamlit has no session-end hook, so a weakref finalizer does it."""

    def __init__(self) -> None:
        self.store = UploadStore()
        self.paths: dict[str, str] = {}  # uploaded file id -> stored path
        weakref.finalize(self, self.store.close)


_last_purge = [0.0]


def purge_stale_uploads() -> None:
    """Remove upload folders of sessions left behind (a server that stopped without closing them); at most
    every 10 minutes per server process (app.py calls it on each run)."""
    now = time.time()
    if now - _last_purge[0] > 600:
        _last_purge[0] = now
        with contextlib.suppress(OSError):
            purge_older_than(UPLOAD_MAX_AGE_S)


def uploads() -> UploadStore:
    """This session's private upload folder (0700, content-hashed 0600 files, size limit)."""
    purge_stale_uploads()
    holder = st.session_state.get("_uploads_store")
    if not isinstance(holder, _SessionUploads) or not holder.store.dir.is_dir():
        holder = _SessionUploads()
        st.session_state["_uploads_store"] = holder
    return holder.store


def stored(upload: Any) -> str | None:
    """The path of an uploaded file in this session's store (saved once per upload; its content hash is
    checked again on every reuse). A bad name or an oversized file raises WorkbenchError."""
    if upload is None:
        return None
    store = uploads()
    holder: _SessionUploads = st.session_state["_uploads_store"]
    path = holder.paths.get(upload.file_id)
    if path is None or not store.verify(path):
        path = str(store.save(upload.name, upload.getvalue()))
        holder.paths[upload.file_id] = path
    return path


def check_spec(spec: WorkbenchSpec) -> None:
    """WorkbenchError if the serving mode does not allow what `spec` names (local mode allows all)."""
    current = mode()
    if current is ServeMode.LOCAL:
        return
    folder = uploads().dir
    check_model_spec(spec.model, current, spec.weights, spec.trust_pickle, upload_dir=folder)
    check_data_spec(spec.data, current, upload_dir=folder)
    if spec.ray_address:
        raise WorkbenchError("this server is shared: it cannot connect to a Ray cluster named by a user")
    if ":" in (spec.metric or ""):  # a module:callable metric imports and runs code
        raise WorkbenchError("this server is shared: choose a metric from the list (no module:callable)")
