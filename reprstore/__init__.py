"""reprstore: store neural-network representations in zarr and compare them out of core.

The public API is loaded lazily (``reprstore.Store`` imports zarr on first use), so
``import reprstore`` and ``reprstore --help`` stay instant and never import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from reprstore.errors import ReprstoreError
from reprstore.keys import ReprKey, Selector

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "open": "reprstore.workflows.notebook",
    "Store": "reprstore.store",
    "ReprInfo": "reprstore.store",
    "import_files": "reprstore.workflows.ingest",
    "extract": "reprstore.workflows.extraction",
    "recorder": "reprstore.workflows.extraction",
    "cka": "reprstore.workflows.in_memory",
    "CKAResult": "reprstore.metrics.cka",
    "compare": "reprstore.workflows.comparison",
    "describe": "reprstore.workflows.description",
    "measures": "reprstore.metrics.registry",
    "summarize": "reprstore.analysis.summary",
    "contrast": "reprstore.analysis.contrasts",
    "weight_drift": "reprstore.workflows.drift",
    "plot_results": "reprstore.report.figures",
}

__all__ = ["ReprKey", "ReprstoreError", "Selector", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reprstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
