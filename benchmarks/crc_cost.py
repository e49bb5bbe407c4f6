"""Cost of the CRC-32 check on read: one exact (debiased, linear) CKA pass, checked vs bare.

Writes two float16 representations (default N = 100 000 rows × 768 features) into a
temporary store, then times the same pass over dask arrays that read the zarr arrays
directly (``off``, the old read path) or through :class:`reprstore.store.checked.CheckedRows`
(``on``, what ``reprstore cka`` uses), alternating, and reports the fastest of each.

    python -m benchmarks.crc_cost [--rows 100000] [--features 768] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np


def _write(root: Path, n: int, p: int) -> Path:
    from reprstore.keys import ReprKey
    from reprstore.store import Encoding, ReprSettings, Store

    store = Store.open(root / "s.zarr", create=True)
    rng = np.random.default_rng(0)
    from reprstore.store import write_dataset

    write_dataset(store.root, "default", n, None, None, source="benchmark")
    for layer in ("a", "b"):
        settings = ReprSettings("default", p, n, (p,), "none", "float16", "float32")
        with store.writer(
            ReprKey("m", "0", "final", layer), settings, encoding=Encoding("float16")
        ) as w:
            for lo in range(0, n, 8192):
                w.write(rng.normal(size=(min(8192, n - lo), p)).astype(np.float32))
    return root / "s.zarr"


def _arrays(url: Path, checked: bool) -> list[da.Array]:
    from reprstore.store import Store
    from reprstore.workflows.comparison import block_rows_for, stored_array

    store = Store.open(url)
    infos = store.select(None)
    rows = block_rows_for(infos)
    if checked:
        return [stored_array(store, info, rows, False) for info in infos]
    return [
        da.from_array(store.array(i.key), chunks=(rows, -1), name=f"bare-{i.key.path}-{rows}")
        for i in infos
    ]


def _time(url: Path, checked: bool) -> tuple[float, float]:
    from reprstore.engine.arrays import compare_arrays

    arrays = _arrays(url, checked)
    start = time.perf_counter()
    (result,) = compare_arrays(arrays, [(0, 1)], estimator="debiased")
    return time.perf_counter() - start, result.cka


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = _write(Path(tmp), args.rows, args.features)
        times: dict[bool, list[float]] = {False: [], True: []}
        values = set()
        for _ in range(args.repeats):
            for checked in (False, True):
                seconds, value = _time(url, checked)
                times[checked].append(seconds)
                values.add(value)
        assert len(values) == 1, values  # the check never changes the value
        off, on = min(times[False]), min(times[True])
        print(f"N={args.rows} x {args.features} float16, exact debiased linear CKA pass")
        print(f"CRC off: {off:.3f} s (runs {', '.join(f'{t:.3f}' for t in times[False])})")
        print(f"CRC on:  {on:.3f} s (runs {', '.join(f'{t:.3f}' for t in times[True])})")
        print(f"cost: {100 * (on - off) / off:+.1f} %")


if __name__ == "__main__":
    main()
