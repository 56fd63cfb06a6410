"""What a recorded run is: its listing row (`RunInfo`), the whole run (`Run`), run ids, and JSON without
NaN. The SQLite file and its queries are `analysis.store.db`."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analysis.errors import WorkbenchError

MAX_RUN_ID = 2**63 - 1  # SQLite's largest integer


# --- JSON without NaN -----------------------------------------------------------------------------------


def clean_json(obj: Any) -> Any:
    """`obj` as plain JSON values: NaN and infinities become None, tuples and sets lists, arrays and tensors
    lists (`tolist`), objects with `to_dict` their dict, paths strings; dict keys become strings."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return clean_json(obj.tolist())
    if hasattr(obj, "to_dict"):
        return clean_json(obj.to_dict())
    raise WorkbenchError(
        f"cannot store a {type(obj).__name__} as JSON: pass numbers, strings, lists or dicts"
    )


def dumps(obj: Any, sort_keys: bool = False) -> str:
    """Compact JSON of `clean_json(obj)`; `sort_keys` gives one canonical text per value (for lookups)."""
    return json.dumps(clean_json(obj), allow_nan=False, sort_keys=sort_keys, separators=(",", ":"))


# --- what a run is --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """One row of `runs list`: what was run on what, when, with which parameters, and its headline numbers."""

    id: int
    kind: str
    model: str
    fingerprint: str | None
    data: str | None
    created: str
    status: str
    params: dict
    summary: dict

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "data": self.data,
            "created": self.created,
            "status": self.status,
            "params": self.params,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class Run(RunInfo):
    """A whole recorded run: the listing fields plus the full result, the environment and the schema version
    the row was written with."""

    result: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    schema: int = 0  # the schema version the row was written with (analysis.store.db.SCHEMA_VERSION)

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {
            "result": self.result,
            "environment": self.environment,
            "schema": self.schema,
        }


UNREADABLE = "unreadable"  # the status a listing gives a row whose stored JSON is damaged


def _json_column(row: sqlite3.Row, column: str) -> Any:
    value = json.loads(row[column])
    if not isinstance(value, dict):
        raise ValueError(f"{column} is not a JSON object")
    return value


def _info(row: sqlite3.Row) -> dict[str, Any]:
    """A listing row; one whose JSON is damaged (another tool, a bad disk) is listed as `unreadable` with
    empty parameters and summary, so one bad row never hides the others."""
    info = {
        "id": row["id"],
        "kind": str(row["kind"]),
        "model": str(row["model"]),
        "fingerprint": row["fingerprint"],
        "data": row["data"],
        "created": str(row["created"]),
        "status": str(row["status"]),
    }
    try:
        return info | {"params": _json_column(row, "params"), "summary": _json_column(row, "summary")}
    except (TypeError, ValueError):
        return info | {"status": UNREADABLE, "params": {}, "summary": {}}


def check_run_id(run_id: Any) -> int:
    """A run id as SQLite can look it up: a whole number from 1 to 2**63 - 1."""
    if isinstance(run_id, bool) or not isinstance(run_id, int) or not 1 <= run_id <= MAX_RUN_ID:
        raise WorkbenchError(
            f"no run {str(run_id)[:30]}: run ids are whole numbers from 1 (see `python -m analysis runs list`)"
        )
    return run_id


def summarize_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """Headline numbers of a result: its top-level scalars and the scalars of `before`, `after` and
    `baseline` (as `after.accuracy`, ...), so a listing shows them without loading the whole result."""
    summary: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 200):
            summary[key] = value
        elif key in ("before", "after", "baseline") and isinstance(value, Mapping):
            for sub, v in value.items():
                if isinstance(v, (bool, int, float, str)):
                    summary[f"{key}.{sub}"] = v
    return clean_json(summary)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
