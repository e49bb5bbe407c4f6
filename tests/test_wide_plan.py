"""Plans of wide grids: passes of one state updated in place, reads per chunk, and what
several measures keep of one representation counted once.

Planning needs shapes only: the arrays here are lazy dask zeros that are never read.
"""

from __future__ import annotations

import re

import dask.array as da
import pytest

from reprstore.engine.arrays import measure_arrays
from reprstore.engine.planner import DryRun, kept_bytes
from reprstore.metrics.registry import parse_measures

FIVE = "cka,cca:ridge=0.1,procrustes,linreg:ridge=0.1,rsa"


def plan_of(k: int, p: int, measures: str, memory: str, rows: int = 200_000) -> str:
    """The plan line of a k × k grid of float32 arrays rows × p in chunks of 256 rows, on
    local threads (where a pass may update one state in place)."""
    arrays = [da.zeros((rows, p), chunks=(256, p), dtype="float32") for _ in range(k)]
    pairs = [(i, j) for i in range(k) for j in range(k)]
    with pytest.raises(DryRun) as got:
        measure_arrays(
            arrays,
            pairs,
            measures,
            memory=memory,
            dry_run=True,
            route="features",
            scheduler="threads",
        )
    return got.value.plan.line()


def passes_and_reads(line: str) -> tuple[int, float]:
    passes = int(re.search(r"(\d+) feature pass\(es\)", line).group(1))  # type: ignore[union-attr]
    found = re.search(r"each chunk read ([0-9.]+)×", line)
    return passes, float(found.group(1)) if found else 1.0


def test_wide_grid_under_4gb_makes_at_most_four_passes() -> None:
    """Issue 25's grid: 12 × 12 at p = 4,096 under 4 GB (78 unique pairs, 128 MiB each)
    was 12 passes with four copies of every state; one state updated in place packs
    about a quarter of the pairs into each pass."""
    passes, reads = passes_and_reads(plan_of(12, 4096, "cka", "4GB"))
    assert passes <= 4
    # 66 cross pairs of 128 MiB cannot fit one 4 GB pass: some chunks are read again
    assert 1.0 < reads <= passes


def test_reads_per_chunk_is_the_mean_number_of_passes_an_array_takes_part_in() -> None:
    """The plan's reads are the stored bytes times the passes each array is in; with
    equal arrays, reads per chunk = total reads / stored bytes (both in the line)."""
    line = plan_of(6, 2048, "cka", "400MB", rows=20_000)
    passes, reads = passes_and_reads(line)
    total = re.search(r"reads ([0-9.]+) (MiB|GiB)", line)
    assert total is not None
    stored_mib = 6 * 20_000 * 2048 * 4 / 2**20
    value = float(total.group(1)) * (1024 if total.group(2) == "GiB" else 1)
    assert reads == pytest.approx(value / stored_mib, rel=0.06)  # the line rounds to 2 digits
    assert passes > 1 and 1.0 < reads <= passes


def test_a_grid_read_once_says_nothing_about_chunks() -> None:
    assert "each chunk read" not in plan_of(2, 256, "cka", "2GB", rows=10_000)


def test_measures_sharing_a_side_and_a_whitening_keep_it_once() -> None:
    """cca and linreg at one ridge share the side (moments, Cxx: 2p² + 4p floats) and the
    whitening with its rank certificate (2p²); procrustes and rsa keep the side only; cka
    keeps 2p floats of its own: 8·(4p² + 4p) + 8·2p bytes in all, not the sum of the
    five measures' own counts (12p² + 18p floats)."""
    p = 1000
    specs = parse_measures(FIVE)
    (got,) = kept_bytes(specs, [p], [(0, "raw")])
    assert got == 8 * (4 * p * p + 4 * p) + 8 * 2 * p
    two_ridges = parse_measures("cca:ridge=0.1,linreg:ridge=1")
    (both,) = kept_bytes(two_ridges, [p], [(0, "raw")])
    assert both == 8 * (2 * p * p + 4 * p) + 2 * 8 * 2 * p * p  # two whitenings


def test_the_five_measures_fit_a_wide_grid_at_16gb() -> None:
    """Counted once per representation, what the five measures keep of 12 representations
    at p = 4,096 (6 GiB) leaves room for the pairs at 16 GB (the sum of the measures'
    own counts, 18 GiB, refused the grid)."""
    passes, _ = passes_and_reads(plan_of(12, 4096, FIVE, "16GB"))
    assert passes <= 2


def test_a_dry_run_with_workers_plans_what_the_run_does(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``--workers N --dry-run`` plans with the N threads the run uses: the same plan
    line (the sample route's panels and tiles depend on the threads). N is not this
    machine's default thread count, so a plan made with the default would differ."""
    import os

    import numpy as np

    import reprstore

    rng = np.random.default_rng(0)
    for seed in ("0", "1"):
        files = []
        for k in range(2):
            np.save(tmp_path / f"l{k}.npy", rng.normal(size=(3000, 48)).astype(np.float32))
            files.append(tmp_path / f"l{k}.npy")
        reprstore.import_files(tmp_path / "s.zarr", files, name="m", seed=seed,
                               layer="{stem}", dtype="float32")  # fmt: skip
    options = dict(route="samples", memory="8MB", workers=(os.cpu_count() or 1) + 2, cache=False)
    planned = reprstore.compare(tmp_path / "s.zarr", "seed=0", "seed=1", dry_run=True,
                                **options).attrs["plans"]  # fmt: skip
    lines: list[str] = []
    reprstore.compare(tmp_path / "s.zarr", "seed=0", "seed=1", report=lines.append, **options)
    assert planned and planned == [line for line in lines if line in planned or "pair" in line]
