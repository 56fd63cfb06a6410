"""Ctrl-C while `python -m analysis` is still starting (importing torch takes seconds): one line, no traceback.

The command line catches Ctrl-C once it runs (`analysis.cli.common.run`, which calls `end_startup`). Before
that, a KeyboardInterrupt raised inside an import can be swallowed by the library being imported (a retried
import then runs the command to the end, or fails on a half-initialised module), so while starting, Ctrl-C
does not raise at all: it prints one line and ends the process as SIGINT would (status 130 in the shell);
nothing has been done yet. Importing this module (the first import of `analysis/__init__.py`) installs the
handler, and only while Python is locating the module of `python -m analysis`, in the main thread, with
Python's own handler in place (a job started in the background keeps Ctrl-C ignored), so a program that
imports the library keeps Python's own handling.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

STARTUP_LINE = "error: interrupted while starting (nothing was done)\n"


def _stop_starting(signum: int, frame: object) -> None:
    sys.stderr.write(STARTUP_LINE)
    sys.stderr.flush()
    if os.name != "posix":
        os._exit(130)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def _starting_the_cli() -> bool:
    """Python is locating the module of `python -m analysis` (not `-m analysis.zoo.train`, not an import)."""
    argv = list(getattr(sys, "orig_argv", []))
    return (
        sys.argv[:1] == ["-m"]
        and "-m" in argv
        and argv[argv.index("-m") + 1 : argv.index("-m") + 2] == ["analysis"]
    )


def quiet_startup_interrupts() -> None:
    """Until `end_startup`, Ctrl-C prints `STARTUP_LINE` and ends the process at once (killed by SIGINT)."""
    if not _starting_the_cli() or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _stop_starting)


def end_startup() -> None:
    """The command runs from here: Ctrl-C raises KeyboardInterrupt again, for the command to clean up."""
    if signal.getsignal(signal.SIGINT) is _stop_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


quiet_startup_interrupts()
