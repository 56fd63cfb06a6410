"""`rank`: every channel of every prunable layer scored by each importance criterion, and how each criterion
agrees with the oracle (docs/contract.md section 3)."""

from __future__ import annotations

import argparse

from analysis.cli.common import (
    add_common_run_args,
    add_data_args,
    add_device_args,
    add_limit_arg,
    add_list_arg,
    add_model_args,
    add_output,
    add_output_args,
    add_ray_args,
    check_counts,
    device_options,
    list_names,
    long_run,
    ray_options,
    record,
    stopped,
    warn,
)
from analysis.cli.loading import load_inputs
from analysis.cli.runtimes import add_runtime_arg, one_runtime
from analysis.importance import DEFAULT_MAX_SAMPLES, criterion_names, default_criteria, rank_channels
from analysis.importance.rankings import DEFAULT_TOPK_FRACTION
from analysis.validate import criterion


def _rank(args: argparse.Namespace) -> dict:
    check_counts(args, "max_samples", "oracle_max_samples", "limit")
    criteria = list_names(args.criteria, "--criteria")
    criteria = None if criteria is None else [criterion(c, criterion_names(), "--criteria") for c in criteria]
    layers = list_names(args.layers, "--layers")
    device, _ = device_options(args)
    ray = ray_options(args)
    runtime = one_runtime(args, ray)
    loaded = load_inputs(args, need_data=True)
    options = dict(
        criteria=criteria,
        layers=layers,
        max_samples=args.max_samples,
        oracle=not args.no_oracle,
        oracle_max_samples=args.oracle_max_samples,
        topk_fraction=args.topk_fraction,
    )
    with long_run("rank") as run:
        if ray is None:
            from analysis.runtime.edit_runner import runner_class  # the oracle's evaluations run there

            result = rank_channels(
                loaded.model,
                loaded.data,
                progress=run.progress,
                device=device,
                should_stop=run.should_stop,
                runner=runner_class(runtime),
                **options,
            )
            partial = run.should_stop()
        else:
            from analysis.distributed.ray_sweep import ray_rank_channels

            result = ray_rank_channels(
                loaded.model,
                loaded.data,
                progress=run.progress,
                should_stop=run.should_stop,
                **ray,
                **options,
            )
            partial = run.should_stop()
            for note in result.notes:
                if note.startswith("failed on Ray"):
                    warn(note)
    if args.csv:
        frame = result.to_frame()
        add_output(args, args.csv, lambda p: frame.to_csv(p, index=False))
    payload = {"model": args.model, "data": loaded.data.spec} | result.to_dict()
    params = options | {"limit": args.limit, "device": args.device, "ray": args.ray, "runtime": runtime}
    if partial:
        payload["partial"] = True
    record(
        args,
        "ranking",
        loaded.model,
        loaded.data.spec,
        params,
        payload,
        status="partial" if partial else "complete",
    )
    if partial:
        stopped(args, "layers")
    return payload


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rank", help="per-channel importance by each criterion, and Spearman agreement with the oracle"
    )
    add_model_args(p)
    add_data_args(p)
    expensive = ", ".join(c for c in criterion_names() if c not in default_criteria())
    add_list_arg(
        p,
        "--criteria",
        f"criteria to compute (default: all but {expensive}): {', '.join(criterion_names())}",
        "NAME",
    )
    add_list_arg(p, "--layers", "only these layers (default: every prunable one)", "LAYER")
    p.add_argument(
        "--max-samples",
        type=int,
        default=DEFAULT_MAX_SAMPLES,
        help="train samples for the activation criteria (default: %(default)s)",
    )
    p.add_argument(
        "--oracle-max-samples", type=int, help="train samples per oracle evaluation (default: --max-samples)"
    )
    p.add_argument("--no-oracle", action="store_true", help="skip the oracle (one evaluation per channel)")
    p.add_argument(
        "--topk-fraction",
        type=float,
        default=DEFAULT_TOPK_FRACTION,
        help="fraction of channels compared by the top-k overlap (default: %(default)s)",
    )
    add_limit_arg(p, "calibrate and run the oracle")
    add_device_args(p, dtype=False)
    add_runtime_arg(p, "where the oracle's per-channel evaluations run (default eager)")
    add_ray_args(p)
    p.add_argument("--csv", help="also write one row per (layer, channel) with a column per criterion")
    add_common_run_args(p)
    add_output_args(p)
    p.set_defaults(func=_rank)
