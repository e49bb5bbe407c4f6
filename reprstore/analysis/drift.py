"""Weight drift between checkpoint files: per tensor, cosine and relative change.

For a tensor W of a checkpoint and the same tensor W_ref of the reference, flattened:
``cosine`` = ⟨W, W_ref⟩ / (‖W‖ ‖W_ref‖), ``change`` = ‖W − W_ref‖ and ``rel_change`` =
‖W − W_ref‖ / ‖W_ref‖ (Frobenius norms; the difference is formed before it is squared, so a
tiny change keeps its digits). The row ``(all)`` treats every selected tensor of a
checkpoint as one vector. Sums accumulate in float64 over slices of one tensor at a time
(:mod:`reprstore.extract.weights` reads them; torch is imported only when this runs).
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reprstore.analysis.steps import FINAL_LABELS, step_of
from reprstore.errors import InputError

ALL = "(all)"
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


def _reference(files: list[Any], against: str | os.PathLike[str] | None) -> Any:
    from reprstore.extract.models import Checkpoint

    if against is None:
        return files[0]
    for ckpt in files:
        if ckpt.label == str(against) or (ckpt.path is not None and ckpt.path == Path(against)):
            return ckpt
    path = Path(against)
    if path.is_file():
        return Checkpoint(path.stem, path)
    labels = ", ".join(c.label for c in files)
    raise InputError(f"--against {os.fspath(against)!r} is neither a checkpoint label "
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
    against : label or path, optional
        The reference: one of the checkpoints' labels (``final``) or a file. Default: the
        first checkpoint.
    params : str, optional
        Shell-style glob over tensor names (``encoder.*.weight``); default all.

    Returns
    -------
    DataFrame
        One row per checkpoint × tensor, plus ``(all)`` per checkpoint, with
        :data:`DRIFT_COLUMNS`; ``step`` is the number in the label (empty for ``final``).
    """
    from reprstore.extract.weights import checkpoint_files, open_weights
    from reprstore.stats.dask_graph import fixed_mmap_threshold

    fixed_mmap_threshold()  # each slice's buffers go back to the system when freed
    given = checkpoint_files([os.fspath(c) for c in checkpoints])
    ref = _reference(given, against)
    files = sorted(given, key=_timeline_order)
    assert ref.path is not None and all(c.path is not None for c in files)
    rows: list[list[Any]] = []
    with open_weights(ref.path) as reference:
        shapes = _selected(reference, params, ref.label)
        notes = _skipped_note(reference.skipped(), params, ref.label)
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
    df = pd.DataFrame(rows, columns=DRIFT_COLUMNS)
    df.attrs["notes"] = notes
    return df


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
