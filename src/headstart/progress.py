"""Progress bars with ETA (rich) that fall silent with ``quiet=True``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as _RichProgress


class _Task:
    def __init__(self, owner: Progress, task_id: Any) -> None:
        self.owner, self.task_id = owner, task_id

    def advance(self, n: int = 1) -> None:
        if self.owner.rich is not None:
            self.owner.rich.advance(self.task_id, n)

    def update(self, description: str) -> None:
        if self.owner.rich is not None:
            self.owner.rich.update(self.task_id, description=description)

    def done(self) -> None:
        if self.owner.rich is not None:
            self.owner.rich.remove_task(self.task_id)


class Progress:
    """Owns one live rich display; ``task(name, total)`` adds a bar. ``log`` prints above the bars."""

    def __init__(self, *, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.rich: _RichProgress | None = None
        self.lines: list[str] = []

    def __enter__(self) -> Progress:
        if not self.quiet:
            self.rich = _RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
                speed_estimate_period=600,  # a step may take minutes on a CPU: rich's 30 s window would leave the ETA at -:--:--
            )
            self.rich.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.rich is not None:
            self.rich.__exit__(*exc)
            self.rich = None

    def task(self, description: str, total: int) -> _Task:
        task_id = self.rich.add_task(description, total=total) if self.rich is not None else None
        return _Task(self, task_id)

    def log(self, message: str) -> None:
        """Record a line for the run log and show it unless quiet."""
        self.lines.append(message)
        if not self.quiet:
            self.console.print(message, highlight=False)
