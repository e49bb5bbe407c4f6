"""Exact order statistics of values too many to hold: a radix selection over rounds.

The exact RBF bandwidth needs the median of all n² squared distances of a
representation's rows (SPEC: rbf kernel). At n = 50,000 those are 2.5·10⁹ values: they
are never held. Instead the tiles of the distance matrix are made again in each *round*
and fed to :class:`OrderStatistics`, which narrows every asked rank down by the bits of
the values: non-negative float64 numbers sort as their IEEE-754 bit patterns do, read as
unsigned integers. A round counts the values per bin of the next bits among those that
share the bits found so far (a histogram of 2²⁰–2²² bins); once a bin holds few enough
values, the next round keeps them and selects exactly. Usually two rounds, at most four.

Numpy only; memory O(bins + ``collect``), whatever the number of values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: Bits resolved per histogram round, from the top (sign and exponent first).
LEVEL_BITS = (20, 22, 22)
#: Values a round may keep to finish by an exact selection (64 MiB of float64 at most).
DEFAULT_COLLECT = 1 << 23
_SIGN_OFF = np.uint64(0x7FFF_FFFF_FFFF_FFFF)


def _shift(level: int) -> int:
    return 64 - sum(LEVEL_BITS[: level + 1])


@dataclass
class _Target:
    """One asked rank and how far it is resolved."""

    rank: int  # 0-based, among all values counted with their weights
    level: int = 0  # the next histogram level
    prefix: int = 0  # the bits above ``_shift(level) + LEVEL_BITS[level]`` (or all bits found)
    below: int = 0  # weighted count of values whose bits sort below the prefix
    collect: bool = False  # this round keeps the values matching the prefix
    value: float | None = None

    def key(self) -> tuple[bool, int, int]:
        return (self.collect, self.level, self.prefix)


@dataclass
class _Round:
    """What one round gathers for the targets sharing a key."""

    hist: np.ndarray | None = None
    values: list[np.ndarray] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)


class OrderStatistics:
    """Exact order statistics of a weighted multiset of non-negative float64 values.

    The caller shows every value once per round (``add`` tile by tile, with the tile's
    weight: 2 for an off-diagonal tile of a symmetric matrix that stands for its mirror),
    then calls ``end_round``, until ``done``. ``-0.0`` counts as ``0.0``; values must not be
    negative or NaN.

    Parameters
    ----------
    total : int
        The weighted count of the values (e.g. n² for all entries of an n × n matrix).
    ranks : sequence of int
        0-based ranks wanted, each in [0, total).
    collect : int
        Values one round may keep for an exact selection.
    """

    def __init__(self, total: int, ranks: Sequence[int], collect: int = DEFAULT_COLLECT) -> None:
        if total <= 0:
            raise ValueError("no values to select from")
        for r in ranks:
            if not 0 <= r < total:
                raise ValueError(f"rank {r} outside [0, {total})")
        self.total = int(total)
        self.collect = int(collect)
        self.targets = [_Target(int(r)) for r in ranks]
        self.rounds = 0
        self._seen = 0
        self._round: dict[tuple[bool, int, int], _Round] = {}

    @property
    def done(self) -> bool:
        return all(t.value is not None for t in self.targets)

    def results(self) -> list[float]:
        """The values at the asked ranks, in the order asked."""
        if not self.done:
            raise RuntimeError("order statistics asked for before the last round")
        return [float(t.value) for t in self.targets]  # type: ignore[arg-type]

    def add(self, values: np.ndarray, weight: int = 1) -> None:
        """Count ``values`` (any shape, float64, ≥ 0) with ``weight`` each in this round."""
        bits = np.ascontiguousarray(values, dtype=np.float64).reshape(-1).view(np.uint64)
        bits = bits & _SIGN_OFF  # −0.0 → 0.0
        self._seen += weight * bits.size
        for key in {t.key() for t in self.targets if t.value is None}:
            collect, level, prefix = key
            acc = self._round.setdefault(key, _Round())
            if collect:
                keep = bits[(bits >> np.uint64(_shift(level - 1))) == np.uint64(prefix)]
                if keep.size:
                    acc.values.append(keep.view(np.float64).copy())
                    acc.weights.append(weight)
                continue
            shift, width = _shift(level), LEVEL_BITS[level]
            top = bits >> np.uint64(shift)
            if level:
                top = top[(top >> np.uint64(width)) == np.uint64(prefix)]
            counts = np.bincount((top & np.uint64((1 << width) - 1)).astype(np.int64),
                                 minlength=1 << width)  # fmt: skip
            acc.hist = counts * weight if acc.hist is None else acc.hist + counts * weight

    def end_round(self) -> None:
        """Narrow every target from what this round counted."""
        if self._seen != self.total:
            raise RuntimeError(f"a round saw {self._seen} values, expected {self.total}")
        for t in self.targets:
            if t.value is None:
                self._narrow(t, self._round.get(t.key(), _Round()))
        self._round, self._seen = {}, 0
        self.rounds += 1

    # -- a checkpoint of a selection between two tiles ----------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """This selection between two :meth:`add` calls as plain int64/uint64/float64
        arrays (a pass's checkpoint, :mod:`reprstore.engine.checkpoints`; no pickle):
        the targets, the round's histograms (their non-empty bins when fewer than half
        are) and the kept values piece by piece (the held arrays themselves, no copy).
        :meth:`from_arrays` takes them back."""
        t = self.targets
        out = {
            "meta": np.array([self.total, self.collect, self.rounds, self._seen], dtype=np.int64),
            "rank": np.array([x.rank for x in t], dtype=np.int64),
            "level": np.array([x.level for x in t], dtype=np.int64),
            "prefix": np.array([x.prefix for x in t], dtype=np.uint64),
            "below": np.array([x.below for x in t], dtype=np.int64),
            "collect": np.array([x.collect for x in t], dtype=np.int64),
            "found": np.array([x.value is not None for x in t], dtype=np.int64),
            "value": np.array([np.nan if x.value is None else x.value for x in t]),
            "keys": np.array([list(k) for k in self._round], dtype=np.uint64).reshape(-1, 3),
        }
        for q, acc in enumerate(self._round.values()):
            if acc.hist is not None:  # 2²⁰–2²² bins, mostly empty: the others' counts
                bins = np.flatnonzero(acc.hist)
                if 2 * bins.size < acc.hist.size:
                    out[f"bins{q}"], out[f"hist{q}"] = bins, acc.hist[bins]
                else:
                    out[f"hist{q}"] = acc.hist
            out[f"weights{q}"] = np.array(acc.weights, dtype=np.int64)
            for k, v in enumerate(acc.values):
                out[f"values{q}_{k}"] = v
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> OrderStatistics:
        """The selection :meth:`to_arrays` saved (ValueError/KeyError if they are not one)."""
        total, collect, rounds, seen = (int(v) for v in arrays["meta"])
        rank = [int(v) for v in arrays["rank"]]
        out = cls(total, rank, collect)
        out.rounds, out._seen = rounds, seen
        for k, t in enumerate(out.targets):
            t.level, t.prefix = int(arrays["level"][k]), int(arrays["prefix"][k])
            t.below, t.collect = int(arrays["below"][k]), bool(arrays["collect"][k])
            t.value = float(arrays["value"][k]) if arrays["found"][k] else None
            if not 0 <= t.level <= len(LEVEL_BITS) or not 0 <= t.below <= total:
                raise ValueError("not the state of a selection")
        keys = np.asarray(arrays["keys"], dtype=np.uint64).reshape(-1, 3)
        for q, (c, level, prefix) in enumerate(keys.tolist()):
            acc = _Round()
            if f"hist{q}" in arrays:
                acc.hist = np.asarray(arrays[f"hist{q}"], dtype=np.int64)
                if f"bins{q}" in arrays:
                    acc.hist = np.zeros(1 << LEVEL_BITS[level], dtype=np.int64)
                    acc.hist[arrays[f"bins{q}"]] = arrays[f"hist{q}"]
            acc.weights = [int(w) for w in arrays[f"weights{q}"]]
            acc.values = [np.asarray(arrays[f"values{q}_{k}"], dtype=np.float64)
                          for k in range(len(acc.weights))]  # fmt: skip
            out._round[(bool(c), int(level), int(prefix))] = acc
        return out

    def nbytes(self) -> int:
        """Bytes of this round's histograms and kept values (at most what
        :meth:`to_arrays` gives)."""
        held = [a.hist for a in self._round.values() if a.hist is not None]
        held += [v for a in self._round.values() for v in a.values]
        return sum(int(v.nbytes) for v in held) + 64 * len(self.targets)

    def _narrow(self, t: _Target, acc: _Round) -> None:
        want = t.rank - t.below
        if t.collect:
            values = np.concatenate(acc.values) if acc.values else np.zeros(0)
            pieces = zip(acc.values, acc.weights, strict=True)
            weights = np.concatenate(
                [np.full(v.size, w, dtype=np.int64) for v, w in pieces]
            ) if acc.values else np.zeros(0, dtype=np.int64)  # fmt: skip
            order = np.argsort(values, kind="stable")
            cum = np.cumsum(weights[order])
            t.value = float(values[order][int(np.searchsorted(cum, want, side="right"))])
            return
        assert acc.hist is not None
        cum = np.cumsum(acc.hist)
        b = int(np.searchsorted(cum, want, side="right"))
        t.below += int(cum[b - 1]) if b else 0
        t.prefix = (t.prefix << LEVEL_BITS[t.level]) | b
        t.level += 1
        if t.level == len(LEVEL_BITS):  # every bit found
            t.value = float(np.array([t.prefix], dtype=np.uint64).view(np.float64)[0])
        elif int(acc.hist[b]) <= self.collect:
            t.collect = True


def median_ranks(total: int) -> tuple[int, int]:
    """The 0-based ranks whose values' mean is the median of ``total`` values."""
    return (total - 1) // 2, total // 2
