"""Recording from the command line: `--no-record`, `--mlflow [URI]`, and one call a command makes after its
work. A failed write warns on standard error and keeps the computed result."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from analysis.errors import WorkbenchError
from analysis.store.db import ResultsStore, data_dir, model_fingerprint

COMPRESSION = "compression"


def add_record_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-record", action="store_true", help="do not record this run in the results store"
    )
    parser.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        default=None,
        metavar="URI",
        help="also log compressions to MLflow (default URI: $MLFLOW_TRACKING_URI, else <data dir>/mlruns)",
    )


def mlflow_uri(value: str) -> str:
    """The URI `--mlflow` means: the one given, else `$MLFLOW_TRACKING_URI`, else `<data dir>/mlruns`."""
    return value or os.environ.get("MLFLOW_TRACKING_URI") or str(data_dir() / "mlruns")


def record_command(
    args: argparse.Namespace,
    kind: str,
    model: Any,
    data: str | None,
    params: Mapping[str, Any],
    payload: dict,
    status: str = "complete",
    artifacts: Iterable[str | Path] = (),
) -> int | None:
    """Record `payload` as a run of `kind` on `args.model` (fingerprinted from the loaded `model`, before any
    change) unless `--no-record`; add `run_id` to the payload; for compressions with `--mlflow`, log to MLflow
    too (`mlflow_run_id`). Returns the run id, or None when not recorded."""
    if getattr(args, "no_record", False) and getattr(args, "mlflow", None) is None:
        return None
    fingerprint = model_fingerprint(args.model, model)
    run_id = None
    if not getattr(args, "no_record", False):
        try:
            run_id = ResultsStore(getattr(args, "db", None)).record(
                kind, args.model, data, params, payload, status=status, fingerprint=fingerprint
            )
            payload["run_id"] = run_id
        except WorkbenchError as exc:
            print(f"warning: the run was not recorded: {exc}", file=sys.stderr)
    if getattr(args, "mlflow", None) is not None and kind == COMPRESSION:
        from analysis.store.mlflow_sink import log_compression

        tags = {"model": args.model, "fingerprint": fingerprint, "data": data or ""}
        if run_id is not None:
            tags["workbench_run_id"] = str(run_id)
        payload["mlflow_run_id"] = log_compression(
            mlflow_uri(args.mlflow), payload.get("plan") or {}, payload, artifacts, tags=tags
        )
    return run_id
