"""`rank`: every channel of every prunable layer scored by each importance criterion, and how each criterion
agrees with the oracle (CONTRACT section 3)."""

from __future__ import annotations

import argparse

from analysis.cli.common import add_data_args, add_model_args, add_output_args, load_inputs
from analysis.importance import CRITERIA, DEFAULT_MAX_SAMPLES, rank_channels
from analysis.importance.rankings import DEFAULT_TOPK_FRACTION
from analysis.io import write_text_atomic
from analysis.progress import progress_bar


def _rank(args: argparse.Namespace) -> dict:
    loaded = load_inputs(args, need_data=True)
    with progress_bar("rank") as progress:
        result = rank_channels(
            loaded.model,
            loaded.data,
            criteria=args.criteria,
            layers=args.layers,
            max_samples=args.max_samples,
            oracle=not args.no_oracle,
            progress=progress,
            oracle_max_samples=args.oracle_max_samples,
            topk_fraction=args.topk_fraction,
        )
    if args.csv:
        write_text_atomic(args.csv, result.to_frame().to_csv(index=False))
    return {"model": args.model, "data": loaded.data.spec} | result.to_dict()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rank", help="per-channel importance by each criterion, and Spearman agreement with the oracle"
    )
    add_model_args(p)
    add_data_args(p)
    p.add_argument(
        "--criteria",
        nargs="+",
        metavar="NAME",
        help=f"criteria to compute (default: all but oracle): {', '.join(CRITERIA)}",
    )
    p.add_argument(
        "--layers", nargs="+", metavar="LAYER", help="only these layers (default: every prunable one)"
    )
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
    p.add_argument("--csv", help="also write one row per (layer, channel) with a column per criterion")
    add_output_args(p)
    p.set_defaults(func=_rank)
