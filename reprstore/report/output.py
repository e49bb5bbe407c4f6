"""Writing figures: the accepted file formats, the path check made before any data is
read, and the atomic save every figure goes through."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reprstore.errors import InputError
from reprstore.report.style import pyplot
from reprstore.store.atomic import replacing

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_FORMATS = (".png", ".svg", ".pdf")


@dataclass(frozen=True)
class Rendered:
    """A written figure and the plain statements about what it shows."""

    path: Path
    notes: list[str] = field(default_factory=list)


def check_figure_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if it ends in .png/.svg/.pdf and its folder exists, else raise."""
    out = Path(path)
    if out.suffix.lower() not in FIGURE_FORMATS:
        raise InputError(
            f"Cannot write a figure to {os.fspath(path)}: expected a file name ending in "
            f"{', '.join(FIGURE_FORMATS)}. Got {out.suffix or 'no suffix'!r} instead."
        )
    if not out.parent.is_dir():
        raise InputError(f"Cannot write {os.fspath(path)}: folder {out.parent} does not exist.")
    return out


def save(fig: Figure, path: Path, dpi: int = 150) -> Path:
    """Write ``fig`` (PNG at ``dpi``, or vector SVG/PDF) and close it.

    The figure is drawn into a temporary file beside ``path`` and renamed when complete
    (:mod:`reprstore.store.atomic`): a failed write leaves the old figure, or none.
    """
    plt = pyplot()
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lower().lstrip("."))
    finally:
        plt.close(fig)
    return path
