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


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
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
