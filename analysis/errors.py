"""The one exception type that means "the user gave us something we cannot use".

The CLI prints its message as one line and exits non-zero; the app shows it in the page. Anything else
escaping the library is a bug and keeps its traceback.
"""


class WorkbenchError(ValueError):
    """Bad input: the message says what is wrong and what to do."""
