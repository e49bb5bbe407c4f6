"""Griffe extension: reprstore's numpy docstrings, rendered as they read in the source.

* Sphinx roles (``:func:`reprstore.cka```, ``:class:`~x.Side```) become code spans:
  mkdocstrings renders Markdown, where a role would show as ``:func:`` before the name.
* A numpy ``Parameters`` line may name several parameters (``estimator, kernel, sigma``).
  Griffe's parser gives every name of such a line the default, and the signature type, of
  the first name it finds in the signature (``sigma`` would show ``estimator``'s
  default); each parameter gets its own default back, and its own signature type
  wherever the line gave none.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj|const):`~?([^`]+)`")


def _own_parameters(func: griffe.Function) -> None:
    params = func.parameters
    signature_types = {id(p.annotation) for p in params if p.annotation is not None}
    for section in func.docstring.parsed if func.docstring else ():
        if not isinstance(section, griffe.DocstringSectionParameters):
            continue
        for item in section.value:
            if item.name not in params:
                continue
            own = params[item.name]
            item.value = own.default
            if id(item.annotation) in signature_types:  # taken from the signature
                item.annotation = own.annotation


def _walk(obj: griffe.Object) -> None:
    if obj.docstring is not None:  # before anything parses it
        obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
    if isinstance(obj, griffe.Function):
        _own_parameters(obj)
    for member in obj.members.values():
        if not member.is_alias:
            _walk(member)  # type: ignore[arg-type]


class Docstrings(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path == "reprstore":
            _walk(pkg)

    def on_package_loaded(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """The same hook under its older name: griffe 1.13 (allowed by mkdocstrings-python
        2.0.0) calls only this one."""
        self.on_package(pkg=pkg, **kwargs)
