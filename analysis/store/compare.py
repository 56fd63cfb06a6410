"""Side by side: recorded compression results as one table, and their plans diffed layer by layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from analysis.errors import WorkbenchError
from analysis.metrics import score_value
from analysis.transforms.registry import layer_keys

COMPRESSION_KINDS = ("compression", "compress")
METRICS = ("accuracy", "loss", "params", "macs", "size_bytes")
DEFAULT_ROW = "(default)"


def _latencies(result: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{runtime: (before latency_ms, after latency_ms)}: from `runtimes` when several were measured, else
    from `before`/`after` under the runtime they name (eager when they name none)."""
    runtimes = result.get("runtimes")
    if isinstance(runtimes, Mapping) and runtimes:
        return {
            name: ((v.get("before") or {}).get("latency_ms"), (v.get("after") or {}).get("latency_ms"))
            for name, v in runtimes.items()
        }
    before, after = result.get("before") or {}, result.get("after") or {}
    name = before.get("runtime") or after.get("runtime") or "eager"
    return {name: (before.get("latency_ms"), after.get("latency_ms"))}


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def compare(runs: Sequence[Any]) -> pd.DataFrame:
    """One row per compression run (index: run id): model, created, status, accuracy, loss, params, MACs and
    size before and after, the run's metric and its scores before and after (`score before`; accuracy
    for accuracy runs), latency in ms before and after for each runtime measured
    (`latency_ms[eager] after`), speedup per runtime, MAC reduction and accuracy change. A runtime a run
    did not measure is empty (NaN) in its row."""
    if not runs:
        raise WorkbenchError("compare needs at least one run: give recorded compression run ids")
    rows = []
    for run in runs:
        if run.kind not in COMPRESSION_KINDS:
            raise WorkbenchError(
                f"run {run.id} is a {run.kind} run: compare takes compression runs "
                "(list them with `python -m analysis runs list --kind compression`)"
            )
        result = run.result
        before, after = result.get("before") or {}, result.get("after") or {}
        row: dict[str, Any] = {
            "id": run.id,
            "model": run.model,
            "created": run.created,
            "status": run.status,
        }
        for metric in METRICS:
            row[f"{metric} before"] = before.get(metric)
            row[f"{metric} after"] = after.get(metric)
        # Runs scored in another metric (PSNR, agreement): its name and the scores, whatever it is.
        row["metric"] = (after.get("metric") or {}).get("name", "accuracy")
        row["score before"], row["score after"] = score_value(before), score_value(after)
        row["accuracy change"] = (
            after["accuracy"] - before["accuracy"]
            if isinstance(after.get("accuracy"), (int, float))
            and isinstance(before.get("accuracy"), (int, float))
            else None
        )
        row["MAC reduction"] = _ratio(before.get("macs"), after.get("macs"))
        for name, (b, a) in _latencies(result).items():
            row[f"latency_ms[{name}] before"] = b
            row[f"latency_ms[{name}] after"] = a
            row[f"speedup[{name}]"] = _ratio(b, a)
        rows.append(row)
    return pd.DataFrame(rows).set_index("id")


def _plan_dict(plan: Any) -> Mapping[str, Any]:
    if hasattr(plan, "to_dict"):
        plan = plan.to_dict()
    if not isinstance(plan, Mapping):
        raise WorkbenchError(f"a plan is a dict with 'default' and 'layers', got {type(plan).__name__}")
    return plan


def plan_diff(plans: Mapping[str, Any] | Sequence[Any], only_differences: bool = False) -> pd.DataFrame:
    """Plans layer by layer: one row per layer any plan names (plus `(default)` for the rest), one column
    `key [label]` per setting and plan holding the setting that layer gets (its override, else the plan's
    default), and `differs` = the plans disagree on that layer. `plans` maps labels to plans (dicts or
    `CompressionPlan`s); a plain list is labelled #1, #2, ..."""
    labelled = dict(plans) if isinstance(plans, Mapping) else {f"#{i + 1}": p for i, p in enumerate(plans)}
    if not labelled:
        raise WorkbenchError("plan_diff needs at least one plan")
    parsed = {label: _plan_dict(p) for label, p in labelled.items()}
    layer_names: list[str] = []
    keys: set[str] = set()
    for plan in parsed.values():
        keys.update((plan.get("default") or {}).keys())
        for name, entry in (plan.get("layers") or {}).items():
            if name not in layer_names:
                layer_names.append(name)
            keys.update(entry.keys())
    # Layer keys in the order a reader expects them: the plan's, then each registered transform's (the
    # transforms registry); keys it does not know (an older plan's) follow, sorted.
    known = layer_keys()
    ordered = [k for k in known if k in keys] + sorted(keys - set(known))

    rows = []
    for name in [DEFAULT_ROW, *layer_names]:
        row: dict[str, Any] = {"layer": name}
        settings = []
        for label, plan in parsed.items():
            default = plan.get("default") or {}
            entry = {} if name == DEFAULT_ROW else (plan.get("layers") or {}).get(name, {})
            effective = {k: entry.get(k, default.get(k)) for k in ordered}
            settings.append(effective)
            for k in ordered:
                row[f"{k} [{label}]"] = effective[k]
        row["differs"] = any(s != settings[0] for s in settings[1:])
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("layer")
    return frame[frame["differs"]] if only_differences else frame
