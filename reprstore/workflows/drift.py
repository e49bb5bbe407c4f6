"""Weight drift between checkpoint files: per tensor, cosine and relative change.

For a tensor W of a checkpoint and the same tensor W_ref of the reference, flattened:
``cosine`` = ⟨W, W_ref⟩ / (‖W‖ ‖W_ref‖), ``change`` = ‖W − W_ref‖ and ``rel_change`` =
‖W − W_ref‖ / ‖W_ref‖ (Frobenius norms; the difference is formed before it is squared, so a
tiny change keeps its digits). The row ``(all)`` treats every selected tensor of a
checkpoint as one vector. Checkpoints of several seeds (``runs/seed0/step100.pt`` or
``seed0-step100.pt``) are grouped by seed, each seed against its own reference
(:func:`seed_groups`). Sums accumulate in float64 over slices of one tensor at a time
(:mod:`reprstore.capture.weights` reads them; torch is imported only when this runs).
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reprstore.analysis.steps import FINAL_LABELS, step_of
from reprstore.errors import InputError
from reprstore.keys import natural_key

ALL = "(all)"
#: ``seed3``, ``seed_3``, ``seed-3``, ``seed=3`` in a file or folder name (not ``myseed3``).
SEED = re.compile(r"(?<![a-z])seed[_=-]?(\d+)", re.IGNORECASE)
#: How to name several seeds' checkpoints, for the messages.
SEED_HINT = (
    "; for several seeds, keep each seed's files in a folder seed<N> (runs/seed0/step100.pt) "
    "or name them seed<N>-step100.pt: each seed is then compared against its own reference"
)
DRIFT_COLUMNS = [
    "checkpoint", "step", "parameter", "shape", "numel", "rel_change", "cosine", "change",
    "norm", "ref_norm", "reference", "note",
]  # fmt: skip


@dataclass
class Sums:
    """⟨W, R⟩, ‖W‖², ‖R‖² and ‖W − R‖² of one tensor (or of several, added)."""

    dot: float = 0.0
    ww: float = 0.0
    rr: float = 0.0
    dd: float = 0.0

    def add(self, w: np.ndarray, r: np.ndarray) -> None:
        d = w - r
        self.dot += float(w @ r)
        self.ww += float(w @ w)
        self.rr += float(r @ r)
        self.dd += float(d @ d)

    def merge(self, other: Sums) -> None:
        self.dot += other.dot
        self.ww += other.ww
        self.rr += other.rr
        self.dd += other.dd

    def measures(self) -> tuple[float, float, float, float, float, str]:
        """rel_change, cosine, change, norm, ref_norm and a note where one is undefined."""
        norm, ref, change = math.sqrt(self.ww), math.sqrt(self.rr), math.sqrt(self.dd)
        if not all(map(math.isfinite, (norm, ref, change, self.dot))):
            raise InputError("A checkpoint holds NaN or infinite weights; drift is undefined.")
        rel = change / ref if ref > 0 else math.nan
        cos = min(1.0, max(-1.0, self.dot / (norm * ref))) if norm > 0 and ref > 0 else math.nan
        note = (
            "" if ref > 0 and norm > 0 else ("reference is all zeros" if ref == 0 else "all zeros")
        )
        return rel, cos, change, norm, ref, note


def tensor_sums(chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> Sums:
    """:class:`Sums` over pairs of matching float64 slices of W and W_ref."""
    sums = Sums()
    for w, r in chunks:
        sums.add(w, r)
    return sums


def seed_of(path: Path) -> tuple[str | None, str]:
    """(seed, label) of a checkpoint file: the number after ``seed`` in its name (then
    left out of the label: ``seed0-step100.pt`` → ``step100``) or else in the nearest
    folder name that has one (``seed0/step100.pt``); (None, file label) if neither has."""
    from reprstore.capture.models import file_label

    label = file_label(path)
    found = SEED.search(label)
    if found:
        left, right = label[: found.start()].rstrip("-_.="), label[found.end() :].lstrip("-_.=")
        return found.group(1), "_".join(p for p in (left, right) if p) or label
    for part in reversed(path.parent.parts):
        found = SEED.search(part)
        if found:
            return found.group(1), label
    return None, label


def seed_groups(values: Sequence[str]) -> list[tuple[str | None, list[Any]]]:
    """The checkpoint files that paths and globs name, as (seed, checkpoints) groups.

    When every file's path names a seed (:func:`seed_of`), one group per seed in natural
    order; when none does, one group (seed None) labelled by file name. Labels must be
    unique within a group; a mix of files with and without a seed is refused.
    """
    from reprstore.capture.models import Checkpoint, check_unique_labels, checkpoint_paths
    from reprstore.capture.weights import check_given

    check_given(list(values))
    paths = checkpoint_paths(list(values))
    found = [seed_of(p) for p in paths]
    without = [p for p, (s, _) in zip(paths, found, strict=True) if s is None]
    if without and len(without) < len(paths):
        seeds = ", ".join(sorted({s for s, _ in found if s is not None}))
        raise InputError(
            f"{without[0]} names no seed while other checkpoints do (seed {seeds}): give "
            "one seed's files, or every file under a folder seed<N> or named seed<N>-…."
        )
    groups: dict[str | None, list[Any]] = {}
    for path, (seed, label) in zip(paths, found, strict=True):
        groups.setdefault(seed, []).append(Checkpoint(label, path))
    for seed, ckpts in groups.items():
        where = "" if seed is None else f" of seed {seed}"
        check_unique_labels([c.label for c in ckpts], [c.path for c in ckpts],
                            where if seed is not None else SEED_HINT)  # fmt: skip
    return sorted(groups.items(), key=lambda item: natural_key(item[0] or ""))


def _reference(
    files: list[Any], against: str | os.PathLike[str] | None, seed: str | None = None
) -> Any:
    from reprstore.capture.models import Checkpoint

    if against is None:
        return files[0]
    for ckpt in files:
        if ckpt.label == str(against) or (ckpt.path is not None and ckpt.path == Path(against)):
            return ckpt
    path = Path(against)
    if path.is_file():
        return Checkpoint(path.stem, path)
    labels = ", ".join(c.label for c in files)
    of = "" if seed is None else f" of seed {seed}"
    raise InputError(f"--against {os.fspath(against)!r} is neither a checkpoint label{of} "
                     f"({labels}) nor a file.")  # fmt: skip


def weight_drift(
    checkpoints: Sequence[str | os.PathLike[str]],
    against: str | os.PathLike[str] | None = None,
    *,
    params: str | None = None,
) -> pd.DataFrame:
    """Drift of every floating-point tensor of each checkpoint from a reference.

    Parameters
    ----------
    checkpoints : sequence of paths or globs
        State-dict checkpoints (``torch.save``; loaded with ``weights_only=True``) or
        ``.safetensors`` files; globs expand in natural order. Labels are file stems.
        Files whose paths name seeds (``runs/seed0/step100.pt``, ``seed1-step100.pt``)
        form one group per seed (:func:`seed_groups`).
    against : label or path, optional
        The reference: one of the checkpoints' labels (``final``; per seed, that seed's)
        or a file (for every seed). Default: the first checkpoint (of each seed).
    params : str, optional
        Shell-style glob over tensor names (``encoder.*.weight``); default all.

    Returns
    -------
    DataFrame
        One row per checkpoint × tensor, plus ``(all)`` per checkpoint, with
        :data:`DRIFT_COLUMNS` (after a ``seed`` column when the files name seeds); ``step``
        is the number in the label (empty for ``final``).
    """
    from reprstore.engine.dask_graph import fixed_mmap_threshold

    fixed_mmap_threshold()  # each slice's buffers go back to the system when freed
    groups = seed_groups([os.fspath(c) for c in checkpoints])
    rows: list[list[Any]] = []
    notes: list[str] = []
    for seed, given in groups:
        ref = _reference(given, against, seed)
        found = _drift_rows(sorted(given, key=_timeline_order), ref, params, notes)
        rows += [[seed, *r] for r in found] if seed is not None else found
    seeded = groups[0][0] is not None
    df = pd.DataFrame(rows, columns=["seed", *DRIFT_COLUMNS] if seeded else DRIFT_COLUMNS)
    df.attrs["notes"] = notes
    return df


def _drift_rows(files: list[Any], ref: Any, params: str | None, notes: list[str]) -> list[Any]:
    """The rows of ``files`` against ``ref`` (adds the skipped-tensor note once)."""
    from reprstore.capture.weights import open_weights

    assert ref.path is not None and all(c.path is not None for c in files)
    rows: list[list[Any]] = []
    with open_weights(ref.path) as reference:
        shapes = _selected(reference, params, ref.label)
        for note in _skipped_note(reference.skipped(), params, ref.label):
            if note not in notes:
                notes.append(note)
        for ckpt in files:
            with open_weights(ckpt.path) as current:  # type: ignore[arg-type]
                _check_fits(current, reference, shapes, ckpt.label, ref.label)
                total = Sums()
                for name, shape in shapes.items():
                    sums = tensor_sums(
                        zip(current.chunks(name), reference.chunks(name), strict=True)
                    )
                    total.merge(sums)
                    rows.append(_row(ckpt.label, name, shape, sums, ref.label))
                rows.append(_row(ckpt.label, ALL, (sum(map(math.prod, shapes.values())),),
                                 total, ref.label))  # fmt: skip
    return rows


def _timeline_order(ckpt: Any) -> tuple[int, float]:
    """Unnumbered labels (``init``) first, then by step, ``final`` last."""
    step = step_of(ckpt.label)
    if step is not None:
        return (1, float(step))
    return (2, 0.0) if ckpt.label.lower() in FINAL_LABELS else (0, 0.0)


def _row(label: str, name: str, shape: tuple[int, ...], sums: Sums, ref: str) -> list[Any]:
    rel, cos, change, norm, ref_norm, note = sums.measures()
    step = step_of(label)
    return [label, step if step is not None else math.nan, name, "×".join(map(str, shape)) or "1",
            math.prod(shape), rel, cos, change, norm, ref_norm, ref, note]  # fmt: skip


def _few(named: dict[str, str], limit: int = 3) -> str:
    """``position_ids (int64), step (int64) …``: some names with their dtypes."""
    text = ", ".join(f"{n} ({d})" for n, d in list(named.items())[:limit])
    return text + (" …" if len(named) > limit else "")


def _skipped_note(skipped: dict[str, str], params: str | None, label: str) -> list[str]:
    """The note on the reference's tensors that are not floating point (left out)."""
    if params is not None:
        skipped = {k: v for k, v in skipped.items() if fnmatch.fnmatchcase(k, params)}
    if not skipped:
        return []
    return [
        f"skipped {len(skipped)} tensor(s) of {label} that are not floating point: "
        f"{_few(skipped)}; weight drift compares floating-point weights only"
    ]


def _selected(reference: Any, params: str | None, label: str) -> dict[str, tuple[int, ...]]:
    """Name → shape of the reference's floating-point tensors that ``params`` selects."""
    shapes, skipped = reference.shapes(), reference.skipped()
    if not shapes:
        what = f": its tensors are {_few(skipped)}" if skipped else ""
        raise InputError(f"Checkpoint {label} holds no floating-point tensor{what}.")
    if params is None:
        return dict(shapes)
    chosen = {k: v for k, v in shapes.items() if fnmatch.fnmatchcase(k, params)}
    if not chosen:
        other = {k: v for k, v in skipped.items() if fnmatch.fnmatchcase(k, params)}
        if other:
            raise InputError(
                f"--params {params!r} selects only tensors of {label} that are not floating "
                f"point ({_few(other)}); weight drift compares floating-point weights only."
            )
        some = ", ".join(list(shapes)[:5])
        raise InputError(f"No tensor of {label} matches --params {params!r}; tensors: {some}…")
    return chosen


def _check_fits(
    current: Any, reference: Any, want: dict[str, tuple[int, ...]], label: str, ref: str
) -> None:
    """Raise unless ``current`` holds every wanted tensor, floating point, same shape."""
    dtypes, got = current.dtypes(), current.shapes()
    other = {k: dtypes[k] for k in want if k in dtypes and k not in got}
    if other:
        ref_dtypes = reference.dtypes()
        k = next(iter(other))
        raise InputError(
            f"Tensor {k} is {other[k]} in {label} but {ref_dtypes[k]} in the reference {ref}"
            f"{f' ({len(other)} such tensors)' if len(other) > 1 else ''}: weight drift "
            "compares floating-point tensors only; choose tensors with --params or compare "
            "checkpoints saved alike."
        )
    missing = [k for k in want if k not in got]
    if missing:
        raise InputError(
            f"Checkpoint {label} lacks {len(missing)} tensor(s) of the reference {ref}: "
            f"{', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}. "
            "Compare checkpoints of one model (or choose tensors with --params)."
        )
    wrong = [k for k in want if got[k] != want[k]]
    if wrong:
        k = wrong[0]
        raise InputError(
            f"Tensor {k} has shape {got[k]} in {label} but {want[k]} in the reference {ref}."
        )
