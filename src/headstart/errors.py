"""What counts as the user's mistake (shown as one line) and what is a bug (shown with its traceback).

The command line and the web app print a user error as one ``error: ...`` line that names the file
and the fix. Everything else is a bug in headstart or a library and keeps its traceback: catching
``TypeError``, ``KeyError`` or any ``OSError`` wholesale would print a real bug as a one-line
"error:" that nobody can act on. Code that raises a built-in kind on purpose for bad input raises
one of the classes below, which are both that kind (so ``except KeyError`` still works) and a
:class:`UserError`.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """Bad input, a missing file or package, or a machine limit: a one-line message says what to do."""


class UnknownName(UserError, KeyError):
    """A block, backbone or option value named by the user does not exist."""


class OutOfRange(UserError, IndexError):
    """An index given by the user (e.g. a block number) is out of range."""


class WrongType(UserError, TypeError):
    """The user passed a value of the wrong kind (e.g. a model object where a name is expected)."""


class Unsplittable(UserError, ValueError):
    """A backbone with no exact block layout asked to freeze, train or cut part of its body."""


class Unavailable(UserError, OSError):
    """Something outside headstart is not there: no network for a hub download, a port in use."""


class DataWarning(UserWarning):
    """A problem in the data that does not stop training but biases its results (test examples also in train).

    ``fit`` also writes it to the run's log, and ``headstart fit`` prints that line, so the command line
    does not show the Python warning a second time.
    """


# Built-in kinds that only ever reach the user from bad input or the machine, never from a bug.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    ValueError,  # includes UnicodeDecodeError and json.JSONDecodeError of a user's file
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    ImportError,  # a missing optional extra: the message names the pip command
    FloatingPointError,  # training diverged: the message names a lower learning rate
    MemoryError,
)
_MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES})  # a full disk, a quota, a read-only mount


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is the user's to fix (print one line) rather than a bug (print the traceback)."""
    return isinstance(error, USER_ERRORS) or (isinstance(error, OSError) and error.errno in _MACHINE_ERRNOS)


def error_line(error: BaseException) -> str:
    """The first line of an error's message (without the quotes a KeyError's repr adds): what the CLI and the web page show."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":  # a KeyError's repr
        message = message[1:-1]
    return message
