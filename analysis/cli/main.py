"""`python -m analysis <command>`: the parser, one sub-command group per module of this package (see
`python -m analysis --help` and docs/contract.md section 3)."""

from __future__ import annotations

import argparse

from analysis.cli import basic, compress, plan, rank, runs, sensitivity
from analysis.cli.common import run

# One module per group of commands; each has register(subparsers). The order is the order of --help.
COMMAND_MODULES = (basic, rank, compress, plan, sensitivity, runs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description="Model compression workbench")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)
