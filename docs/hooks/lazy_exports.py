"""Griffe extension: the public names ``reprstore`` loads lazily, as documented members.

``reprstore/__init__.py`` maps each public name to the module that defines it
(``_LAZY``) and imports it on first use, so static analysis sees none of them. This
extension reads that table (nothing is imported) and adds each name to the package as an
alias of its definition, and to ``__all__``: ``::: reprstore`` with ``filters: public``
then documents exactly the public API, wherever its modules move.
"""

from __future__ import annotations

import ast
from typing import Any

import griffe


class LazyExports(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        lazy = pkg.members.get("_LAZY")
        if pkg.path != "reprstore" or not isinstance(lazy, griffe.Attribute):
            return
        table = ast.literal_eval(str(lazy.value))
        for name, module in table.items():
            # replaces a submodule of the same name (``reprstore.extract``): the public
            # name is the function, as ``reprstore.extract(...)`` is
            pkg.set_member(name, griffe.Alias(name, f"{module}.{name}", parent=pkg))
        static = [e for e in pkg.exports or [] if isinstance(e, str)]
        pkg.exports = [*static, *(n for n in table if n not in static)]

    def on_package_loaded(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """The same hook under its older name: griffe 1.13 (allowed by mkdocstrings-python
        2.0.0) calls only this one."""
        self.on_package(pkg=pkg, **kwargs)
