"""A timeline against a reference checkpoint: every checkpoint compared with one, in one call.

``timeline(store, "checkpoint=final")`` compares every stored checkpoint of every run with
the reference checkpoint of the same run: A is the reference (``checkpoint=final``), B every
checkpoint, and a pair is kept when model, seed, dataset and layer agree. The result is an
ordinary result table (:func:`reprstore.workflows.comparison.compare`), so ``plot --kind timeline``,
``summarize`` and the intervals of ``--ci`` apply to it unchanged; the reference against
itself is its last (or first) point.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from reprstore.analysis.steps import step_order
from reprstore.errors import InputError, NotFoundError
from reprstore.keys import Selector

if TYPE_CHECKING:
    import pandas as pd

    from reprstore.store import Store

#: The keys that must agree between a checkpoint and its reference.
SAME = ("model", "seed", "dataset", "layer")
_GLOB = set("*?[]{}|!")


def reference_label(against: str) -> str:
    """The checkpoint label of ``--against`` (``checkpoint=final``, or a bare ``step0``)."""
    text = against.strip()
    key, eq, value = text.partition("=")
    if eq:
        if key.strip() != "checkpoint":
            raise InputError(
                f"--against names a checkpoint (checkpoint=final or step0). Got {against!r}."
            )
        text = value.strip()
    if not text or _GLOB & set(text):
        raise InputError(
            f"--against must name one checkpoint, e.g. checkpoint=final or step0. Got {against!r}."
        )
    return text


def timeline_selectors(against: str, select: str | None) -> tuple[str, str]:
    """The A (reference) and B (every checkpoint) selectors of a timeline."""
    label = reference_label(against)
    sel = Selector.parse(select)
    if any(t.key == "checkpoint" for t in sel.terms):
        raise InputError(
            f"--select must not name checkpoint: every checkpoint is compared with {label}. "
            "Leave checkpoint out of --select."
        )
    base = (select or "").strip().strip(",")
    base = "" if base == "*" else base
    a = f"{base},checkpoint={label}" if base else f"checkpoint={label}"
    return a, base or "*"


def timeline(
    store: Store | str | os.PathLike[str],
    against: str,
    select: str | None = None,
    *,
    measures: str | Sequence[str] = "cka",
    **options: Any,
) -> pd.DataFrame:
    """Every checkpoint of every selected run compared with the run's reference checkpoint.

    Parameters
    ----------
    store : Store or path/URL
    against : ``checkpoint=LABEL`` or ``LABEL`` (``final``, ``step0`` …)
    select : selector of the runs and layers (``model=tiny,layer=act*``), without checkpoint
    measures : as for :func:`reprstore.workflows.comparison.compare`
    options : any other option of :func:`reprstore.workflows.comparison.compare` (``where``,
        ``memory``, ``ci``, ``permutations`` …; not ``match``, which is fixed to
        model, seed, dataset and layer)

    Returns
    -------
    pandas.DataFrame
        One row per (run, layer, checkpoint), in the order of the checkpoints' steps.

    Raises
    ------
    NotFoundError
        No selected representation has the reference checkpoint.
    InputError
        The selected runs hold a single checkpoint (the reference): nothing to follow.
    """
    from reprstore.workflows.comparison import compare, open_store

    if "match" in options or "differ" in options:
        raise InputError("A timeline pairs model, seed, dataset and layer itself: no --match.")
    a, b = timeline_selectors(against, select)
    st = open_store(store)
    label = reference_label(against)
    if not st.select_keys(a):
        stored = sorted({k.checkpoint for k in st.select_keys(b)}, key=step_order)
        within = f" among {select!r}" if select else ""
        raise NotFoundError(
            f"No representation{within} has checkpoint {label!r}; stored checkpoints: "
            f"{', '.join(stored) or 'none'}."
        )
    if len({k.checkpoint for k in st.select_keys(b)}) < 2:
        what = f"the selection {select!r}" if select else "the store"
        raise InputError(
            f"A timeline needs at least two checkpoints; {what} holds only {label!r}, so there "
            "is nothing to follow over training. Store more checkpoints, or use 'reprstore cka'."
        )
    df = compare(st, a, b, measures=measures, match=SAME, **options)
    attrs = df.attrs
    order = sorted(range(len(df)), key=lambda k: (step_order(str(df["b_checkpoint"].iloc[k])), k))
    df = df.iloc[order].reset_index(drop=True)
    df.attrs = attrs
    df.attrs.setdefault("reprstore", {}).setdefault("options", {})["against"] = label
    return df
