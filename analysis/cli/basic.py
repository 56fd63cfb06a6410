"""`summary`, `evaluate` and `latency`: what a model costs, how well it does, how fast it runs."""

from __future__ import annotations

import argparse

from analysis.cli.common import add_data_args, add_model_args, add_output_args, load_inputs
from analysis.cost import summarize
from analysis.evaluate import evaluate
from analysis.latency import DEFAULT_BATCH_SIZE, measure_latency


def _summary(args: argparse.Namespace) -> dict:
    loaded = load_inputs(args)
    return summarize(loaded.model, loaded.input_shape).to_dict()


def _evaluate(args: argparse.Namespace) -> dict:
    loaded = load_inputs(args, need_data=True)
    result = evaluate(loaded.model, loaded.data, batch_size=args.batch_size)
    return result.to_dict() | {"model": args.model, "data": loaded.data.spec}


def _latency(args: argparse.Namespace) -> dict:
    loaded = load_inputs(args)
    result = measure_latency(
        loaded.model, loaded.input_shape, batch_size=args.batch_size, threads=args.threads, runs=args.runs
    )
    return result.to_dict() | {"model": args.model, "input_shape": list(loaded.input_shape)}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("summary", help="params, MACs and FLOPs per layer and in total")
    add_model_args(p)
    add_data_args(p)
    add_output_args(p)
    p.set_defaults(func=_summary)

    p = subparsers.add_parser(
        "evaluate", help="top-1 accuracy and mean cross-entropy on the evaluation split"
    )
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--batch-size", type=int, default=256)
    add_output_args(p)
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser("latency", help="median, p10 and p90 forward-pass time")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    p.add_argument("--runs", type=int, default=30)
    add_output_args(p)
    p.set_defaults(func=_latency)
