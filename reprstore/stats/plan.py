"""Planning a comparison within a memory budget: passes, batch groups, block counts.

Pure functions of shapes and row masks (numpy only).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from reprstore.errors import ComparisonError, InputError

if TYPE_CHECKING:
    from reprstore.stats.minibatch import BatchRange

DEFAULT_MEMORY = 2 * 1024**3
#: Statistics of one pass are counted this many times against ``memory`` (the chains'
#: states of a linear pass, the partial states of a minibatch tree reduction, and the
#: products' temporaries).
STATE_COPIES = 4
Pair = tuple[int, int]
#: Copies of a row block as stored that a reading chain holds at once (:class:`Reading`).
STORED_COPIES = 3


def parse_memory(value: int | str | None) -> int:
    """Bytes from ``2GB``, ``512MiB``, ``1e9`` or an int; ``None`` gives the default (2 GiB)."""
    if value is None:
        return DEFAULT_MEMORY
    if isinstance(value, int):
        n = value
    else:
        m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*", str(value))
        if not m:
            raise InputError(
                f"Invalid memory limit: expected e.g. '2GB' or '512MiB'. Got {value!r} instead."
            )
        power = " KMGT".index(m.group(2).upper() or " ")
        try:
            n = int(float(m.group(1)) * (1024**power))
        except (ValueError, OverflowError) as err:
            raise InputError(
                f"Invalid memory limit {value!r}: expected a finite size such as '2GB'."
            ) from err
    if n <= 0:
        raise InputError(f"The memory limit must be positive. Got {value!r} instead.")
    return n


def check_budget(what: str, need: int, memory: int, remedy: str, detail: str = "") -> None:
    """The one budget check of every pass and plan: refuse, in one line, what needs more
    than ``memory`` bytes. ``what`` names what holds the bytes, ``detail`` (`` (a, b)``)
    their parts, ``remedy`` what the user can change."""
    if need > memory:
        raise ComparisonError(
            f"{what} needs {human_bytes(need)}{detail}, more than the memory limit "
            f"{human_bytes(memory)}. {remedy}"
        )


def plan_linear_passes(
    features: Sequence[int],
    pairs: Sequence[Pair],
    memory: int,
    block_rows: int = 0,
    finishing: Sequence[int] | None = None,
    threads: int = 1,
    kept: Sequence[int] | None = None,
    itemsizes: Sequence[int] | None = None,
    blocks: int | None = None,
    in_place: bool = False,
) -> list[tuple[list[int], list[Pair]]]:
    """Group pairs into passes whose memory (:func:`pass_bytes`) fits ``memory`` bytes.

    Each representation's own statistics (p² + 3p floats) are made in the first pass that
    involves it; each pair adds p·q + p + q floats. ``finishing[k]`` is what finishing
    pair ``k`` (its measures' steps) holds on one thread besides the statistics; a pass
    reserves the ``threads`` largest of its pairs' (:func:`finishing_reserve`).
    ``kept[k]`` is what the measures keep of stream ``k`` from its pass to the end: every
    later pass holds it too. ``itemsizes[k]``: bytes of a stored value of stream ``k``.
    ``in_place``: a pass of one chain updates its state in place (the local threaded
    scheduler; :func:`statistics_bytes`). Returns ``[(own, pairs), …]``.
    """
    reading = Reading(block_rows, threads, itemsizes, blocks, in_place)
    passes: list[tuple[list[int], list[Pair]]] = []
    done: set[int] = set()
    own: list[int] = []
    batch: list[Pair] = []
    held: list[int] = []
    for k, (i, j) in enumerate(pairs):
        extra = int(finishing[k]) if finishing is not None else 0
        grown = [*own, *(x for x in dict.fromkeys((i, j)) if x not in done and x not in own)]
        reserve = finishing_reserve([*held, extra], threads)
        before = sum(kept[x] for x in done) if kept is not None else 0
        need = before + pass_bytes(features, grown, [*batch, (i, j)], reading, reserve)
        if batch and need > memory:
            passes.append((own, batch))
            done |= set(own)
            own, batch, held = [], [], []
            grown = [x for x in dict.fromkeys((i, j)) if x not in done]
            before = sum(kept[x] for x in done) if kept is not None else 0
            need = before + pass_bytes(features, grown, [(i, j)], reading, extra)
        if need > memory:
            parts = pass_parts(features, grown, [(i, j)], reading, extra)
            if before:
                parts["kept from earlier passes"] = before
            shown = ", ".join(f"{k} {human_bytes(v)}" for k, v in parts.items() if v)
            check_budget(
                f"One pair ({features[i]} × {features[j]} features)", need, memory,
                "Raise --memory or use --estimator minibatch (its memory does not grow "
                "with the number of features squared).", detail=f" ({shown})",
            )  # fmt: skip
        own = grown
        held.append(extra)
        batch.append((i, j))
    if batch:
        passes.append((own, batch))
    return passes


def finishing_reserve(workspaces: Sequence[int], threads: int) -> int:
    """What finishing a pass's pairs holds at once: the ``threads`` largest workspaces."""
    return sum(sorted(workspaces, reverse=True)[: max(1, threads)])


@dataclass(frozen=True)
class Reading:
    """How a linear pass reads its row blocks: ``block_rows`` rows at a time, on up to
    ``readers`` threads at once (its chains), each holding a block of every
    representation as stored (``itemsizes``, by stream; 8 when not given) three times
    (the compressed chunk's decoding, the decoded block, its row selection) and offset in
    float64: :data:`STORED_COPIES` + 8 bytes a value, as measured on float32 stores."""

    block_rows: int
    readers: int = 1
    itemsizes: Sequence[int] | None = None
    #: Row blocks the pass reads: no more chains than blocks read at once.
    blocks: int | None = None
    #: Whether a pass of one chain updates its one state in place (the local threaded
    #: scheduler, :func:`linear_chains`): then it holds no other copy of its statistics.
    in_place: bool = False

    def bytes(self, features: Sequence[int], reprs: set[int]) -> int:
        if self.itemsizes is None:  # float64 stores
            return sum(2 * 8 * self.block_rows * features[k] for k in reprs)
        per_row = sum(features[k] * (8 + STORED_COPIES * self.itemsizes[k]) for k in reprs)
        readers = max(1, min(self.readers, self.blocks or self.readers))
        return readers * self.block_rows * per_row


def pass_bytes(
    features: Sequence[int], own: Sequence[int], pairs: Sequence[Pair], reading: Reading,
    finishing: int = 0,
) -> int:  # fmt: skip
    """The memory model of one linear pass: the larger of its two phases.

    While reading, its statistics are held ``STATE_COPIES`` times (the chains' states, the
    tree reduction's partial states, the products' temporaries) with the row blocks being
    read (:class:`Reading`). Then, while the measures are finished, one copy of the
    statistics and ``finishing`` (their eigen/SVD workspaces, on every thread).
    """
    got = pass_parts(features, own, pairs, reading, finishing)
    reading_phase = got["statistics"] + got["row blocks"]
    return max(reading_phase, linear_state_bytes(features, own, pairs) + got["finishing"])


def pass_parts(
    features: Sequence[int], own: Sequence[int], pairs: Sequence[Pair], reading: Reading,
    finishing: int = 0,
) -> dict[str, int]:  # fmt: skip
    """The parts of :func:`pass_bytes`, for messages: the statistics (all their copies),
    the row blocks and the finishing workspaces."""
    one = reading.in_place and pass_chains(features, own, pairs, reading) == 1
    at_once = replace(reading, readers=1) if one else reading  # one chain reads one block
    data = at_once.bytes(features, set(own) | {k for p in pairs for k in p})
    stats = statistics_bytes(features, own, pairs, reading)
    return {"statistics": stats, "row blocks": data, "finishing": finishing}


def statistics_bytes(
    features: Sequence[int], own: Sequence[int], pairs: Sequence[Pair], reading: Reading
) -> int:
    """What a linear pass's statistics hold while reading: ``STATE_COPIES`` states over
    several chains (or where a scheduler moves states between processes), and the state
    with its products' temporaries where one chain updates it in place
    (:func:`pass_chains`, :func:`in_place_bytes`)."""
    state = linear_state_bytes(features, own, pairs)
    if reading.in_place and pass_chains(features, own, pairs, reading) == 1:
        return in_place_bytes(features, own, pairs, reading)
    return STATE_COPIES * state


def in_place_bytes(
    features: Sequence[int], own: Sequence[int], pairs: Sequence[Pair], reading: Reading
) -> int:
    """One chain updating its state in place: the state, one temporary of the largest
    product on each thread (``sums += xᵀy``) and the sub-blocks' working buffers
    (:data:`reprstore.stats.fused.WORK_BYTES`, or one block's rows in float64)."""
    from reprstore.stats.fused import WORK_BYTES

    products = [features[k] ** 2 for k in set(own)]
    products += [features[i] * features[j] for i, j in set(pairs) if i != j]
    largest = 8 * max(products, default=0)
    width = sum(features[k] for k in set(own) | {k for p in pairs for k in p})
    rows = reading.block_rows or WORK_BYTES
    buffers = min(WORK_BYTES, 8 * rows * width)  # float64 sub-blocks of a block at most
    return linear_state_bytes(features, own, pairs) + max(1, reading.readers) * largest + buffers


def pass_chains(
    features: Sequence[int], own: Sequence[int], pairs: Sequence[Pair], reading: Reading
) -> int:
    """Chains of a linear pass: :func:`linear_chains`, or one where a state updated in
    place (local threads) holds less than ``STATE_COPIES`` states: a wide grid then packs
    about ``STATE_COPIES`` times more pairs into a pass (its products still use every
    thread; only the reading of blocks is not spread over chains)."""
    state = linear_state_bytes(features, own, pairs)
    threads = max(1, reading.readers)
    chains = linear_chains(threads, reading.blocks or threads, state)
    cheaper = in_place_bytes(features, own, pairs, reading) < STATE_COPIES * state
    return 1 if chains > 1 and reading.in_place and cheaper else chains


def linear_state_bytes(features: Sequence[int], own: Sequence[int], pairs: Sequence[Pair]) -> int:
    """Bytes of one state of a linear pass: own statistics of ``own``, cross of ``pairs``."""
    floats = sum(features[k] ** 2 + 3 * features[k] for k in set(own))
    floats += sum(
        features[i] * features[j] + features[i] + features[j] for i, j in set(pairs) if i != j
    )
    return 8 * floats


#: Chains of a linear pass beyond the first are made only while all their states together
#: stay within this many bytes.
CHAIN_STATES_BYTES = 128 * 1024**2


def linear_chains(threads: int, blocks: int, state_bytes: int) -> int:
    """Chains of a linear pass: one per scheduler thread while their states are small.

    Each chain holds one state. A state larger than ``CHAIN_STATES_BYTES`` (a grid of
    many pairs) runs as one chain whose products use every core through BLAS, so that
    memory holds one state, not one per core.
    """
    return max(1, min(threads, blocks, CHAIN_STATES_BYTES // max(state_bytes, 1)))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def live_blocks(chunks: Sequence[int], mask: np.ndarray | None) -> int:
    """Row blocks holding at least one selected row (the blocks a pass reads)."""
    if mask is None:
        return sum(1 for c in chunks if c)
    bounds = np.cumsum((0, *chunks))
    return sum(bool(mask[bounds[k] : bounds[k + 1]].any()) for k in range(len(chunks)))


def batch_groups(
    ids: np.ndarray, rows_per_pass: int, batch_size: int, shuffle: int | None
) -> list[np.ndarray | BatchRange]:
    """The groups of a minibatch pass's batches (each a read of every block): shuffled
    batches ``rows_per_pass`` rows at a time, as ranges over the one ``ids`` array."""
    from reprstore.stats.minibatch import BatchRange

    n_batches = int(ids.max()) + 1 if (ids >= 0).any() else 0
    if n_batches == 0:
        return []
    if shuffle is None:
        return [ids]
    per = max(rows_per_pass // batch_size, 1)
    return [BatchRange(ids, g, g + per) for g in range(0, n_batches, per)]
