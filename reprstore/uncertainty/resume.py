"""Resumable permutation tests: the null values of R permutations, in checkpointed segments.

A permutation test's work is R evaluations of a statistic, one per permutation, and
permutation r is a function of (seed, stream, r) alone
(:func:`reprstore.stats.resample.permutations`). So the test is cut into *segments*,
blocks of consecutive permutations of one unit (a pair, a stream of batches), which
:func:`reprstore.engine.checkpoints.run_segments` runs in order: after a segment the null
values computed so far (plain float64 arrays, R × columns at most per unit) are saved
when due, and a killed run, rerun, loads them and goes on with the next segment. Each
permutation's value is computed the same way whatever segment holds it, so the nulls, and
the p-values from them, are bit-identical to an uninterrupted run's.

The segments depend on R and n only (not on threads), so a rerun with other settings of
the machine resumes too; the checkpoint's key hashes the test's data (fingerprints, rows),
kind, R, seed, statistic and pairs, so another test's checkpoint is never loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from reprstore.engine import checkpoints
from reprstore.engine.pass_context import PassContext
from reprstore.stats import resample as rs

FORMAT = 1
#: A unit's permutations are cut into about this many segments (fewer when R is small).
SEGMENTS_PER_UNIT = 32

#: What a segment gives: per label (e.g. an ordered pair), the null values of its
#: permutations, shape (count, ...).
Nulls = dict[str, np.ndarray]


def null_segments(r: int, n: int) -> list[tuple[int, int]]:
    """(start, count) of each segment of R permutations of n items: consecutive blocks of
    at most :func:`~reprstore.stats.resample.permutation_step` permutations (the memory of
    drawing them), about :data:`SEGMENTS_PER_UNIT` of them. A segment holds one
    permutation only where a draw of the uninterrupted test did (R = 1, or one at a time
    for a very large n), so its values are made the same way (threads, BLAS) as there."""
    step = rs.permutation_step(n)
    per = min(step, max(2, -(-r // SEGMENTS_PER_UNIT)))
    out = [(s, min(per, r - s)) for s in range(0, r, per)]
    if len(out) > 1 and out[-1][1] == 1 and out[-2][1] < step:  # no lone last permutation
        out[-2:] = [(out[-2][0], out[-2][1] + 1)]
    return out


def checkpoint_key(ctx: PassContext, arrays: Sequence[int], layout: Sequence[Any]) -> str | None:
    """The checkpoint key of a pass or test over ``ctx.arrays[arrays]`` with ``layout``
    (its kind first, then every setting its state depends on), or None when nothing is
    checkpointed (no cache, an array without a fingerprint). The row selection is in the
    key too (``ctx.checkpoints.rows``)."""
    ckpt = getattr(ctx, "checkpoints", None)
    if ckpt is None or ckpt.files is None:
        return None
    streams = [(i, "raw") for i in arrays]
    key: str | None = ckpt.key(streams, list(range(len(streams))), [], list(layout))
    return key


def run_nulls(
    ctx: PassContext,
    key: str | None,
    units: int,
    r: int,
    n: int,
    widths: Sequence[int],
    block: Callable[[int, int, int], Nulls],
) -> list[Nulls]:
    """Per unit, the null values of permutations 0 … R − 1 (per label, (R, ...)).

    ``block(unit, start, count)`` gives the values of permutations ``start`` …
    ``start + count − 1`` of ``unit`` (``widths[unit]`` values per permutation over all
    its labels); the blocks run in order, unit by unit, in the segments of
    :func:`null_segments`, saved to and resumed from the checkpoint ``key`` (None: not
    saved).
    """
    per_unit = null_segments(r, n)
    segments = [(u, s, c) for u in range(units) for s, c in per_unit]
    State = list[dict[str, list[np.ndarray]]]

    def step(k: int, state: State | None) -> State:
        state = state if state is not None else [{} for _ in range(units)]
        u, s, c = segments[k]
        for label, values in block(u, s, c).items():
            state[u].setdefault(label, []).append(np.asarray(values, dtype=np.float64))
        return state

    def encode(state: State) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        labels = []
        for u, got in enumerate(state):
            for k, (label, parts) in enumerate(got.items()):
                arrays[f"u{u}_{k}"] = np.concatenate(parts)
                labels.append([u, k, label])
        arrays["head"] = np.array(json.dumps({"format": FORMAT, "labels": labels}))
        return arrays

    def decode(arrays: dict[str, np.ndarray]) -> State:
        head = json.loads(str(arrays["head"]))
        if head.get("format") != FORMAT:
            raise ValueError(f"format {head.get('format')!r}")
        state: State = [{} for _ in range(units)]
        for u, k, label in head["labels"]:
            values = arrays[f"u{u}_{k}"]
            if values.dtype != np.float64:
                raise ValueError(f"null values of {label} of type {values.dtype}")
            state[int(u)][str(label)] = [values]
        return state

    def fits(state: State, done: int) -> bool:
        """Whether ``state`` holds the values of the first ``done`` segments, no more."""
        for u, got in enumerate(state):
            rows = sum(c for v, _, c in segments[:done] if v == u)
            sizes = [sum(p.shape[0] for p in parts) for parts in got.values()]
            per_row = sum(int(np.prod(parts[0].shape[1:], dtype=np.int64))
                          for parts in got.values())  # fmt: skip
            if rows and (set(sizes) != {rows} or per_row != widths[u]):
                return False
            if not rows and got:
                return False
        return True

    form = checkpoints.Segments(encode, decode, 8 * r * max(1, sum(widths)), fits)
    ckpt = getattr(ctx, "checkpoints", None)
    state: State = checkpoints.run_segments(ckpt, key, len(segments), step, form, ctx.memory)
    return [{label: np.concatenate(parts) for label, parts in got.items()} for got in state]
