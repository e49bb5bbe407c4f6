"""Measures of attention maps (``reprstore describe``), from one streamed pass
(:mod:`reprstore.stats.attention`).

``attention_entropy``: per head, the mean over samples (each counting once) of the
sample's mean over its real queries of −Σ p log p over the real keys (natural log,
0 · log 0 = 0); the scalar is the mean over heads, the array the per-head values. Near
log T: spread evenly; near 0: each query attends to one key.

``head_specialization``: how different the heads are, the standard deviation across
heads (population, ddof = 0) of those per-head entropies, in nats. Per-head attention
entropy is Clark et al. 2019 ("What Does BERT Look At?", their per-head average
attention entropy); their spread as a
standard deviation is the plainest spread in the entropies' own unit (0: every head
attends alike), so it compares across layers and checkpoints of one model; it is not
normalised by log T (heads of one layer share T).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from reprstore.errors import ComparisonError
from reprstore.metrics.base import Side
from reprstore.metrics.describe import SingleMeasure

#: The ``special`` pass both measures share.
PASS = "attention"


def per_head_entropy(a: Side) -> np.ndarray:
    """Per-head mean entropies (H,) of ``a`` from its pass; an error for anything that is
    not attention probabilities."""
    sums = a.extra["attention"]
    if sums.nonfinite:
        raise ComparisonError(
            f"Attention maps {a.name} have NaN or Inf values in {sums.nonfinite} samples."
        )
    if sums.negative:
        raise ComparisonError(
            f"{a.name} has {sums.negative} negative entries: not attention probabilities."
        )
    if sums.empty:
        raise ComparisonError(
            f"{sums.empty} sample(s) of {a.name} have no real query (their map is all zero): "
            "the entropy of a sample without tokens is undefined."
        )
    return np.asarray(sums.heads_sum / sums.samples, dtype=np.float64)


class _Attention(SingleMeasure):
    """Reads the attention pass's sums, not moments: no p × p statistics at all."""

    def own_views(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset()

    def special(self, opts: Mapping[str, Any]) -> str | None:
        return PASS

    def invariances(self, opts: Mapping[str, Any]) -> frozenset[str]:
        return frozenset()


class AttentionEntropy(_Attention):
    name = "attention_entropy"
    summary = (
        "attention entropy −Σ p log p over real keys (nats), mean over real queries, then "
        "samples; mean over heads and per head"
    )
    scalars = ("attention_entropy",)
    arrays = ("attention_entropy_heads",)

    def describe(self, a: Side, opts: Mapping[str, Any]) -> dict[str, Any]:
        heads = per_head_entropy(a)
        return {"attention_entropy": float(heads.mean()), "attention_entropy_heads": heads}


class HeadSpecialization(_Attention):
    name = "head_specialization"
    summary = "standard deviation across heads of the per-head attention entropy (nats)"
    scalars = ("head_specialization",)

    def describe(self, a: Side, opts: Mapping[str, Any]) -> dict[str, Any]:
        return {"head_specialization": float(per_head_entropy(a).std())}
