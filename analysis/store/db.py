"""The results store: every analysis recorded in one SQLite file, with its model, data, parameters and machine.

Where: `results.sqlite3` in the data directory, which is, first to last, the `path` given to
`ResultsStore`, `$WORKBENCH_DATA_DIR`, or the user data directory (`platformdirs.user_data_dir`, else
`$XDG_DATA_HOME/compression-workbench`, else `~/.local/share/compression-workbench`). Back it up with
`sqlite3 results.sqlite3 ".backup copy.sqlite3"` (safe while the workbench is writing) or by copying the
file while nothing runs. Keep the directory on a local disk: WAL mode needs shared memory, which network
file systems do not give.

Safety: the file is in WAL mode with a busy timeout, so app sessions and CLI processes may write at once;
each record is one `BEGIN IMMEDIATE ... COMMIT`, so a run killed mid-write leaves no half-written row. The
schema version is `PRAGMA user_version`; opening an older file migrates it forward in one transaction.
JSON stored here never holds NaN or infinity (they become null).

One module: the schema, its migrations and every query on it change together.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import sqlite3
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analysis.errors import WorkbenchError
from analysis.io import write_text_atomic

APP_NAME = "compression-workbench"
DB_NAME = "results.sqlite3"
DATA_DIR_ENV = "WORKBENCH_DATA_DIR"
STATUSES = ("complete", "partial")
BUSY_TIMEOUT_MS = 30_000

# MIGRATIONS[v] takes a file at schema version v to v + 1; the last index + 1 is the current version.
# Version 1 is the first layout (runs with model, data, params and result); version 2 adds the
# fingerprint, summary, environment, status and per-row schema, and the lookup indexes.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            model TEXT NOT NULL,
            data TEXT,
            params TEXT NOT NULL DEFAULT '{}',
            result TEXT NOT NULL,
            created TEXT NOT NULL
        )""",
    ),
    (
        "ALTER TABLE runs ADD COLUMN fingerprint TEXT",
        "ALTER TABLE runs ADD COLUMN summary TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE runs ADD COLUMN environment TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE runs ADD COLUMN status TEXT NOT NULL DEFAULT 'complete'",
        "ALTER TABLE runs ADD COLUMN schema INTEGER NOT NULL DEFAULT 1",
        "CREATE INDEX runs_by_model ON runs (model)",
        "CREATE INDEX runs_by_lookup ON runs (kind, fingerprint)",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

_LIST_COLUMNS = "id, kind, model, fingerprint, data, created, status, params, summary"
_ALL_COLUMNS = _LIST_COLUMNS + ", result, environment, schema"


# --- where the file lives -------------------------------------------------------------------------------


def data_dir() -> Path:
    """The data directory: `$WORKBENCH_DATA_DIR`, else the platform's user data directory."""
    configured = os.environ.get(DATA_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    except ImportError:
        base = os.environ.get("XDG_DATA_HOME", "").strip() or str(Path.home() / ".local" / "share")
        return Path(base) / APP_NAME


def default_db_path() -> Path:
    return data_dir() / DB_NAME


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
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {
            "result": self.result,
            "environment": self.environment,
            "schema": self.schema,
        }


def _info(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "model": row["model"],
        "fingerprint": row["fingerprint"],
        "data": row["data"],
        "created": row["created"],
        "status": row["status"],
        "params": json.loads(row["params"]),
        "summary": json.loads(row["summary"]),
    }


# --- fingerprints and environment -----------------------------------------------------------------------


def weights_digest(model: Any) -> str:
    """sha256 (hex) over the model's state_dict in name order: each name, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode() + b"\0")
        _hash_value(digest, value)
    return digest.hexdigest()


def _hash_value(digest: Any, value: Any) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.is_quantized:
            # Quantized tensors have no raw view: hash their scales (in the repr) and their integer values.
            digest.update(repr(t).encode())
            t = t.int_repr()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        # A flat contiguous uint8 view reads the exact bytes of any dtype (bfloat16 included), without a copy.
        digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, (tuple, list)):
        # Packed parameters (dynamic int8 Linear) sit in the state_dict as tuples of tensors.
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _hash_value(digest, item)
    else:
        digest.update(repr(value).encode())


def model_fingerprint(spec: str, model: Any) -> str:
    """sha256 (hex) of the model spec and its weights (`weights_digest`): the same spec with other weights,
    or the same weights under another spec, is another fingerprint."""
    return hashlib.sha256(f"{spec}\0{weights_digest(model)}".encode()).hexdigest()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_environment() -> dict[str, Any]:
    """The machine and software a run used: Python, OS, torch, runtimes, CPU, GPU and torch's threads."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime": _version("onnxruntime"),
        "torch_pruning": _version("torch-pruning"),
    }
    # torch is already loaded wherever a run was computed; do not import it just to describe the machine.
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = torch.__version__
        env["threads"] = torch.get_num_threads()
        env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    else:
        env["torch"] = _version("torch")
    from analysis.latency import cpu_name

    env["cpu"] = cpu_name()
    return env


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


# --- the store ------------------------------------------------------------------------------------------


class ResultsStore:
    """Recorded runs in one SQLite file (`path`: a file, a directory to hold `results.sqlite3`, or None for
    `default_db_path()`). Opening creates the file or migrates it to the current schema.

    Each call opens its own connection, so one store may be shared across threads (Streamlit sessions)."""

    def __init__(self, path: str | Path | None = None) -> None:
        path = Path(path).expanduser() if path is not None else default_db_path()
        self.path = path / DB_NAME if path.is_dir() else path
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkbenchError(
                f"cannot create the results directory {self.path.parent}: {exc.strerror}; "
                f"set {DATA_DIR_ENV} to a writable folder"
            ) from exc
        self._migrate()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            # isolation_level=None: no implicit transactions; every write says BEGIN IMMEDIATE itself.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as exc:
            raise WorkbenchError(f"cannot open the results store {self.path}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # WAL: readers never block the writer and a killed writer's frames are ignored on recovery.
            # synchronous=NORMAL in WAL loses nothing when a process dies (only on power loss).
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            yield conn
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise WorkbenchError(
                    f"the results store {self.path} stayed locked for {BUSY_TIMEOUT_MS // 1000} s; retry"
                ) from exc
            raise WorkbenchError(f"the results store {self.path} cannot be read: {exc}") from exc
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: taken at once (IMMEDIATE, so two writers queue instead of deadlocking),
        committed whole or rolled back whole."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._connect() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise WorkbenchError(
                f"the results store {self.path} has schema {version}, newer than this workbench's "
                f"{SCHEMA_VERSION}: upgrade the workbench or set {DATA_DIR_ENV} to another folder"
            )
        if version == SCHEMA_VERSION:
            return
        with self._write() as conn:
            # Read again under the write lock: another process may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for step in MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def schema_version(self) -> int:
        with self._connect() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    def record(
        self,
        kind: str,
        model: str,
        data: str | None,
        params: Mapping[str, Any] | None,
        result: Mapping[str, Any],
        summary: Mapping[str, Any] | None = None,
        status: str = "complete",
        fingerprint: str | None = None,
        environment: Mapping[str, Any] | None = None,
    ) -> int:
        """Store one run and return its id. `kind` names the analysis (sensitivity, ranking, compression,
        report, evaluate, latency, ...); `model` and `data` are specs; `status` is 'complete' or 'partial'
        (stopped early, holding what finished). `summary` defaults to `summarize_result(result)`, the
        environment to this machine's."""
        if not isinstance(kind, str) or not kind.strip():
            raise WorkbenchError(f"a run needs a kind such as 'sensitivity' or 'compression', got {kind!r}")
        if status not in STATUSES:
            raise WorkbenchError(f"run status must be one of {', '.join(STATUSES)}, got {status!r}")
        # Serialize before the transaction: a value that is not JSON fails here, with nothing begun.
        row = (
            kind.strip(),
            str(model),
            None if data is None else str(data),
            fingerprint,
            dumps(params or {}, sort_keys=True),
            dumps(summary if summary is not None else summarize_result(result)),
            dumps(result),
            dumps(environment if environment is not None else machine_environment()),
            utc_now(),
            status,
            SCHEMA_VERSION,
        )
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO runs (kind, model, data, fingerprint, params, summary, result, environment, "
                "created, status, schema) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cursor.lastrowid)

    def list(
        self,
        model: str | None = None,
        kind: str | None = None,
        fingerprint: str | None = None,
        limit: int | None = None,
    ) -> list[RunInfo]:
        """Recorded runs, newest first, filtered by model spec, kind and fingerprint where given."""
        where, args = [], []
        for column, value in (("model", model), ("kind", kind), ("fingerprint", fingerprint)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {_LIST_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._connect() as conn:
            return [RunInfo(**_info(row)) for row in conn.execute(sql, args)]

    def get(self, run_id: int) -> Run:
        """The whole run `run_id`; a WorkbenchError if there is none."""
        with self._connect() as conn:
            row = conn.execute(f"SELECT {_ALL_COLUMNS} FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise WorkbenchError(
                f"no run {run_id} in {self.path}: see the recorded ids with `python -m analysis runs list`"
            )
        return Run(
            **_info(row),
            result=json.loads(row["result"]),
            environment=json.loads(row["environment"]),
            schema=row["schema"],
        )

    def find(
        self, kind: str, fingerprint: str, params: Mapping[str, Any], data: str | None = None
    ) -> Run | None:
        """The newest complete run of `kind` on the model with `fingerprint` and exactly these parameters
        (and this data spec, when given), to offer instead of computing it again; None if there is none."""
        sql = "SELECT id FROM runs WHERE kind = ? AND fingerprint = ? AND params = ? AND status = 'complete'"
        args: list[Any] = [kind, fingerprint, dumps(params, sort_keys=True)]
        if data is not None:
            sql += " AND data = ?"
            args.append(data)
        with self._connect() as conn:
            row = conn.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return None if row is None else self.get(row["id"])

    def delete(self, run_id: int) -> None:
        with self._write() as conn:
            if conn.execute("DELETE FROM runs WHERE id = ?", (int(run_id),)).rowcount == 0:
                raise WorkbenchError(
                    f"no run {run_id} in {self.path}: see the recorded ids with `python -m analysis runs list`"
                )

    def export(self, run_id: int, path: str | Path) -> Path:
        """Write the whole run as JSON to `path` (atomically: a reader never sees half a file)."""
        run = self.get(run_id)
        return write_text_atomic(path, json.dumps(run.to_dict(), indent=2, allow_nan=False) + "\n")

    def compare(self, run_ids: list[int]) -> Any:
        """`compare` over the runs with these ids."""
        from analysis.store.compare import compare

        return compare([self.get(i) for i in run_ids])

    def compression_table(self, model: str | None = None, fingerprint: str | None = None) -> Any:
        """`compare` over every complete or partial compression run of `model` / `fingerprint` (all runs when
        neither is given), oldest first: the points of an accuracy-versus-latency scatter."""
        from analysis.store.compare import COMPRESSION_KINDS, compare

        infos = [r for r in self.list(model=model, fingerprint=fingerprint) if r.kind in COMPRESSION_KINDS]
        return compare([self.get(r.id) for r in reversed(infos)]) if infos else None

    def integrity_check(self) -> str:
        """SQLite's own check of the file: 'ok' when sound."""
        with self._connect() as conn:
            return conn.execute("PRAGMA integrity_check").fetchone()[0]
