"""Resumable passes: the linear statistics of a pass, checkpointed in the store's cache.

A checkpointed pass reads its row blocks in *segments* (a fixed number of blocks, a
multiple of the pass's chains, decided by the block count alone) and folds each segment
into the state of the segments before it, in order. After a segment, the state is saved
to ``STORE/cache/passes/<key>.npz`` (atomically) when enough time has gone by since the
last save: at least :data:`MIN_INTERVAL_S` and 19 times what the last save took, so saving
costs at most 5 % of the pass. A killed run, rerun, loads the last saved state and
goes on with the next segment. Because an uninterrupted run folds the same segments in
the same order, the resumed value is bit-identical to it, however often it was killed.

The key of a checkpoint is a hash of everything its sums depend on: each stream's
representation content fingerprint and row view, the statistics asked for, the row
selection, the block layout and segment size, and the arithmetic (backend, precision).
A checkpoint of other data or options has another key and is never loaded; a file under
the right key that does not hold what its key says (damaged, truncated, another format)
is ignored with a note and overwritten. Checkpoints are deleted once the comparison's
results are in the result cache (:mod:`reprstore.store.result_cache`).

The other streamed passes fold their segments the same way with :func:`run_segments`
(minibatch CKA, the grouped passes) or :class:`SegmentSaves` directly (the sample route,
:mod:`reprstore.engine.sample_pass`: rounds of panel segments, as many rounds as its RBF
median takes); their state is saved by a :class:`Segments` form.

The arrays are saved as an ``.npz`` of plain float64 and integer arrays and a JSON header
(no pickle: a checkpoint cannot run code when loaded).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reprstore.engine import dask_graph
from reprstore.stats import linear
from reprstore.stats.linear import Offset, PairMoments, ReprMoments
from reprstore.stats.plan import linear_state_bytes

FORMAT = 1
#: At least this long between two saves of one pass (``REPRSTORE_CHECKPOINT_SECONDS``).
MIN_INTERVAL_S = 2.0
#: Saving may take at most 1/(1 + this) of the time between saves (19: 5 %).
SAVE_SHARE = 19.0
#: Segments per pass at most (fewer when the pass has fewer blocks than chains × this).
MAX_SEGMENTS = 32
#: On a dask.distributed cluster the state travels to a worker per segment: fewer segments.
MAX_SEGMENTS_DISTRIBUTED = 4
#: Assumed write speed of a first save, before one has been timed (bytes per second).
WRITE_SPEED = 1e9

LinearState = tuple[dict[int, ReprMoments], dict[tuple[int, int], PairMoments]]


def min_interval() -> float:
    """Seconds between saves: :data:`MIN_INTERVAL_S` or ``$REPRSTORE_CHECKPOINT_SECONDS``."""
    text = os.environ.get("REPRSTORE_CHECKPOINT_SECONDS")
    try:
        return max(0.0, float(text)) if text else MIN_INTERVAL_S
    except ValueError:
        return MIN_INTERVAL_S


def segment_blocks(live: int, chains: int, distributed: bool = False) -> int:
    """Blocks per segment: a multiple of ``chains``, at most ``MAX_SEGMENTS`` segments."""
    most = MAX_SEGMENTS_DISTRIBUTED if distributed else MAX_SEGMENTS
    per = -(-live // most)
    return max(chains, -(-per // chains) * chains)


@dataclass
class PassCheckpoints:
    """Checkpoints of one comparison's passes over stored representations.

    Attributes
    ----------
    files : reprstore.store.cache_files.CacheFiles, or None to segment the passes the same
        way without saving anything (``--no-cache``: the same arithmetic, so the same bits)
    fingerprints : content fingerprint of each array of the pass context (None: an array
        without recorded checksums, whose passes are not checkpointed)
    rows : fingerprint of the row selection
    note : callable(str) that tells the user what happened (loaded, ignored, not saved)
    """

    files: Any
    fingerprints: Sequence[str | None]
    rows: str
    note: Callable[[str], None] = lambda line: None
    saved: set[str] = field(default_factory=set)
    noted: set[str] = field(default_factory=set)

    def key(self, streams: Sequence[tuple[int, str]], own: Sequence[int],
            pairs: Sequence[tuple[int, int]], layout: Sequence[Any]) -> str | None:  # fmt: skip
        """The key of a pass (None when an involved array has no fingerprint)."""
        involved = sorted(set(own) | {s for p in pairs for s in p})
        prints = [self.fingerprints[streams[s][0]] for s in involved]
        if any(p is None for p in prints):
            return None
        doc = [FORMAT, [[self.fingerprints[i], v] for i, v in streams], sorted(own),
               sorted(map(list, pairs)), self.rows, [str(x) for x in layout]]  # fmt: skip
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:40]

    def _path(self, key: str) -> str:
        return f"passes/{key}.npz"

    def _say(self, line: str) -> None:
        if line not in self.noted:
            self.noted.add(line)
            self.note(line)

    def load(
        self, key: str, known: Sequence[Any], total: int
    ) -> tuple[LinearState, list[Any], int] | None:
        """The saved (state, shifts, segments done) of a pass, or None (with a note when a
        file is there but cannot be used)."""
        try:
            arrays = self.files.read_arrays(self._path(key))
        except ValueError as err:
            self._say(f"a checkpoint of this pass could not be read ({err}); it is ignored")
            return None
        if arrays is None:
            return None
        self.saved.add(key)  # used now: removed with the ones this run saves
        try:
            state, shifts, done, segments = _decode(arrays)
        except (KeyError, ValueError, TypeError) as err:
            self._say(f"a checkpoint of this pass could not be read ({err}); it is ignored")
            return None
        clash = any(k is not None and (s is None or not linear.as_offset(k).same(s))
                    for k, s in zip(known, shifts, strict=False))  # fmt: skip
        if segments != total or len(shifts) != len(known) or clash:
            self._say("a checkpoint of this pass was made another way; it is ignored")
            return None
        return state, shifts, done

    def save(self, key: str, state: LinearState, shifts: Sequence[Any], done: int,
             total: int) -> bool:  # fmt: skip
        """Save the state after ``done`` of ``total`` segments; False when the cache is
        read-only (noted once)."""
        return self.save_arrays(key, _encode(state, shifts, done, total))

    def save_arrays(self, key: str, arrays: dict[str, np.ndarray]) -> bool:
        """Save a pass's arrays under ``key``; False when the cache is read-only (noted)."""
        ok = bool(self.files.write_arrays(self._path(key), arrays))
        if ok:
            self.saved.add(key)
        elif self.files.write_error:
            self._say(f"checkpoints not saved: the store's cache is read-only "
                      f"({self.files.write_error})")  # fmt: skip
        return ok

    def remove(self) -> None:
        """Delete the checkpoints this comparison saved or found (its results are cached
        now)."""
        for key in sorted(self.saved):
            self.files.delete(self._path(key))
        self.saved.clear()


# ------------------------------------------------------------------ the segmented pass


def run_linear(
    c: Any,
    runner: dask_graph.Runner,
    streams: Sequence[tuple[int, str]],
    own: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    offsets: Sequence[Any],
    chains: int,
    threads: int,
) -> LinearState:
    """One linear pass over ``c.arrays``; in checkpointed segments when ``c.checkpoints``
    holds the store's checkpoints, in one graph otherwise."""
    common = dict(mask=c.mask, backend=c.backend, split_every=c.split_every, threads=threads,
                  views=streams, inputs=getattr(c, "sources", None))  # fmt: skip
    ckpt: PassCheckpoints | None = getattr(c, "checkpoints", None)
    live = dask_graph.live_block_indices(c.arrays[0].chunks[0], c.mask)
    local = dask_graph.is_local_threaded(c.scheduler)
    per = segment_blocks(len(live), chains, distributed=not local)
    segments = [live[k : k + per] for k in range(0, len(live), per)]
    if ckpt is None or len(segments) < 2:
        graph, _ = dask_graph.linear_pass(c.arrays, own, pairs, shifts=offsets, chains=chains,
                                          **common)  # fmt: skip
        (whole,) = runner(graph, blocks=len(live), workers=chains, blas=1)
        return whole  # type: ignore[no-any-return]
    layout = [c.arrays[0].chunks[0], per, c.backend, c.n]
    key = ckpt.key(streams, own, pairs, layout) if ckpt.files is not None else None
    shifts: list[Any] = list(offsets)
    state: LinearState | None = None
    done = 0
    loaded = ckpt.load(key, offsets, len(segments)) if key is not None else None
    if loaded is not None:
        state, shifts, done = loaded
        skipped = sum(len(s) for s in segments[:done])
        runner.skip(skipped)
        ckpt._say(f"resumed a pass from its checkpoint: {skipped} of {len(live)} blocks done")
    nbytes = linear_state_bytes([int(c.arrays[i].shape[1]) for i, _ in streams], own, pairs)
    cost = nbytes / WRITE_SPEED  # until a save has been timed
    last_save = time.monotonic()
    for k in range(done, len(segments)):
        graph, found = dask_graph.linear_pass(
            c.arrays, own, pairs, shifts=shifts, chains=min(chains, len(segments[k])),
            blocks=segments[k], start=state, **common,
        )  # fmt: skip
        state, got = runner(graph, dask_graph.dask_delayed(list)(found), blocks=len(segments[k]),
                            workers=chains, blas=1)  # fmt: skip
        shifts = [g if g is not None else s for g, s in zip(got, shifts, strict=True)]
        now = time.monotonic()
        due = now - last_save >= max(min_interval(), SAVE_SHARE * cost)
        if key is not None and due and not ckpt.files.local and nbytes > c.memory // 4:
            ckpt._say("checkpoints not saved: on an object store a checkpoint is uploaded from a "
                      "copy in memory, and this pass's sums would not fit --memory")  # fmt: skip
            key = None
        if key is not None and k + 1 < len(segments) and due:
            began = time.monotonic()
            if ckpt.save(key, state, shifts, k + 1, len(segments)):
                cost = time.monotonic() - began
            last_save = time.monotonic()
    assert state is not None
    return state


# ------------------------------------------------------- other passes, in segments


@dataclass
class Segments:
    """How a pass other than the linear one keeps its state between segments.

    ``encode(state)`` gives plain arrays (with a JSON ``head``) and ``decode`` takes them
    back; ``nbytes`` is the state's size (an object store uploads it from a copy), or a
    function of the state for a state whose size changes over the pass; ``fits(state,
    done)``, if given, says whether a decoded state is that of ``done`` segments (a
    checkpoint that is not is ignored with a note).
    """

    encode: Callable[[Any], dict[str, np.ndarray]]
    decode: Callable[[dict[str, np.ndarray]], Any]
    nbytes: int | Callable[[Any], int]
    fits: Callable[[Any, int], bool] | None = None


#: A minibatch pass makes about one segment per this many row blocks (each segment
#: boundary re-reads one block: at most 1/8 more blocks decoded).
BLOCKS_PER_SEGMENT = 8


def minibatch_segments(live: int, workers: int, batches: int,
                       per: int = BLOCKS_PER_SEGMENT) -> int:  # fmt: skip
    """Segments of a minibatch pass over ``live`` blocks: one per ``per`` blocks
    (:data:`BLOCKS_PER_SEGMENT`; and ``workers`` blocks at least), at most
    :data:`MAX_SEGMENTS` and ``batches``."""
    per = max(per, workers)
    return max(1, min(MAX_SEGMENTS, batches, live // per))


#: Reading and decoding one stored value costs about this many multiply-adds (the
#: rule that decides how many segments a shuffled pass has).
READ_COST = 64.0


def shuffled_segments(work: float, read: float, batches: int) -> int:
    """Segments of a pass over shuffled batches, ``work`` multiply-adds for ``read``
    stored values: every segment reads every block of the pass (its batches' rows are
    anywhere), so one segment per :data:`BLOCKS_PER_SEGMENT` × the read's cost
    (:data:`READ_COST`) of work keeps the re-reads at most about 1/8 of the pass; at
    most :data:`MAX_SEGMENTS` and ``batches``."""
    count = int(work // (BLOCKS_PER_SEGMENT * READ_COST * max(read, 1.0)))
    return max(1, min(MAX_SEGMENTS, batches, count))


def live_blocks(batches: Any, bounds: np.ndarray) -> list[int]:
    """The row blocks holding a row of ``batches`` (a consecutive layout or batch ids)."""
    from reprstore.stats.minibatch import ConsecutiveBatches

    blocks = range(len(bounds) - 1)
    if isinstance(batches, ConsecutiveBatches):
        lo, hi = batches.row_range()
        return [k for k in blocks if bounds[k] < hi and bounds[k + 1] > lo]
    return [k for k in blocks if (batches[bounds[k] : bounds[k + 1]] >= 0).any()]


class SegmentSaves:
    """The saves of one pass folded in segments, and its resumption.

    :func:`run_segments` drives it for a pass of ``total`` segments known in advance; a
    pass whose segments are not (the sample route: rounds of panel segments until a
    selection ends) gives ``total=None``, numbers its segments itself (the same numbers
    in every run) and never asks to save after its last one. ``key=None`` (or no
    checkpoint files: ``--no-cache``) saves and loads nothing.

    A save is *due* :data:`MIN_INTERVAL_S` (``$REPRSTORE_CHECKPOINT_SECONDS``) and
    :data:`SAVE_SHARE` × the last save's time after the last one. On an object store a
    checkpoint is uploaded from a copy in memory: a state over a quarter of ``memory``
    is not saved there (noted once).
    """

    def __init__(self, ckpt: PassCheckpoints | None, key: str | None, form: Segments,
                 memory: int, total: int | None = None) -> None:  # fmt: skip
        if ckpt is None or ckpt.files is None:
            key = None
        self.ckpt = ckpt
        self.key = key
        self.form = form
        self.memory = memory
        self.total = total
        self.cost: float | None = None  # seconds the last save took (None: not timed yet)
        self.last_save = time.monotonic()

    def resume(self, fits: Callable[[Any, int], bool] | None = None) -> tuple[Any, int]:
        """The saved (state, segments done) of this pass, or (None, 0); ``fits(state,
        done)`` False: the saved state is not one this pass makes after ``done`` segments
        (ignored with a note)."""
        if self.key is None:
            return None, 0
        assert self.ckpt is not None
        state, done = _load_other(self.ckpt, self.key, self.total, self.form, fits)
        if done:
            of = f" of {self.total}" if self.total is not None else ""
            self.ckpt._say(f"resumed a pass from its checkpoint: {done}{of} segments done")
        self.last_save = time.monotonic()
        return state, done

    def nbytes(self, state: Any) -> int:
        size = self.form.nbytes
        return size if isinstance(size, int) else int(size(state))

    def after(self, done: int, state: Any) -> None:
        """``done`` segments are folded into ``state``: save it if a save is due."""
        if self.key is None:
            return
        assert self.ckpt is not None
        size = self.nbytes(state)
        cost = self.cost if self.cost is not None else size / WRITE_SPEED
        if time.monotonic() - self.last_save < max(min_interval(), SAVE_SHARE * cost):
            return
        if not self.ckpt.files.local and size > self.memory // 4:
            self.ckpt._say(
                "checkpoints not saved: on an object store a checkpoint is uploaded from a "
                "copy in memory, and this pass's state would not fit --memory"
            )
            return
        began = time.monotonic()
        arrays = self.form.encode(state)
        arrays["_segments"] = np.array([done, self.total or 0], dtype=np.int64)
        if self.ckpt.save_arrays(self.key, arrays):
            self.cost = time.monotonic() - began
        self.last_save = time.monotonic()


def run_segments(
    ckpt: PassCheckpoints | None,
    key: str | None,
    total: int,
    step: Callable[[int, Any], Any],
    form: Segments,
    memory: int,
    skip: Callable[[int], None] = lambda k: None,
) -> Any:
    """Fold ``total`` segments in order (``state = step(k, state)``, ``None`` first),
    saving the state after a segment when due, resuming from a saved one
    (:class:`SegmentSaves`).

    The same segments fold in the same order with or without checkpoints, so a resumed
    run's state is bit-identical to an uninterrupted one. ``skip(k)`` counts the
    segments a resumed run does not read (progress).
    """
    saves = SegmentSaves(ckpt, key if total >= 2 else None, form, memory, total)
    state, done = saves.resume()
    if done:
        skip(done)
    for k in range(done, total):
        state = step(k, state)
        if k + 1 < total:
            saves.after(k + 1, state)
    return state


def _load_other(
    ckpt: PassCheckpoints, key: str, total: int | None, form: Segments,
    fits: Callable[[Any, int], bool] | None = None,
) -> tuple[Any, int]:  # fmt: skip
    """The saved (state, segments done) of a segmented pass, or (None, 0); ``total=None``:
    a pass whose segments are not known in advance (any number done)."""
    try:
        arrays = ckpt.files.read_arrays(ckpt._path(key))
    except ValueError as err:
        ckpt._say(f"a checkpoint of this pass could not be read ({err}); it is ignored")
        return None, 0
    if arrays is None:
        return None, 0
    ckpt.saved.add(key)
    try:
        done, segments = (int(v) for v in arrays.pop("_segments"))
        state = form.decode(arrays)
    except (KeyError, ValueError, TypeError) as err:
        ckpt._say(f"a checkpoint of this pass could not be read ({err}); it is ignored")
        return None, 0
    if (segments != (total or 0) or done <= 0 or (total is not None and done >= total)
            or (fits is not None and not fits(state, done))
            or (form.fits is not None and not form.fits(state, done))):  # fmt: skip
        ckpt._say("a checkpoint of this pass was made another way; it is ignored")
        return None, 0
    return state, done


# ---------------------------------------------------------------------- file format


def _encode(
    state: LinearState, shifts: Sequence[Any], done: int, total: int
) -> dict[str, np.ndarray]:
    reprs, pairs = state
    arrays: dict[str, np.ndarray] = {}
    head: dict[str, Any] = {"format": FORMAT, "done": done, "segments": total,
                            "reprs": {}, "pairs": {}, "shifts": []}  # fmt: skip
    for s, m in reprs.items():
        head["reprs"][str(s)] = [m.n, m.sqnorm, m.sqnorm2, m.nonfinite, m.scale]
        for name in ("shift", "total", "gram", "sqnorm_x"):
            arrays[f"r{s}.{name}"] = getattr(m, name)
    for (s, t), p in pairs.items():
        head["pairs"][f"{s},{t}"] = p.ab
        for name in ("cross", "a_y", "b_x"):
            arrays[f"p{s}_{t}.{name}"] = getattr(p, name)
    for k, off in enumerate(shifts):
        if off is None:
            head["shifts"].append(None)
            continue
        o = linear.as_offset(off)
        head["shifts"].append(o.scale)
        arrays[f"o{k}"] = o.shift
    arrays["head"] = np.array(json.dumps(head))
    return arrays


def _decode(arrays: dict[str, np.ndarray]) -> tuple[LinearState, list[Any], int, int]:
    head = json.loads(str(arrays["head"]))
    if head.get("format") != FORMAT:
        raise ValueError(f"format {head.get('format')!r}")
    reprs: dict[int, ReprMoments] = {}
    for s, (n, sqnorm, sqnorm2, nonfinite, scale) in head["reprs"].items():
        reprs[int(s)] = ReprMoments(
            n=int(n), shift=arrays[f"r{s}.shift"], total=arrays[f"r{s}.total"],
            gram=arrays[f"r{s}.gram"], sqnorm=float(sqnorm), sqnorm2=float(sqnorm2),
            sqnorm_x=arrays[f"r{s}.sqnorm_x"], nonfinite=int(nonfinite),
            scale=float(scale),
        )  # fmt: skip
    pairs: dict[tuple[int, int], PairMoments] = {}
    for name, ab in head["pairs"].items():
        s, t = (int(x) for x in name.split(","))
        pairs[(s, t)] = PairMoments(
            cross=arrays[f"p{s}_{t}.cross"], a_y=arrays[f"p{s}_{t}.a_y"],
            b_x=arrays[f"p{s}_{t}.b_x"], ab=float(ab),
        )  # fmt: skip
    shifts: list[Any] = [
        None if scale is None else Offset(arrays[f"o{k}"], float(scale))
        for k, scale in enumerate(head["shifts"])
    ]
    return (reprs, pairs), shifts, int(head["done"]), int(head["segments"])
