"""PyTorch → row blocks: the only subpackage that imports torch.

Rooms: :mod:`~reprstore.extract.models` (model specs, checkpoints, devices),
:mod:`~reprstore.extract.data` (data sources, text length bucketing),
:mod:`~reprstore.extract.hooks` (layer patterns, the hook context manager),
:mod:`~reprstore.extract.reduce`, :mod:`~reprstore.extract.runner` (the loop and the
background writer), :mod:`~reprstore.extract.recorder` and
:mod:`~reprstore.extract.sink` (the interface the store side implements, in
:mod:`reprstore.extraction`).

This package is also callable: ``reprstore.extract(store, model=…, data=…, layers=…,
name=…)`` is :func:`reprstore.extraction.extract` (the subpackage and the public
function share the name ``reprstore.extract``). Importing it does not import torch; the
submodules do.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from reprstore.extraction import extract

        return extract(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
