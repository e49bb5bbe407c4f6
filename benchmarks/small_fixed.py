"""Fixed costs of one small exact pair, apart from its compute.

``python -m benchmarks.small_fixed [--n N] [--repeats R] [--before DIR] [--work DIR] [--out DIR]``

Each repeat runs a fresh process per side (this tree; with ``--before``, also a copy of an
earlier reprstore, ``git archive REV | tar -x -C DIR``, interleaved) on the store of
:mod:`benchmarks.synth` (``python -m benchmarks.synth WORK N 768 1``) and times, wall and
CPU (all threads), one after the other:

* ``import reprstore`` (lazy: the public names only);
* the engine's import (``reprstore.workflows.in_memory``: dask, the engine, the measures),
  what the first ``reprstore.cka`` call would otherwise import;
* ``import zarr``, then opening the store (``zarr.open_group`` and the two array handles);
* planning (``measure_arrays(…, dry_run=True)``: the pass context and the plan, no chunk
  read);
* the first ``reprstore.cka`` (the arrays dropped from the page cache first, as the
  benchmarks read them cold), then a second one (warm).

Writes ``<date>-small-fixed.json`` and ``.md`` into ``--out`` (default
``benchmarks/results``): each stage's median and fastest over the repeats.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STAGES = ("import reprstore", "import engine", "import zarr", "open store", "plan", "first cka",
          "second cka")  # fmt: skip

CHILD = r"""
import json, sys, time
from pathlib import Path
clock = []
def mark():
    clock.append((time.perf_counter(), time.process_time()))
mark()
import reprstore
mark()
import reprstore.workflows.in_memory
from reprstore.engine.arrays import measure_arrays
from reprstore.engine.planner import DryRun
mark()
import zarr
mark()
store = sys.argv[1]
root = zarr.open_group(store, mode="r")
x = root["reprs/synth/0/final/default/l0"]
y = root["reprs/synth/1/final/default/l0"]
mark()
try:
    measure_arrays([x, y], [(0, 1)], "cka", dry_run=True)
except DryRun as plan:
    line = str(plan)
mark()
from benchmarks.synth import evict
for r in "01":
    evict(Path(store, "reprs", "synth", r, "final", "default", "l0"))
start = len(clock)
mark()
value = reprstore.cka(x, y).cka
mark()
mark()
reprstore.cka(x, y)
mark()
spans = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(clock[:5], clock[1:6])]
spans += [(clock[k + 1][0] - clock[k][0], clock[k + 1][1] - clock[k][1]) for k in (6, 8)]
print(json.dumps({"spans": spans, "plan": line, "value": value}))
"""


def _child(store: Path, root: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(root), str(HERE.parent)])
    out = subprocess.run([sys.executable, "-c", CHILD, str(store)], env=env,
                         capture_output=True, text=True, check=True,
                         cwd=root or HERE.parent)  # fmt: skip
    got: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--before", type=Path, default=None)
    args = ap.parse_args()
    store = (args.work / "stores" / f"n{args.n}-p768-l1.zarr").resolve()
    if not store.exists():
        raise SystemExit(f"no store {store}: python -m benchmarks.synth {args.work} {args.n} 768 1")
    sides: list[tuple[str, Path | None]] = [("reprstore", None)]
    if args.before is not None:
        sides.append(("reprstore (before)", args.before.resolve()))
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in sides}
    for r in range(args.repeats):
        for label, root in sides:
            got = _child(store, root)
            runs[label].append(got)
            walls = "  ".join(
                f"{s} {w:.3f}" for s, (w, _c) in zip(STAGES, got["spans"], strict=True)
            )
            print(f"{r} {label:<20} {walls}  load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for label, got in runs.items():
        for k, stage in enumerate(STAGES):
            walls = [g["spans"][k][0] for g in got]
            cpus = [g["spans"][k][1] for g in got]
            rows.append(
                {
                    "side": label,
                    "stage": stage,
                    "wall_median_s": statistics.median(walls),
                    "wall_min_s": min(walls),
                    "cpu_median_s": statistics.median(cpus),
                }
            )
    doc = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": f"python -m benchmarks.small_fixed --n {args.n} --repeats {args.repeats}"
        + (f" --before {args.before}" if args.before else ""),
        "cores": len(os.sched_getaffinity(0)),
        "load_avg": os.getloadavg()[0],
        "plans": {label: got[0]["plan"] for label, got in runs.items()},
        "rows": rows,
        "runs": runs,
    }
    stem = f"{dt.date.today():%Y-%m-%d}-small-fixed"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    lines = [
        f"# fixed costs of one small exact pair, N = {args.n} ({doc['date']})",
        "",
        f"`{doc['command']}` — {doc['cores']} cores, shared (load {doc['load_avg']:.1f} at the "
        "end); each stage in a fresh process per repeat, sides interleaved.",
        "",
        *[f"- plan ({label}): `{line}`" for label, line in doc["plans"].items()],
        "",
        "| side | stage | wall median (s) | wall fastest (s) | CPU median (s) |",
        "|---|---|---|---|---|",
        *[
            f"| {r['side']} | {r['stage']} | {r['wall_median_s']:.3f} | {r['wall_min_s']:.3f} | "
            f"{r['cpu_median_s']:.3f} |"
            for r in rows
        ],
    ]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / stem}.json, .md")


if __name__ == "__main__":
    main()
