"""Progress display on stderr: a live rich display on a terminal, plain
lines otherwise (CI, tests, pipes). Stdout is left for the report."""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Display", "make_display"]


class Display:
    """Plain display: one line when a step starts and when it ends."""

    def __init__(self, runs: int) -> None:
        self.runs = runs
        self.done = 0
        self._step_started = 0.0
        self._title = ""

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the display (idempotent)."""

    def step(self, title: str, total: int | None = None) -> None:
        """A new phase of the current run (``total`` units, if known)."""
        self._title = title
        self._step_started = time.monotonic()
        self.note(f"[{self.done + 1}/{self.runs}] {title}")

    def update(self, completed: int) -> None:
        """Progress within the current phase."""

    def run_done(self, summary: str) -> None:
        self.done += 1
        self.note(f"[{self.done}/{self.runs}] {summary}")

    def note(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


class RichDisplay(Display):
    """A live bar for the runs and one for the current phase."""

    def __init__(self, runs: int) -> None:
        super().__init__(runs)
        from rich.console import Console  # noqa: PLC0415 - optional dependency
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            refresh_per_second=4,
            transient=False,
        )
        self.progress.start()
        self._runs: Any = self.progress.add_task("runs", total=runs)
        self._phase: Any = self.progress.add_task("", total=None)

    def stop(self) -> None:
        self.progress.stop()

    def step(self, title: str, total: int | None = None) -> None:
        # a fresh task: total None gives an indeterminate (pulsing) bar
        self.progress.remove_task(self._phase)
        self._phase = self.progress.add_task(title, total=total)

    def update(self, completed: int) -> None:
        self.progress.update(self._phase, completed=completed)

    def run_done(self, summary: str) -> None:
        self.done += 1
        self.progress.advance(self._runs)
        self.console.log(summary)

    def note(self, message: str) -> None:
        self.console.log(message)


def make_display(runs: int, enabled: bool) -> Display:
    """Rich when asked for, installed and stderr is a terminal; else plain."""
    if enabled and sys.stderr.isatty():
        try:
            return RichDisplay(runs)
        except ImportError:
            pass
    return Display(runs)
