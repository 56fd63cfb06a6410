"""Shared pieces of the command line: common options, loading, JSON output, one-line errors.

Each command group lives in a module of `analysis/cli/` (basic, rank, compress, sensitivity, runs) with a
`register(subparsers)` function; `__main__.py` lists those modules. A command's handler takes the parsed
args and returns the JSON payload (a dict); extra output files go through `add_output` so that a command
writes all of them or none (`analysis.io.write_all_atomic`), the JSON included.

Options every analysis command shares (docs/contract.md section 6):
- lists (`--ratios`, `--bits`, `--layers`, `--criteria`, `--kinds`) take commas, spaces or both:
  `--ratios 0.2,0.4 0.6` is `[0.2, 0.4, 0.6]` (`list_values`, `list_names`);
- `--device auto|cpu|cuda[:N]` and `--dtype float32|float16|bfloat16` (`device_options`);
- `--ray [ADDRESS]` for sweeps and rankings (`add_ray_args`);
- `--no-record`, `--mlflow [URI]` (the results store, `record`).

Data rule: without `--data`, the digits are used only where the model was made for them (a `zoo:` model,
or a model that takes 1x16x16 inputs and has 10 outputs). Any other model without `--data` has no data:
its accuracy is absent (null, with a note), and commands that cannot work without data say so.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.errors import WorkbenchError, first_line
from analysis.io import check_outputs, to_json, write_all_atomic
from analysis.metrics import check_metric_name, metric_choices
from analysis.model.specs import (
    DEFAULT_MODEL,
)
from analysis.startup import end_startup
from analysis.store.recording import add_record_args, record_command
from analysis.validate import parse_names, parse_values, whole

EXIT_STOPPED = 130  # the shell's code for a run ended by Ctrl-C (128 + SIGINT)
DATA_HELP = (
    "data spec: digits, tensors:<file>, imagefolder:<dir>[?resize=&crop=&normalize=&limit=]. Default: the "
    "digits, but only for zoo models and models taking 1x16x16 inputs with 10 outputs; any other model "
    "without --data has no accuracy (null, with a note)"
)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model spec (default: %(default)s)")
    parser.add_argument("--weights", help="state dict for the model: .safetensors, .pt or .pth")
    parser.add_argument(
        "--trust-pickle", action="store_true", help="allow loading a whole pickled model (runs code)"
    )
    parser.add_argument(
        "--input-shape",
        help="input shape with batch first, e.g. 1,3,224,224; several inputs: one shape each, ';' between "
        "them, in forward's order (1,128;1,64); name=shape passes an input by name, :int64 sets its dtype",
    )


def add_metric_arg(parser: argparse.ArgumentParser) -> None:
    """`--metric`: how outputs are scored (`analysis.metrics`)."""
    parser.add_argument(
        "--metric",
        default="auto",
        help=f"how outputs are scored: {', '.join(metric_choices())} or module:callable (default: auto = "
        "accuracy with labels and one (N, classes) output, else agreement with the original model)",
    )


def metric_option(args: argparse.Namespace) -> str:
    """`--metric` checked (a known name or module:callable) before anything is loaded."""
    return check_metric_name(getattr(args, "metric", None))


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help=DATA_HELP)


def add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        default="-",
        help="write the result here ('-' = standard output; FIFOs, devices written as is)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def add_list_arg(parser: argparse.ArgumentParser, flag: str, help: str, metavar: str = "VALUE") -> None:
    """A list option: `--flag a,b c` (commas, spaces or both; several words are joined)."""
    parser.add_argument(flag, nargs="+", metavar=metavar, help=f"{help} (commas and/or spaces)")


def _joined(value: list[str] | str | None) -> str | None:
    return value if value is None or isinstance(value, str) else " ".join(value)


def list_values(value: list[str] | str | None, kind: Callable[[str], Any], flag: str) -> list | None:
    """Numbers of a list option (None where it was not given); an empty or bad list is one line."""
    text = _joined(value)
    return None if text is None else parse_values(text, kind, flag, allow_empty=False)


def list_names(value: list[str] | str | None, flag: str) -> list[str] | None:
    """Names of a list option (None where it was not given)."""
    text = _joined(value)
    return None if text is None else parse_names(text, flag, allow_empty=False)


def add_device_args(parser: argparse.ArgumentParser, dtype: bool = True) -> None:
    parser.add_argument(
        "--device",
        help="where the work runs: auto (a GPU if there is one), cpu, cuda or cuda:N (default: cpu); "
        "the work happens on a private copy there",
    )
    if dtype:
        parser.add_argument(
            "--dtype",
            choices=("float32", "float16", "bfloat16"),
            help="run a copy cast to this precision (default: the model's own)",
        )


def device_options(args: argparse.Namespace) -> tuple[torch.device | None, str | None]:
    """`--device` resolved (None when not given: the model's CPU copy as is) and `--dtype`; a GPU asked
    for where there is none is one line, before anything is loaded."""
    from analysis.devices import resolve_device

    device = getattr(args, "device", None)
    return (None if device is None else resolve_device(device)), getattr(args, "dtype", None)


def add_ray_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run one task per layer on Ray: a local instance, or the cluster at ADDRESS (auto, host:port, "
        "ray://host:port); same numbers as without",
    )
    parser.add_argument("--ray-cpus", type=int, help="CPUs of a local Ray instance (default: all)")


def ray_options(args: argparse.Namespace) -> dict | None:
    """Keyword arguments for the `analysis.distributed` functions, or None without `--ray`."""
    if getattr(args, "ray", None) is None:
        return None
    if getattr(args, "device", None) is not None or getattr(args, "dtype", None) is not None:
        raise WorkbenchError("--device and --dtype apply to local runs: drop them or --ray")
    cpus = None if args.ray_cpus is None else whole(args.ray_cpus, "--ray-cpus")
    return {"address": args.ray or None, "num_cpus": cpus}


def add_limit_arg(parser: argparse.ArgumentParser, what: str = "evaluate") -> None:
    parser.add_argument(
        "--limit",
        type=int,
        help=f"{what} on N samples only: a fixed, seeded, class-balanced subset of each split",
    )


def check_counts(args: argparse.Namespace, *names: str) -> None:
    """Each named option, where given, a whole number of at least 1 (`--limit 0`, `--batch-size -1`)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            flag = f"--{name.replace('_', '-')}"
            whole(value, f"{name.replace('_', ' ')} ({flag})" if "_" in name else flag)


def add_output(args: argparse.Namespace, path: str | Path | None, write: Callable[[Path], None]) -> None:
    """Queue an extra output file; `run` writes it with the JSON, all or none."""
    if path:
        args.__dict__.setdefault("_outputs", {})[str(path)] = write


def record(
    args: argparse.Namespace,
    kind: str,
    model: nn.Module,
    data: str | None,
    params: dict,
    payload: dict,
    *,
    status: str = "complete",
    artifacts: tuple = (),
) -> int | None:
    """Record `payload` in the results store (unless `--no-record`; MLflow too for compressions with
    `--mlflow`), adding `run_id` to it. `model` is the loaded model, before any change. Every analysis
    command makes this one call."""
    return record_command(args, kind, model, data, params, payload, status=status, artifacts=artifacts)


def add_common_run_args(parser: argparse.ArgumentParser) -> None:
    """`--no-record` and `--mlflow [URI]`, for every command that records its result."""
    add_record_args(parser)


def stopped(args: argparse.Namespace, what: str) -> None:
    """Mark the command as stopped by Ctrl-C: the partial result is still written and recorded, then the
    process exits with EXIT_STOPPED."""
    args.__dict__["_exit_code"] = EXIT_STOPPED
    print(f"stopped: the {what} finished so far are written and recorded as partial", file=sys.stderr)


@dataclass
class LongRun:
    """What a long command needs: `progress(done, total)` for the bar (with elapsed time and the time left),
    `should_stop()` (True after Ctrl-C), and the timer."""

    progress: Callable[[int, int], None]
    should_stop: Callable[[], bool]
    timer: Any


@contextlib.contextmanager
def long_run(desc: str) -> Iterator[LongRun]:
    """A tqdm bar on standard error (lines in a log) showing `RunTimer`'s elapsed time and the time left, and
    Ctrl-C as Stop (the first one stops at the next unit of work, a second one aborts)."""
    from tqdm import tqdm

    from analysis.progress import log_lines
    from analysis.progress.eta import RunTimer, sigint_stops

    timer = RunTimer()
    bars: list = []
    line = log_lines(desc, timer.describe)  # a log (not a terminal) gets lines, not carriage returns

    def update(done: int, total: int) -> None:
        if not sys.stderr.isatty():
            line(done, total)
            return
        if not bars:
            bars.append(
                tqdm(
                    total=max(total, 1),
                    desc=desc,
                    file=sys.stderr,
                    leave=False,
                    dynamic_ncols=True,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}",
                )
            )
        bar = bars[0]
        bar.total = max(total, 1)
        bar.n = done
        bar.set_postfix_str(timer.describe(), refresh=True)

    try:
        with sigint_stops() as should_stop:
            yield LongRun(timer.wrap(update), should_stop, timer)
    finally:
        for bar in bars:
            bar.close()


def warn(text: str | None) -> None:
    """One warning line on standard error (a noisy latency, say); nothing for None."""
    if text:
        print(f"warning: {text}", file=sys.stderr)


def emit(payload: dict, dest: str, outputs: dict | None = None) -> None:
    """Write the JSON payload to `dest` ('-' = standard output) together with the queued `outputs`: all of
    them or none (temp files first, then renames; streams such as standard output and FIFOs last)."""
    text = to_json(payload)
    writers = dict(outputs or {})
    if dest in writers:
        raise WorkbenchError(f"--json and another output both name {dest}: give each its own file")
    writers[dest] = lambda p: p.write_text(text, encoding="utf-8")
    write_all_atomic(writers)


OUTPUT_OPTIONS = ("json", "out", "csv", "markdown", "save")


def run_inputs(args: argparse.Namespace) -> dict[str, str]:
    """The files a run reads (option -> path) that an output must not overwrite: the model file (a saved
    artifact, or the .py of a file spec), the weights, the plan, a tensors file, and the results store."""
    from analysis.store.db import default_db_path

    found: dict[str, str] = {}
    model = getattr(args, "model", None) or ""
    module, _, attr = model.rpartition(":")
    found["--model"] = module if module.endswith(".py") and attr else model
    reference = getattr(args, "reference", None) or ""
    module, _, attr = reference.rpartition(":")
    found["--reference"] = module if module.endswith(".py") and attr else reference
    for name in ("weights", "reference_weights", "plan"):
        if getattr(args, name, None):
            found[f"--{name.replace('_', '-')}"] = str(getattr(args, name))
    data = getattr(args, "data", None) or ""
    if data.startswith("tensors:"):
        found["--data"] = data.removeprefix("tensors:")
    found["the results store"] = str(getattr(args, "db", None) or default_db_path())
    return {k: v for k, v in found.items() if v and Path(v).exists()}


def check_run_outputs(args: argparse.Namespace) -> None:
    """Every output option checked before any work starts (`analysis.io.check_outputs`)."""
    outputs = {f"--{name}": getattr(args, name, None) for name in OUTPUT_OPTIONS}
    check_outputs(outputs, run_inputs(args))


def check_run_limits(args: argparse.Namespace) -> None:
    """Limits known before any work: `--threads` at most the CPU count (`analysis.limits`)."""
    from analysis.limits import check_threads

    check_threads(getattr(args, "threads", None))


def _mark_failed(args: argparse.Namespace, payload: dict) -> None:
    """A run whose outputs could not be written is recorded as failed, not complete."""
    run_id = payload.get("run_id")
    if run_id is None:
        return
    from analysis.store.db import ResultsStore

    with contextlib.suppress(WorkbenchError):
        ResultsStore(getattr(args, "db", None)).set_status(run_id, "failed")


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse, check the outputs, dispatch, write JSON; bad input becomes one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        end_startup()  # Ctrl-C raises from here on, and is caught below
        check_run_outputs(args)
        check_run_limits(args)
        payload = args.func(args)
        if payload is not None:
            try:
                emit(payload, args.json, args.__dict__.get("_outputs"))
            except BaseException:
                _mark_failed(args, payload)
                raise
    except WorkbenchError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (nothing written)", file=sys.stderr)
        return EXIT_STOPPED
    except Exception as exc:
        # Errors from torch (an input shape the model does not take, say) are one line too; --debug shows more.
        if args.debug:
            raise
        print(
            f"error: {type(exc).__name__}: {first_line(exc)} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        for cleanup in args.__dict__.get("_cleanup", []):
            cleanup()
    return args.__dict__.get("_exit_code", 0)
