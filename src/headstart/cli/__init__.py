"""``headstart`` command line: each command parses options, calls one library function, prints its result.

The parser (``parser``), the commands (``commands``) and their tables (``tables``) live beside this
module; it holds only ``main`` and imports nothing heavy. What is printed as a one-line error and what
keeps its traceback is decided by :mod:`headstart.errors`.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from headstart.cli.commands import cmd_resume, default_backbone
from headstart.cli.parser import build_parser
from headstart.errors import DataWarning, error_line, is_user_error

__all__ = ["build_parser", "error_line", "main"]


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
    """A Python warning as one ``warning: ...`` line, like the run log's, without the source line Python adds."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)


def _logs_data_warnings(args: Any) -> bool:
    """Whether the command prints the data's warnings in its own log (fit, pretrain, resume when not quiet)."""
    return getattr(args, "command", None) in ("fit", "pretrain", "resume") and not (getattr(args, "quiet", False) or getattr(args, "json", False))


def reuse_freed_memory() -> bool:
    """On glibc, keep freed tensor memory for the next allocation instead of unmapping it; whether it was set.

    glibc gives every block over its mmap threshold (at most 32 MiB) a mapping of its own and unmaps
    it when freed, so each forward pass faulted its activations' pages in again: on CPU, system time
    was 43-110% of user time in fits. ``mallopt(M_MMAP_MAX, 0)`` serves them from the heap and a high
    ``M_TRIM_THRESHOLD`` keeps the heap, so the pages are reused (BENCHMARKS.md, issue 22: minor
    faults and system time fall ~100-fold). Freed memory then stays with the process until it exits,
    which suits a command, not a server (``headstart ui`` skips it). ``HEADSTART_MALLOC=default``
    keeps glibc's behaviour; other C libraries are left alone. The same from a Python program:
    start it with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``.
    """
    import ctypes

    if os.environ.get("HEADSTART_MALLOC", "reuse") == "default":
        return False
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return False
        libc = ctypes.CDLL("libc.so.6")
    except (ValueError, OSError, AttributeError):  # not glibc, or no confstr on this system
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    if argv is None and getattr(args, "command", None) not in (None, "ui"):  # the process is this command's alone
        reuse_freed_memory()
    if getattr(args, "command", None) == "fit":
        if args.resume is not None:
            args.run, args.func = args.resume, cmd_resume
        elif args.data is None:
            print("error: headstart fit needs DATA (or --resume RUN to continue an interrupted run)", file=sys.stderr)
            return 2
        elif args.backbone is None:
            args.backbone = default_backbone(args.data)
    try:
        with warnings.catch_warnings():  # restores the caller's warning settings (main is also called in-process)
            warnings.showwarning = _show_warning
            if _logs_data_warnings(args):
                warnings.simplefilter("ignore", DataWarning)  # printed once, as the run log's "warning: ..." line
            args.func(args)
    except KeyboardInterrupt as interrupt:
        print(str(interrupt) or "interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a user error is one line; a bug keeps its traceback (headstart.errors)
        if not is_user_error(error):
            raise
        print(f"error: {error_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
