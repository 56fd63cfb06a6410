"""The compression workbench: `streamlit run app.py`.

The router and the shared sidebar (model, data, timing); every page is a file in pages/.
"""

from __future__ import annotations

import os

import streamlit as st
import torch

from analysis import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, ZOO, WorkbenchSpec, save_upload
from pages import _shared

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", url_path="", default=True),
    st.Page("pages/overview.py", title="Overview", icon=":material/bar_chart:", url_path="overview"),
    st.Page("pages/sensitivity.py", title="Sensitivity", icon=":material/tune:", url_path="sensitivity"),
    st.Page("pages/weights.py", title="Weights", icon=":material/stacked_bar_chart:", url_path="weights"),
    st.Page("pages/rankings.py", title="Rankings", icon=":material/leaderboard:", url_path="rankings"),
    st.Page("pages/compress.py", title="Compress", icon=":material/compress:", url_path="compress"),
    st.Page("pages/report.py", title="Report", icon=":material/description:", url_path="report"),
    st.Page("pages/history.py", title="History", icon=":material/history:", url_path="history"),
]
SOURCES = ["Zoo", "Python callable", "torchvision", "Pickled module"]


def _stored(upload) -> str | None:
    """Path of an uploaded file, saved once by content (the same bytes always give the same path)."""
    if upload is None:
        return None
    paths = st.session_state.setdefault("_uploads", {})
    if upload.file_id not in paths:
        paths[upload.file_id] = str(save_upload(upload.name, upload.getvalue()))
    return paths[upload.file_id]


def sidebar() -> WorkbenchSpec:
    """The model, data and timing the pages work on, as a hashable spec."""
    sb = st.sidebar
    sb.header("Model")
    source = sb.radio("Source", SOURCES, key="model_source", horizontal=True)
    weights, trust = None, False
    if source == "Zoo":
        names = sorted(ZOO)
        default = names.index(DEFAULT_MODEL.removeprefix("zoo:"))
        model = "zoo:" + sb.selectbox("Zoo model", names, index=default, key="zoo_name")
    elif source == "Python callable":
        model = sb.text_input("Callable", placeholder="mypackage.models:build", key="callable_spec").strip()
        if not model:
            sb.caption(
                f"Give `<module>:<callable>` (or `file.py:callable`); until then {DEFAULT_MODEL} is used."
            )
        model = model or DEFAULT_MODEL
    elif source == "torchvision":
        model = "torchvision:" + (
            sb.text_input("Architecture", "resnet18", key="tv_name").strip() or "resnet18"
        )
    else:
        upload = sb.file_uploader("Whole pickled model (.pt, .pth)", type=["pt", "pth"], key="pickle_file")
        trust = sb.checkbox(
            "I trust this file", key="trust_pickle", help="Unpickling runs code from the file."
        )
        if upload is None:
            sb.caption(f"Upload a file; until then {DEFAULT_MODEL} is used.")
        model = _stored(upload) or DEFAULT_MODEL
    if source != "Pickled module":
        file = sb.file_uploader(
            "Weights: state dict (.safetensors, .pt, .pth)",
            type=["safetensors", "pt", "pth"],
            key="weights_file",
        )
        weights = _stored(file)
    input_shape = sb.text_input("Input shape (optional)", placeholder="1,3,224,224", key="input_shape")

    sb.header("Data")
    data_source = sb.radio("Data", ["digits", "Upload tensors", "Path"], key="data_source", horizontal=True)
    data = "digits"
    if data_source == "Upload tensors":
        file = sb.file_uploader(
            "x, y tensors (.pt, .safetensors, .npz)", type=["pt", "safetensors", "npz"], key="data_file"
        )
        data = f"tensors:{_stored(file)}" if file is not None else "digits"
    elif data_source == "Path":
        data = sb.text_input("Data spec", placeholder="tensors:<file> or imagefolder:<dir>", key="data_spec")
        data = data.strip() or "digits"

    sb.header("Timing")
    cores = os.cpu_count() or 1
    threads = sb.number_input("Threads", 1, cores, min(torch.get_num_threads(), cores), key="threads")
    batch = sb.number_input("Batch size", 1, 4096, DEFAULT_BATCH_SIZE, key="batch_size")
    return WorkbenchSpec(model, weights, trust, data, input_shape.strip(), int(batch), int(threads))


st.set_page_config(page_title="Compression workbench", page_icon=":material/compress:", layout="wide")
page = st.navigation(PAGES)
spec = sidebar()
st.session_state[_shared.SPEC_KEY] = spec
page.run()
