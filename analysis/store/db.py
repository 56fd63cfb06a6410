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
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from analysis.errors import WorkbenchError
from analysis.io import write_text_atomic
from analysis.store.fingerprint import (  # noqa: F401  (re-exported: the store's API)
    machine_environment,
    model_fingerprint,
    public_environment,
    weights_digest,
)
from analysis.store.records import (  # noqa: F401  (re-exported: the store's API)
    MAX_RUN_ID,
    UNREADABLE,
    Run,
    RunInfo,
    _info,
    _json_column,
    check_run_id,
    clean_json,
    dumps,
    summarize_result,
    utc_now,
)

APP_NAME = "compression-workbench"
DB_NAME = "results.sqlite3"
DATA_DIR_ENV = "WORKBENCH_DATA_DIR"
STATUSES = ("complete", "partial", "failed")  # failed: computed, but its outputs could not be written
# The kinds the command line and the app record (a store may hold more, from newer versions).
RUN_KINDS = ("summary", "evaluation", "latency", "sensitivity", "ranking", "compression", "report")
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


# --- the store ------------------------------------------------------------------------------------------


class ResultsStore:
    """Recorded runs in one SQLite file (`path`: a file, a directory to hold `results.sqlite3`, or None for
    `default_db_path()`). Opening creates the file or migrates it to the current schema.

    Each call opens its own connection, so one store may be shared across threads (Streamlit sessions)."""

    def __init__(self, path: str | Path | None = None, create: bool = True) -> None:
        if path is None:
            self.path = default_db_path()
        else:
            given = Path(path).expanduser()
            self.path = given / DB_NAME if given.is_dir() and not given.name.endswith(".sqlite3") else given
        if self.path.is_dir():
            # Never a store inside a folder that has the store's own name: that hides the real problem.
            raise WorkbenchError(
                f"the results store {self.path} is a folder, not a database file: move it away or set "
                f"{DATA_DIR_ENV} to another folder"
            )
        if not self.path.exists():
            self._create_parent(path is None, create)
        self._migrate()

    def _create_parent(self, default: bool, create: bool) -> None:
        """The data directory is created where it is the default one; a path the user typed must name an
        existing folder (a typo never creates folders), and with `create=False` an existing file."""
        if not create:
            raise WorkbenchError(
                f"no results store at {self.path}: check the path (nothing is recorded there)"
            )
        if not default and not self.path.parent.is_dir():
            raise WorkbenchError(
                f"the folder {self.path.parent} does not exist: create it first, or fix the --db path"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkbenchError(
                f"cannot create the results directory {self.path.parent}: {exc.strerror}; "
                f"set {DATA_DIR_ENV} to a writable folder"
            ) from exc

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    def _open(self, write: bool) -> sqlite3.Connection:
        """A connection in WAL mode; for reading a store this user cannot write (a read-only file or
        folder: WAL needs to create its side files), an immutable read-only one instead."""
        try:
            # isolation_level=None: no implicit transactions; every write says BEGIN IMMEDIATE itself.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as exc:
            raise WorkbenchError(f"cannot open the results store {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # WAL: readers never block the writer and a killed writer's frames are ignored on recovery.
            # synchronous=NORMAL in WAL loses nothing when a process dies (only on power loss).
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            return conn
        except sqlite3.OperationalError as exc:
            conn.close()
            if "readonly" not in str(exc).replace("-", "").replace(" ", ""):
                raise
            if write:
                raise WorkbenchError(
                    f"the results store {self.path} is read-only for this user: it can be listed, not "
                    f"written; set {DATA_DIR_ENV} to a writable folder to record runs"
                ) from exc
        uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?immutable=1"
        return sqlite3.connect(uri, uri=True, isolation_level=None)

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        conn = None
        try:
            conn = self._open(write)
            conn.row_factory = sqlite3.Row
            yield conn
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise WorkbenchError(
                    f"the results store {self.path} stayed locked for {BUSY_TIMEOUT_MS // 1000} s; retry"
                ) from exc
            raise WorkbenchError(f"the results store {self.path} cannot be read: {exc}") from exc
        finally:
            if conn is not None:
                conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: taken at once (IMMEDIATE, so two writers queue instead of deadlocking),
        committed whole or rolled back whole."""
        with self._connect(write=True) as conn:
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
        ids: Iterable[int] | None = None,
    ) -> list[RunInfo]:
        """Recorded runs, newest first, filtered by model spec, kind, fingerprint and run ids where given
        (a shared server lists only the ids its visitor's session recorded)."""
        where, args = [], []
        for column, value in (("model", model), ("kind", kind), ("fingerprint", fingerprint)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if ids is not None:
            wanted = sorted({check_run_id(i) for i in ids})
            where.append(f"id IN ({', '.join('?' * len(wanted))})" if wanted else "0")
            args.extend(wanted)
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
        """The whole run `run_id`; a WorkbenchError if there is none or its stored JSON is damaged."""
        run_id = check_run_id(run_id)
        with self._connect() as conn:
            row = conn.execute(f"SELECT {_ALL_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise WorkbenchError(
                f"no run {run_id} in {self.path}: see the recorded ids with `python -m analysis runs list`"
            )
        info = _info(row)
        try:
            if info["status"] == UNREADABLE:
                raise ValueError
            result, environment = _json_column(row, "result"), _json_column(row, "environment")
        except (TypeError, ValueError):
            raise WorkbenchError(
                f"run {run_id} in {self.path} is unreadable (its stored JSON is damaged): remove it with "
                f"`python -m analysis runs delete {run_id}`"
            ) from None
        return Run(**info, result=result, environment=environment, schema=row["schema"])

    def set_status(self, run_id: int, status: str) -> None:
        """Change a recorded run's status (a run whose outputs could not be written becomes `failed`)."""
        if status not in STATUSES:
            raise WorkbenchError(f"run status must be one of {', '.join(STATUSES)}, got {status!r}")
        with self._write() as conn:
            conn.execute("UPDATE runs SET status = ? WHERE id = ?", (status, check_run_id(run_id)))

    def kinds(self) -> list[str]:
        """Every kind of run recorded here and every kind the workbench records, sorted."""
        with self._connect() as conn:
            stored = {row[0] for row in conn.execute("SELECT DISTINCT kind FROM runs")}
        return sorted(stored | set(RUN_KINDS))

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
        run_id = check_run_id(run_id)
        with self._write() as conn:
            if conn.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount == 0:
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

    def compression_table(
        self, model: str | None = None, fingerprint: str | None = None, ids: Iterable[int] | None = None
    ) -> Any:
        """`compare` over every complete or partial compression run of `model` / `fingerprint` (all runs when
        neither is given; only `ids` when given), oldest first: the points of an accuracy-versus-latency
        scatter."""
        from analysis.store.compare import COMPRESSION_KINDS, compare

        infos = [
            r
            for r in self.list(model=model, fingerprint=fingerprint, ids=ids)
            if r.kind in COMPRESSION_KINDS and r.status in ("complete", "partial")
        ]
        return compare([self.get(r.id) for r in reversed(infos)]) if infos else None

    def integrity_check(self) -> str:
        """SQLite's own check of the file: 'ok' when sound."""
        with self._connect() as conn:
            return conn.execute("PRAGMA integrity_check").fetchone()[0]
