"""`python -m analysis <command>`: see `python -m analysis --help`; the parser is `analysis.cli.main`."""

import sys

from analysis.cli.main import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
