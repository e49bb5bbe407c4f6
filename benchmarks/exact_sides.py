"""Exact CKA, reprstore against numpy in memory, side by side with interleaved repeats.

``python -m benchmarks.exact_sides grid|pair|rss [--repeats R] [--out DIR]`` measures, each
run in a fresh subprocess (:mod:`benchmarks.harness`, reading the stores of
:mod:`benchmarks.synth` cold), alternating the sides ``R`` times and keeping each side's
fastest run (as :meth:`benchmarks.runner.Runner.best_of`), on a shared machine whose load
changes from minute to minute:

* ``grid``: the 6 × 6 grid at N = 50,000 (float32 and float64 products against numpy
  float32 and float64), plus the machine's GEMM ceilings;
* ``pair``: one pair at N = 5,000 and 20,000 against numpy float64;
* ``rss``: peak RSS of one exact pair at N = 100,000 and 1,000,000.

Writes ``<date>-exact-<what>.json`` and ``.md`` into ``--out`` (default
``benchmarks/results``). The stores are made by ``python -m benchmarks.synth WORK N 768 L``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from benchmarks import harness

HERE = Path(__file__).resolve().parent
REPR, NPF, GEMM = (
    "benchmarks.tasks_cka:reprstore_cka",
    "benchmarks.tasks_cka:numpy_feature",
    "benchmarks.tasks_io:gemm",
)
F32 = "float32"


def _params(work: Path, n: int, layers: int, **extra: Any) -> dict[str, Any]:
    store = work / "stores" / f"n{n}-p768-l{layers}.zarr"
    if not store.exists():
        raise SystemExit(f"no store {store}: python -m benchmarks.synth {work} {n} 768 {layers}")
    return {
        "store": str(store),
        "xs": [["0", k] for k in range(layers)],
        "ys": [["1", k] for k in range(layers)],
        "mem_cap": 12 * 1024**3,
        "gram_limit": 10**9,
        **extra,
    }


def _oracle(params: dict[str, Any], estimator: str) -> list[list[float]]:
    manifest = Path(params["store"]).with_suffix(".json")
    return json.loads(manifest.read_text())["oracle"][estimator]


def _jobs(what: str, work: Path) -> list[tuple[str, str, dict[str, Any]]]:
    if what == "grid":
        g = _params(work, 50_000, 6, estimator="debiased")
        return [
            ("reprstore grid, float32 products", REPR, {**g, "mode": "grid", "precision": F32}),
            ("numpy float32", NPF, {**g, "dtype": "float32", "estimators": ["debiased"]}),
            ("reprstore grid, float64 products", REPR, {**g, "mode": "grid"}),
            ("numpy float64", NPF, {**g, "dtype": "float64", "estimators": ["debiased"]}),
        ]
    if what == "pair":
        out = []
        for n in (5_000, 20_000):
            p = _params(work, n, 1, estimator="debiased")
            out += [
                (f"reprstore pair N={n}", REPR, p),
                (f"numpy float64 N={n}", NPF, {**p, "estimators": ["debiased"]}),
            ]
        return out
    return [
        (f"reprstore pair N={n}", REPR, _params(work, n, 1, estimator="debiased"))
        for n in (100_000, 1_000_000)
    ]


def _row(
    label: str, task: str, params: dict[str, Any], log: Path, root: Path | None = None
) -> dict[str, Any]:
    """One measurement; ``root``: a source tree (e.g. an older commit) to run it from."""
    harness.ROOT, keep = (root or harness.ROOT), harness.ROOT  # the children's cwd
    try:
        r = harness.run_task(task, params, timeout=1800, mem_cap=params["mem_cap"], log=log)
    finally:
        harness.ROOT = keep
    row = {"method": label, "load_avg": os.getloadavg()[0], **r}
    values = r.get("values") or (r.get("values_by_estimator") or {}).get("debiased")
    if values is not None and params.get("estimator"):
        ref = _oracle(params, params["estimator"])
        row["max_abs_diff"] = max(
            abs(v - w) for a, b in zip(values, ref, strict=True) for v, w in zip(a, b, strict=True)
        )
    if r.get("flops") and r.get("wall_s"):
        row["gflops"] = r["flops"] / r["wall_s"] / 1e9
    row.pop("values", None)
    row.pop("values_by_estimator", None)
    print(f"  {label:<36} {r.get('wall_s', float('nan')):8.2f} s "
          f"{r.get('peak_rss_mib', float('nan')):7.0f} MiB  load {row['load_avg']:.1f}  "
          f"{r['status']}", flush=True)  # fmt: skip
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("grid", "pair", "rss"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument(
        "--before",
        type=Path,
        default=None,
        help="also run the reprstore sides from this source tree (git archive)",
    )
    args = ap.parse_args()
    stem = f"{dt.date.today():%Y-%m-%d}-exact-{args.what}"
    log = args.out / f"{stem}.log"
    args.out.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[str, str, dict[str, Any], Path | None]] = [
        (label, task, p, None) for label, task, p in _jobs(args.what, args.work)
    ]
    if args.before is not None:
        jobs += [(f"{label} (before)", t, p, args.before) for label, t, p, _ in jobs if t == REPR]
    ceilings = []
    if args.what == "grid":
        for dtype in ("float32", "float64"):
            p = {"dtype": dtype, "rows": 65_536, "features": 768, "mem_cap": 12 * 1024**3}
            ceilings.append(_row(f"GEMM {dtype}", GEMM, p, log))
    runs = [[_row(*job[:3], log, job[3]) for job in jobs] for _ in range(args.repeats)]
    kept = []
    for k in range(len(jobs)):
        rows = [rep[k] for rep in runs]
        ok = [r for r in rows if r["status"] == "ok"]
        best = dict(min(ok, key=lambda r: r["wall_s"])) if ok else rows[0]
        best["wall_s_runs"] = [r.get("wall_s") for r in rows]
        best["peak_rss_mib"] = max(r.get("peak_rss_mib", 0) for r in rows)
        kept.append(best)
    doc = {
        "what": args.what,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": f"python -m benchmarks.exact_sides {args.what} --repeats {args.repeats}"
        + (f" --before {args.before}" if args.before else ""),
        "cores": len(os.sched_getaffinity(0)),
        "ceilings": ceilings,
        "rows": kept,
    }
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=str))
    (args.out / f"{stem}.md").write_text(_markdown(doc))
    print(f"wrote {args.out / stem}.json, .md")


def _markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# exact CKA side by side: {doc['what']} ({doc['date']})",
        "",
        f"`{doc['command']}` — {doc['cores']} cores, shared; each side's fastest of its "
        "interleaved runs ('runs' lists all), peak RSS the largest; 'load' is the 1-minute "
        "load average when the kept run ended.",
        "",
    ]
    for c in doc["ceilings"]:
        lines.append(f"- ceiling {c['method']}: {c.get('gflops', float('nan')):.1f} GFLOP/s")
    lines += [
        "",
        "| method | time (s) | runs (s) | peak RSS (MiB) | max abs diff vs float64 oracle "
        "| GFLOP/s | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        runs = ", ".join(f"{w:.2f}" for w in r["wall_s_runs"] if w is not None)
        diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
        gf = f"{r['gflops']:.1f}" if "gflops" in r else ""
        lines.append(
            f"| {r['method']} | {r.get('wall_s', float('nan')):.2f} | {runs} | "
            f"{r.get('peak_rss_mib', float('nan')):.0f} | {diff} | {gf} | {r['load_avg']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
