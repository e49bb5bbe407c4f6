"""The result cache: every pair's measure values, kept in the store under a content key.

An entry holds the result columns of one measure (with its options) for one ordered pair,
in ``STORE/cache/results/<A fingerprint>/<B fingerprint>/<key>.json``. Its key is a hash
of everything the values depend on:

* both representations' content fingerprints (:func:`fingerprint`: shape, dtype, chunk
  layout, rows written and the CRC-32 of every chunk, recorded at write time; an
  overwrite or a re-extraction with other values gives another fingerprint);
* the rows used (:func:`rows_fingerprint`: the dataset's sample ids and the ``--where``
  selection after evaluation);
* the measure and every option (estimator, kernel, σ, batch size, shuffle seed …);
* the route asked for, the device kind and precision, and the interval and permutation
  settings with their seed.

Values are stored as JSON (a float64 written by ``repr`` reads back bit for bit), with a
SHA-256 of the entry: an entry that fails it is recomputed with a warning, never returned.
Entries are written atomically (:mod:`reprstore.store.cache_files`), so concurrent runs
at worst compute the same entry twice and write the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reprstore.store.cache_files import CacheFiles

FORMAT = 1
RESULTS = "results"
PASSES = "passes"


def _sha(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def fingerprint(info: Any) -> str | None:
    """The content fingerprint of a stored representation (a ``ReprInfo``), from the chunk
    checksums its writer recorded (None for an array written without them)."""
    crcs = info.attrs.get("chunk_crc32")
    if not crcs:
        return None
    doc = [list(info.shape), str(info.stored_dtype), list(info.chunks), int(info.rows_written),
           [int(c) for c in crcs]]  # fmt: skip
    return _sha(doc)[:32]


def rows_fingerprint(ids: np.ndarray, mask: np.ndarray | None) -> str:
    """The rows a comparison uses: the dataset's sample ids and the row selection."""
    h = hashlib.sha256()
    h.update(str(ids.dtype).encode())
    h.update(np.ascontiguousarray(ids).tobytes() if ids.dtype != object else
             "\0".join(map(str, ids)).encode())  # fmt: skip
    h.update(b"all" if mask is None else np.packbits(np.asarray(mask, dtype=bool)).tobytes())
    return h.hexdigest()[:32]


@dataclass
class CacheStats:
    """What one comparison did with the cache."""

    pairs: int = 0
    reused: int = 0
    entries: int = 0
    entries_reused: int = 0
    damaged: int = 0
    written: int = 0

    def summary(self, refresh: bool = False) -> str:
        """What a result file records: ``reused 36 of 42 pairs`` (or ``refresh``)."""
        return "refresh" if refresh else f"reused {self.reused} of {self.pairs} pairs"


@dataclass
class ResultCache:
    """The result cache of one store, as one comparison uses it.

    ``refresh`` recomputes every entry (and overwrites it); ``note`` receives the lines the
    user should see (reuse counts, damaged entries, a read-only store).
    """

    files: CacheFiles
    refresh: bool = False
    note: Callable[[str], None] = lambda line: None
    stats: CacheStats = field(default_factory=CacheStats)

    @classmethod
    def of(cls, store: Any, *, refresh: bool = False,
           note: Callable[[str], None] | None = None) -> ResultCache:  # fmt: skip
        return cls(CacheFiles.of(store), refresh, note or (lambda line: None))

    @staticmethod
    def key(a: str, b: str, rows: str, measure: Sequence[Any], settings: dict[str, Any]) -> str:
        """The content key of one (ordered pair, measure) entry."""
        return _sha([FORMAT, a, b, rows, [str(x) for x in measure], settings])[:40]

    @staticmethod
    def path(a: str, b: str, key: str) -> str:
        return f"{RESULTS}/{a}/{b}/{key}.json"

    def get(self, a: str, b: str, key: str) -> dict[str, Any] | None:
        """The cached columns under ``key``, or None (a damaged entry is noted, not used)."""
        if self.refresh:
            return None
        data = self.files.read(self.path(a, b, key))
        if data is None:
            return None
        body = _checked(data, key)
        if body is None:
            self.stats.damaged += 1
            self.note(f"warning: the cached result {self.path(a, b, key)} failed its checksum; "
                      "it is recomputed")  # fmt: skip
            return None
        return dict(body["columns"])

    def put(self, a: str, b: str, key: str, measure: str, columns: dict[str, Any]) -> None:
        """Keep ``columns`` under ``key`` (atomically; nothing when the store is read-only)."""
        body = {"format": FORMAT, "key": key, "measure": measure, "columns": columns}
        doc = {"sha256": _sha(body), "body": body}
        if self.files.write(self.path(a, b, key), json.dumps(doc, sort_keys=True).encode()):
            self.stats.written += 1

    def report(self) -> None:
        """Tell the user how many pairs were reused and whether results could be kept."""
        s = self.stats
        if s.pairs:
            self.note(f"cache: reused {s.reused} of {s.pairs} pair(s)"
                      + (f", {s.pairs - s.reused} to compute" if s.reused < s.pairs else "")
                      + (f" ({s.entries_reused} of {s.entries} pair × measure values)"
                         if s.reused < s.pairs and s.entries_reused else "")
                      + (" (--refresh: recomputed)" if self.refresh else ""))  # fmt: skip

    def report_writes(self) -> None:
        if self.files.write_error:
            self.note(f"note: results not cached, the store is read-only "
                      f"({self.files.write_error})")  # fmt: skip


def _checked(data: bytes, key: str | None = None) -> dict[str, Any] | None:
    """The body of an entry when its checksum (and key, if given) hold, else None."""
    try:
        doc = json.loads(data)
        body = doc["body"]
        if _sha(body) != doc["sha256"] or body.get("format") != FORMAT:
            return None
        if key is not None and body.get("key") != key:
            return None
        if not isinstance(body.get("columns"), dict):
            return None
        return body  # type: ignore[no-any-return]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


# ------------------------------------------------------------------ housekeeping


@dataclass(frozen=True)
class CacheSummary:
    """What the store's cache holds (``reprstore cache``)."""

    entries: int
    entry_bytes: int
    orphans: int
    orphan_bytes: int
    checkpoints: int
    checkpoint_bytes: int
    damaged: list[str]

    @property
    def total_bytes(self) -> int:
        return self.entry_bytes + self.checkpoint_bytes


def stored_fingerprints(store: Any) -> set[str]:
    """Fingerprints of every representation in the store now."""
    return {fp for info in store.select(None) if (fp := fingerprint(info)) is not None}


def summarize(store: Any, check: bool = False) -> CacheSummary:
    """Count the cache's entries and checkpoints; orphans are entries of representations
    no longer stored (overwritten, re-extracted or removed); with ``check``, read every
    entry and list those that fail their checksum."""
    files = CacheFiles.of(store)
    live = stored_fingerprints(store)
    entries = files.files(f"{RESULTS}/")
    orphans = [(k, n) for k, n in entries if not _alive(k, live)]
    passes = files.files(f"{PASSES}/")
    damaged = []
    if check:
        for k, _ in entries:
            data = files.read(k)
            if data is None or _checked(data) is None:
                damaged.append(k)
    return CacheSummary(
        entries=len(entries), entry_bytes=sum(n for _, n in entries), orphans=len(orphans),
        orphan_bytes=sum(n for _, n in orphans), checkpoints=len(passes),
        checkpoint_bytes=sum(n for _, n in passes), damaged=damaged,
    )  # fmt: skip


def _alive(key: str, live: set[str]) -> bool:
    parts = key.split("/")
    return len(parts) == 4 and parts[1] in live and parts[2] in live


def clear(store: Any, *, orphans_only: bool = False) -> tuple[int, int]:
    """Remove cache files (all, or the orphaned entries only): (files, bytes) removed."""
    files = CacheFiles.of(store)
    if orphans_only:
        live = stored_fingerprints(store)
        doomed = [(k, n) for k, n in files.files(f"{RESULTS}/") if not _alive(k, live)]
    else:
        doomed = files.files()
    files.delete_all([k for k, _ in doomed])
    if not orphans_only:
        files.clear_temporaries()
    if files.write_error:
        from reprstore.errors import StoreWriteError

        raise StoreWriteError(f"Cannot clear the cache of {store.url}: {files.write_error}.")
    return len(doomed), sum(n for _, n in doomed)


def drop_representation(store: Any, fp: str | None) -> int:
    """Remove the entries of a representation being removed (by its fingerprint)."""
    if fp is None:
        return 0
    files = CacheFiles.of(store)
    doomed = [k for k, _ in files.files(f"{RESULTS}/") if fp in k.split("/")[1:3]]
    return files.delete_all(doomed)
