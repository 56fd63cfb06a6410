"""`sensitivity` and `report`: per-layer sweeps and the all-in-one HTML report (CONTRACT section 3)."""

from __future__ import annotations

import argparse

from analysis.cli.main import add_data_args, add_model_args, add_output_args, load_inputs
from analysis.errors import WorkbenchError
from analysis.progress import progress_bar
from analysis.report.files import write_csv, write_markdown
from analysis.report.html import build_full_report, build_report
from analysis.sensitivity.sweep import BASIC_KINDS, KINDS, sensitivity_sweep
from analysis.validate import parse_values


def _list(text: str | None, kind, what: str) -> list | None:
    """A `--what` option's list (commas and/or spaces), None where the option was not given."""
    return None if text is None else parse_values(text, kind, f"--{what}", allow_empty=False)


def _sensitivity(args: argparse.Namespace) -> dict:
    ratios = _list(args.ratios, float, "ratios")
    if args.kind == "lowrank" and args.ranks is not None:
        ratios = _list(args.ranks, float, "ranks")  # kept rank fractions
    bits = _list(args.bits, int, "bits")
    layers = _list(args.layers, str, "layers")
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


def _report(args: argparse.Namespace) -> dict:
    kinds = _list(args.kinds, str, "kinds") or list(BASIC_KINDS)
    for kind in kinds:
        if kind not in KINDS:
            raise WorkbenchError(f"--kinds: unknown kind {kind!r}; use {', '.join(KINDS)}")
    runtimes = _list(args.runtime, str, "runtime")
    if runtimes:
        from analysis.runtime.base import get_runtime

        runtimes = [get_runtime(name).name for name in runtimes]  # an unknown name is one line, before work
    loaded = load_inputs(args, need_data=True)
    with progress_bar("report") as progress:
        path, ran = build_full_report(
            loaded.model,
            loaded.data,
            args.out,
            kinds=kinds,
            with_latency=not args.no_latency,
            with_rankings=not args.no_rankings,
            progress=progress,
            model_spec=args.model,
            rankings_options={"oracle": not args.no_oracle},
            limit=args.limit,
            runtimes=runtimes,
            threads=args.threads,
        )
    if args.csv or args.markdown:
        results = [_from(d) for d in ran["sensitivity"].values()]
        if args.csv:
            write_csv(results, args.csv)
        if args.markdown:
            write_markdown(results, args.markdown, title=f"Sensitivity of {args.model}")
    return {"out": str(path), "model": args.model, "data": loaded.data.spec} | ran


def _from(payload: dict):
    from analysis.sensitivity.sweep import SensitivityResult

    return SensitivityResult.from_dict(payload)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sensitivity", help="accuracy and loss with each layer compressed alone")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--kind", choices=KINDS, default="structured", help="what to do to each layer")
    p.add_argument("--ratios", help="pruning ratios in [0, 1), e.g. 0.1,0.3,0.5 (default 0.1 ... 0.9)")
    p.add_argument(
        "--bits",
        help="bit widths in 2..16 for --kind quant, e.g. 4,8 (default 2,3,4,6,8); codebook bits in 1..8 for "
        "--kind share (default 8,6,5,4,3,2,1)",
    )
    p.add_argument(
        "--ranks",
        help="kept rank fractions in (0, 1) for --kind lowrank, e.g. 0.5,0.25 (default 0.75 ... 0.125)",
    )
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

    p = subparsers.add_parser("report", help="every analysis in one self-contained HTML report")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--out", default="report.html", help="the HTML file (default: %(default)s)")
    p.add_argument("--kinds", help="sensitivity kinds to run (default: structured,unstructured,quant)")
    p.add_argument("--limit", type=int, help="evaluate sensitivity on the first N samples only")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--no-rankings", action="store_true", help="skip the filter importance rankings")
    p.add_argument("--no-oracle", action="store_true", help="rankings without the (slow) oracle criterion")
    p.add_argument(
        "--runtime",
        help="measure the latency on each of these runtimes, commas and/or spaces: eager, onnxruntime "
        "(each with its version and execution provider; default eager)",
    )
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for the latency")
    p.add_argument("--csv", help="also write every sweep's long-form CSV here")
    p.add_argument("--markdown", help="also write a short Markdown summary here")
    add_output_args(p)
    p.set_defaults(func=_report)
