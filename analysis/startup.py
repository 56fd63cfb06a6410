"""Ctrl-C while `python -m analysis` is still starting (importing torch takes seconds): one line, no traceback.

The command line catches Ctrl-C once it runs (`analysis.cli.common.run`); before that, the interrupt lands in
an import. Importing this module (the first import of `analysis/__init__.py`) installs the hook, and only when Python
is locating a `-m` module (`sys.argv[0] == "-m"` then), so a program that imports the library keeps
Python's own handling.
"""

from __future__ import annotations

import sys


def quiet_startup_interrupts() -> None:
    """Print one line for an uncaught KeyboardInterrupt (the exit status stays Python's: killed by SIGINT,
    130 in the shell); every other exception keeps its traceback."""
    if sys.argv[:1] != ["-m"]:
        return
    previous = sys.excepthook

    def hook(kind, value, traceback) -> None:
        if issubclass(kind, KeyboardInterrupt):
            print("error: interrupted while starting (nothing was done)", file=sys.stderr)
            return
        previous(kind, value, traceback)

    sys.excepthook = hook


quiet_startup_interrupts()
