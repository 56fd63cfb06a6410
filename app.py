"""The compression workbench: `streamlit run app.py`.

The router and the shared sidebar (model, data, timing); every page is a file in pages/ and calls
`_routing.routed()` first, so a page opened directly (a bookmark on a fresh server) still goes through here.

Local mode (the default) offers every model and data source. Shared mode (`WORKBENCH_MODE=shared` in the
server's environment, or `mode = "shared"` in .streamlit/secrets.toml; never set by the browser) offers only
what cannot run code or read server files: zoo models, operator-listed architectures
(`WORKBENCH_ARCHITECTURES`), uploaded .safetensors state dicts, the digits and uploaded tensors files.
"""

from __future__ import annotations

import os

import streamlit as st
import torch

from analysis import DEFAULT_MODEL, RUNTIMES, ZOO, WorkbenchError
from analysis.app_support import WorkbenchSpec, operator_architectures
from analysis.latency import DEFAULT_BATCH_SIZE
from analysis.metrics import METRIC_CHOICES
from pages import _routing, _serving, _shared, _state

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
LOCAL_SOURCES = ["Zoo", "Python callable", "torchvision", "Pickled module"]
LOCAL_DATA = ["digits", "Upload tensors", "Path"]
SHARED_DATA = ["digits", "Upload tensors"]
DEVICES = ["auto", "cpu", "cuda"]


def _choice(key: str, options: list[str]) -> None:
    """Drop a value of radio `key` the options do not have (a value kept from another mode, or forged)."""
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]


def _upload(sb, label: str, types: list[str], key: str) -> str | None:
    """An uploader whose file goes to this session's private store; a bad file is a message."""
    file = sb.file_uploader(label, type=types, key=key)
    if file is None:
        return None
    suffix = "." + file.name.rsplit(".", 1)[-1].lower() if "." in file.name else ""
    if suffix.lstrip(".") not in types:
        raise WorkbenchError(f"{label.split(':')[0]}: expected a {', '.join(types)} file")
    return _serving.stored(file)


def _model(sb, shared: bool) -> tuple[str, str | None, bool]:
    """The model spec, weights file and pickle trust chosen in the sidebar."""
    sb.header("Model")
    architectures = list(operator_architectures()) if shared else []
    sources = ["Zoo"] + (["Operator architecture"] if architectures else []) if shared else LOCAL_SOURCES
    _choice("model_source", sources)
    source = sb.radio("Source", sources, key="model_source", persist_state=_state.KEEP, horizontal=True)
    weights, trust = None, False
    if source == "Zoo":
        names = sorted(ZOO)
        default = names.index(DEFAULT_MODEL.removeprefix("zoo:"))
        model = "zoo:" + sb.selectbox(
            "Zoo model", names, index=default, key="zoo_name", persist_state=_state.KEEP
        )
    elif source == "Operator architecture":
        model = sb.selectbox("Architecture", architectures, key="arch_name", persist_state=_state.KEEP)
    elif source == "Python callable":
        model = sb.text_input(
            "Callable", placeholder="mypackage.models:build", key="callable_spec", persist_state=_state.KEEP
        ).strip()
        if not model:
            sb.caption(
                f"Give `<module>:<callable>` (or `file.py:callable`); until then {DEFAULT_MODEL} is used."
            )
        model = model or DEFAULT_MODEL
    elif source == "torchvision":
        model = "torchvision:" + (
            sb.text_input("Architecture", "resnet18", key="tv_name", persist_state=_state.KEEP).strip()
            or "resnet18"
        )
    else:
        trust = sb.checkbox(
            "I trust this file",
            key="trust_pickle",
            persist_state=_state.KEEP,
            help="Unpickling runs code from the file.",
        )
        path = _upload(sb, "Whole pickled model (.pt, .pth)", ["pt", "pth"], "pickle_file")
        if path is None:
            sb.caption(f"Upload a file; until then {DEFAULT_MODEL} is used.")
        model = path or DEFAULT_MODEL
    if source != "Pickled module":
        types = ["safetensors"] if shared else ["safetensors", "pt", "pth"]
        label = (
            "Weights: state dict (.safetensors)"
            if shared
            else "Weights: state dict (.safetensors, .pt, .pth)"
        )
        weights = _upload(sb, label, types, "weights_file")
    return model, weights, trust


def _data(sb, shared: bool) -> str:
    sb.header("Data")
    options = SHARED_DATA if shared else LOCAL_DATA
    _choice("data_source", options)
    data_source = sb.radio("Data", options, key="data_source", persist_state=_state.KEEP, horizontal=True)
    if data_source == "Upload tensors":
        types = ["safetensors", "npz"] if shared else ["pt", "safetensors", "npz"]
        label = f"inputs (x, or one array per input) and optional labels y (.{', .'.join(types)})"
        path = _upload(sb, label, types, "data_file")
        return f"tensors:{path}" if path else "digits"
    if data_source == "Path":
        spec = sb.text_input(
            "Data spec",
            placeholder="tensors:<file> or imagefolder:<dir>",
            key="data_spec",
            persist_state=_state.KEEP,
        )
        return spec.strip() or "digits"
    return "digits"


def _metric(sb, shared: bool) -> str:
    """How every page scores outputs (`--metric`): a registry name; locally also your own module:callable."""
    options = list(METRIC_CHOICES)
    _choice("metric", options)
    metric = sb.selectbox(
        "Metric",
        options,
        key="metric",
        persist_state=_state.KEEP,
        help="auto: accuracy where the data has labels and the model one (N, classes) output; otherwise "
        "agreement with the original model (class scores) or PSNR (any other output), so unlabelled data "
        "is enough",
    )
    if not shared:  # a callable runs code: never on a shared server
        custom = sb.text_input(
            "Custom metric (optional)",
            key="metric_callable",
            placeholder="mymetrics:score",
            persist_state=_state.KEEP,
        )
        metric = custom.strip() or metric
    return metric


def _timing(sb, shared: bool) -> tuple[int, int, str, str, str]:
    sb.header("Timing")
    cores = os.cpu_count() or 1
    threads = sb.number_input(
        "Threads", 1, cores, min(torch.get_num_threads(), cores), key="threads", persist_state=_state.KEEP
    )
    batch = sb.number_input(
        "Batch size", 1, 4096, DEFAULT_BATCH_SIZE, key="batch_size", persist_state=_state.KEEP
    )
    _choice("runtime", list(RUNTIMES))
    runtime = sb.selectbox(
        "Runtime",
        list(RUNTIMES),
        key="runtime",
        persist_state=_state.KEEP,
        help="Where latency is measured: PyTorch eager or ONNX Runtime",
    )
    devices = DEVICES if torch.cuda.is_available() else ["cpu"]
    _choice("device", devices)
    device = sb.selectbox(
        "Device",
        devices,
        key="device",
        persist_state=_state.KEEP,
        help="auto: the first GPU if there is one",
    )
    ray = ""
    if not shared:  # a shared server does not connect where a browser user says
        ray = sb.text_input(
            "Ray address (optional)",
            key="ray_address",
            persist_state=_state.KEEP,
            placeholder="auto or host:10001",
            help="Sweeps and rankings run as Ray tasks on this cluster; empty: in this process",
        ).strip()
    return int(threads), int(batch), runtime, device, ray


def sidebar() -> WorkbenchSpec:
    """The model, data and timing the pages work on, as a hashable spec."""
    sb = st.sidebar
    shared = _serving.shared()
    with _shared.guard("Reading the sidebar"):
        model, weights, trust = _model(sb, shared)
        input_shape = sb.text_input(
            "Input shape (optional)",
            placeholder="1,3,224,224",
            key="input_shape",
            help="batch first; several inputs: one shape each, ';' between them, in forward's order (1,128;1,64); "
            "name=1,16:int64 passes an input by name with its dtype",
            persist_state=_state.KEEP,
        )
        data = _data(sb, shared)
        metric = _metric(sb, shared)
        threads, batch, runtime, device, ray = _timing(sb, shared)
    if shared:
        sb.caption("Shared server: zoo models, uploaded .safetensors weights and tensors data only.")
    return WorkbenchSpec(
        model, weights, trust, data, input_shape.strip(), batch, threads, runtime, device, ray, metric
    )


st.set_page_config(page_title="Compression workbench", page_icon=":material/compress:", layout="wide")
_serving.purge_stale_uploads()
page = st.navigation(PAGES)
spec = sidebar()
st.session_state[_shared.SPEC_KEY] = spec
with _routing.routing():
    page.run()
