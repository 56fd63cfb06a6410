"""What the workbench's pages compute, as plain functions the notebooks and the CLI can call too.

A `WorkbenchSpec` names everything a page depends on (model spec, weights file, data spec, input shape,
timing settings) as plain strings and numbers, so an app can key its caches on it rather than on a model
object. `load_workbench` turns it into a model and data; the other functions are the pages' single calls.
Nothing here imports streamlit.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from analysis.checks import check_labels, model_outputs
from analysis.data import Dataset, load_data
from analysis.errors import WorkbenchError
from analysis.io import write_bytes_atomic
from analysis.specs import DEFAULT_DATA, DEFAULT_MODEL, check_input_shape, load_model, parse_input_shape

UPLOAD_ROOT = Path(tempfile.gettempdir()) / "compression-workbench" / "uploads"
DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class WorkbenchSpec:
    """Everything that identifies a model, its data and how it is timed, as hashable plain values.

    `weights` is a state-dict file for the model; `input_shape` is text like `1,3,224,224` (batch first)
    or empty to take the model's declared shape; `threads` None means torch's current setting.
    """

    model: str = DEFAULT_MODEL
    weights: str | None = None
    trust_pickle: bool = False
    data: str = DEFAULT_DATA
    input_shape: str = ""
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int | None = None

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
        return f"{self.model_key()}-b{self.batch_size}-t{self.threads or 0}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Workbench:
    """A loaded spec: the model (eval mode; never modify it, copy first), its data and per-sample shape."""

    spec: WorkbenchSpec
    model: nn.Module
    data: Dataset
    input_shape: tuple[int, ...]


def save_upload(name: str, content: bytes, root: str | Path | None = None) -> Path:
    """Store uploaded bytes under a folder named by their SHA-256 (so equal content = equal path)."""
    digest = hashlib.sha256(content).hexdigest()[:20]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name) or "upload"
    path = Path(root or UPLOAD_ROOT) / digest / safe
    if not path.exists():
        write_bytes_atomic(path, content)
    return path


def load_workbench(spec: WorkbenchSpec) -> Workbench:
    """Load the model and data a spec names and check that the model runs on the data's samples.

    Data is resized to the model's input: the explicit `input_shape`, else the model's `input_shape`
    attribute. Raises WorkbenchError with a one-line message for any bad input.
    """
    if spec.batch_size < 1:
        raise WorkbenchError(f"batch size must be at least 1, got {spec.batch_size}")
    if spec.threads is not None and spec.threads < 1:
        raise WorkbenchError(f"threads must be at least 1, got {spec.threads}")
    model = load_model(spec.model, weights=spec.weights, trust_pickle=spec.trust_pickle)
    explicit = parse_input_shape(spec.input_shape) if spec.input_shape.strip() else None
    declared = explicit or getattr(model, "input_shape", None)
    data = load_data(spec.data or DEFAULT_DATA, tuple(declared) if declared else None)
    shape = tuple(explicit or data.input_shape)
    check_input_shape(model, shape)
    if data is not None:
        check_labels(
            data, model_outputs(model, shape)
        )  # labels past the outputs: a message, not an IndexError
    return Workbench(spec, model, data, shape)


@dataclass(frozen=True)
class ModelCard:
    """The headline numbers of a model: size, cost per sample, accuracy and measured latency per batch."""

    params: int
    macs: int
    flops: int
    size_bytes: int
    accuracy: float
    loss: float
    samples: int
    latency_ms: float
    latency_p10_ms: float
    latency_p90_ms: float
    batch_size: int
    threads: int
    torch_version: str
    cpu: str
    layers: int
    prunable_layers: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def model_card(
    model: nn.Module,
    data: Dataset,
    input_shape: tuple[int, ...],
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    runs: int = 20,
) -> ModelCard:
    """Params, MACs and FLOPs per sample, weight bytes, test accuracy and loss, and latency (ms per batch)."""
    from analysis.cost import size_bytes, summarize
    from analysis.evaluate import evaluate
    from analysis.importance.base import prunable_layers
    from analysis.latency import measure_latency

    summary = summarize(model, input_shape)
    result = evaluate(model, data)
    latency = measure_latency(model, input_shape, batch_size=batch_size, threads=threads, runs=runs)
    return ModelCard(
        params=summary.total_params,
        macs=summary.total_macs,
        flops=summary.total_flops,
        size_bytes=size_bytes(model),
        accuracy=result.accuracy,
        loss=result.loss,
        samples=result.samples,
        latency_ms=latency.median_ms,
        latency_p10_ms=latency.p10_ms,
        latency_p90_ms=latency.p90_ms,
        batch_size=latency.batch_size,
        threads=latency.threads,
        torch_version=latency.torch_version,
        cpu=latency.cpu,
        layers=len(summary.layers),
        prunable_layers=len(prunable_layers(model)),
        extra={"macs_thop": summary.macs_thop, "differences": list(summary.differences)},
    )


def cost_vs_time(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    runs: int = 10,
) -> pd.DataFrame:
    """Per layer: params, MACs and share of MACs, next to measured time (ms per batch) and share of time.

    One row per layer of `summarize` (leaf modules and modules doing their own matrix work). Time shares
    are of the summed per-layer times, which hooks inflate slightly; read them as shares, not totals.
    """
    from analysis.cost import summarize
    from analysis.latency import layer_times

    summary = summarize(model, input_shape)
    times = layer_times(model, input_shape, batch_size=batch_size, threads=threads, runs=runs)
    frame = summary.to_frame()
    frame["time_ms"] = [times.get(name, 0.0) for name in frame["name"]]
    total_time = float(frame["time_ms"].sum())
    frame["time_share"] = frame["time_ms"] / total_time if total_time > 0 else 0.0
    frame["params_share"] = frame["params"] / max(int(frame["params"].sum()), 1)
    return frame


def pareto_front(accuracy: list[float] | np.ndarray, latency_ms: list[float] | np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point beats: none has higher-or-equal accuracy at lower-or-equal
    latency with at least one of the two strictly better."""
    acc = np.asarray(accuracy, dtype=float)
    lat = np.asarray(latency_ms, dtype=float)
    mask = np.ones(len(acc), dtype=bool)
    for i in range(len(acc)):
        dominated = (acc >= acc[i]) & (lat <= lat[i]) & ((acc > acc[i]) | (lat < lat[i]))
        mask[i] = not dominated.any()
    return mask


def uniform_layer_table(
    model: nn.Module, input_shape: tuple[int, ...], prune: float = 0.0, bits: int = 32
) -> pd.DataFrame:
    """One row per prunable layer (name, type, out channels, params, whether it is the final classifier)
    with the same prune ratio and bits: the starting point of a per-layer plan editor. The final
    classifier's ratio stays 0: removing its outputs would remove classes."""
    from analysis.compression.pruning import final_classifier
    from analysis.importance.base import out_channels, prunable_layers

    final = final_classifier(model, input_shape)
    rows = [
        {
            "layer": name,
            "type": type(module).__name__,
            "channels": out_channels(module),
            "params": sum(p.numel() for p in module.parameters(recurse=False)),
            "final": name == final,
            "prune": 0.0 if name == final else float(prune),
            "bits": int(bits),
        }
        for name, module in prunable_layers(model).items()
    ]
    return pd.DataFrame(rows, columns=["layer", "type", "channels", "params", "final", "prune", "bits"])


def plan_from_table(
    table: pd.DataFrame, criterion: str = "l1", structured: bool = True, finetune: dict | None = None
):
    """A CompressionPlan with one entry per row of `table` (columns layer, prune, bits, optional final)
    that changes anything; untouched rows (prune 0, bits 32) are left to the plan's no-op default. A row
    marked `final` (the classifier) is never pruned, only quantized."""
    from analysis.compression.plan import CompressionPlan, LayerSettings

    layers = {}
    for row in table.itertuples(index=False):
        prune, bits = float(row.prune), int(row.bits)
        if bool(getattr(row, "final", False)):
            prune = 0.0
        if prune > 0 or bits != 32:
            layers[str(row.layer)] = {"prune": prune, "bits": bits}
    default = LayerSettings(prune=0.0, criterion=criterion, structured=structured, bits=32)
    return CompressionPlan(default=default, layers=layers, finetune=finetune or {})


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, by name: equal digests = byte-for-byte equal state."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + json.dumps(list(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def safe_points(result, drops: tuple[float, ...] = (0.01, 0.02)) -> pd.DataFrame:
    """Per layer of a `SensitivityResult`: the largest safe ratio (pruning) or smallest safe bits (quant)
    at each accuracy drop in `drops` (0.01 = one point), the members of structured groups, and the drop
    at the sweep's most aggressive point."""
    rows = []
    for name, curve in result.layers.items():
        row: dict = {"layer": name}
        for drop in drops:
            column = f"{'min bits' if result.kind == 'quant' else 'max ratio'} @ {drop * 100:g} pt"
            row[column] = result.safe_point(name, drop)
        drops_here = result.drops(name)
        row["worst drop (pt)"] = round(max(drops_here) * 100, 2) if drops_here else float("nan")
        if curve.members is not None:
            row["members"] = ", ".join(curve.members)
        rows.append(row)
    return pd.DataFrame(rows)


def parse_values(text: str, kind: type = float) -> list:
    """`'0.1, 0.2 0.5'` -> `[0.1, 0.2, 0.5]`: numbers separated by commas or spaces."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = [kind(p) for p in parts]
    except ValueError as exc:
        raise WorkbenchError(f"cannot read {text!r} as a list of numbers: separate them with commas") from exc
    if not all(math.isfinite(v) for v in values):
        raise WorkbenchError(f"{text!r} holds NaN or infinity: give finite numbers")
    return values


def comparison_frame(result) -> pd.DataFrame:
    """Before and after of a `CompressionResult`, one row per measure, with the change as a ratio or delta."""
    b, a = result.before, result.after

    def ratio(x: float, y: float) -> str:
        return f"{x / y:.2f}x smaller" if y and x >= y else f"{y / x:.2f}x larger" if x else "n/a"

    rows = [
        (
            "accuracy (%)",
            b.accuracy * 100,
            a.accuracy * 100,
            f"{(a.accuracy - b.accuracy) * 100:+.2f} points",
        ),
        ("loss", b.loss, a.loss, f"{a.loss - b.loss:+.4f}"),
        (
            f"latency (ms per batch of {result.batch_size})",
            b.latency_ms,
            a.latency_ms,
            f"{result.speedup:.2f}x speedup ({a.latency_label})",
        ),
        ("MACs per sample", b.macs, a.macs, ratio(b.macs, a.macs)),
        ("params", b.params, a.params, ratio(b.params, a.params)),
        ("nonzero params", b.nonzero_params, a.nonzero_params, ratio(b.nonzero_params, a.nonzero_params)),
        ("size (bytes)", b.size_bytes, a.size_bytes, ratio(b.size_bytes, a.size_bytes)),
    ]
    return pd.DataFrame(rows, columns=["measure", "before", "after", "change"])


def run_point(result, label: str) -> dict:
    """One applied configuration as a row of the accuracy-vs-latency table."""
    return {
        "label": label,
        "accuracy": result.after.accuracy,
        "latency_ms": result.after.latency_ms,
        "macs": result.after.macs,
        "params": result.after.params,
        "size_bytes": result.after.size_bytes,
        "speedup": result.speedup,
        "latency_label": result.after.latency_label,
        "plan": result.plan.to_json(),
    }


def pareto_table(result, runs: list[dict]) -> pd.DataFrame:
    """The original model (from `result.before`) and every applied plan (`run_point` rows), with a `pareto`
    column marking the points no other beats on both accuracy and latency."""
    b = result.before
    original = {
        "label": "original",
        "accuracy": b.accuracy,
        "latency_ms": b.latency_ms,
        "macs": b.macs,
        "params": b.params,
        "size_bytes": b.size_bytes,
        "speedup": 1.0,
        "latency_label": b.latency_label,
        "plan": "",
    }
    frame = pd.DataFrame([original, *runs])
    frame["pareto"] = pareto_front(frame["accuracy"], frame["latency_ms"])
    return frame


def model_bytes(model: nn.Module) -> bytes:
    """The whole module as `torch.save` writes it (a pickle: loading it needs trust, like `--trust-pickle`)."""
    import io

    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def report_files(
    model: nn.Module,
    data: Dataset,
    input_shape: tuple[int, ...],
    sensitivity: list | tuple = (),
    rankings=None,
    latency=None,
    compression=None,
    model_spec: str | None = None,
) -> dict[str, str]:
    """The report in four formats, as text: `html` (self-contained, `analysis.report.html.build_report`),
    `csv` (sensitivity points in long form, or the per-layer cost table where no sweep ran), `json`
    (every result given) and `md` (a short summary)."""
    from analysis.cost import summarize
    from analysis.io import to_json
    from analysis.report import html as report

    sweeps = list(sensitivity)
    summary = summarize(model, input_shape)
    with tempfile.TemporaryDirectory() as tmp:
        html = report.build_report(
            model,
            data,
            Path(tmp) / "report.html",
            sensitivity=sweeps or None,
            rankings=rankings,
            summary=summary,
            latency=latency,
            model_spec=model_spec,
            data_spec=data.spec,
            input_shape=input_shape,
        ).read_text(encoding="utf-8")
        csv = report.write_csv(sweeps, Path(tmp) / "s.csv").read_text() if sweeps else None
    if csv is None:
        csv = summary.to_frame().to_csv(index=False)
    payload = {
        "environment": report.environment(),
        "model": model_spec,
        "data": data.spec,
        "summary": summary.to_dict(),
        "latency": latency.to_dict() if latency is not None else None,
        "sensitivity": [r.to_dict() for r in sweeps],
        "rankings": rankings.to_dict() if rankings is not None else None,
        "compression": compression.to_dict() if compression is not None else None,
    }
    if sweeps:
        md = report.markdown_summary(sweeps, title=f"Compression workbench report: {model_spec or 'model'}")
    else:
        md = (
            f"# Compression workbench report: {model_spec or 'model'}\n\n"
            f"{summary.total_params:,} parameters, {summary.total_macs:,} MACs per sample "
            f"(FLOPs = 2 x MACs = {summary.total_flops:,}).\n\nNo sensitivity sweep was included.\n"
        )
    if compression is not None:
        b, a = compression.before, compression.after
        md += (
            f"\n## Compression\n\nAccuracy {b.accuracy:.2%} -> {a.accuracy:.2%}, latency {b.latency_ms:.2f} -> "
            f"{a.latency_ms:.2f} ms ({compression.speedup:.2f}x, {a.latency_label}), MACs {b.macs:,} -> "
            f"{a.macs:,}, size {b.size_bytes:,} -> {a.size_bytes:,} bytes.\n"
        )
    return {"html": html, "csv": csv, "json": to_json(payload), "md": md}
