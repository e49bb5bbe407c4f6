"""reprstore's ``--device`` rows: its products on an accelerator against the same card's
GEMM ceiling.

``python -m benchmarks.gpu [--quick | --tiny] [--device cuda] [--repeats R] [--work DIR]
[--out DIR]``

Rows, each in a fresh subprocess (:mod:`benchmarks.harness`: imports, opening the store
and the first CUDA call are untimed; the time covers reading the chunks and everything
after), the sides interleaved ``R`` times and the fastest kept:

* ``ceiling``: torch's ``AᵀB`` on the device, float64 and float32 (TF32 off), GFLOP/s;
* ``grid``: the exact k × k layer grid (feature route) with float64 and float32 products
  on the device: GFLOP/s of its 2·N·(Σp² + Σq² + pairs·p·q) and their share of the
  ceiling of that precision, the largest difference from the float64 oracle;
* ``mbgrid``: the minibatch grid (linear, rbf; float32 products) on the device, against
  the float64 oracle of the same batches (the peers run on the CPU in
  ``python -m benchmarks``; their device is not an option of this script);
* ``wide``: the sample route's Gram tiles (linear at n × p wide, rbf with the exact
  median) on the device: GFLOP/s of the plan's count, the difference from numpy float64
  on the CPU where its n × n kernels fit.

``--device cpu`` runs the same rows with numpy's products and torch's CPU GEMM (it checks
the script where no GPU is lent). ``--device cuda`` without a GPU stops with one line
before anything runs. Writes ``<date>-gpu[-quick|-tiny].json`` and ``.md`` into ``--out``
(default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import config, wide
from benchmarks.runner import TASK_REPR, Runner, _dataset, _grid, _machine, _versions

HERE = Path(__file__).resolve().parent
TASK_GEMM = "benchmarks.tasks_io:gemm"
TASK_MBO = "benchmarks.tasks_minibatch:minibatch_oracle"


@dataclass(frozen=True)
class GpuSizes:
    name: str
    grid: config.Sizes  # the grid and minibatch grid (grid_n, grid_layers, features, batch)
    wide_linear: tuple[int, int]  # (n, p)
    wide_rbf: tuple[int, int]


FULL = GpuSizes("full", config.FULL, (10_000, 32_768), (50_000, 256))
QUICK = GpuSizes("quick", config.QUICK, (2_000, 32_768), (10_000, 256))
TINY = GpuSizes("tiny", config.TINY, (300, 1_536), (600, 32))


def _check_device(device: str) -> None:
    """Stop in one line where ``device`` is a GPU this machine does not have."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(
            f"benchmarks.gpu: --device {device} needs a CUDA GPU and torch.cuda.is_available() "
            "is False here: nothing was measured (--device cpu checks the script on the CPU)."
        )


class GpuBench:
    """The rows of one run: measured through :class:`benchmarks.runner.Runner`."""

    def __init__(self, sizes: GpuSizes, device: str, work: Path, log: Path, repeats: int,
                 mem_cap: int) -> None:  # fmt: skip
        self.sizes, self.device, self.repeats = sizes, device, repeats
        self.runner = Runner(sizes.grid, work, mem_cap, log, peers=False)
        self.wide = wide.Bench(wide.TINY, work / "wide", log, mem_cap, repeats)
        self.ceilings: dict[str, float] = {}

    def ceiling(self) -> None:
        s = self.sizes.grid
        for dtype in ("float64", "float32"):
            params = {"dtype": dtype, "rows": s.gemm_rows, "features": s.features,
                      "device": self.device}  # fmt: skip
            row = self.runner.run("ceiling", f"torch GEMM {dtype} on {self.device}", TASK_GEMM,
                                  params)  # fmt: skip
            if row["status"] == "ok":
                self.ceilings[dtype] = float(row["gflops"])

    def _share(self, row: dict[str, Any], flops: float | None, dtype: str) -> None:
        if row["status"] == "ok" and flops:
            row["gflops"] = flops / row["wall_s"] / 1e9
            if dtype in self.ceilings:
                row["ceiling_share"] = row["gflops"] / self.ceilings[dtype]

    def grid(self) -> None:
        s = self.sizes.grid
        ds, m = _dataset(self.runner, s.grid_n, s.grid_layers)
        dev, g = self.device, f"{s.grid_layers}×{s.grid_layers}"
        jobs = [(f"reprstore grid {g}, {p} products on {dev}", TASK_REPR,
                 _grid(ds, mode="grid", precision=p, device=dev))
                for p in ("float64", "float32")]  # fmt: skip
        oracle = np.asarray(m["oracle"]["debiased"])
        rows = self.runner.best_of(self.repeats, "grid", jobs, n=s.grid_n)
        for row, p in zip(rows, ("float64", "float32"), strict=True):
            self._share(row, row.get("flops"), p)
            if row["status"] == "ok":
                row["max_abs_diff"] = float(np.max(np.abs(np.asarray(row["values"]) - oracle)))

    def mbgrid(self) -> None:
        s = self.sizes.grid
        ds, _m = _dataset(self.runner, s.grid_n, s.grid_layers)
        dev, b = self.device, s.batch_size
        mb = {"mode": "grid", "estimator": "minibatch", "batch_size": b, "device": dev}
        oracle = {
            k: self.runner.run("mbgrid", f"numpy float64 oracle, same batches ({k})", TASK_MBO,
                               _grid(ds, batch_size=b, kernel=k), n=s.grid_n)
            for k in ("linear", "rbf")
        }  # fmt: skip
        jobs = [
            (f"reprstore minibatch grid (B={b}, linear) on {dev}", TASK_REPR, _grid(ds, **mb)),
            (f"reprstore minibatch grid (B={b}, rbf) on {dev}", TASK_REPR,
             _grid(ds, kernel="rbf", **mb)),
            (f"reprstore minibatch grid (B={b}, linear, float32 products) on {dev}", TASK_REPR,
             _grid(ds, precision="float32", **mb)),
        ]  # fmt: skip
        for row in self.runner.best_of(self.repeats, "mbgrid", jobs, n=s.grid_n):
            ref = oracle["rbf" if "rbf" in row["method"] else "linear"]
            if row["status"] == "ok" and ref.get("values"):
                diff = np.asarray(row["values"]) - np.asarray(ref["values"])
                row["max_abs_diff"] = float(np.max(np.abs(diff)))

    def wide_pairs(self) -> None:
        dev = self.device
        for kernel, (n, p) in (("linear", self.sizes.wide_linear), ("rbf", self.sizes.wide_rbf)):
            store = self.wide.prepare(n, p)
            memory = wide.RBF_MEMORY if kernel == "rbf" else wide.SAMPLE_MEMORY
            base = {"store": str(store), "kernel": kernel, "route": "samples", "memory": memory}
            jobs = [(f"reprstore sample route ({kernel}), {prec} products on {dev}",
                     wide.TASK_REPR, {**base, "device": dev, "precision": prec})
                    for prec in ("float64", "float32")]  # fmt: skip
            rows = self.runner.best_of(self.repeats, "wide", jobs, n=n, p=p, kernel=kernel)
            ref = self.runner.run("wide", f"numpy float64 in memory ({kernel}, CPU)",
                                  wide.TASK_NUMPY, {"store": str(store), "kernel": kernel},
                                  n=n, p=p, kernel=kernel)  # fmt: skip
            for row, prec in zip(rows, ("float64", "float32"), strict=True):
                self._share(row, row.get("plan_flops"), prec)
                if row["status"] == "ok" and ref["status"] == "ok":
                    row["max_abs_diff"] = abs(float(row["cka"]) - float(ref["cka"]))


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# reprstore on {doc['device']} ({doc['date']}, set {doc['set']})",
        "",
        f"`{doc['command']}`; {doc['machine'].get('cpu', '')}; each row the fastest of its "
        "interleaved runs; GFLOP/s from each task's FLOP count (the grid's GEMM work, the "
        "sample route's plan) and their share of the same card's GEMM ceiling of that "
        "precision.",
        "",
        "| case | method | n | time (s) | GFLOP/s | share of ceiling | max abs diff | "
        "peak RSS (MiB) | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["rows"]:
        if r.get("case") == "prepare":
            continue

        def f(key: str, fmt: str, row: dict[str, Any] = r) -> str:
            v = row.get(key)
            return "" if v is None else format(v, fmt)

        lines.append(
            f"| {r['case']} | {r['method']} | {r.get('n', '')} | {f('wall_s', '.2f')} | "
            f"{f('gflops', '.3g')} | {f('ceiling_share', '.0%')} | {f('max_abs_diff', '.1e')} "
            f"| {f('peak_rss_mib', '.0f')} | {r['status']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu",
                                 description=(__doc__ or "").split("\n")[0])  # fmt: skip
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="the small sizes (a few minutes)")
    which.add_argument("--tiny", action="store_true", help="toy sizes: checks that all runs")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (default: cuda)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs; fastest kept")
    ap.add_argument("--work", type=Path, default=HERE / "work", help="data/store cache")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    args = ap.parse_args(argv)
    _check_device(args.device)
    import psutil

    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    cap = int(min(24 * 1024**3, 0.75 * psutil.virtual_memory().available))
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{dt.date.today():%Y-%m-%d}-gpu" + ("" if sizes is FULL else f"-{sizes.name}")
    log = args.out / f"{stem}.log"
    log.write_text("")
    bench = GpuBench(sizes, args.device, args.work, log, max(1, args.repeats), cap)
    print(f"reprstore on {args.device}, set {sizes.name!r} (log: {log})", flush=True)
    t0 = time.monotonic()
    bench.ceiling()
    bench.grid()
    bench.mbgrid()
    bench.wide_pairs()
    doc = {
        "set": sizes.name,
        "device": args.device,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.gpu", *(argv or sys.argv[1:])]),
        "machine": {**_machine(), "load_avg": os.getloadavg()[0], **_gpu(args.device)},
        "versions": _versions(),
        "ceilings_gflops": bench.ceilings,
        "seconds": time.monotonic() - t0,
        "rows": bench.runner.rows,
    }
    for row in doc["rows"]:
        row.pop("values", None)
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=str))
    (args.out / f"{stem}.md").write_text(markdown(doc))
    print(f"wrote {args.out / stem}.json, .md ({time.monotonic() - t0:.0f} s)")


def _gpu(device: str) -> dict[str, Any]:
    """The card's name and memory (nothing for the CPU)."""
    if not device.startswith("cuda"):
        return {}
    import torch

    props = torch.cuda.get_device_properties(torch.device(device))
    return {"gpu": props.name, "gpu_memory_gib": props.total_memory / 1024**3}


if __name__ == "__main__":
    main()
