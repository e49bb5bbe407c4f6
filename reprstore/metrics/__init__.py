"""Pure functions of finished statistics; one module per family (:mod:`.cka`)."""

from reprstore.metrics.cka import ESTIMATORS, CKAResult

__all__ = ["ESTIMATORS", "CKAResult"]
