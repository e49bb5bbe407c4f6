"""Run attributes: string labels on models, runs and checkpoints (``tasks``, ``method`` …).

They live in the attributes of one group, ``STORE/attributes``, as plain JSON that any
zarr reader sees::

    zarr.open_group("runs.zarr")["attributes"].attrs.asdict()
    {"models": {"lora": {"method": "lora"}},
     "runs": {"lora/0": {"variant": "r8"}},
     "checkpoints": {"lora/0/step100": {"phase": "warmup"}}}

Values are strings, kept exactly as given (``01234`` stays ``01234``). For one
representation they merge model < run < checkpoint (the narrower level wins). Writers
serialise through a short lease on the group and write its ``zarr.json`` in one atomic
replace (zarr's local store writes by rename; an object store by a single PUT).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import zarr

from reprstore.keys import ReprKey, nfc, validate_attribute_name, validate_name
from reprstore.store.attrs import utc_now
from reprstore.store.lock import Lease

GROUP = "attributes"
LEVELS = ("models", "runs", "checkpoints")


def target_of(
    model: str, seed: str | None = None, checkpoint: str | None = None
) -> tuple[str, str]:
    """(level, id) of what an attribute is set on: ``("runs", "lora/0")``."""
    model = validate_name(model, "model")  # ids in NFC, as keys are (for_key reads so)
    if seed is None:
        if checkpoint is not None:
            raise ValueError("a checkpoint attribute needs its seed")
        return "models", model
    seed = validate_name(seed, "seed")
    if checkpoint is None:
        return "runs", f"{model}/{seed}"
    return "checkpoints", f"{model}/{seed}/{validate_name(checkpoint, 'checkpoint')}"


@dataclass(frozen=True)
class RunAttributes:
    """Every attribute of a store, by level; read once, merged per key."""

    levels: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    def level(self, name: str) -> dict[str, dict[str, str]]:
        return self.levels.get(name, {})

    def for_key(self, key: ReprKey) -> dict[str, str]:
        """Attributes of ``key``'s run, merged model < run < checkpoint."""
        model, seed, ckpt = nfc(key.model), nfc(key.seed), nfc(key.checkpoint)  # ids are NFC
        merged: dict[str, str] = {}
        merged.update(self.level("models").get(model, {}))
        merged.update(self.level("runs").get(f"{model}/{seed}", {}))
        merged.update(self.level("checkpoints").get(f"{model}/{seed}/{ckpt}", {}))
        return merged

    @property
    def names(self) -> list[str]:
        """Every attribute name in use, sorted."""
        return sorted({a for lvl in LEVELS for attrs in self.level(lvl).values() for a in attrs})

    def rows(self) -> Iterable[tuple[str, str, dict[str, str]]]:
        """(level, id, attributes) for display."""
        for lvl in LEVELS:
            for target, attrs in self.level(lvl).items():
                yield lvl, target, attrs

    def __bool__(self) -> bool:
        return any(self.level(lvl) for lvl in LEVELS)


def read_attributes(root: zarr.Group) -> RunAttributes:
    """The store's run attributes (empty if none were ever set)."""
    group = root.get(GROUP)
    if not isinstance(group, zarr.Group):
        return RunAttributes()
    raw: dict[str, Any] = group.attrs.asdict()
    levels = {
        lvl: {str(t): {str(k): str(v) for k, v in a.items()} for t, a in raw.get(lvl, {}).items()}
        for lvl in LEVELS
    }
    return RunAttributes(levels)


Changes = Mapping[tuple[str, str], Mapping[str, str | None]]
"""(level, id) → {attribute: value, or None to remove it}."""


def write_attributes(root: zarr.Group, changes: Changes) -> RunAttributes:
    """Apply ``changes`` under the group's lease, in one atomic metadata write."""
    for attrs in changes.values():
        for name, value in attrs.items():
            if value is not None:  # removing may name anything (a name set before the rules)
                validate_attribute_name(name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"attribute values are strings; got {type(value).__name__}")
    with Lease(root.store, GROUP).acquire(wait=30.0):
        current = read_attributes(root)
        levels = {lvl: {t: dict(a) for t, a in current.level(lvl).items()} for lvl in LEVELS}
        for (lvl, target), attrs in changes.items():
            entry = levels[lvl].setdefault(target, {})
            for name, value in attrs.items():
                if value is None:
                    entry.pop(name, None)
                else:
                    entry[name] = value
            if not entry:
                del levels[lvl][target]
        group = root.require_group(GROUP)
        group.attrs.put({**levels, "updated": utc_now()})
    return RunAttributes(levels)
