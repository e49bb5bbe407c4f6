"""Time per permutation: minibatch CKA's within-batch test against the exact pair's.

``python -m benchmarks.permutations [--quick | --tiny] [--repeat K] [--out DIR]``

One pair of float64 representations held in memory (:func:`benchmarks.uncertainty_cost.pair`:
n = 20,000 rows × p = 256 features sharing a 64-dimensional signal; ``--quick``: 10,000 ×
128; ``--tiny``: 2,000 × 16, a smoke test), each case in this process after a warm-up,
the fastest of ``--repeat`` runs:

* ``minibatch``: plain minibatch CKA (linear kernel, batches of B = 1,024 rows), then with
  ``--permutations R`` (R = 99): each batch's two kernels are built once and every
  permutation gathers B's kernel by index (B² copies per batch);
* ``exact``: plain debiased linear CKA, then with ``--permutations R`` over all n rows
  (one n × p × p product per permutation);
* ``gather``: one batch's R permuted HSIC values, the package's
  :func:`reprstore.uncertainty.batches.permuted_hsic` against the one broadcast fancy
  index ``L[π[:, None], π[None, :]]`` it replaced (the same values, bit for bit: checked).

Time per permutation = (time with the test − plain time) / R, so what both estimators
share (reading, the kernels or the cross product of the point estimate) is not counted.
Writes ``<date>-permutations[-quick|-tiny].json`` and ``.md`` into ``--out`` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import save_report

HERE = Path(__file__).resolve().parent
SIZES = {
    "full": {"n": 20_000, "p": 256, "batch": 1024, "r": 99},
    "quick": {"n": 10_000, "p": 128, "batch": 512, "r": 49},
    "tiny": {"n": 2_000, "p": 16, "batch": 256, "r": 9},
}


def fastest(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float], Any]:
    """The fastest of ``repeat`` runs (a shared machine: the least disturbed), every run's
    time, and the last result."""
    runs = []
    out = None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - start)
    return min(runs), [round(t, 3) for t in runs], out


def broadcast_gather_hsic(ka: Any, kb: Any, perms: np.ndarray) -> np.ndarray:
    """The permuted HSIC₁ values as they were computed before (one broadcast fancy index
    per block of permutations), kept here as the reference the new gather is timed
    against and compared with."""
    from reprstore.uncertainty.batches import GATHER_BYTES

    n = ka.n
    out = np.empty(perms.shape[0])
    step = max(1, GATHER_BYTES // (8 * n * n))
    for s in range(0, perms.shape[0], step):
        p = perms[s : s + step]
        tr = np.einsum("ij,cij->c", ka.kt, kb.kt[p[:, :, None], p[:, None, :]])
        sum_kl = kb.rows[p] @ ka.rows
        out[s : s + step] = (
            tr + ka.total * kb.total / ((n - 1) * (n - 2)) - 2.0 * sum_kl / (n - 2)
        ) / (n * (n - 3))
    return out


def test_case(
    label: str, plain: Callable[[], Any], tested: Callable[[], Any], r: int, repeat: int
) -> dict[str, Any]:
    """Plain and tested runs of one estimator; the time per permutation."""
    t0, runs0, _ = fastest(plain, repeat)
    t1, runs1, res = fastest(tested, repeat)
    row = {
        "case": label, "plain_s": round(t0, 3), "with_test_s": round(t1, 3),
        "per_permutation_ms": round(1e3 * (t1 - t0) / r, 2), "plain_runs": runs0,
        "test_runs": runs1, "cka": res.cka, "p": res.cka_p, "method": res.permutation_method,
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def gather_case(x: np.ndarray, y: np.ndarray, batch: int, r: int, repeat: int) -> dict:
    """One batch's R permuted HSIC values: the new gather against the old one."""
    from reprstore.stats import resample as rs
    from reprstore.stats.batch_kernels import batch_gram
    from reprstore.uncertainty.batches import permuted_hsic

    (ka, _), (kb, _) = batch_gram(x[:batch], "linear", None), batch_gram(y[:batch], "linear", None)
    perms = rs.permutations(1, r, 0, batch)
    t_old, runs_old, old = fastest(lambda: broadcast_gather_hsic(ka, kb, perms), repeat)
    t_new, runs_new, new = fastest(lambda: permuted_hsic(ka, kb, perms), repeat)
    row = {
        "case": f"gather, one batch of {batch}", "old_ms": round(1e3 * t_old / r, 3),
        "new_ms": round(1e3 * t_new / r, 3), "speedup": round(t_old / t_new, 2),
        "old_runs": runs_old, "new_runs": runs_new,
        "bit_identical": bool(np.array_equal(old, new)),
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def run(size: str, repeat: int) -> dict[str, Any]:
    import reprstore
    from benchmarks.uncertainty_cost import pair

    s = SIZES[size]
    n, p, b, r = s["n"], s["p"], s["batch"], s["r"]
    x, y = (a.astype(np.float64) for a in pair(n, p))
    small = pair(600, 8, seed=1)
    reprstore.cka(*small, estimator="minibatch", batch_size=128, permutations=5, seed=0)
    reprstore.cka(*small, permutations=5, seed=0)  # warm-up: imports, BLAS, dask
    mb = {"estimator": "minibatch", "batch_size": b}
    rows = [
        test_case(f"minibatch linear, B = {b}",
                  lambda: reprstore.cka(x, y, **mb),
                  lambda: reprstore.cka(x, y, permutations=r, seed=1, **mb), r, repeat),
        test_case("exact debiased linear",
                  lambda: reprstore.cka(x, y),
                  lambda: reprstore.cka(x, y, permutations=r, seed=1), r, repeat),
    ]  # fmt: skip
    gather = gather_case(x, y, b, r, repeat)
    return {
        "size": size, **s, "repeat": repeat, "rows": rows, "gather": gather,
        "checks": {"gather_bit_identical": gather["bit_identical"],
                   "exact_permutes_rows": "over all" in rows[1]["method"],
                   "minibatch_permutes_within_batches": "within each" in rows[0]["method"]},
        "cpus": os.cpu_count(), "load": round(os.getloadavg()[0], 2),
        "command": " ".join(["python -m benchmarks.permutations", *sys.argv[1:]]),
    }  # fmt: skip


def markdown(doc: dict[str, Any]) -> str:
    mb, ex = doc["rows"]
    g = doc["gather"]
    k = max(1, doc["n"] // doc["batch"])  # the near-equal batches of the SPEC
    lines = [
        f"# Time per permutation: minibatch CKA against the exact pair ({doc['date']})", "",
        f"{doc['n']:,} × {doc['p']} float64 pair in memory, R = {doc['r']} permutations, "
        f"fastest of {doc['repeat']} run(s) per case on a shared {doc['cpus']}-core machine "
        f"(load average {doc['load']} at the end). Per permutation = (with the test − "
        "plain) / R. Command: " f"`{doc['command']}`.", "",
        "| case | plain s | with test s | ms per permutation | p | method |",
        "|---|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for row in (mb, ex):
        cells = [row["case"], row["plain_s"], row["with_test_s"], row["per_permutation_ms"],
                 f"{row['p']:.3g}", row["method"]]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    ratio = mb["per_permutation_ms"] / ex["per_permutation_ms"] if ex["per_permutation_ms"] else 0
    lines += [
        "", f"A minibatch permutation costs ×{ratio:.2f} an exact one here: {k} batches of "
        f"about {doc['n'] // k:,} rows, each gathering {(doc['n'] // k) ** 2:,} kernel "
        f"entries, against one {doc['n']:,} × {doc['p']} × {doc['p']} product.", "",
        "| one batch's gather | old ms / permutation | new ms / permutation | speedup | "
        "bit-identical |", "|---|---:|---:|---:|---|",
        f"| {g['case']} | {g['old_ms']} | {g['new_ms']} | ×{g['speedup']} | "
        f"{g['bit_identical']} |", "",
        "Old: one broadcast fancy index `L[π[:, None], π[None, :]]` per block of "
        "permutations; new: `np.take` of whole rows, then of columns, into buffers kept "
        "across permutations. Every run's times are in the .json.",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--tiny", action="store_true")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the fastest counts")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--work", type=Path, default=None, help="unused (no files are made)")
    args = parser.parse_args(argv)
    name = "tiny" if args.tiny else "quick" if args.quick else "full"
    doc = run(name, args.repeat)
    doc["date"] = dt.date.today().isoformat()  # the report's title shows it
    save_report(args.out, "permutations", name, doc, markdown(doc))


if __name__ == "__main__":
    main()
