"""Grids that resume and grow: the result cache and checkpointed passes, timed as a user
meets them.

``python -m benchmarks.rerun [--quick | --tiny] [--work DIR] [--out DIR]``

A store of 6 + 6 layers (seed 0 and seed 1), each n = 10,000 rows × p = 768 features
(float16, as ``import`` stores by default; ``--quick``: p = 384; ``--tiny``: 3 + 3 layers of
2,000 × 32, a smoke test), and the grid ``compare STORE --a seed=0 --b seed=1`` (every
layer of seed 0 against every layer of seed 1: 36 pairs, debiased linear CKA). Each case
runs the real CLI in a fresh process, timed from start to exit (imports included, as a user
waits for them), peak RSS from ``wait4``:

* ``first``: the grid on an empty cache (results and pass checkpoints written);
* ``no-cache``: the same with ``--no-cache`` (same arithmetic, nothing saved): the
  checkpoints' overhead is first / no-cache − 1 (goal ≤ 5 %);
* ``rerun``: the same command again (goal: every pair reused, bit-identical);
* ``resume``: on an empty cache, the grid is SIGKILLed at 80 % of ``first``'s time, then
  run again; goal: the rerun takes ≤ 35 % of ``first`` and gives the same bits;
* ``grow``: one more layer imported into seed 0, then the 7 × 6 grid; goal: ≤ 1.3 × the
  6 new pairs alone (``new-alone``: ``--a seed=0,layer=<new> --b seed=1 --no-cache``).

Writes ``<date>-rerun[-quick|-tiny].json`` and ``.md`` into ``--out`` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import save_report

HERE = Path(__file__).resolve().parent
SIZES = {"full": (6, 10_000, 768), "quick": (6, 10_000, 384), "tiny": (3, 2_000, 32)}


def _cli(args: list[str], cwd: Path, kill_after: float | None = None) -> dict[str, Any]:
    """Run ``reprstore ARGS``; wall seconds, peak RSS (MiB) and exit status."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "reprstore", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    # reaped by os.wait4 alone (for its rusage): a Popen.wait that returned first would
    # have reaped a run that ended before ``kill_after`` (No child processes)
    deadline = None if kill_after is None else start + kill_after
    while True:
        pid, status, usage = os.wait4(proc.pid, 0 if deadline is None else os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.perf_counter() >= deadline:
            proc.send_signal(signal.SIGKILL)
            deadline = None
        else:
            time.sleep(0.005)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    rc = os.waitstatus_to_exitcode(status)
    if kill_after is None and rc != 0:
        raise SystemExit(f"reprstore {' '.join(args)} failed: {err}")
    notes = [ln for ln in out.splitlines() if ln.startswith("plan:")]
    return {"seconds": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "rc": rc, "plan": notes}  # fmt: skip


def _make_store(work: Path, layers: int, n: int, p: int) -> None:
    """Seed s, layer k: a shared low-rank signal plus noise, float32 .npy → float16 store."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(n, 32)).astype(np.float32)
    for seed in ("0", "1"):
        names = []
        for k in range(layers):
            x = z @ rng.normal(size=(32, p)).astype(np.float32) / (1 + k)
            x += rng.normal(size=(n, p)).astype(np.float32)
            np.save(work / f"l{k}.npy", x)
            names.append(f"l{k}.npy")
        _import(work, names, seed)
        for name in names:
            (work / name).unlink()


def _import(work: Path, names: list[str], seed: str) -> None:
    done = subprocess.run([sys.executable, "-m", "reprstore", "import", "s.zarr", *names,
                           "--name", "m", "--seed", seed, "--layer", "{stem}"], cwd=work,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(done.stderr)


def _frame(path: Path) -> Any:
    import pandas as pd

    return pd.read_parquet(path).sort_values(["a_layer", "b_layer"]).reset_index(drop=True)


def _same_bits(a: Path, b: Path) -> bool:
    x, y = _frame(a), _frame(b)
    return bool(np.array_equal(x["cka"].to_numpy(), y["cka"].to_numpy()))


def run(size: str, work: Path) -> dict[str, Any]:
    layers, n, p = SIZES[size]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _make_store(work, layers, n, p)
    grid = ["compare", "s.zarr", "--a", "seed=0", "--b", "seed=1"]
    cases: dict[str, Any] = {}
    cases["no-cache"] = _cli([*grid, "--no-cache", "--out", "nocache.parquet"], work)
    cases["first"] = _cli([*grid, "--out", "first.parquet"], work)
    cases["rerun"] = _cli([*grid, "--out", "rerun.parquet"], work)
    shutil.rmtree(work / "s.zarr" / "cache")
    kill_at = 0.8 * cases["first"]["seconds"]
    cases["killed"] = _cli([*grid, "--out", "resumed.parquet"], work, kill_after=kill_at)
    cases["resume"] = _cli([*grid, "--out", "resumed.parquet"], work)
    rng = np.random.default_rng(1)
    np.save(work / "extra.npy", rng.normal(size=(n, p)).astype(np.float32))
    _import(work, ["extra.npy"], "0")
    cases["new-alone"] = _cli(["compare", "s.zarr", "--a", "seed=0,layer=extra", "--b", "seed=1",
                               "--no-cache", "--out", "alone.parquet"], work)  # fmt: skip
    cases["grow"] = _cli([*grid, "--out", "grow.parquet"], work)
    first = cases["first"]["seconds"]
    grow = _frame(work / "grow.parquet")
    old = _frame(work / "first.parquet")
    kept = grow[grow["a_layer"] != "extra"].reset_index(drop=True)
    checks = {
        "rerun_bit_identical": _same_bits(work / "first.parquet", work / "rerun.parquet"),
        "rerun_reused_all": any(
            f"reused {layers**2} of {layers**2}" in ln for ln in cases["rerun"]["plan"]
        ),
        "resume_bit_identical": _same_bits(work / "first.parquet", work / "resumed.parquet"),
        "resume_resumed": any("resumed a pass" in ln for ln in cases["resume"]["plan"]),
        "killed_mid_run": cases["killed"]["rc"] == -9,
        "no_cache_bit_identical": _same_bits(work / "first.parquet", work / "nocache.parquet"),
        "grow_kept_old_bits": bool(np.array_equal(kept["cka"].to_numpy(), old["cka"].to_numpy())),
    }
    goals = [
        ("checkpoint overhead: first / no-cache", first / cases["no-cache"]["seconds"], 1.05),
        ("identical rerun / first", cases["rerun"]["seconds"] / first, None),
        ("rerun after a kill at 80 % / first", cases["resume"]["seconds"] / first, 0.35),
        ("7 × 6 grid after 6 × 6 / 6 new pairs alone",
         cases["grow"]["seconds"] / cases["new-alone"]["seconds"], 1.3),
    ]  # fmt: skip
    return {"size": size, "layers": layers, "n": n, "p": p, "cases": cases, "checks": checks,
            "goals": [{"what": w, "measured": round(v, 3), "goal": g,
                       "met": None if g is None else v <= g} for w, v, g in goals]}  # fmt: skip


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# rerun benchmark ({doc['size']}, {doc['date']})", "",
             f"{doc['layers']} + {doc['layers']} layers of {doc['n']:,} × {doc['p']} (float16), "
             f"grid seed 0 × seed 1, debiased linear CKA; wall time of the CLI process.", "",
             "| case | seconds | peak RSS (MiB) |", "|---|---:|---:|"]  # fmt: skip
    for name, c in doc["cases"].items():
        lines.append(f"| {name} | {c['seconds']} | {c['peak_rss_mib']} |")
    lines += ["", "| goal | measured | target | met |", "|---|---:|---:|---|"]
    for g in doc["goals"]:
        target = "–" if g["goal"] is None else f"≤ {g['goal']}"
        met = "–" if g["met"] is None else ("yes" if g["met"] else "no")
        lines.append(f"| {g['what']} | {g['measured']} | {target} | {met} |")
    lines += ["", "| check | ok |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in doc["checks"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--tiny", action="store_true")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "rerun")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    name = "tiny" if args.tiny else "quick" if args.quick else "full"
    doc = run(name, args.work)
    doc["date"] = dt.date.today().isoformat()  # the report's title shows it
    save_report(args.out, "rerun", name, doc, markdown(doc))


if __name__ == "__main__":
    main()
