"""Why a selector matched nothing: the value that names nothing, and the closest names."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from reprstore.errors import NotFoundError
from reprstore.keys import SELECTOR_KEYS, Selector, natural_key, nfc

if TYPE_CHECKING:
    from reprstore.keys import ReprKey
    from reprstore.store.handle import Store

MAX_LISTED = 8


def existing_values(store: Store) -> dict[str, list[str]]:
    """Every value in the store of each key field and run attribute, natural order."""
    values: dict[str, set[str]] = {k: set() for k in SELECTOR_KEYS}
    attrs = store.run_attributes()
    for key in store.keys(None):
        for name, value in key.as_dict().items():
            values[name].add(value)
        for name, value in attrs.for_key(key).items():
            values.setdefault(name, set()).add(value)
    return {k: sorted(v, key=natural_key) for k, v in values.items()}


def _closest(value: str, names: list[str]) -> str:
    close = difflib.get_close_matches(value, names, n=3, cutoff=0.5)
    if close:
        return f"closest: {', '.join(close)}"
    shown = ", ".join(names[:MAX_LISTED]) + (" …" if len(names) > MAX_LISTED else "")
    return f"there are: {shown or 'none'}"


def check_literals(store: Store, sel: Selector, what: str, found: list[ReprKey]) -> None:
    """Refuse a selection one of whose literal alternatives names nothing in the store.

    ``model=full|lorra`` selects ``full`` but is a typo all the same; the store is only
    walked again when an alternative matched none of ``found``.
    """
    attrs = store.run_attributes()
    for term in sel.terms:
        if term.negate or not term.literals:
            continue
        seen = {nfc((attrs.for_key(k) if term.key not in SELECTOR_KEYS else k.as_dict())
                    .get(term.key) or "") for k in found}  # fmt: skip
        if all(v in seen for v in term.literals):
            continue
        known = existing_values(store).get(term.key, [])
        for value in term.literals:
            if value not in {nfc(k) for k in known}:
                kind = "run attribute " if term.key not in SELECTOR_KEYS else ""
                raise NotFoundError(
                    f"{what} {str(sel)!r}: no {kind}{term.key} {value!r} in {store.url} "
                    f"({_closest(value, known)})."
                )


def explain_empty(store: Store, sel: Selector, what: str) -> NotFoundError:
    """The error for an empty selection: name the unknown literal value if there is one."""
    values = existing_values(store)
    if not any(values.values()):
        return NotFoundError(
            f"No representation matches {what} {str(sel)!r}: {store.url} is empty."
        )
    for term in sel.terms:
        if term.negate:
            continue
        known = values.get(term.key, [])
        missing = [v for v in term.literals if v not in {nfc(k) for k in known}]
        if missing and len(missing) == len(term.alternatives):
            kind = "run attribute " if term.key not in SELECTOR_KEYS else ""
            return NotFoundError(
                f"No representation matches {what} {str(sel)!r}: no {kind}{term.key} "
                f"{missing[0]!r} in {store.url} ({_closest(missing[0], known)})."
            )
    return NotFoundError(
        f"No representation matches {what} {str(sel)!r} in {store.url} (each value exists, "
        "but not together; see 'reprstore ls')."
    )
