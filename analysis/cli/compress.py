"""`compress`: apply a plan (prune, quantize, fine-tune) and measure before and after."""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.cli.common import add_data_args, add_model_args, add_output_args, load_inputs
from analysis.compression.compress import compress, save_model
from analysis.compression.plan import load_plan
from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.errors import WorkbenchError
from analysis.latency import DEFAULT_BATCH_SIZE
from analysis.progress import progress_bar


def _compress(args: argparse.Namespace) -> dict:
    plan = load_plan(args.plan)
    loaded = load_inputs(args, need_data=True)
    if args.save and Path(args.save).suffix.lower() not in (".pt", ".pth"):
        raise WorkbenchError(f"--save writes a pickled module: give a .pt or .pth file, not {args.save!r}")
    plan.check_layers(loaded.model)  # before any progress bar, so a bad plan is one clean line
    with progress_bar("compress") as progress:
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
        )
    payload = result.to_dict() | {"model": args.model, "data": loaded.data.spec}
    if args.save:
        save_model(result.model, args.save)
        payload["saved"] = str(args.save)
    return payload


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
    p.add_argument("--save", help="write the compressed model here (.pt, a pickled module)")
    add_output_args(p)
    p.set_defaults(func=_compress)
