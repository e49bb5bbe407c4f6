"""``rm`` and ``tag`` behind the CLI: validate everything, then change the store."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from reprstore.errors import InputError, NotFoundError, SelectorError
from reprstore.keys import ReprKey, Selector, nfc, validate_attribute_name
from reprstore.store.csvtext import read_table
from reprstore.store.handle import ReprInfo, Store
from reprstore.store.lock import Lease
from reprstore.store.runattrs import Changes, RunAttributes, target_of
from reprstore.store.zarr_internals import sync

RUN_COLUMNS = ("model", "seed", "checkpoint")


# -- rm -------------------------------------------------------------------------------
def plan_delete(url: str, selector: str) -> tuple[Store, list[ReprInfo]]:
    """The representations ``rm`` would delete; raises if none, or if one is being written."""
    st = Store.open(url, writable=True)
    if not selector or not selector.strip():
        raise SelectorError("rm needs a selector, e.g. 'model=old' ('*' deletes everything).")
    infos = st.select(selector, must_match="rm")
    for info in infos:
        Lease(st.root.store, st.array_path(info.key)).raise_if_live()
    return st, infos


def delete_selected(st: Store, infos: Sequence[ReprInfo]) -> list[ReprKey]:
    """Delete each representation under its own write lease; return the keys deleted.

    Then sweep the folders those arrays lived in for what an earlier, killed ``rm`` left:
    chunks without a ``zarr.json`` (invisible to every reader, but taking space).
    """
    from reprstore.store.result_cache import drop_representation, fingerprint, stored_fingerprints

    deleted = []
    prints = {fingerprint(info) for info in infos}
    for info in infos:
        lease = Lease(st.root.store, st.array_path(info.key)).acquire()
        try:
            st.delete(info.key)
        finally:
            lease.held = False  # its file went with the array's folder
        deleted.append(info.key)
    for parent in sorted({st.array_path(k).rsplit("/", 1)[0] for k in deleted}):
        sweep_orphans(st, parent)
    kept = stored_fingerprints(st)  # the same values stored under another name keep theirs
    for fp in sorted(p for p in prints if p is not None and p not in kept):
        drop_representation(st, fp)
    return deleted


def sweep_orphans(st: Store, parent: str) -> list[str]:
    """Delete child folders of ``parent`` with no ``zarr.json`` and no live writer."""
    store = st.root.store
    swept = []
    for name in sync(_list_dir(store, parent)):
        path = f"{parent}/{name}"
        if name.startswith(".") or sync(store.exists(f"{path}/zarr.json")):
            continue
        lease = Lease(store, path)
        record = lease._read()
        if record is not None and not lease.is_stale(record):
            continue  # an array being created: its lease comes before its metadata
        if not sync(_has_children(store, path)):
            continue  # a plain file (a lease of the parent itself), not a folder
        sync(store.delete_dir(path))
        swept.append(path)
    return swept


async def _list_dir(store: Any, prefix: str) -> list[str]:
    return [name async for name in store.list_dir(prefix)]


async def _has_children(store: Any, prefix: str) -> bool:
    async for _ in store.list_dir(prefix):
        return True
    return False


# -- tag --------------------------------------------------------------------------------
def parse_assignments(items: Sequence[str]) -> dict[str, str | None]:
    """``KEY=VALUE`` items (``KEY=`` removes the attribute); values stay strings.

    A name to set must be one conditions can read (:func:`validate_attribute_name`);
    ``KEY=`` may remove any name, so one set before the rule existed can be cleaned up.
    """
    out: dict[str, str | None] = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"Expected KEY=VALUE (e.g. method=lora). Got {item!r} instead.")
        name, value = item.split("=", 1)
        name = nfc(name.strip())
        if value != "":
            name = validate_attribute_name(name)
        elif not name:
            raise InputError(f"Expected KEY=VALUE (e.g. method=lora). Got {item!r} instead.")
        if name in out:
            raise InputError(f"Attribute {name!r} is given twice; give each KEY once.")
        out[name] = value if value != "" else None
    if not out:
        raise InputError("Give at least one KEY=VALUE to set (e.g. method=lora).")
    return out


def changes_for_selector(st: Store, selector: str, values: dict[str, str | None]) -> Changes:
    """Attributes for each model, run or checkpoint the selector names.

    The level follows the selector: with a ``checkpoint`` term, each selected run ×
    checkpoint; else with a ``seed`` term, each run (model × seed); else each model.
    """
    sel = Selector.parse(selector)
    bad = [t.key for t in sel.terms if t.key in ("layer", "dataset")]
    if bad:
        raise SelectorError(
            f"Attributes belong to models and runs, not to a {bad[0]}: select with model, "
            "seed and checkpoint only."
        )
    keys = [info.key for info in st.select(sel, must_match="tag")]
    given = {t.key for t in sel.terms}
    targets = set()
    for key in keys:
        if "checkpoint" in given:
            targets.add(target_of(key.model, key.seed, key.checkpoint))
        elif "seed" in given:
            targets.add(target_of(key.model, key.seed))
        else:
            targets.add(target_of(key.model))
    return {target: values for target in sorted(targets)}


def changes_from_csv(st: Store, path: str | os.PathLike[str]) -> Changes:
    """One row per model or run: ``model[,seed[,checkpoint]]`` then attribute columns.

    The file is read by :func:`reprstore.store.csvtext.read_table` (UTF-8, one header, no row
    longer than it). Every cell is kept as the string written (``01234`` stays
    ``01234``); an empty cell sets nothing. Names are matched in NFC. Unknown models,
    seeds or checkpoints are refused before anything is written.
    """
    table = read_table(path)
    where = table.path
    if "model" not in table.header:
        raise InputError(f"{where} needs a 'model' column (then seed, checkpoint, attributes).")
    names = [h for h in table.header if h not in RUN_COLUMNS]
    for name in names:
        try:
            validate_attribute_name(name)
        except ValueError as err:
            raise InputError(f"{where} line 1: column {name!r}: {err}") from None
    if not names:
        raise InputError(f"{where} has no attribute columns besides {', '.join(RUN_COLUMNS)}.")
    runs = {(nfc(k.model), nfc(k.seed), nfc(k.checkpoint)) for k in st.keys(None)}
    changes: dict[tuple[str, str], dict[str, str | None]] = {}
    for line, cells in table.rows:
        row = dict(zip(table.header, cells, strict=False))
        model, seed, ckpt = (nfc(row.get(c, "").strip()) or None for c in RUN_COLUMNS)
        _check_run(runs, model, seed, ckpt, table.where(line))
        target = target_of(model, seed, ckpt)  # type: ignore[arg-type]
        entry = changes.setdefault(target, {})
        for name in names:
            value = row.get(name, "")
            if value == "":
                continue
            if entry.get(name, value) != value:
                raise InputError(f"{table.where(line)}: {target[1]} gets two values for {name!r}.")
            entry[name] = value
    return changes


def _check_run(
    runs: set[tuple[str, str, str]], model: str | None, seed: str | None, ckpt: str | None,
    where: str,
) -> None:  # fmt: skip
    if model is None:
        raise InputError(f"{where}: the model cell is empty.")
    if not any(r[0] == model for r in runs):
        known = sorted({r[0] for r in runs})
        raise NotFoundError(
            f"{where}: no model {model!r} in the store (models: {', '.join(known) or 'none'}); "
            "nothing was written."
        )
    if ckpt is not None and seed is None:
        raise InputError(f"{where}: a checkpoint needs its seed.")
    if seed is not None and not any(r[:2] == (model, seed) for r in runs):
        raise NotFoundError(f"{where}: model {model!r} has no seed {seed!r}; nothing was written.")
    if ckpt is not None and (model, seed, ckpt) not in runs:
        raise NotFoundError(
            f"{where}: run {model}/{seed} has no checkpoint {ckpt!r}; nothing was written."
        )


def describe(attrs: RunAttributes) -> list[str]:
    """One line per tagged model / run / checkpoint: ``lora/0: method=lora, tasks=a,b``."""
    return [
        f"{target}: " + ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
        for _, target, values in attrs.rows()
    ]
