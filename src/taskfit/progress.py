"""How long work tells the user where it is, without the library printing anything itself.

Library functions take a :class:`Reporter`; the CLI passes one that draws rich progress bars,
tests pass :class:`Silent` (the default).
"""

from __future__ import annotations

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
    """Progress bars on a rich console (stderr by default)."""

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

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}")]
        with Progress(*columns, console=self.console, transient=False) as progress:
            task = progress.add_task(description, total=total, info="")

            def advance(n: int = 1, info: str = "") -> None:
                progress.update(task, advance=n, info=info)

            yield advance
