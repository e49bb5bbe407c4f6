"""``reprstore import STORE TEMPLATE``: the template walk, its dry-run table and progress."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from reprstore.cli.formatting import PlainTable, shape_text


def plan_table(plan: Any, title: str) -> PlainTable:
    """One row per file: where it goes and what the import does with it."""
    table = PlainTable(title=title)
    for column in ("file", "model", "seed", "checkpoint", "dataset", "layer", "shape",
                   "stored", "action"):  # fmt: skip
        table.add_column(column, no_wrap=column in ("shape", "stored"))
    for entry in plan.entries:
        item = entry.item
        key = item.key
        stored = (item.settings.n_samples, item.settings.n_features)
        reduction = item.settings.reduction
        table.add_row(
            str(item.tensor.path), key.model, key.seed, key.checkpoint, entry.dataset, key.layer,
            shape_text(item.tensor.shape),
            shape_text(stored) + ("" if reduction == "none" else f" ({reduction})"),
            "import" if entry.action == "import" else "skip: stored",
        )  # fmt: skip
    return table


def _attribute_lines(plan: Any) -> list[str]:
    return [
        f"{level.rstrip('s')} {target}: " + ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
        for (level, target), values in sorted(plan.attributes.items())
        if values
    ]


def run_tree_import(
    console: Console, store: str, template: str, *, dry_run: bool, **options: Any
) -> None:
    """Plan (and unless ``dry_run`` carry out) a template import, printing what happens."""
    from reprstore.cli.progress import progress_bar
    from reprstore.workflows.bulk import dry_run as plan_only
    from reprstore.workflows.bulk import import_tree

    if dry_run:
        plan = plan_only(store, template, **options)
        n = len(plan.to_write)
        console.print(plan_table(plan, f"dry run: {n} of {len(plan.entries)} file(s) to import"))
        for line in _attribute_lines(plan):
            console.print(line, highlight=False)
        if plan.hidden:
            console.print(hidden_note(plan).removeprefix("; "), highlight=False)
        console.print("nothing written (--dry-run)")
        return
    with progress_bar("import") as bar:
        plan = import_tree(store, template, progress=bar, **options)
    for line in _attribute_lines(plan):
        console.print(line, highlight=False)
    console.print(summary(plan, store), highlight=False)


def summary(plan: Any, store: str) -> str:
    """``imported 48 representation(s) into s.zarr: 4 models × 3 seeds × …``."""
    if not plan.to_write:
        done = f"nothing to import: all {len(plan.entries)} file(s) are already stored, complete"
        return done + hidden_note(plan)
    keys = [e.item.key for e in plan.to_write]
    counts = [f"{len({getattr(k, f) for k in keys})} {f}(s)" for f in
              ("model", "seed", "checkpoint", "dataset", "layer")]  # fmt: skip
    skipped = len(plan.entries) - len(keys)
    tail = (f"; {skipped} already stored" if skipped else "") + hidden_note(plan)
    return f"imported {len(keys)} representation(s) into {store}: {', '.join(counts)}{tail}"


def hidden_note(plan: Any) -> str:
    """``; skipped 2 hidden (.git, .cache)``: names starting with '.' the walk passed by."""
    if not plan.hidden:
        return ""
    names = sorted({p.name for p in plan.hidden})
    more = f", … ({len(names)} names)" if len(names) > 3 else ""
    return f"; skipped {len(plan.hidden)} hidden file(s)/folder(s) ({', '.join(names[:3])}{more})"
