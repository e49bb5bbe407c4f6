"""`--memory` as a user meets it: the review's table (issue: memory-honesty), rerun.

``python -m benchmarks.memory [--quick | --tiny] [--work DIR] [--out DIR]``

Each row runs the real CLI in a fresh process and reads its peak RSS (VmHWM: interpreter
and imports included, as ``/usr/bin/time`` shows it). A comparison of 600 rows gives the
process's own memory (imports, threads, BLAS); ``held`` is the peak above it, which is
what ``--memory`` bounds (the goal: ≤ ``--memory`` + 20 %, or a one-line refusal before
any data is read).

Rows (full; ``--quick`` halves n and p; ``--tiny`` is a smoke test):

* ``--ci 0.95 --bootstrap 200`` of each measure, n = 20,000, p = 2,048, ``--memory 2GB``;
* ``cka --ci`` of one long pair, n = 200,000, p = 768, ``--memory 512MB``;
* pwcca, svcca, cosine and cca:ridge of one pair, n = 20,000, p = 2,048, ``--memory 512MB``;
* a 6 × 6 grid, n = 10,000, p = 1,024, ``--memory 512MB``, cka and cca:ridge;
* ``describe`` of 24 representations 3,072 wide (n = 2,000), ``--memory 512MiB``.

Writes ``<date>-memory[-quick|-tiny].json`` and ``.md`` into ``--out`` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import save_report

HERE = Path(__file__).resolve().parent
MiB = 2**20
CI = ["--ci", "0.95", "--bootstrap", "200"]
MEASURES = ["cka", "cca:ridge=0.1", "svcca", "pwcca", "procrustes", "shape:alpha=0.5",
            "linreg", "linreg:ridge=1", "cosine", "rsa"]  # fmt: skip
#: name → (pair n, pair p, long-pair n, long-pair p, grid n, grid p, describe count, width)
SIZES = {
    "full": (20_000, 2048, 200_000, 768, 10_000, 1024, 24, 3072),
    "quick": (10_000, 1024, 100_000, 384, 5_000, 512, 12, 1536),
    "tiny": (2_000, 64, 4_000, 32, 1_000, 32, 4, 64),
}


#: Runs ``reprstore ARGS`` and prints the process's own peak RSS (VmHWM, which a new
#: program starts afresh; ``wait4``'s ru_maxrss keeps the parent's high-water mark).
PEAK = """
import runpy, sys
sys.argv = ["reprstore", *sys.argv[1:]]
try:
    runpy.run_module("reprstore", run_name="__main__")
finally:
    hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0].split()[1]
    sys.stderr.write(f"\\nVMHWM {hwm}\\n")
"""


def _cli(args: list[str], cwd: Path) -> dict[str, Any]:
    """``reprstore ARGS`` in a fresh process: exit status, last error line, wall seconds
    and peak RSS (MiB)."""
    start = time.perf_counter()
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    done = subprocess.run([sys.executable, "-c", PEAK, *args], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    err, _, hwm = done.stderr.rpartition("VMHWM")
    return {"rc": done.returncode, "error": err.strip()[-300:],
            "seconds": round(time.perf_counter() - start, 2),
            "peak_mib": round(int(hwm.split()[0]) / 1024, 1) if hwm.strip() else 0.0}  # fmt: skip


def _store(work: Path, name: str, n: int, p: int, layers: int, relu: bool = False) -> str:
    """Two seeds × ``layers`` layers of n × p (float16, as import stores by default)."""
    path = work / f"{name}.zarr"
    if path.exists():
        return path.name
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(n, 16)).astype(np.float32)
    for seed in ("0", "1"):
        for k in range(layers):
            x = signal @ rng.normal(size=(16, p)).astype(np.float32)
            x += rng.normal(size=(n, p)).astype(np.float32)
            np.save(work / "x.npy", np.maximum(x, 0) if relu else x)
            done = _cli(["import", path.name, "x.npy", "--name", "m", "--seed", seed,
                         "--layer", f"l{k}", "--quiet"], work)  # fmt: skip
            assert done["rc"] == 0, done
    (work / "x.npy").unlink()
    return path.name


def _row(work: Path, label: str, args: list[str], memory: str, bytes_: int,
         base: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One row: the command, and what it holds above the process's own memory (``base``:
    a comparison of 600 rows, which loads the same modules, threads and BLAS)."""
    got = _cli([*args, "--memory", memory, *_extra(args)], work)
    held = got["peak_mib"] - base["peak_mib"]
    outcome = "ran" if got["rc"] == 0 else "refused" if got["rc"] == 1 else "failed"
    return {"row": label, "memory": memory, **got, "base_mib": base["peak_mib"],
            "held_mib": round(held, 1), "ratio": round(held * MiB / bytes_, 2),
            "outcome": outcome}  # fmt: skip


def _extra(args: list[str]) -> list[str]:
    return ["--no-cache"] if args[0] in ("compare", "cka") else []


def run(size: str, work: Path) -> dict[str, Any]:
    n, p, ln, lp, gn, gp, count, width = SIZES[size]
    work.mkdir(parents=True, exist_ok=True)
    pair = _store(work, f"pair-{n}-{p}", n, p, 1)
    long = _store(work, f"long-{ln}-{lp}", ln, lp, 1)
    tiny = size == "tiny"  # a smoke test: one row of each kind
    layers = 2 if tiny else 6
    grid = _store(work, f"grid-{gn}-{gp}", gn, gp, layers)
    many = _store(work, f"relu-{width}", 1000 if tiny else 2000, width, count // 2, relu=True)
    ab = ["--a", "seed=0", "--b", "seed=1"]
    base = _cli(["compare", pair, *ab, "--where", "id < 600", "--no-cache", "--measure",
                 "cka,cca:ridge=0.1", "--memory", "64MB"], work)  # fmt: skip
    assert base["rc"] == 0, base
    rows = []
    for m in MEASURES[:2] if tiny else MEASURES:
        rows.append(_row(work, f"compare --ci, {m}", ["compare", pair, *ab, "--measure", m, *CI],
                         "2GB", 2 * 1024**3, base))  # fmt: skip
    long_ci = ["cka", long, *ab, *CI]
    rows.append(_row(work, "cka --ci, one long pair", long_ci, "512MB", 512 * MiB, base))
    for m in ("pwcca",) if tiny else ("pwcca", "svcca", "cosine", "cca:ridge=0.1"):
        rows.append(_row(work, f"compare {m}", ["compare", pair, *ab, "--measure", m], "512MB",
                         512 * MiB, base))  # fmt: skip
    square = f"{layers} × {layers} grid"
    rows.append(_row(work, f"{square}, cka", ["compare", grid, *ab], "512MB", 512 * MiB, base))
    cca_grid = ["compare", grid, *ab, "--measure", "cca:ridge=0.1"]
    rows.append(_row(work, f"{square}, cca:ridge=0.1", cca_grid, "512MB", 512 * MiB, base))
    rows.append(
        _row(work, f"describe {count} × {width}", ["describe", many], "512MiB", 512 * MiB, base)
    )
    names = ("pair_n", "pair_p", "long_n", "long_p", "grid_n", "grid_p", "describe", "width")
    shapes = dict(zip(names, SIZES[size], strict=True))
    return {"size": size, "base_mib": base["peak_mib"], "shapes": shapes, "rows": rows}  # fmt: skip


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# `--memory` as a user meets it ({doc['date']}, {doc['size']})",
        "",
        f"Shapes: {doc['shapes']}. Peak RSS of the whole process (its VmHWM); *base* "
        f"({doc['base_mib']} MiB) is a comparison of 600 rows (interpreter, imports, threads, "
        "BLAS); *held* = peak − base, what `--memory` bounds. Machine: 2 shared cores.",
        "",
        "| row | `--memory` | outcome | peak RSS MiB | base MiB | held MiB | held / --memory | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        cells = [r[k] for k in ("row", "memory", "outcome", "peak_mib", "base_mib", "held_mib",
                                "ratio", "seconds")]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    refused = [r for r in doc["rows"] if r["outcome"] == "refused"]
    if refused:
        lines += ["", "Refusals (one line each, before any data is read):", ""]
        lines += [f"- {r['row']}: `{r['error'].splitlines()[-1]}`" for r in refused]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--tiny", action="store_true")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "memory")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    name = "tiny" if args.tiny else "quick" if args.quick else "full"
    doc = run(name, args.work)
    doc["date"] = dt.date.today().isoformat()  # the report's title shows it
    save_report(args.out, "memory", name, doc, markdown(doc))


if __name__ == "__main__":
    main()
