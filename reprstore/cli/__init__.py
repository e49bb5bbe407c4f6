"""The ``reprstore`` command line: a thin typer layer over the Python API."""

from reprstore.cli.app import app, main

__all__ = ["app", "main"]
