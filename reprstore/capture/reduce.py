"""Reduce a layer output ``(batch, …)`` to rows ``(batch, n_features)``.

Layouts, decided from the rank of the output:

* ``(N, F)``: stored as is (reduction ``none``); ``(N,)`` becomes ``(N, 1)``.
* ``(N, T, D)``: a token sequence, features last (transformers' convention). When the
  batch carries an attention mask ``(N, T)``, only real tokens count.
* ``(N, C, *spatial)`` with 4 or more dimensions: channels first (PyTorch convolutions);
  the positions are the spatial ones.

Reductions over the positions:

* ``mean`` (the default): the average; over real tokens only, as sentence-transformers'
  mean pooling (``sum(x·mask) / max(sum(mask), 1e-9)``); over H×W for images (global
  average pooling). Keeps the feature width independent of sequence length or image size.
* ``first``: the first position (the CLS token of BERT-like models).
* ``last``: the last real token (GPT-like models).
* ``max``: the maximum over real positions.
* ``flatten``: keep everything, ``(N, prod(per-sample shape))``; text is then padded to
  ``--max-length`` so every row has the same width.

Attention maps ``(N, H, T, T)`` (``extract --attentions``) are never pooled: reduction
``attention`` stores each sample's heads as they are, ``(N, H·T·T)`` in the order
(head, query, key) (attribute ``layout = "heads,query,key"``), padded with zeros to one
token count for the whole dataset. The rows and columns of padded tokens are zeros too,
so the map itself says which queries and keys are real: a query row is real iff it is
not all zero (a real one sums to 1), and key ``k`` is real iff query ``k`` is.
"""

from __future__ import annotations

import math

import torch

from reprstore.capture.sink import ATTENTION, ATTENTION_LAYOUT
from reprstore.errors import InputError

__all__ = ["ATTENTION", "ATTENTION_LAYOUT", "REDUCTIONS", "attention_rows", "reduce_output"]

REDUCTIONS = ("mean", "first", "last", "max", "flatten")
DEFAULT_REDUCTION = "mean"


def is_attention_map(x: torch.Tensor) -> bool:
    """Whether an output has the shape of attention maps, (batch, heads, T, T)."""
    return x.ndim == 4 and x.shape[-1] == x.shape[-2]


def attention_rows(
    x: torch.Tensor, mask: torch.Tensor | None, tokens: int, name: str = "attention"
) -> torch.Tensor:
    """Rows ``(N, H·tokens²)`` of attention maps ``x`` ``(N, H, T, T)``: padded tokens'
    query rows and key columns set to 0 (``mask`` ``(N, T)``, 1 = real token), then
    zero-padded to ``tokens`` tokens."""
    t = int(x.shape[-1])
    if not is_attention_map(x) or t > tokens:
        raise InputError(
            f"Layer {name!r} gave attention maps of shape {tuple(x.shape)} in a batch, but "
            f"(batch, heads, T, T) with T ≤ {tokens} was planned from the first batch; give "
            "inputs of one length, or text (padded per dataset)."
        )
    if mask is not None and tuple(mask.shape) == (x.shape[0], t):
        real = mask.to(x.dtype)
        x = x * real[:, None, :, None] * real[:, None, None, :]
    if t < tokens:
        x = torch.nn.functional.pad(x, (0, tokens - t, 0, tokens - t))
    return x.reshape(x.shape[0], -1)


def check_reduction(how: str) -> str:
    """Return ``how`` if it names a reduction, else raise :class:`InputError`."""
    if how not in REDUCTIONS:
        raise InputError(f"Unknown --reduce {how!r}. Expected one of {', '.join(REDUCTIONS)}.")
    return how


def reduced_width(per_sample: tuple[int, ...], how: str) -> int:
    """Columns stored for an output whose per-sample shape is ``per_sample``."""
    if len(per_sample) <= 1:
        return per_sample[0] if per_sample else 1
    if how == "flatten":
        return math.prod(per_sample)
    return per_sample[-1] if len(per_sample) == 2 else per_sample[0]


def reduction_name(per_sample: tuple[int, ...], how: str) -> str:
    """The label recorded in the attributes: ``none`` for 2-D outputs, else ``how``."""
    return "none" if len(per_sample) <= 1 else how


def reduce_output(x: torch.Tensor, how: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``(N, n_features)`` from a layer output ``x`` of shape ``(N, …)``.

    Parameters
    ----------
    x
        Layer output, ``(N,)``, ``(N, F)``, ``(N, T, D)`` or ``(N, C, *spatial)``.
    how
        One of :data:`REDUCTIONS`; ignored for outputs of rank 1 or 2.
    mask
        Attention mask ``(N, T)`` (1 = real token) used for rank-3 outputs whose first
        two axes match it.
    """
    if x.ndim == 1:
        return x.reshape(-1, 1)
    if x.ndim == 2:
        return x
    if how == "flatten":
        return x.reshape(x.shape[0], -1)
    if x.ndim == 3:
        seq = x  # (N, T, D)
        if mask is not None and tuple(mask.shape) != tuple(x.shape[:2]):
            mask = None
    else:
        seq = x.flatten(2).transpose(1, 2)  # (N, C, *S) → (N, P, C)
        mask = None
    return _reduce_positions(seq, how, mask)


def _reduce_positions(seq: torch.Tensor, how: str, mask: torch.Tensor | None) -> torch.Tensor:
    """Reduce ``(N, P, D)`` over positions ``P``; ``mask`` ``(N, P)`` marks real ones."""
    if how == "first":
        return seq[:, 0]
    if how == "last":
        if mask is None:
            return seq[:, -1]
        positions = torch.arange(seq.shape[1], device=seq.device)
        last = (mask.to(torch.long) * positions).argmax(dim=1)
        return seq[torch.arange(seq.shape[0], device=seq.device), last]
    if how == "max":
        if mask is None:
            return seq.amax(dim=1)
        hidden = ~mask.to(torch.bool).unsqueeze(-1)
        return seq.masked_fill(hidden, float("-inf")).amax(dim=1)
    if how == "mean":
        if mask is None:
            return seq.mean(dim=1)
        weights = mask.to(seq.dtype).unsqueeze(1)  # (N, 1, P)
        total = torch.bmm(weights, seq).squeeze(1)  # one batched product, no (N, P, D) temporary
        return total / weights.sum(dim=2).clamp(min=1e-9)
    raise InputError(f"Unknown --reduce {how!r}. Expected one of {', '.join(REDUCTIONS)}.")
