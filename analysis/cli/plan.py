"""`plan suggest` / `plan uniform` (make a plan from a budget) and `plan check` (validate one)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from analysis.cli.common import add_data_args, add_metric_arg, add_model_args, add_output_args, metric_option
from analysis.cli.loading import load_inputs
from analysis.compression.plan import load_plan
from analysis.errors import WorkbenchError
from analysis.latency import DEFAULT_BATCH_SIZE
from analysis.progress import progress_bar


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


def _suggest_mixed(args: argparse.Namespace, loaded) -> dict:
    from analysis.compression.suggest import suggest_mixed

    files = [part for text in args.sensitivity or [] for part in text.replace(",", " ").split()]
    sweeps = []
    for path in files:
        try:
            sweeps.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise WorkbenchError(f"cannot read sensitivity file {path}: {exc}") from exc
    with progress_bar("sensitivity") as progress:
        result = suggest_mixed(
            loaded.model,
            loaded.data,
            args.budget,
            sweeps,
            methods=args.methods,
            input_shape=loaded.input_shape,
            criterion=args.criterion,
            max_ratio=args.max_ratio,
            finetune=_finetune_settings(args),
            progress=progress,
            metric=metric_option(args),
        )
    about = {k: v for k, v in result.to_dict().items() if k != "plan"} | {"model": args.model}
    return result.plan_dict | {"about": about}


def _suggest(args: argparse.Namespace) -> dict:
    from analysis.compression.suggest import suggest

    metric = metric_option(args)
    loaded = load_inputs(args, need_data=True)
    if args.methods or args.budget.strip().lower().startswith(("size", "bytes")):
        args.methods = args.methods or "prune,rank,bits"
        return _suggest_mixed(args, loaded)
    if args.sensitivity and len(args.sensitivity) > 1:
        raise WorkbenchError("give one structured --sensitivity file, or add --methods for several kinds")
    args.sensitivity = args.sensitivity[0] if args.sensitivity else None
    if args.sensitivity:
        sensitivity = _load_sensitivity(args.sensitivity)
    else:
        from analysis.sensitivity.sweep import sensitivity_sweep

        with progress_bar("sensitivity") as progress:
            sensitivity = sensitivity_sweep(
                loaded.model, loaded.data, kind="structured", progress=progress, metric=metric
            )
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
    about["metric"] = sensitivity.metric.to_dict()  # drops and budgets are in the sweep's metric
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
    plan = subparsers.add_parser("plan", help="make or check compression plans: suggest, uniform, check")
    plan_commands = plan.add_subparsers(title="plan commands", metavar="PLAN_COMMAND")
    add_output_args(plan)
    plan.set_defaults(func=_no_plan_command)

    p = plan_commands.add_parser(
        "suggest", help="per-group ratios meeting a budget, greedily from structured sensitivity curves"
    )
    add_model_args(p)
    add_data_args(p)
    add_metric_arg(p)
    p.add_argument(
        "--budget",
        required=True,
        help="macs=0.5, latency=0.6, size=0.5 (bytes kept) or drop=0.01 (in the metric's units: 0.01 = one "
        "point of accuracy)",
    )
    p.add_argument(
        "--sensitivity",
        action="append",
        help="sensitivity JSON (default: run the sweep); with --methods, one file per kind (structured, "
        "lowrank, quant), repeated or comma-separated",
    )
    p.add_argument(
        "--methods",
        default=None,
        help="choose per layer among prune, rank, bits by accuracy lost per MAC (macs=) or byte (size=) "
        "saved, e.g. prune,rank,bits (default: pruning only; size= budgets use all three)",
    )
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
