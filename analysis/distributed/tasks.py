"""The Ray tasks the sweeps and rankings share: connecting, chunking the layers over worker slots, running
the tasks with retries and injected faults (tests), and merging the per-task notes."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.errors import WorkbenchError, first_line
from analysis.progress import Progress

DEFAULT_MAX_RETRIES = 2
_REPO_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class FaultPlan:
    """Test hook: make the task holding a layer fail. `fail[name]` = attempts that fail before one
    succeeds (-1: every attempt); `mode` "raise" raises, "exit" kills the worker process. Attempts are
    counted in files under `directory` (shared by the local workers)."""

    fail: dict[str, int]
    directory: str
    mode: str = "raise"

    def check(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.fail:
                continue
            counter = Path(self.directory) / f"attempts-{name.replace('/', '_')}"
            attempt = (int(counter.read_text()) if counter.exists() else 0) + 1
            counter.write_text(str(attempt))
            times = self.fail[name]
            if times < 0 or attempt <= times:
                if self.mode == "exit":
                    os._exit(1)
                raise RuntimeError(f"injected failure in {name} (attempt {attempt})")


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join Ray: reuse a running connection; `auto` or `ray://...` joins a cluster; None starts a local
    instance with `num_cpus` CPUs (all of them if None). Workers import `analysis` from this checkout."""
    try:
        import ray
    except ImportError as exc:
        raise WorkbenchError("--ray needs the ray package: pip install ray==2.60.0") from exc
    if ray.is_initialized():
        return
    try:
        if address:
            if address != "auto" and not address.startswith("ray://") and ":" not in address:
                raise WorkbenchError(
                    f"cannot read Ray address {address!r}: use auto, ray://host:port or host:port"
                )
            ray.init(address=address, log_to_driver=False)
        else:
            path = os.pathsep.join(p for p in (_REPO_ROOT, os.environ.get("PYTHONPATH", "")) if p)
            env = {"PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": env},
            )
    except WorkbenchError:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise WorkbenchError(f"cannot start or join Ray at {address or 'a local instance'}: {first}") from exc


def chunks(names: Sequence[str], size: int | None, slots: int) -> list[list[str]]:
    """Split the units into tasks, round-robin (task k gets units k, k + T, ...), so that expensive units
    (near the input, with the whole network downstream) spread over the tasks. `size` units per task, or
    by default one task per worker slot: every task repeats one full forward pass per batch (the cached
    prefix), so fewer, larger tasks cost less in all."""
    if size is not None and size < 1:
        raise WorkbenchError(f"layers_per_task must be at least 1, got {size}")
    tasks = math.ceil(len(names) / size) if size is not None else max(1, min(len(names), slots))
    return [list(names[k::tasks]) for k in range(tasks) if names[k::tasks]]


def slots(threads_per_task: int) -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1) // max(1, threads_per_task)))


def sweep_chunk(model, data, names, kwargs, threads, fault):
    """Ray task body: the single-process sweep over `names` only."""
    from analysis.sensitivity.sweep import sensitivity_sweep

    torch.set_num_threads(threads)
    if fault is not None:
        fault.check(names)
    return sensitivity_sweep(model, data, layers=names, **kwargs)


def rank_chunk(model, data, names, kwargs, threads, fault):
    """Ray task body: the single-process ranking over `names` only."""
    from analysis.importance.rankings import rank_channels

    torch.set_num_threads(threads)
    if fault is not None:
        fault.check(names)
    return rank_channels(model, data, layers=names, **kwargs)


def run_tasks(
    body: Callable,
    model: nn.Module,
    data: Any,
    chunks: list[list[str]],
    kwargs: dict,
    *,
    threads_per_task: int,
    max_retries: int,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
    fault: FaultPlan | None,
) -> tuple[list[Any], dict[str, str], list[str]]:
    """Submit one task per chunk, collect as they finish: (results, failed {name: why}, names not run).

    A chunk of several layers that fails after its retries is resubmitted one task per layer, so only the
    layer at fault is lost.
    """
    import ray

    task = ray.remote(body).options(num_cpus=threads_per_task, max_retries=max_retries, retry_exceptions=True)
    model_ref, data_ref = ray.put(model), ray.put(data)  # once: every task reads the same objects

    def submit(chunk: list[str]):
        return task.remote(model_ref, data_ref, chunk, kwargs, threads_per_task, fault)

    owners = {submit(chunk): chunk for chunk in chunks}
    total = sum(len(c) for c in chunks)
    done = 0
    results: list[Any] = []
    failed: dict[str, str] = {}
    pending = list(owners)
    while pending:
        if should_stop is not None and should_stop():
            for ref in pending:
                ray.cancel(ref, force=False)
            break
        ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        for ref in ready:
            chunk = owners[ref]
            try:
                results.append(ray.get(ref))
            except Exception as exc:  # retries exhausted
                if len(chunk) > 1:  # find the layer at fault: one task per layer, the others complete
                    for name in chunk:
                        single = submit([name])
                        owners[single] = [name]
                        pending.append(single)
                    continue
                failed[chunk[0]] = task_error(exc)
            done += len(chunk)
            if progress:
                progress(done, total)
    stopped = [n for ref in pending for n in owners[ref]]
    return results, failed, stopped


def task_error(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    # A RayTaskError's text is a traceback; its last line is the original "Type: message".
    return (lines[-1] if lines else type(cause).__name__)[:200]


LIST_NOTE_PREFIXES = (
    "at least one channel is kept, so the top ratio removes channels - 1 in",
    "early stop at drop >",
    "bn-scale is NaN for layers without a following per-channel norm",
    "oracle ran the full network per channel for",
)


def merge_notes(per_task: Iterable[Iterable[str]], order: Sequence[str]) -> list[str]:
    """Unique notes in order; notes that list layers after a known prefix are merged into one list."""
    from analysis.validate import few as _few

    out: list[str] = []
    lists: dict[str, list[str]] = {}
    for notes in per_task:
        for note in notes:
            prefix = next((p for p in LIST_NOTE_PREFIXES if note.startswith(p)), None)
            if prefix is None:
                if note not in out:
                    out.append(note)
                continue
            head, _, tail = note.rpartition(": ")
            if head not in lists:
                lists[head] = []
                out.append(head)  # placeholder, filled below
            lists[head] += [n for n in tail.split(", ") if n not in lists[head]]
    rank = {name: i for i, name in enumerate(order)}
    for names in lists.values():
        names.sort(key=lambda n: rank.get(n, len(rank)))
    return [f"{n}: {_few(lists[n]) if n.startswith(LIST_NOTE_PREFIXES[:2]) else ', '.join(lists[n])}"
            if n in lists else n for n in out]  # fmt: skip


def outcome_notes(
    per_task: list[Iterable[str]],
    units: Sequence[str],
    failed: dict,
    stopped: Sequence[str],
    retries: int,
    verb: str,
) -> list[str]:
    """The tasks' notes merged, then one naming the layers whose task failed after every retry and one
    naming those a Stop left undone (`verb`: what was not done to them, "swept", "ranked")."""
    notes = merge_notes(per_task, units)
    if failed:
        notes.append(
            f"failed on Ray after {retries} retries, not in the result: "
            + "; ".join(f"{n} ({why})" for n, why in failed.items())
        )
    if stopped:
        notes.append(f"stopped before these were {verb}: {', '.join(stopped)}")
    return notes
