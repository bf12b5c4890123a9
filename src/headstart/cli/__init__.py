"""``headstart`` command line: each command parses options, calls one library function, prints its result.

The parser (``parser``), the commands (``commands``) and their tables (``tables``) live beside this
module; it holds only ``main`` and the errors shown as one line, and imports nothing heavy.
"""

from __future__ import annotations

import os
import sys

from headstart.cli.commands import cmd_resume, default_backbone
from headstart.cli.parser import build_parser

__all__ = ["build_parser", "error_line", "main"]

_USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, OSError, ImportError, FloatingPointError, MemoryError)


def error_line(error: BaseException) -> str:
    """The first line of an error's message (without the quotes a KeyError's repr adds): what the CLI and the web page show."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":  # a KeyError's repr
        message = message[1:-1]
    return message


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
        args.func(args)
    except KeyboardInterrupt as interrupt:
        print(str(interrupt) or "interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
