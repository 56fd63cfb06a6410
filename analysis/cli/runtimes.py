"""`--runtime` on every command that runs a model (docs/contract.md section 6): the option, its names checked before
any work, and `evaluate`'s and `latency`'s measurements on each runtime named.

`evaluate --runtime eager,onnxruntime` evaluates the model on each (the first runtime gives `accuracy`,
`loss`, `samples`; `runtimes: {name: ...}` holds every one); `latency --runtime eager,onnxruntime` times
them in alternating rounds (the first gives `median_ms` ...). Each result names its runtime, version and
execution provider; an ONNX Runtime result adds the export's largest absolute logit difference to eager.
"""

from __future__ import annotations

import argparse
import math

from torch import nn

from analysis.cli.common import add_list_arg, list_names, warn
from analysis.data import Dataset
from analysis.errors import WorkbenchError, first_line
from analysis.metrics import Scoring
from analysis.model.inputs import InputSpec


def add_runtime_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """`--runtime NAME[,NAME]`: `what` says what the runtimes do in this command; the help lists every
    registered runtime (`analysis.runtime.RUNTIMES`)."""
    from analysis.runtime.base import RUNTIMES

    add_list_arg(parser, "--runtime", f"{what}: {', '.join(RUNTIMES.names())}", metavar="RUNTIME")


def runtime_names(args: argparse.Namespace, device_applies: bool = True) -> list[str] | None:
    """The runtimes `--runtime` names (canonical, once each; None where it was not given). Unknown names,
    and `--device`/`--dtype` with a runtime other than eager, are one line before any work."""
    from analysis.runtime.base import get_runtime

    names = list_names(getattr(args, "runtime", None), "--runtime")
    if names is None:
        return None
    names = list(dict.fromkeys(get_runtime(n).name for n in names))
    moved = getattr(args, "device", None) is not None or getattr(args, "dtype", None) is not None
    if device_applies and moved and names != ["eager"]:
        raise WorkbenchError(
            "--device and --dtype apply to the eager runtime: drop them or use --runtime eager"
        )
    return names


def for_model(names: list[str] | None, model: nn.Module) -> list[str] | None:
    """`names`, or for a saved ONNX model given without `--runtime`, ONNX Runtime (what runs it anyway),
    so its results are labelled with the runtime that ran them."""
    from analysis.runtime.onnx import OnnxModule

    return ["onnxruntime"] if names is None and isinstance(model, OnnxModule) else names


def one_runtime(args: argparse.Namespace, ray: dict | None = None) -> str | None:
    """The single runtime a command evaluates its points on (`sensitivity`, `rank`'s oracle), or None."""
    names = runtime_names(args)
    if names is None:
        return None
    if len(names) > 1:
        raise WorkbenchError("--runtime: this command evaluates on one runtime: give eager or onnxruntime")
    if ray is not None and names != ["eager"]:
        raise WorkbenchError("--runtime onnxruntime applies to local runs: drop it or --ray")
    return names[0]


def _labels(prepared) -> dict:
    labels = {"runtime": prepared.runtime, "runtime_version": prepared.version, "provider": prepared.provider}
    diff = getattr(prepared, "max_abs_diff", float("nan"))
    if isinstance(diff, float) and math.isfinite(diff):
        labels["max_abs_diff"] = diff  # the exported model's largest |logit difference| to eager
    return labels


def _prepared(model: nn.Module, names: list[str], shape: tuple[int, ...], threads: int | None) -> dict:
    """name -> Prepared model, or the one-line reason it could not be prepared (when several are named;
    with one runtime that reason is the command's error)."""
    from analysis.runtime.base import prepare

    out: dict = {}
    for name in names:
        try:
            out[name] = prepare(model, name, shape, threads)
        except WorkbenchError as exc:
            if len(names) == 1:
                raise
            out[name] = f"{name}: not measured: {first_line(exc)}"
            warn(out[name])
    if all(isinstance(p, str) for p in out.values()):
        raise WorkbenchError("no runtime could run the model: " + "; ".join(out.values()))
    return out


def _first(results: dict) -> dict:
    return next(r for r in results.values() if not isinstance(r, str))


def evaluate_on_runtimes(
    model: nn.Module,
    data: Dataset,
    shape: InputSpec | tuple[int, ...],
    names: list[str],
    batch_size: int,
    metric: str | Scoring = "auto",
) -> dict:
    """`evaluate`'s payload on each runtime: the first one that ran at the top, every one under
    `runtimes` (a runtime that could not run holds its reason)."""
    from analysis.runtime.base import evaluate_runtime

    results: dict = {}
    for name, prepared in _prepared(model, names, shape, None).items():
        if isinstance(prepared, str):
            results[name] = prepared
            continue
        results[name] = evaluate_runtime(
            prepared, data, batch_size=batch_size, metric=metric
        ).to_dict() | _labels(prepared)
    payload = dict(_first(results))
    if len(names) > 1:
        payload["runtimes"] = results
    return payload


def latency_on_runtimes(
    model: nn.Module,
    shape: tuple[int, ...],
    names: list[str],
    batch_size: int,
    threads: int | None,
    runs: int,
) -> dict:
    """`latency`'s payload on each runtime, timed in alternating rounds of up to 5 runs (`runs` in all per
    runtime, rounded up to whole rounds): the first one at the top, every one under `runtimes`."""
    from analysis.runtime.base import compare_runtime_latency, measure_runtime_latency

    prepared = _prepared(model, names, shape, threads)
    ready = {name: p for name, p in prepared.items() if not isinstance(p, str)}
    if len(ready) == 1:
        name, p = next(iter(ready.items()))
        timed = {name: measure_runtime_latency(p, shape, batch_size, threads, runs)}
    else:
        per_round = min(5, runs)
        rounds = -(-runs // per_round)
        timed = compare_runtime_latency(ready, shape, batch_size, threads, rounds, per_round)
    results: dict = {}
    for name, p in prepared.items():
        if isinstance(p, str):
            results[name] = p
        else:
            warn(timed[name].warning)
            results[name] = timed[name].to_dict() | _labels(p)
    payload = dict(_first(results))
    if len(names) > 1:
        payload["runtimes"] = results
    return payload
