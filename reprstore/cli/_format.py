"""Small text formatting shared by the commands' tables."""

from __future__ import annotations

from rich.console import Console

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
