"""MLflow as an optional second home for compression results: one MLflow run per compression.

Params are the plan flattened (`default.prune`, `layers.features.3.bits`, `finetune.epochs`), metrics the
numbers before and after (`before.accuracy`, `after.latency_ms`, `speedup`, ...), artifacts the files given
(the report, the saved model). Needs `mlflow-skinny` (optional; `pip install mlflow-skinny==3.17.2`),
imported only here and only when called.

`uri` is any MLflow tracking URI (`http://host:5000`, `databricks`, `sqlite:///mlflow.db` with SQLAlchemy
installed) or a local folder / `file:` URI. MLflow 3 keeps its file store in maintenance mode and refuses it
unless `MLFLOW_ALLOW_FILE_STORE=true`; for a local folder this module sets that variable, since the folder
is what the user asked for.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from analysis.errors import WorkbenchError

DEFAULT_EXPERIMENT = "compression-workbench"
# MLflow's limits: at most 100 params and 1000 metrics per batch call; keys are at most 250 characters.
_PARAM_BATCH, _METRIC_BATCH, _MAX_KEY = 100, 1000, 250
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


def _mlflow():
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise WorkbenchError(
            "MLflow logging needs mlflow-skinny: pip install mlflow-skinny==3.17.2 (or drop --mlflow)"
        ) from exc
    return mlflow, MlflowClient


def tracking_uri(uri: str | Path | None) -> str | None:
    """The tracking URI for `uri`: a local folder becomes a `file:` URI (and is allowed as a file store);
    None keeps MLflow's own default (`MLFLOW_TRACKING_URI`)."""
    if uri is None:
        return None
    text = str(uri)
    is_local = (
        text.startswith("file:") or "://" not in text and not text.startswith(("databricks", "sqlite:"))
    )
    if not is_local:
        return text
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return text if text.startswith("file:") else Path(text).expanduser().resolve().as_uri()


def _key(text: str) -> str:
    return _BAD_KEY_CHARS.sub("_", text)[:_MAX_KEY]


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of `a.b.c` keys; lists and scalars are leaves."""
    if isinstance(obj, Mapping):
        flat: dict[str, Any] = {}
        for k, v in obj.items():
            flat.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return flat
    return {prefix: obj}


def plan_params(plan: Any) -> dict[str, str]:
    """The plan as MLflow params: flattened keys, values as text (`json`-like for lists, 'null' for None)."""
    if hasattr(plan, "to_dict"):
        plan = plan.to_dict()
    params = {}
    for k, v in flatten(plan).items():
        params[_key(k)] = "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
    return params


def result_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """Finite numbers of a compression result: `before.*`, `after.*`, per-runtime `runtimes.*` and the
    derived top-level numbers (speedup, mac_reduction, efficiency, accuracy_delta, ...)."""
    metrics: dict[str, float] = {}
    for key, value in result.items():
        if key in ("before", "after", "runtimes", "simulated"):
            items = flatten(value or {}, key).items()
        elif key == "plan":
            continue
        else:
            items = [(key, value)]
        for k, v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                metrics[_key(k)] = float(v)
    return metrics


def log_compression(
    uri: str | Path | None,
    plan: Any,
    result_dict: Mapping[str, Any],
    artifacts: Iterable[str | Path] = (),
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log one compression as an MLflow run and return its run id: params = `plan_params(plan)`, metrics =
    `result_metrics(result_dict)`, artifacts = the files (each must exist), tags as given. The run is
    marked FINISHED, or FAILED if logging breaks half-way."""
    files = [Path(a) for a in artifacts]
    for f in files:
        if not f.is_file():
            raise WorkbenchError(f"MLflow artifact not found: {f}")
    _, MlflowClient = _mlflow()
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=tracking_uri(uri))
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(
        experiment_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items()}
    )
    run_id = run.info.run_id
    try:
        params = [Param(k, v) for k, v in plan_params(plan).items()]
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in result_metrics(result_dict).items()]
        for i in range(0, len(params), _PARAM_BATCH):
            client.log_batch(run_id, params=params[i : i + _PARAM_BATCH])
        for i in range(0, len(metrics), _METRIC_BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + _METRIC_BATCH])
        for f in files:
            client.log_artifact(run_id, str(f))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
