"""The one exception type that means "the user gave us something we cannot use".

The CLI prints its message as one line and exits non-zero; the app shows it in the page. Anything else
escaping the library is a bug and keeps its traceback.
"""


class WorkbenchError(ValueError):
    """Bad input: the message says what is wrong and what to do."""

    def __init__(self, message: object = "", *args: object) -> None:
        # One line whatever the message quotes (a file name may hold a newline).
        text = str(message)
        super().__init__(text.replace("\r", "\\r").replace("\n", "\\n"), *args)


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of an exception's message (its type name when it has none), cut at
    `limit` characters: how a foreign error (torch, torch-pruning, a user's module) enters one-line messages."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:limit] if limit else line
