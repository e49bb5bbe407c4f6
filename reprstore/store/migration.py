"""``reprstore upgrade``: rewrite a format-1 store to format 2 in place, crash-safe.

Format 1 kept ``reprs/<model>/<seed>/<checkpoint>/<layer>``; format 2 adds the dataset
level, ``reprs/<model>/<seed>/<checkpoint>/<dataset>/<layer>``. Nothing is copied: each
array's folder is renamed, so its chunks and ``zarr.json`` stay byte for byte what they were.

The upgrade follows a journal (``upgrade-journal.json`` at the store's root, written
atomically before the first rename), in two phases, each step one atomic rename:

1. *stage*: every array folder moves to ``__upgrade__/<i>`` (zarr reserves ``__`` names,
   so no user name can clash; this also frees a layer whose name equals its dataset's,
   whose new folder lies where its old one was);
2. *place*: each dataset group is created (its ``zarr.json`` written atomically) and each
   staged folder renamed to its new path.

Then the root's marker says format 2 and the journal is deleted. Killed at any moment,
every array is in exactly one of its three places and the journal says which phase ran,
so running ``reprstore upgrade`` again finishes the job; until then the store refuses to
open. ``upgrade(…, reencode=True)`` then rewrites arrays of an older codec
(:mod:`reprstore.store.reencode`) under the same lease and journal (phase ``reencode``).
Local stores only: fsspec stores (``s3://`` …) have no atomic rename, so the
upgrade refuses them (copy the store to a local disk, upgrade, copy it back).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprstore.errors import StoreFormatError
from reprstore.keys import REPRS
from reprstore.store.atomic import is_temporary, write_text_atomic
from reprstore.store.attrs import utc_now
from reprstore.store.handle import (
    STORE_FORMAT,
    STORE_MARKER,
    UPGRADE_JOURNAL,
    Store,
    journal_exists,
    local_path,
)
from reprstore.store.lock import Lease

STAGING = "__upgrade__"
GROUP_JSON = {"zarr_format": 3, "node_type": "group", "attributes": {}}


@dataclass(frozen=True)
class UpgradeReport:
    """What :func:`upgrade` did: arrays moved, and from which format."""

    url: str
    from_format: int
    moved: int
    resumed: bool
    reencoded: int = 0

    @property
    def changed(self) -> bool:
        return self.from_format != STORE_FORMAT or self.resumed or self.reencoded > 0


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to ``path`` by rename, so a reader sees the old or the new file, whole."""
    write_text_atomic(path, json.dumps(data, indent=2))


def _sweep_temporaries(root: Path) -> None:
    """Remove the half-written files of :func:`_write_atomic` left by killed runs."""
    for tmp in root.rglob(".*"):
        if is_temporary(tmp.name) and tmp.is_file():
            tmp.unlink()


def _plan(st: Store) -> list[dict[str, str]]:
    """One move per format-1 array: its old path, staging path and new path."""
    moves = []
    for i, key in enumerate(st.keys()):
        moves.append({"src": key.v1_path, "stage": f"{STAGING}/{i}", "dst": key.path})
    return moves


def _ensure_groups(root: Path, dst: str) -> None:
    """Group metadata for every folder above ``dst`` that lacks it (the new dataset level)."""
    parts = dst.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        folder = root.joinpath(*parts[:depth])
        folder.mkdir(exist_ok=True)
        if not (folder / "zarr.json").exists():
            _write_atomic(folder / "zarr.json", GROUP_JSON)


def _stage(root: Path, moves: list[dict[str, str]], step: Callable[[], None]) -> None:
    (root / STAGING).mkdir(exist_ok=True)
    for move in moves:
        src, stage = root / move["src"], root / move["stage"]
        if not stage.exists():
            if not src.exists():
                raise StoreFormatError(
                    f"The upgrade journal lists {move['src']}, which is neither at its old "
                    "place nor staged: the store was changed during the upgrade."
                )
            os.rename(src, stage)
        step()


def _place(root: Path, moves: list[dict[str, str]], step: Callable[[], None]) -> None:
    for move in moves:
        stage, dst = root / move["stage"], root / move["dst"]
        if stage.exists():
            _ensure_groups(root, move["dst"])
            os.rename(stage, dst)
        elif not dst.exists():
            raise StoreFormatError(
                f"The upgrade journal lists {move['dst']}, which is neither staged nor in "
                "place: the store was changed during the upgrade."
            )
        step()


def upgrade(
    url: str | os.PathLike[str],
    progress: Callable[[int, int], None] | None = None,
    reencode: bool = False,
) -> UpgradeReport:
    """Rewrite the store at ``url`` to the current format, in place; resumable.

    Parameters
    ----------
    url
        A local store path (fsspec URLs are refused: see the module docstring).
    progress
        Called as ``progress(steps_done, steps_total)`` after each rename (each array
        re-encoded).
    reencode
        Also rewrite every array stored with an older codec with the current one
        (:mod:`reprstore.store.reencode`); values and checksums stay the same.

    Returns
    -------
    UpgradeReport
        ``from_format == 2``, ``moved == 0`` and ``reencoded == 0`` when there was nothing
        to do.
    """
    url = os.fspath(url)
    st = Store.open(url, upgrading=True)
    resumed = journal_exists(st.root)
    if st.format == STORE_FORMAT and not resumed and not reencode:
        return UpgradeReport(url, st.format, 0, False)
    path = local_path(url)
    if path is None:
        raise StoreFormatError(
            f"reprstore upgrade rewrites local stores only ({url} has no atomic rename): copy "
            "it to a local disk, run 'reprstore upgrade' there, and copy it back."
        )
    st = Store.open(url, upgrading=True, writable=True)
    journal = json.loads((path / UPGRADE_JOURNAL).read_text()) if resumed else None
    from_format, moved, reencoded = st.format, 0, 0
    with Lease(st.root.store, REPRS).acquire() as lease:
        if journal is None or journal["phase"] != "reencode":
            if st.format != STORE_FORMAT or journal is not None:
                from_format, moved = _move(st, path, journal, lease, progress)
            journal = None
        if reencode or journal is not None:
            reencoded = _reencode(url, path, journal, lease, progress)
    return UpgradeReport(url, from_format, moved, resumed, reencoded)


def _move(st: Store, path: Path, journal: dict[str, Any] | None, lease: Lease,
          progress: Callable[[int, int], None] | None) -> tuple[int, int]:  # fmt: skip
    """Format 1 to 2 (or finish an interrupted move): the old format and arrays moved."""
    journal_file = path / UPGRADE_JOURNAL
    if journal is None:
        for key in st.keys(None):
            Lease(st.root.store, key.v1_path).raise_if_live()
        journal = {"from": st.format, "to": STORE_FORMAT, "phase": "stage",
                   "started": utc_now(), "moves": _plan(st)}  # fmt: skip
        _write_atomic(journal_file, journal)
    moves: list[dict[str, str]] = journal["moves"]
    done = [0]

    def step() -> None:
        done[0] += 1
        lease.heartbeat()  # a long upgrade stays live: readers say it is running
        if progress is not None:
            progress(done[0], 2 * len(moves))

    if journal["phase"] == "stage":
        _stage(path, moves, step)
        journal["phase"] = "place"
        _write_atomic(journal_file, journal)
    else:
        done[0] = len(moves)
    _place(path, moves, step)
    staging = path / STAGING
    if staging.exists():
        staging.rmdir()
    old: Any = st.root.attrs.asdict().get(STORE_MARKER)
    marker: dict[str, Any] = dict(old) if isinstance(old, dict) else {}
    marker.update(format=STORE_FORMAT, upgraded={"from": journal["from"], "time": utc_now()})
    st.root.update_attributes({STORE_MARKER: marker})
    _sweep_temporaries(path)
    journal_file.unlink()
    return int(journal["from"]), len(moves)


def _reencode(url: str, path: Path, journal: dict[str, Any] | None, lease: Lease,
              progress: Callable[[int, int], None] | None) -> int:  # fmt: skip
    """Re-encode the arrays of an older codec (or finish an interrupted re-encoding)."""
    from reprstore.store import reencode

    st = Store.open(url, upgrading=True, writable=True)  # format 2 now: its paths
    journal_file = path / UPGRADE_JOURNAL
    if journal is None:
        keys = list(st.keys(None))
        for key in keys:
            Lease(st.root.store, key.path).raise_if_live()
        arrays = reencode.plan(st.root, [key.path for key in keys])
        if not arrays:
            return 0
        journal = {"from": STORE_FORMAT, "to": STORE_FORMAT, "phase": "reencode",
                   "started": utc_now(), "arrays": arrays}  # fmt: skip
        _write_atomic(journal_file, journal)
    arrays = journal["arrays"]
    (path / reencode.STAGING).mkdir(exist_ok=True)
    for i, rel in enumerate(arrays):
        reencode.reencode_one(st.root, path, rel, i, lease.heartbeat)
        lease.heartbeat()
        if progress is not None:
            progress(i + 1, len(arrays))
    shutil.rmtree(path / reencode.STAGING, ignore_errors=True)
    _sweep_temporaries(path)
    journal_file.unlink()
    return len(arrays)
