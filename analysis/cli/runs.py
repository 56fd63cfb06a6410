"""`runs list|show|compare|export|delete`: the recorded runs from the command line (docs/contract.md section 9).

The store is `$WORKBENCH_DATA_DIR/results.sqlite3` (see `analysis.store.db`), or the file given by `--db`.
"""

from __future__ import annotations

import argparse

from analysis.cli.common import add_output_args
from analysis.errors import WorkbenchError
from analysis.store.compare import compare, plan_diff
from analysis.store.db import ResultsStore, clean_json


def _store(args: argparse.Namespace) -> ResultsStore:
    """The store the runs commands read: `--db` must name an existing store (a typo creates nothing)."""
    db = getattr(args, "db", None)
    return ResultsStore(db, create=db is None)


def _list(args: argparse.Namespace) -> dict:
    store = _store(args)
    if args.kind is not None and args.kind not in (kinds := store.kinds()):
        raise WorkbenchError(f"--kind {args.kind!r} is no kind of run: use one of {', '.join(kinds)}")
    if args.limit is not None and args.limit < 1:
        raise WorkbenchError(f"--limit must be a whole number of at least 1, got {args.limit}")
    runs = store.list(model=args.model, kind=args.kind, limit=args.limit)
    return {"db": str(store.path), "runs": [r.to_dict() for r in runs]}


def _show(args: argparse.Namespace) -> dict:
    return _store(args).get(args.id).to_dict()


def _records(frame) -> list[dict]:
    return clean_json(frame.reset_index().to_dict(orient="records"))


def _compare(args: argparse.Namespace) -> dict:
    if len(args.ids) < 2:
        raise WorkbenchError("runs compare takes two or more run ids, e.g. runs compare 3 7")
    store = _store(args)
    runs = [store.get(i) for i in args.ids]
    table = compare(runs)
    plans = {f"run {r.id}": r.result.get("plan") or {} for r in runs}
    return {
        "runs": [r.id for r in runs],
        "table": _records(table),
        "plans": _records(plan_diff(plans, only_differences=args.differences)),
    }


def _export(args: argparse.Namespace) -> dict:
    path = _store(args).export(args.id, args.out)
    return {"exported": args.id, "out": str(path)}


def _delete(args: argparse.Namespace) -> dict:
    _store(args).delete(args.id)
    return {"deleted": args.id}


def _no_runs_command(args: argparse.Namespace) -> dict:
    raise WorkbenchError(
        "choose a runs command: list, show, compare, export or delete (python -m analysis runs -h)"
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="the results database file (default: $WORKBENCH_DATA_DIR/results.sqlite3)")
    add_output_args(p)


def register(subparsers: argparse._SubParsersAction) -> None:
    runs = subparsers.add_parser("runs", help="recorded runs: list, show, compare, export, delete")
    commands = runs.add_subparsers(title="runs commands", metavar="RUNS_COMMAND")
    _common(runs)
    runs.set_defaults(func=_no_runs_command)

    p = commands.add_parser("list", help="recorded runs, newest first")
    p.add_argument("--model", help="only runs of this model spec")
    p.add_argument("--kind", help="only runs of this kind: sensitivity, ranking, compression, ...")
    p.add_argument("--limit", type=int, default=None, help="at most this many runs")
    _common(p)
    p.set_defaults(func=_list)

    p = commands.add_parser("show", help="one run in full: parameters, result, environment")
    p.add_argument("id", type=int)
    _common(p)
    p.set_defaults(func=_show)

    p = commands.add_parser("compare", help="compression runs side by side, and their plans layer by layer")
    p.add_argument("ids", type=int, nargs="+", metavar="ID")
    p.add_argument("--differences", action="store_true", help="list only the layers where the plans differ")
    _common(p)
    p.set_defaults(func=_compare)

    p = commands.add_parser("export", help="write one run as JSON")
    p.add_argument("id", type=int)
    p.add_argument("--out", required=True, help="the JSON file to write")
    _common(p)
    p.set_defaults(func=_export)

    p = commands.add_parser("delete", help="remove one run")
    p.add_argument("id", type=int)
    _common(p)
    p.set_defaults(func=_delete)
