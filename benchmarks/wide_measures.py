"""Five measures against cka alone on a grid of wide representations, in one process.

``python -m benchmarks.wide_measures [--quick | --tiny] [--p P] [--n N] [--k K]
[--memory M] [--repeat R] [--out DIR]``

A k × k grid (every ordered pair, the diagonal included) of k float64 representations
held in memory, n rows × p features sharing a 64-dimensional signal, compared by
:func:`reprstore.engine.arrays.measure_arrays` with ``cka`` alone and with the five measures
``cka,cca:ridge=0.1,procrustes,linreg:ridge=0.1,rsa`` (the scale review's set), each
the fastest of ``--repeat`` runs after a warm-up. The ratio five / cka is what the
per-pair work of the four other measures adds to the one pass both make (issue 25:
per-representation factorizations once per grid, a pair only its cross terms).

Sizes: full p = 2,048, n = 4,000, k = 3; ``--quick`` p = 1,024, n = 2,000, k = 2;
``--tiny`` p = 64, n = 500, k = 2 (a smoke test). ``--p/--n/--k`` override them. Writes
``<date>-wide_measures[-quick|-tiny].json`` and ``.md`` into ``--out`` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import save_report
from benchmarks.permutations import fastest

HERE = Path(__file__).resolve().parent
SIZES = {
    "full": {"p": 2048, "n": 4000, "k": 3},
    "quick": {"p": 1024, "n": 2000, "k": 2},
    "tiny": {"p": 64, "n": 500, "k": 2},
}
FIVE = "cka,cca:ridge=0.1,procrustes,linreg:ridge=0.1,rsa"


def grid_arrays(n: int, p: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """k representations n × p sharing a 64-dimensional signal, with their own noise."""
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n, 64))
    return [signal @ rng.standard_normal((64, p)) + rng.standard_normal((n, p)) for _ in range(k)]


def timed(
    arrays: list[np.ndarray], measures: str, repeat: int, memory: str | None = None
) -> dict[str, Any]:
    """The fastest of ``repeat`` grid runs, every run's time and the plan line."""
    from reprstore.engine.arrays import measure_arrays

    k = len(arrays)
    pairs = [(i, j) for i in range(k) for j in range(k)]
    plan: list[str] = []
    best, runs, out = fastest(
        lambda: measure_arrays(arrays, pairs, measures, report=plan.append, memory=memory), repeat
    )
    row = {"measures": measures, "seconds": round(best, 3), "runs": runs, "plan": plan[-1]}
    print(json.dumps(row), flush=True)
    row["cka"] = [float(out.pairs[pair]["cka"]) for pair in pairs]
    return row


def run(sizes: dict[str, int], repeat: int, memory: str | None = None) -> dict[str, Any]:
    import reprstore
    from reprstore.engine.arrays import measure_arrays

    p, n, k = sizes["p"], sizes["n"], sizes["k"]
    small = grid_arrays(200, 8, 2, seed=1)
    measure_arrays(small, [(0, 1)], FIVE)  # warm-up: imports, BLAS, dask
    arrays = grid_arrays(n, p, k)
    alone = timed(arrays, "cka", repeat, memory)
    five = timed(arrays, FIVE, repeat, memory)
    gap = max(abs(a - b) for a, b in zip(alone.pop("cka"), five.pop("cka"), strict=True))
    return {
        **sizes, "repeat": repeat, "memory": memory or "2GB (default)", "rows": [alone, five],
        "checks": {"cka_same_with_five_measures": gap < 1e-9}, "cka_max_abs_diff": gap,
        "ratio": round(five["seconds"] / alone["seconds"], 2),
        "code": str(Path(reprstore.__file__).resolve().parent.parent),
        "cpus": os.cpu_count(), "load": round(os.getloadavg()[0], 2),
        "command": " ".join(["python -m benchmarks.wide_measures", *sys.argv[1:]]),
    }  # fmt: skip


def markdown(doc: dict[str, Any]) -> str:
    alone, five = doc["rows"]
    k = doc["k"]
    lines = [
        f"# Five measures against cka alone on a wide grid ({doc['date']})", "",
        f"{k} × {k} grid (every ordered pair) of float64 representations in memory, "
        f"n = {doc['n']:,} rows × p = {doc['p']:,} features, fastest of {doc['repeat']} "
        f"run(s), --memory {doc['memory']}, on a shared {doc['cpus']}-core machine (load "
        f"average {doc['load']} at the end); code from `{doc['code']}`. Command: "
        f"`{doc['command']}`.", "",
        "| measures | s | runs | plan |", "|---|---:|---|---|",
    ]  # fmt: skip
    for row in (alone, five):
        lines.append(f"| {row['measures']} | {row['seconds']} | {row['runs']} | {row['plan']} |")
    lines += [
        "",
        f"Five measures / cka alone: ×{doc['ratio']}. The cka values of both runs "
        f"differ by at most {doc['cka_max_abs_diff']:.1e}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--tiny", action="store_true")
    parser.add_argument("--p", type=int, default=None, help="features per representation")
    parser.add_argument("--n", type=int, default=None, help="rows")
    parser.add_argument("--k", type=int, default=None, help="representations (k × k grid)")
    parser.add_argument("--memory", default=None, help="--memory of both runs (default 2GB)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the fastest counts")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--work", type=Path, default=None, help="unused (no files are made)")
    args = parser.parse_args(argv)
    name = "tiny" if args.tiny else "quick" if args.quick else "full"
    sizes = dict(SIZES[name])
    for key in ("p", "n", "k"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
            name = "custom" if name == "full" else name
    doc = run(sizes, args.repeat, args.memory)
    doc["date"] = dt.date.today().isoformat()  # the report's title shows it
    save_report(args.out, "wide_measures", name, doc, markdown(doc))


if __name__ == "__main__":
    main()
