"""`sensitivity`: per-layer sweeps, written as JSON (and CSV / Markdown where asked) (CONTRACT section 3)."""

from __future__ import annotations

import argparse

from analysis.cli.common import add_data_args, add_model_args, add_output_args, load_inputs, option_list
from analysis.progress import progress_bar
from analysis.report.files import write_csv, write_markdown
from analysis.report.html import build_report
from analysis.sensitivity.sweep import KINDS, sensitivity_sweep


def _sensitivity(args: argparse.Namespace) -> dict:
    ratios = option_list(args.ratios, float, "ratios")
    bits = option_list(args.bits, int, "bits")
    layers = option_list(args.layers, str, "layers")
    loaded = load_inputs(args, need_data=True)
    with progress_bar(f"sensitivity ({args.kind})") as progress:
        result = sensitivity_sweep(
            loaded.model,
            loaded.data,
            kind=args.kind,
            ratios=ratios,
            bits=bits,
            layers=layers,
            progress=progress,
            max_drop=args.max_drop,
            use_cache=not args.no_cache,
            batch_size=args.batch_size,
            limit=args.limit,
        )
    if args.csv:
        write_csv(result, args.csv)
    if args.markdown:
        write_markdown(result, args.markdown, title=f"Sensitivity of {args.model}")
    if args.out:
        build_report(
            loaded.model,
            loaded.data,
            args.out,
            sensitivity=result,
            model_spec=args.model,
            input_shape=loaded.input_shape,
        )
    return result.to_dict() | {"model": args.model, "data": loaded.data.spec}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sensitivity", help="accuracy and loss with each layer compressed alone")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--kind", choices=KINDS, default="structured", help="what to do to each layer")
    p.add_argument("--ratios", help="pruning ratios in [0, 1), e.g. 0.1,0.3,0.5 (default 0.1 ... 0.9)")
    p.add_argument("--bits", help="bit widths in 2..16 for --kind quant, e.g. 4,8 (default 2,3,4,6,8)")
    p.add_argument("--layers", help="only these layers (structured: groups), comma-separated")
    p.add_argument(
        "--max-drop", type=float, help="stop a layer's sweep after a drop above this (0.01 = 1 point)"
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, help="evaluate on the first N samples only")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole network per point (slower)")
    p.add_argument("--out", help="also write a self-contained HTML report here")
    p.add_argument("--csv", help="also write the long-form CSV here")
    p.add_argument("--markdown", help="also write a short Markdown summary here")
    add_output_args(p)
    p.set_defaults(func=_sensitivity)
