"""`report`: every analysis in one self-contained HTML report (CONTRACT section 3)."""

from __future__ import annotations

import argparse

from analysis.cli.common import add_data_args, add_model_args, add_output_args, load_inputs, option_list
from analysis.errors import WorkbenchError
from analysis.progress import progress_bar
from analysis.report.files import write_csv, write_markdown
from analysis.report.html import build_full_report
from analysis.sensitivity.sweep import KINDS


def _report(args: argparse.Namespace) -> dict:
    kinds = option_list(args.kinds, str, "kinds") or list(KINDS)
    for kind in kinds:
        if kind not in KINDS:
            raise WorkbenchError(f"--kinds: unknown kind {kind!r}; use structured, unstructured, quant")
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
    p = subparsers.add_parser("report", help="every analysis in one self-contained HTML report")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--out", default="report.html", help="the HTML file (default: %(default)s)")
    p.add_argument("--kinds", help="sensitivity kinds to run (default: structured,unstructured,quant)")
    p.add_argument("--limit", type=int, help="evaluate sensitivity on the first N samples only")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--no-rankings", action="store_true", help="skip the filter importance rankings")
    p.add_argument("--no-oracle", action="store_true", help="rankings without the (slow) oracle criterion")
    p.add_argument("--csv", help="also write every sweep's long-form CSV here")
    p.add_argument("--markdown", help="also write a short Markdown summary here")
    add_output_args(p)
    p.set_defaults(func=_report)
