"""Small text formatting shared by the commands' tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

CONSOLES: list[Console] = []  # every console made here, so --quiet can silence them all


def stdout_console() -> Console:
    """A console for results; wide when piped, so tables are not cut at 80 columns."""
    console = Console()
    console = console if console.is_terminal else Console(width=250)
    CONSOLES.append(console)
    return console


def human_bytes(n: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "×".join(str(s) for s in shape)


class PlainTable(Table):
    """A rich table whose title, caption, headers and cells are plain text, never markup:
    a column ``cca[ridge=0.1]`` or a layer named ``[bold]`` shows as written."""

    def __init__(self, *, title: str | None = None, caption: str | None = None) -> None:
        super().__init__(title=_plain(title), caption=_plain(caption))

    def add_column(self, header: Any = "", *args: Any, **kwargs: Any) -> None:
        super().add_column(_plain(header), *args, **kwargs)

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        super().add_row(*(_plain(c) for c in cells), **kwargs)


def _plain(value: Any) -> Any:
    return Text(value) if isinstance(value, str) else value
