"""The results store (docs/contract.md section 9): recorded runs, their comparison, and an optional MLflow sink."""

from analysis.store.compare import compare, plan_diff
from analysis.store.db import (
    SCHEMA_VERSION,
    ResultsStore,
    Run,
    RunInfo,
    clean_json,
    data_dir,
    default_db_path,
    machine_environment,
    model_fingerprint,
    public_environment,
    summarize_result,
    weights_digest,
)
from analysis.store.mlflow_sink import log_compression

__all__ = [
    "log_compression",
    "SCHEMA_VERSION",
    "ResultsStore",
    "Run",
    "RunInfo",
    "clean_json",
    "compare",
    "data_dir",
    "default_db_path",
    "machine_environment",
    "model_fingerprint",
    "plan_diff",
    "public_environment",
    "summarize_result",
    "weights_digest",
]
