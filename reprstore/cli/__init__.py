"""The ``reprstore`` command line: a thin typer layer over the Python API.

``reprstore.cli.app`` is the typer app with every command, built on first use (see
:mod:`reprstore.cli.app`): the console script's :func:`main` imports only the command it
runs.
"""

from __future__ import annotations

from typing import Any

from reprstore.cli.app import main

# importing the submodule bound its name here; ``reprstore.cli.app`` is the typer app, as
# it was when this package imported it eagerly: __getattr__ returns it on first use
globals().pop("app", None)

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from reprstore.cli.app import app

        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
