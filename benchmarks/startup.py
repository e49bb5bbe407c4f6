"""Start-up time of the command line: how long a user waits for ``--help``, ``ls``, ``info``
and a small ``import``.

``python -m benchmarks.startup [--quick | --tiny] [--repeats N] [--work DIR] [--out DIR]``

A small real store is made once per run by the real CLI (``reprstore import`` of 4
float32 ``.npy`` files of 2,000 × 64, as the README's quickstart; ``--tiny``: 200 × 16).
Then each command runs N times (default 21; ``--quick`` 7, ``--tiny`` 2) in a fresh
``python -m reprstore`` process, the commands interleaved round-robin so that a neighbour's
load spreads over all of them, timed from start to exit (imports included: that is the
wait). Reported per command: the median and fastest wall time, the median CPU time (user +
system, from ``wait4``: less moved by other processes than wall time), and which heavy
modules the command imported (one extra run under ``python -X importtime``).

Goal (issue "trust-v3"): ``--help``, ``ls`` and ``info`` in ≤ 0.5 s (median wall) on a
quiet machine. The load average before and after the runs is recorded with the figures.
Two reference rows (no goal) give the floor: the bare interpreter, and the interpreter
importing zarr (which any command that reads a store needs), with numpy's OpenBLAS started
on one thread as ``ls`` and ``info`` start it.

``--baseline DIR`` also times every ``reprstore`` command with ``PYTHONPATH=DIR`` (a copy of
an earlier reprstore: ``git archive REV reprstore | tar -x -C DIR``), interleaved with the
current code's runs, so that a change is compared with what it replaced under the same load.

Writes ``<date>-startup[-quick|-tiny].json`` and ``.md`` into ``--out`` (default
``benchmarks/results``). Timings are measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
GOAL_S = 0.5
REPEATS = {"full": 21, "quick": 7, "tiny": 2}
SHAPES = {"full": (2_000, 64), "quick": (2_000, 64), "tiny": (200, 16)}
LAYERS = 4
#: modules a light command should not need (numpy and zarr are needed to read a store)
HEAVY = ("torch", "dask", "distributed", "pandas", "scipy", "matplotlib", "transformers",
         "re2", "pyarrow", "safetensors", "typer.rich_utils", "numpy", "zarr")  # fmt: skip
FILES = [f"layer_{i}.npy" for i in range(LAYERS)]
IMPORT_ARGS = ["import", "new.zarr", *FILES, "--name", "toy", "--layer", "{stem}"]


def commands() -> dict[str, list[str]]:
    """Label → argv of every timed command (run in the work folder)."""
    cli = [sys.executable, "-m", "reprstore"]
    return {
        "python -c pass (reference)": [sys.executable, "-c", "pass"],
        "python -c 'import zarr' (reference, one BLAS thread as ls)": [
            sys.executable,
            "-c",
            "import os; os.environ['OPENBLAS_NUM_THREADS'] = '1'; import zarr",
        ],
        "reprstore --help": [*cli, "--help"],
        "reprstore ls STORE": [*cli, "ls", "runs.zarr"],
        "reprstore ls MISSING": [*cli, "ls", "missing.zarr"],
        "reprstore info STORE layer=layer_0": [*cli, "info", "runs.zarr", "layer=layer_0"],
        f"reprstore import NEW ({LAYERS} files)": [*cli, *IMPORT_ARGS],
    }


def has_goal(label: str) -> bool:
    """``--help``, ``ls`` and ``info`` have the 0.5 s goal; ``import`` is measured only."""
    return label.startswith(("reprstore --help", "reprstore ls", "reprstore info"))


def make_store(work: Path, size: str) -> None:
    """The quickstart's kind of data: a shared low-rank signal plus noise, per layer."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    n, p = SHAPES[size]
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(n, 16))
    for i, name in enumerate(FILES):
        x = signal @ rng.normal(size=(16, p)) + (0.5 + i) * rng.normal(size=(n, p)) + 3.0
        np.save(work / name, x.astype(np.float32))
    done = subprocess.run(
        [sys.executable, "-m", "reprstore", "import", "runs.zarr", *FILES, "--name", "toy",
         "--layer", "{stem}"],
        cwd=work, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"making the store failed: {done.stderr}")


def baseline_env(baseline: Path) -> dict[str, str]:
    """The environment that imports reprstore from ``baseline`` instead."""
    return {**os.environ, "PYTHONPATH": str(baseline.resolve())}


def timed(
    argv: list[str], work: Path, env: dict[str, str] | None = None
) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and exit status of one fresh process."""
    shutil.rmtree(work / "new.zarr", ignore_errors=True)  # import writes a new store each time
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status)


def heavy_imports(argv: list[str], work: Path, env: dict[str, str] | None = None) -> list[str]:
    """Which :data:`HEAVY` modules the command imports (from ``-X importtime``)."""
    shutil.rmtree(work / "new.zarr", ignore_errors=True)
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], cwd=work,
                          capture_output=True, text=True, env=env)  # fmt: skip
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return [h for h in HEAVY if h in names]


def run(size: str, work: Path, repeats: int, baseline: Path | None = None) -> dict[str, Any]:
    make_store(work, size)
    cmds = commands()
    trees: dict[str, dict[str, str] | None] = {"current": None}
    if baseline is not None:
        trees["baseline"] = baseline_env(baseline)
    runs = [(label, tree) for label in cmds for tree in trees
            if tree == "current" or label.startswith("reprstore")]  # fmt: skip
    walls: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
    cpus: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
    codes: dict[tuple[str, str], set[int]] = {r: set() for r in runs}
    load_before = os.getloadavg()
    for _ in range(repeats):
        for label, tree in runs:
            wall, cpu, rc = timed(cmds[label], work, trees[tree])
            walls[label, tree].append(wall)
            cpus[label, tree].append(cpu)
            codes[label, tree].add(rc)
    load_after = os.getloadavg()
    rows = []
    for label, argv in cmds.items():
        median = statistics.median(walls[label, "current"])
        row = {
            "command": label, "median_s": round(median, 3),
            "min_s": round(min(walls[label, "current"]), 3),
            "cpu_median_s": round(statistics.median(cpus[label, "current"]), 3),
            "exit_codes": sorted(codes[label, "current"]),
            "heavy_imports": heavy_imports(argv, work),
            "goal_s": GOAL_S if has_goal(label) else None,
            "met": median <= GOAL_S if has_goal(label) else None,
            "wall_s_runs": [round(w, 3) for w in walls[label, "current"]],
        }  # fmt: skip
        if (label, "baseline") in walls:
            row["baseline_median_s"] = round(statistics.median(walls[label, "baseline"]), 3)
            row["baseline_cpu_median_s"] = round(statistics.median(cpus[label, "baseline"]), 3)
            row["baseline_heavy_imports"] = heavy_imports(argv, work, trees["baseline"])
        rows.append(row)
    n, p = SHAPES[size]
    return {"size": size, "repeats": repeats, "layers": LAYERS, "n": n, "p": p,
            "python": sys.version.split()[0], "cpus": os.cpu_count(),
            "baseline": None if baseline is None else str(baseline),
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in load_after], "rows": rows}  # fmt: skip


def _table_row(r: dict[str, Any], with_baseline: bool) -> str:
    goal = "–" if r["goal_s"] is None else f"≤ {r['goal_s']} s"
    met = "–" if r["met"] is None else ("yes" if r["met"] else "**no**")
    cells = [f"`{r['command']}`", ", ".join(map(str, r["exit_codes"])), f"{r['median_s']:.3f}",
             f"{r['min_s']:.3f}", f"{r['cpu_median_s']:.3f}"]  # fmt: skip
    if with_baseline:
        before = [r.get("baseline_median_s"), r.get("baseline_cpu_median_s")]
        cells += ["–" if v is None else f"{v:.3f}" for v in before]
    cells += [", ".join(r["heavy_imports"]) or "none", goal, met]
    return "| " + " | ".join(cells) + " |"


def markdown(doc: dict[str, Any]) -> str:
    load = f"{doc['load_before'][0]} before, {doc['load_after'][0]} after"
    base = bool(doc.get("baseline"))
    head = ["command", "exit", "median wall (s)", "fastest (s)", "median CPU (s)"]
    head += ["before: median wall (s)", "before: median CPU (s)"] if base else []
    head += ["heavy modules imported", "goal", "met"]
    align = ["---", "---", *["---:"] * (5 if base else 3), "---", "---", "---"]
    lines = [
        f"# start-up benchmark ({doc['size']}, {doc['date']})", "",
        f"`python -m benchmarks.startup{'' if doc['size'] == 'full' else ' --' + doc['size']}`"
        f": each command {doc['repeats']} times in a fresh process, interleaved, on a store of "
        f"{doc['layers']} representations of {doc['n']:,} × {doc['p']} (float16); wall time "
        f"from start to exit, imports included. Python {doc['python']}, {doc['cpus']} CPUs, "
        f"1-minute load average {load}.", "",
        "| " + " | ".join(head) + " |", "|" + "|".join(align) + "|",
        *(_table_row(r, base) for r in doc["rows"]),
        "", "`ls MISSING` exits 1 by design (one line: no store there).",
    ]  # fmt: skip
    if base:
        heavy = "; ".join(f"{r['command']}: {', '.join(r['baseline_heavy_imports']) or 'none'}"
                          for r in doc["rows"] if "baseline_heavy_imports" in r)  # fmt: skip
        lines += ["", f"Before: the same commands with `PYTHONPATH={doc['baseline']}` (an "
                  "earlier reprstore), each run interleaved with the current code's; its "
                  f"heavy imports: {heavy}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="7 runs of each command")
    size.add_argument("--tiny", action="store_true", help="2 runs on a toy store: a smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each command")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="also time a copy of an earlier reprstore (its parent folder)",
    )
    parser.add_argument("--work", type=Path, default=HERE / "work" / "startup")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    name = "tiny" if args.tiny else "quick" if args.quick else "full"
    doc = run(name, args.work, args.repeats or REPEATS[name], args.baseline)
    doc["date"] = dt.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{doc['date']}-startup" + ("" if name == "full" else f"-{name}")
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2))
    (args.out / f"{stem}.md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
