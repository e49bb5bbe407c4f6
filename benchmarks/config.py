"""The sizes of each benchmark set: ``full``, ``quick`` (a couple of minutes) and ``tiny``.

``tiny`` exists for the test suite (``tests/test_benchmarks.py``): every case runs, on data
small enough for CI; its numbers mean nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

GiB = 1024**3


@dataclass(frozen=True)
class Sizes:
    """Sizes of one benchmark set.

    Attributes
    ----------
    cka_n : row counts of the CKA memory-vs-N case (one pair of ``features`` columns)
    features : columns of every synthetic representation
    grid_n, grid_layers : rows and layers per run of the layer-grid case (two runs)
    minibatch_n, batch_size : rows and batch size of the minibatch case
    workers_n : rows of the scale-out case (``--workers 2`` against threads)
    import_n : rows of the ``.npy`` of the import-memory case
    extract_n : samples of the extraction case (run at 1× and 10×)
    extract_repeats : interleaved runs of each extraction side (the fastest is kept)
    max_repeats : at most this many interleaved runs of the other compared sides (the
        minibatch grid's two, the measures' three; ``tiny``: one, its times mean nothing)
    gram_limit : bytes of one N × N float64 matrix above which Gram-space methods are skipped
    gemm_rows : rows of the blocks of the GEMM ceiling
    disk_bytes : size of the file of the disk-read ceiling
    timeout : seconds per measurement
    """

    name: str
    cka_n: tuple[int, ...]
    features: int = 768
    grid_n: int = 50_000
    grid_layers: int = 6
    minibatch_n: int = 100_000
    batch_size: int = 250
    workers_n: int = 300_000
    import_n: int = 1_000_000
    extract_n: int = 2_000
    extract_repeats: int = 2
    max_repeats: int = 3
    gram_limit: int = 8 * 10**9
    gemm_rows: int = 65_536
    disk_bytes: int = 2 * GiB
    timeout: float = 1800
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Sizes(name="full", cka_n=(100_000, 300_000, 1_000_000))
QUICK = Sizes(
    name="quick",
    cka_n=(5_000, 20_000, 50_000),
    grid_n=10_000,
    minibatch_n=20_000,
    workers_n=50_000,
    import_n=100_000,
    extract_n=200,
    gemm_rows=16_384,
    disk_bytes=512 * 1024**2,
    gram_limit=2 * 10**9,
    timeout=300,
)
TINY = Sizes(
    name="tiny",
    cka_n=(600, 1_200),
    features=64,
    grid_n=600,
    grid_layers=3,
    minibatch_n=1_000,
    batch_size=100,
    workers_n=1_000,
    import_n=2_000,
    extract_n=16,
    extract_repeats=1,
    max_repeats=1,
    gemm_rows=2_048,
    disk_bytes=32 * 1024**2,
    timeout=240,
)
SETS = {s.name: s for s in (FULL, QUICK, TINY)}
