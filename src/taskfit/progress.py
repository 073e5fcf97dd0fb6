"""How long work tells the user where it is, without the library printing anything itself.

Library functions take a :class:`Reporter`; the CLI passes one that draws rich progress bars,
tests pass :class:`Silent` (the default).
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, contextmanager
from typing import Callable, Iterator, Protocol


class Reporter(Protocol):
    def status(self, message: str) -> None:
        """A one-line note about something slow that is starting."""

    def bar(self, description: str, total: int | None) -> AbstractContextManager[Callable[..., None]]:
        """A context yielding ``advance(n=1, **fields)`` for a bar of ``total`` steps (None: unknown)."""


class Silent:
    def status(self, message: str) -> None:
        pass

    @contextmanager
    def bar(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        yield lambda n=1, **fields: None


class RichReporter:
    """Progress bars on a rich console (stderr by default). Where the console is not a terminal
    (a log file, CI, ``nohup``), a bar cannot redraw, so it is written as plain lines instead: one
    when it starts, one every ``every_s`` seconds while it runs, one when it ends."""

    every_s = 30.0

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)

    def status(self, message: str) -> None:
        from rich.markup import escape

        self.console.print(f"[dim]…[/dim] {escape(message)}")  # words, not markup (an error may hold [...])

    @contextmanager
    def bar(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        if not self.console.is_terminal:
            with self._lines(description, total) as advance:
                yield advance
            return
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}")]
        with Progress(*columns, console=self.console, transient=False) as progress:
            task = progress.add_task(description, total=total, info="")

            def advance(n: int = 1, info: str = "") -> None:
                progress.update(task, advance=n, info=info)

            yield advance

    @contextmanager
    def _lines(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        from rich.markup import escape

        start = last = time.monotonic()
        done, note = 0, ""
        first: tuple[float, int] | None = None  # when the first items were done, and how many

        def line(what: str) -> None:
            of = f"/{total}" if total is not None else ""
            now = time.monotonic()
            elapsed = now - start
            # The time left at the pace since the first items were done: before them come the
            # model's warm-up and a first batch, which a guess from them alone multiplied by the
            # count (a first row after 39 s said 25 min left of a minute's work).
            eta = ""
            if total is not None and first is not None and first[1] < done < total and now > first[0]:
                eta = f", about {_clock((now - first[0]) / (done - first[1]) * (total - done))} left"
            self.console.print(escape(f"{description}: {what} {done}{of} after {_clock(elapsed)}{eta}"
                                      f"{' ' + note if note else ''}"), highlight=False)

        self.console.print(escape(f"{description}: started" + (f" ({total} to do)" if total is not None else "")),
                           highlight=False)

        def advance(n: int = 1, info: str = "") -> None:
            nonlocal done, note, last, first
            done += n
            note = info or note
            if first is None:
                first = (time.monotonic(), done)
            if time.monotonic() - last >= self.every_s:
                last = time.monotonic()
                line("at")

        yield advance
        line("done,")


def _clock(seconds: float) -> str:
    """12 s, 4 min 05 s, 1 h 02 min."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
