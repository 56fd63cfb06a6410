"""Loading and caching keys for an interactive front end (the app): what identifies a model and its data,
loading them once, storing uploads, and digests that say whether two models are byte-for-byte equal.

A `WorkbenchSpec` names everything a page depends on (model spec, weights file, data spec, input shape,
timing settings) as plain strings and numbers, so an app can key its caches on it rather than on a model
object; `load_workbench` turns it into a model and data. What the pages compute lives with the library
part it belongs to (model cards: `analysis.report.cards`; plan tables and Pareto fronts:
`analysis.report.tables`; the report files: `analysis.report.bundle`). Nothing here imports streamlit.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from analysis.data import Dataset
from analysis.io import write_bytes_atomic
from analysis.latency import DEFAULT_BATCH_SIZE
from analysis.metrics import check_metric_name
from analysis.model.inputs import InputSpec
from analysis.model.specs import DEFAULT_DATA, DEFAULT_MODEL, load_fitted_data, load_model, parse_input_shape
from analysis.validate import whole

UPLOAD_ROOT = Path(tempfile.gettempdir()) / "compression-workbench" / "uploads"


@dataclass(frozen=True)
class WorkbenchSpec:
    """Everything that identifies a model, its data and how it is timed, as hashable plain values.

    `runtime`, `device` and `ray_address` are the sidebar's timing choices the pages read (they never
    change the loaded model, only where and how it is run).

    `weights` is a state-dict file for the model; `input_shape` is text like `1,3,224,224` (batch first;
    several inputs `1,128;1,64`, as `--input-shape`) or empty to take the model's declared shape;
    `threads` None means torch's current setting; `metric` is the `--metric` of every analysis (it never
    changes the loaded model: pages put it in their cache parameters).
    """

    model: str = DEFAULT_MODEL
    weights: str | None = None
    trust_pickle: bool = False
    data: str = DEFAULT_DATA
    input_shape: str = ""
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int | None = None
    runtime: str = "eager"  # analysis.RUNTIMES: where latency (and, where a page offers it, accuracy) is run
    device: str = "cpu"  # auto | cpu | cuda[:N]: where the work runs (the cached model stays on the CPU)
    ray_address: str = (
        ""  # empty: sweeps and rankings run in this process; else a Ray cluster ("auto", host:port)
    )
    metric: str = "auto"  # analysis.metrics: how every page scores outputs (auto, accuracy, psnr, ...)

    def model_key(self) -> str:
        """A short digest of what determines the model and data (not the timing settings).

        Local files named by the spec enter by size and modification time, so an edited file is a new key.
        """
        parts = [self.model, self.weights or "", str(self.trust_pickle), self.data, self.input_shape]
        for text in (self.model, self.weights or "", self.data.removeprefix("tensors:")):
            path = Path(text)
            if text and path.is_file():
                stat = path.stat()
                parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]

    def timing_key(self) -> str:
        """`model_key` plus batch size and threads: the key of anything measured in time."""
        return f"{self.model_key()}-b{self.batch_size}-t{self.threads or 0}-{self.runtime}-{self.device}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Workbench:
    """A loaded spec: the model (eval mode; never modify it, copy first), its data and per-sample shape (an
    `InputSpec` for several or named inputs)."""

    spec: WorkbenchSpec
    model: nn.Module
    data: Dataset
    input_shape: tuple[int, ...] | InputSpec

    @property
    def shape_text(self) -> str:
        """The input as the sidebar writes it: `1x16x16`, or `a 12; b 6` for several inputs."""
        if isinstance(self.input_shape, InputSpec):
            return "; ".join(f"{f.name} {'x'.join(map(str, f.shape))}" for f in self.input_shape.fields)
        return "x".join(map(str, self.input_shape))


def save_upload(name: str, content: bytes, root: str | Path | None = None) -> Path:
    """Store uploaded bytes under a folder named by their SHA-256 (so equal content = equal path)."""
    digest = hashlib.sha256(content).hexdigest()[:20]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name) or "upload"
    path = Path(root or UPLOAD_ROOT) / digest / safe
    if not path.exists():
        write_bytes_atomic(path, content, make_parents=True)
    return path


def load_workbench(spec: WorkbenchSpec) -> Workbench:
    """Load the model and data a spec names and check that the model runs on the data's samples.

    Data is resized to the model's input: the explicit `input_shape`, else the model's `input_shape`
    attribute. Raises WorkbenchError with a one-line message for any bad input.
    """
    whole(spec.batch_size, "batch size")
    if spec.threads is not None:
        whole(spec.threads, "threads")
    model = load_model(spec.model, weights=spec.weights, trust_pickle=spec.trust_pickle)
    check_metric_name(spec.metric)
    explicit = parse_input_shape(spec.input_shape, model) if spec.input_shape.strip() else None
    data, shape = load_fitted_data(model, spec.data or DEFAULT_DATA, explicit)
    return Workbench(spec, model, data, shape)


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, by name: equal digests = byte-for-byte equal state."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + json.dumps(list(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_bytes(model: nn.Module) -> bytes:
    """The whole module as `torch.save` writes it (a pickle: loading it needs trust, like `--trust-pickle`)."""
    import io

    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()
