"""`compress`: apply a plan (prune, quantize, fine-tune, transforms, a schedule) and measure before and after.

`compress --runtime eager,onnxruntime` measures before and after on each runtime (the first one gives
`before`/`after`; 8-bit layers run real int8 on ONNX Runtime, calibrated with `--calibration`); `--save FILE`
writes the format its suffix names (.onnx, .pt2, .pruned.safetensors, .pt); noisy timings print a warning
line on standard error. A plan with a `schedule` shows a bar over its steps, and Ctrl-C stops it at the next
step: the JSON says `"partial": true` (and `stopped: true`), nothing is saved (the model in hand is not the
plan's result), the run is recorded as partial and the exit code is 130. `--save` is written together with
the JSON, all or none. Every run is recorded in the results store (`--no-record` skips).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

from analysis.cli.common import (
    add_common_run_args,
    add_data_args,
    add_list_arg,
    add_metric_arg,
    add_model_args,
    add_output,
    add_output_args,
    list_names,
    metric_option,
    stopped,
)
from analysis.cli.loading import load_inputs
from analysis.compression.compress import compress
from analysis.compression.plan import load_plan
from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.errors import WorkbenchError
from analysis.latency import DEFAULT_BATCH_SIZE
from analysis.progress import progress_bar


def _schedule_steps(plan) -> int:
    """How many trajectory records after the original a plan's schedule makes (for the step bar)."""
    schedule = plan.schedule
    if schedule.method in ("slimming", "group-lasso"):
        steps = 2
    elif schedule.method == "oneshot":
        steps = 1
    else:
        steps = schedule.steps
    return steps + (1 if schedule.finetune_epochs else 0)


def _compress(args: argparse.Namespace) -> dict:
    from analysis.runtime.artifacts import artifact_kind
    from analysis.store.recording import COMPRESSION, record_command

    plan = load_plan(args.plan)
    metric = metric_option(args)
    runtimes = list_names(args.runtime, "--runtime") or ["eager"]
    if args.save and artifact_kind(args.save) is None:
        raise WorkbenchError(
            f"--save {args.save!r}: choose the format by suffix: .onnx, .pt2, .pruned.safetensors or .pt"
        )
    loaded = load_inputs(args, need_data=True)
    plan.check_layers(loaded.model)  # before any progress bar, so a bad plan is one clean line
    result = _run(args, plan, loaded, runtimes, metric)
    for warning in result.latency_warnings:
        print(f"warning: {warning}", file=sys.stderr)
    payload, artifacts = _payload(args, result, loaded)
    params = {
        "plan": plan.to_dict(),
        "runtimes": runtimes,
        "calibration": args.calibration,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "device": args.device,
        "metric": metric,
    }
    status = "partial" if result.stopped else "complete"
    record_command(
        args, COMPRESSION, loaded.model, loaded.data.spec, params, payload, status=status, artifacts=artifacts
    )
    if result.stopped:
        stopped(args, "steps")
    return payload


def _run(args: argparse.Namespace, plan, loaded, runtimes: list[str], metric):
    """`compress` with a progress bar, and for a schedule a bar over its steps that Ctrl-C stops at the next
    step (the result is kept, `stopped: true`); one-shot runs as before."""
    from analysis.progress.eta import sigint_stops

    scheduled = plan.schedule is not None and (plan.scheduled or not plan.prunes_per_layer)
    stops = sigint_stops() if scheduled else contextlib.nullcontext(None)
    total_steps = _schedule_steps(plan) if scheduled else 0
    with (
        progress_bar("compress") as progress,
        progress_bar("schedule steps") as steps,
        stops as stop,
    ):

        def on_step(record: dict) -> None:
            if total_steps:
                steps(min(int(record.get("step", 0)), total_steps), total_steps)

        return compress(
            loaded.model,
            plan,
            loaded.data,
            progress=progress,
            batch_size=args.batch_size,
            threads=args.threads,
            latency_rounds=args.rounds,
            real_int8=not args.no_real_int8,
            max_samples=args.max_samples,
            runtimes=runtimes,
            calibration=args.calibration,
            device=args.device,
            on_step=on_step,
            should_stop=stop,
            metric=metric,
        )


def _payload(args: argparse.Namespace, result, loaded) -> tuple[dict, list[Path]]:
    """The JSON payload and the artifact staged for `--save` (none when the run was stopped: the model in
    hand is not the plan's result, so it is never saved as if it were)."""
    payload = result.to_dict() | {"model": args.model, "data": loaded.data.spec}
    artifacts = []
    if result.stopped:
        payload["partial"] = True
        if args.save:
            payload["notes"].append(f"{args.save} not written: the run was stopped before the plan finished")
    elif args.save:
        artifacts.append(_stage(args, result, loaded.input_shape, loaded.data, payload))
        payload["saved"] = str(args.save)
    return payload, artifacts


def _stage(args: argparse.Namespace, result, input_shape, data, payload: dict) -> Path:
    """Write the artifact into a private folder next to `--save` and queue its move into place with the
    JSON (all outputs or none); MLflow, when asked, logs the staged file under the same name."""
    target = Path(args.save)
    staged = tempfile.TemporaryDirectory(prefix=".workbench-save-", dir=target.parent)
    args.__dict__.setdefault("_cleanup", []).append(staged.cleanup)
    path = _save(result, str(Path(staged.name) / target.name), args.model, input_shape, data, payload)
    # The notes name the staged file; the user asked for args.save.
    payload["notes"] = [str(n).replace(str(path), str(args.save)) for n in payload["notes"]]
    add_output(args, args.save, lambda p: shutil.copyfile(path, p))
    return path


def _save(result, path: str, spec: str, input_shape: tuple[int, ...], data, payload: dict) -> Path:
    """Write the compressed model in the format `path`'s suffix names (`save_compressed`: `.onnx` is int8
    where the plan has 8-bit layers, `.pt2` and the pruned format hold the float model, `.pt` the model as
    measured); the line saying what the file holds goes to the notes."""
    from analysis.runtime.artifacts import save_compressed

    saved, what = save_compressed(result, path, spec=spec, input_shape=input_shape, data=data)
    payload["notes"].append(f"{path}: {what}")
    return saved


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compress", help="apply a plan (prune, quantize, fine-tune) and measure before and after"
    )
    add_model_args(p)
    add_data_args(p)
    add_metric_arg(p)
    p.add_argument("--plan", required=True, help="plan JSON (docs/contract.md section 4)")
    p.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="latency batch size (default 32)"
    )
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for timing (default: torch's)")
    p.add_argument("--rounds", type=int, default=10, help="alternating latency rounds (default 10)")
    p.add_argument(
        "--max-samples", type=int, default=DEFAULT_MAX_SAMPLES, help="sample cap for data-driven criteria"
    )
    p.add_argument(
        "--no-real-int8",
        action="store_true",
        help="keep 8-bit Linear layers fake-quantized in float instead of running the int8 kernel",
    )
    p.add_argument(
        "--save",
        help="write the compressed model here; the suffix chooses the format: .onnx (int8 where quantized, "
        "with --runtime onnxruntime), .pt2 (torch.export), .pruned.safetensors (safe), .pt (pickle)",
    )
    add_list_arg(
        p,
        "--runtime",
        "runtimes to measure before and after on: eager, onnxruntime (default eager; the first one gives "
        "before/after)",
        metavar="RUNTIME",
    )
    p.add_argument(
        "--calibration",
        default="minmax",
        choices=("minmax", "entropy", "percentile"),
        help="int8 calibration on ONNX Runtime (default minmax)",
    )
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N: where accuracy is evaluated")
    add_common_run_args(p)
    add_output_args(p)
    p.set_defaults(func=_compress)
