"""What counts as the user's mistake, and how one is said: shared by the command line and the web page.

Both catch :data:`USER_ERRORS` and show :func:`error_line` instead of a traceback; the definitions live
here, apart from either, so that neither front end imports the other.
"""

from __future__ import annotations

USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, OSError, ImportError, FloatingPointError, MemoryError)


def error_line(error: BaseException) -> str:
    """The first line of an error's message (without the quotes a KeyError's repr adds): what the CLI and the web page show."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":  # a KeyError's repr
        message = message[1:-1]
    return message
