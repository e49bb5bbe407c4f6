"""A rich progress bar that library calls feed through ``progress(done, total)``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

stderr = Console(stderr=True)


@contextmanager
def progress_bar(description: str, unit: str = "rows") -> Iterator[Callable[[int, int], None]]:
    """Yield a ``(done, total)`` callback that drives a bar on stderr (when it is a terminal)."""
    if not stderr.is_terminal or stderr.quiet:
        yield lambda done, total: None
        return
    from rich.progress import (  # 5 ms of imports that only a bar on a terminal needs
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
