"""Checkpoint labels on a true step axis: ``step100`` → 100, ``final`` last.

A label's step is what :func:`reprstore.keys.checkpoint_step` reads from it, as the store
records it (``step100``, ``step_100``, ``epoch3``, ``ckpt-2000``, a bare ``328146``, a label
with one number). ``final``/``last``/``end`` carry no number: they are placed after
the largest step (at ``final_step`` when given, else one typical spacing further, with the
tick named after the label). Other labels without a number cannot be placed and are left
out, with a note; when no label has a number the checkpoints are evenly spaced in natural
order, with a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from reprstore.analysis.results import natural_sorted
from reprstore.keys import checkpoint_step, natural_key

FINAL_LABELS = ("final", "last", "end")


def step_of(label: object) -> int | None:
    """The step of a checkpoint label (:func:`reprstore.keys.checkpoint_step`), or None."""
    return checkpoint_step(str(label))


@dataclass(frozen=True)
class StepAxis:
    """Where each checkpoint label sits on the x axis.

    Attributes
    ----------
    positions : dict of str to float
        Label → x position (labels left out are absent).
    ticks : list of (float, str)
        Ticks for labels that are not their own number (``final``).
    notes : list of str
        What was placed by convention or left out.
    numeric : bool
        Whether positions are true steps.
    """

    positions: dict[str, float]
    ticks: list[tuple[float, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    numeric: bool = True

    def order(self) -> list[str]:
        """The placed labels, by position."""
        return sorted(self.positions, key=self.positions.__getitem__)


def step_axis(labels: Sequence[object], final_step: float | None = None) -> StepAxis:
    """Place checkpoint ``labels`` on a step axis (see the module docstring)."""
    names = natural_sorted([str(v) for v in labels])
    steps = {n: step_of(n) for n in names}
    numbered = {n: float(s) for n, s in steps.items() if s is not None}
    if not numbered:
        ordered = sorted(names, key=lambda n: n.lower() in FINAL_LABELS)
        positions = {n: float(i) for i, n in enumerate(ordered)}
        note = "no step numbers in the checkpoint labels: checkpoints evenly spaced in order"
        return StepAxis(positions, [(p, n) for n, p in positions.items()], [note], numeric=False)
    finals = [n for n in names if steps[n] is None and n.lower() in FINAL_LABELS]
    dropped = [n for n in names if steps[n] is None and n.lower() not in FINAL_LABELS]
    positions, ticks, notes = dict(numbered), [], []
    values = np.sort(np.unique(list(numbered.values())))
    gap = float(np.median(np.diff(values))) if values.size > 1 else max(1.0, values[0] * 0.1)
    for i, name in enumerate(finals):
        where = final_step if final_step is not None else values[-1] + gap * (i + 1)
        positions[name] = float(where)
        ticks.append((float(where), name))
    if finals and final_step is None:
        notes.append(
            f"{', '.join(finals)} placed one spacing after step {values[-1]:g} "
            "(its step is not in its label; --final-step sets it)"
        )
    if dropped:
        notes.append(f"left out checkpoints without a step number: {', '.join(dropped)}")
    return StepAxis(positions, ticks, notes)


def step_order(label: str) -> tuple[int, int, tuple[tuple[int, int | str], ...]]:
    """Sort key of checkpoint labels on the step axis: by step, then final/last/end, then
    labels without a number (natural order)."""
    step = step_of(label)
    if step is not None:
        return (0, step, ())
    return (1 if label.lower() in FINAL_LABELS else 2, 0, natural_key(label))
