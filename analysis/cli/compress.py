"""`compress` (apply a plan, measure before and after) and `plan suggest` / `plan uniform` (make a plan).

`compress --runtime eager,onnxruntime` measures before and after on each runtime (the first one gives
`before`/`after`; 8-bit layers run real int8 on ONNX Runtime, calibrated with `--calibration`); `--save FILE`
writes the format its suffix names (.onnx, .pt2, .pruned.safetensors, .pt); noisy timings print a warning
line on standard error. A plan with a `schedule` shows a bar over its steps, and Ctrl-C stops it at the next
step and keeps the result (`stopped: true`). Every run is recorded in the results store (`--no-record`
skips; a stopped run is recorded as partial).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from analysis.cli.main import add_data_args, add_model_args, add_output_args, load_inputs
from analysis.compression.compress import compress, save_model
from analysis.compression.plan import load_plan
from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.errors import WorkbenchError
from analysis.latency import DEFAULT_BATCH_SIZE
from analysis.progress import progress_bar
from analysis.validate import parse_values


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
    from analysis.progress_eta import sigint_stops
    from analysis.runtime.artifacts import artifact_kind
    from analysis.store.recording import COMPRESSION, record_command

    plan = load_plan(args.plan)
    runtimes = parse_values(args.runtime, str, "--runtime", allow_empty=False)
    if args.save and artifact_kind(args.save) is None:
        raise WorkbenchError(
            f"--save {args.save!r}: choose the format by suffix: .onnx, .pt2, .pruned.safetensors or .pt"
        )
    loaded = load_inputs(args, need_data=True)
    plan.check_layers(loaded.model)  # before any progress bar, so a bad plan is one clean line
    scheduled = plan.schedule is not None and (plan.scheduled or not plan.prunes_per_layer)
    # Ctrl-C stops a schedule at its next step (the result is kept, `stopped: true`); one-shot runs as before.
    stops = sigint_stops() if scheduled else contextlib.nullcontext(None)
    with (
        progress_bar("compress") as progress,
        progress_bar("schedule steps") as steps,
        stops as stop,
    ):
        total_steps = _schedule_steps(plan) if scheduled else 0

        def on_step(record: dict) -> None:
            if total_steps:
                steps(min(int(record.get("step", 0)), total_steps), total_steps)

        result = compress(
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
        )
    for warning in result.latency_warnings:
        print(f"warning: {warning}", file=sys.stderr)
    payload = result.to_dict() | {"model": args.model, "data": loaded.data.spec}
    artifacts = []
    if args.save:
        payload["saved"] = str(_save(result, args.save, args.model, loaded.input_shape, payload))
        artifacts.append(args.save)
    params = {
        "plan": plan.to_dict(),
        "runtimes": runtimes,
        "calibration": args.calibration,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "device": args.device,
    }
    record_command(
        args,
        COMPRESSION,
        loaded.model,
        loaded.data.spec,
        params,
        payload,
        status="partial" if result.stopped else "complete",
        artifacts=artifacts,
    )
    return payload


def _save(result, path: str, spec: str, input_shape: tuple[int, ...], payload: dict) -> Path:
    """Write the compressed model in the format `path`'s suffix names. `.onnx`: the ONNX model that ran on
    ONNX Runtime (int8 where quantized), else an fp32 export; `.pt2` and the pruned format: the float model
    (8-bit layers on their int8 grid in float); `.pt`: the model as measured (int8 kernels included)."""
    from analysis.runtime.artifacts import artifact_kind, save_artifact

    kind = artifact_kind(path)
    float_model = result.float_model if result.float_model is not None else result.model
    if kind == "onnx":
        if result.onnx_bytes is None:
            payload["notes"].append(
                f"{path}: an fp32 ONNX export (run with --runtime onnxruntime for the int8 ONNX model)"
            )
        return save_artifact(float_model, path, input_shape=input_shape, onnx_bytes=result.onnx_bytes)
    if kind == "pickle":
        return save_model(result.model, path)
    if result.float_model is not None and result.model is not result.float_model:
        payload["notes"].append(f"{path}: saved with float kernels (the int8 Linear kernels are eager-only)")
    return save_artifact(float_model, path, spec=spec, input_shape=input_shape)


def _load_sensitivity(path: str):
    from analysis.sensitivity.sweep import SensitivityResult

    file = Path(path)
    if not file.exists():
        raise WorkbenchError(f"sensitivity file not found: {file}")
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"{file} is not JSON: {exc}") from exc
    return SensitivityResult.from_dict(payload)


def _finetune_settings(args: argparse.Namespace) -> dict:
    return {"epochs": args.epochs, "distill": args.distill}


def _suggest(args: argparse.Namespace) -> dict:
    from analysis.compression.suggest import suggest

    loaded = load_inputs(args, need_data=True)
    if args.sensitivity:
        sensitivity = _load_sensitivity(args.sensitivity)
    else:
        from analysis.sensitivity.sweep import sensitivity_sweep

        with progress_bar("sensitivity") as progress:
            sensitivity = sensitivity_sweep(loaded.model, loaded.data, kind="structured", progress=progress)
    result = suggest(
        sensitivity,
        args.budget,
        model=loaded.model,
        input_shape=loaded.input_shape,
        data=loaded.data,
        criterion=args.criterion,
        max_ratio=args.max_ratio,
        finetune=_finetune_settings(args),
        batch_size=args.batch_size,
        threads=args.threads,
    )
    about = {k: v for k, v in result.to_dict().items() if k != "plan"} | {"model": args.model}
    # The file is the plan itself, loadable by `compress --plan`; "about" is ignored there.
    return result.plan.to_dict() | {"about": about}


def _uniform(args: argparse.Namespace) -> dict:
    from analysis.compression.suggest import Budget, uniform_plan

    loaded = load_inputs(args)
    budget = Budget.parse(args.budget)
    if budget.kind != "macs":
        raise WorkbenchError("plan uniform takes a MAC budget, e.g. --budget macs=0.5")
    plan, ratio = uniform_plan(
        loaded.model,
        loaded.input_shape,
        budget.value,
        criterion=args.criterion,
        finetune=_finetune_settings(args),
    )
    return plan.to_dict() | {"about": {"budget": str(budget), "ratio": ratio, "model": args.model}}


def _check(args: argparse.Namespace) -> dict:
    plan = load_plan(args.plan)
    loaded = load_inputs(args)
    plan.check_layers(loaded.model)
    return plan.to_dict() | {"about": {"valid_for": args.model}}


def _no_plan_command(args: argparse.Namespace) -> dict:
    raise WorkbenchError(
        "choose a plan command: suggest, uniform or check (python -m analysis plan suggest -h)"
    )


def _add_finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=0, help="fine-tuning epochs the plan asks for (default 0)")
    p.add_argument(
        "--distill", action="store_true", help="distil from the uncompressed model while fine-tuning"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compress", help="apply a plan (prune, quantize, fine-tune) and measure before and after"
    )
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--plan", required=True, help="plan JSON (CONTRACT section 4)")
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
    p.add_argument(
        "--runtime",
        default="eager",
        help="runtimes to measure before and after on, commas and/or spaces: eager, onnxruntime "
        "(default eager; the first one gives before/after)",
    )
    p.add_argument(
        "--calibration",
        default="minmax",
        choices=("minmax", "entropy", "percentile"),
        help="int8 calibration on ONNX Runtime (default minmax)",
    )
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N: where accuracy is evaluated")
    from analysis.store.recording import add_record_args

    add_record_args(p)
    add_output_args(p)
    p.set_defaults(func=_compress)

    plan = subparsers.add_parser("plan", help="make or check compression plans: suggest, uniform, check")
    plan_commands = plan.add_subparsers(title="plan commands", metavar="PLAN_COMMAND")
    add_output_args(plan)
    plan.set_defaults(func=_no_plan_command)

    p = plan_commands.add_parser(
        "suggest", help="per-group ratios meeting a budget, greedily from structured sensitivity curves"
    )
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--budget", required=True, help="macs=0.5, latency=0.6 or drop=0.01 (accuracy units)")
    p.add_argument("--sensitivity", help="structured sensitivity JSON (default: run the sweep)")
    p.add_argument("--criterion", default="l1", help="ranking criterion for the plan (default l1)")
    p.add_argument("--max-ratio", type=float, default=0.9, help="largest ratio for any group (default 0.9)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="latency budgets: batch size")
    p.add_argument("--threads", type=int, default=None, help="latency budgets: intra-op threads")
    _add_finetune_args(p)
    add_output_args(p)
    p.set_defaults(func=_suggest)

    p = plan_commands.add_parser("uniform", help="the uniform ratio that meets a MAC budget")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--budget", required=True, help="macs=0.5")
    p.add_argument("--criterion", default="l1")
    _add_finetune_args(p)
    add_output_args(p)
    p.set_defaults(func=_uniform)

    p = plan_commands.add_parser("check", help="validate a plan against a model")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--plan", required=True)
    add_output_args(p)
    p.set_defaults(func=_check)
