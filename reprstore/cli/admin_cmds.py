"""``upgrade``, ``rm`` and ``tag``: change what a store holds, not its data."""

from __future__ import annotations

from typing import Annotated

import typer

from reprstore.cli import options as opt
from reprstore.cli.error_lines import handle_errors
from reprstore.cli.formatting import stdout_console

console = stdout_console()


@handle_errors
def upgrade(
    store: opt.StoreArg,
    reencode: Annotated[
        bool,
        typer.Option(
            "--reencode",
            help="Also rewrite arrays stored with an older codec with the current one "
            "(faster to decode; the values and their checksums stay the same).",
        ),
    ] = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Rewrite a store of the first release's layout (format 1) to format 2, in place.

    Arrays are renamed, not copied; killed at any moment, running the same command again
    finishes the upgrade. With --reencode, arrays of an older codec are rewritten too, each
    copied, checked and swapped in by rename. Local stores only.
    """
    from reprstore.cli.progress import progress_bar
    from reprstore.store.migration import upgrade as run_upgrade

    opt.set_quiet(quiet)
    with progress_bar("upgrade", unit="steps") as bar:
        report = run_upgrade(store, progress=bar, reencode=reencode)
    if not report.changed:
        current = " with the current codec" if reencode else ""
        console.print(f"{store} is already format 2{current}: nothing to do")
        return
    how = "finished the interrupted upgrade" if report.resumed else "upgraded"
    done = []
    if report.from_format != 2 or report.moved:
        done.append(f"from format {report.from_format} to 2 ({report.moved} arrays)")
    if report.reencoded:
        done.append(f"re-encoded {report.reencoded} array(s) with the current codec")
    console.print(f"{how} {store} {'; '.join(done)}")


@handle_errors
def rm(
    store: opt.StoreArg,
    selector: Annotated[
        str,
        typer.Argument(
            help="Which representations to delete (key=glob pairs, as for ls).",
            show_default=False,
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Delete the representations SELECTOR matches (asks first unless --yes).

    Refuses while a writer holds one of them. Datasets and run attributes stay.
    """
    from reprstore.store.housekeeping import delete_selected, plan_delete

    opt.set_quiet(quiet)
    st, infos = plan_delete(store, selector)
    if not yes:
        for info in infos:
            console.print(f"  {info.key.label()}", highlight=False)
        if not typer.confirm(f"Delete {len(infos)} representation(s) from {store}?"):
            raise typer.Exit(1)
    deleted = delete_selected(st, infos)
    console.print(f"deleted {len(deleted)} representation(s) from {store}")


@handle_errors
def tag(
    store: opt.StoreArg,
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="SELECTOR KEY=VALUE…: set attributes on what SELECTOR names (model=lora → the "
            "model; model=lora,seed=0 → that run; …,checkpoint=step100 → that checkpoint). "
            "KEY= removes an attribute.",
            show_default=False,
        ),
    ] = None,
    from_csv: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="CSV with one row per model or run: model[,seed[,checkpoint]] then one column "
            "per attribute (values kept as written, never type-guessed).",
            show_default=False,
        ),
    ] = None,
    quiet: opt.QuietOpt = False,
) -> None:
    """Set run attributes (tasks, method, …) on models and runs, for selectors and results.

    Examples: reprstore tag runs.zarr --from runs.csv;
    reprstore tag runs.zarr 'model=lora*' method=lora
    """
    from reprstore.errors import InputError
    from reprstore.store import Store
    from reprstore.store.housekeeping import (
        changes_for_selector,
        changes_from_csv,
        describe,
        parse_assignments,
    )

    opt.set_quiet(quiet)
    items = list(args or [])
    if (from_csv is None) == (not items):
        raise InputError("Give either --from FILE.csv or SELECTOR KEY=VALUE…, not both.")
    st = Store.open(store, writable=True)
    if from_csv is not None:
        changes = changes_from_csv(st, from_csv)
    else:
        if len(items) < 2:
            raise InputError("Give a SELECTOR and at least one KEY=VALUE (e.g. method=lora).")
        changes = changes_for_selector(st, items[0], parse_assignments(items[1:]))
    attrs = st.set_attributes(changes)
    console.print(f"tagged {len(changes)} model(s)/run(s) in {store}")
    for line in describe(attrs):
        console.print(f"  {line}", highlight=False, markup=False)


@handle_errors
def cache(
    store: opt.StoreArg,
    clear: Annotated[
        bool,
        typer.Option("--clear", help="Remove every cached result and pass checkpoint."),
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Remove only the results of representations no longer stored (overwritten, "
            "re-extracted or removed).",
        ),
    ] = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Show what the store's result cache holds (entries, checkpoints, sizes), or clear it.

    cka, compare and timeline keep every pair's values there and reuse them when the same
    pair is asked for again with the same data, rows and options; their passes keep
    checkpoints there so a killed run resumes. Nothing in it is needed: clearing it only
    means the next comparison computes everything again.

    Example: reprstore cache runs.zarr --prune
    """
    from reprstore.cli.formatting import human_bytes
    from reprstore.errors import InputError
    from reprstore.store import Store
    from reprstore.store.result_cache import clear as clear_cache
    from reprstore.store.result_cache import summarize

    opt.set_quiet(quiet)
    if clear and prune:
        raise InputError("Give either --clear (everything) or --prune (orphans only), not both.")
    st = Store.open(store)
    if clear or prune:
        files, nbytes = clear_cache(st, orphans_only=prune)
        what = "orphaned result(s)" if prune else "cache file(s)"
        console.print(f"removed {files} {what} ({human_bytes(nbytes)}) from {store}")
        return
    s = summarize(st)
    console.print(
        f"{store}: {s.entries} cached result(s), {human_bytes(s.entry_bytes)}"
        + (f" ({s.orphans} orphaned, {human_bytes(s.orphan_bytes)}: --prune removes them)"
           if s.orphans else "")
        + f"; {s.checkpoints} pass checkpoint(s), {human_bytes(s.checkpoint_bytes)}",
        highlight=False,
    )  # fmt: skip
