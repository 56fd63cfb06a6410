"""`python -m analysis <command>`: see `python -m analysis --help` and CONTRACT section 3."""

from __future__ import annotations

import argparse
import importlib
import sys

from analysis.cli.main import run

# One module per family of commands; each has register(subparsers).
COMMAND_MODULES = [
    "analysis.cli.basic",
    "analysis.cli.rank",
    "analysis.cli.compress",
    "analysis.cli.sensitivity",
    "analysis.cli.runs",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description="Model compression workbench")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
