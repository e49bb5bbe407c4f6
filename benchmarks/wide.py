"""Exact CKA of wide representations (p ≫ n): reprstore's sample route against its feature
route and numpy in memory.

``python -m benchmarks.wide [--quick | --tiny] [--repeats R] [--work DIR] [--out DIR]``

Cases, each pair of float16 representations made by ``reprstore.import_files`` into a real
store (``--work``, default ``benchmarks/work/wide``; made once per size and reused):

* ``linear``: debiased linear CKA at n = 2,000, p ∈ {8,192, 32,768, 98,304} and at
  n = 10,000, p = 32,768, by

  - reprstore, sample route (``route="samples"``, ``memory="2GB"``, the default budget);
  - reprstore, feature route (``route="features"``, ``memory="24GB"``): the planner refuses
    what does not fit (p × p statistics), a plan estimated over 10 min is skipped, and a run
    is killed past 10 min or over the memory cap; each records why;
  - numpy float64 in memory: both arrays loaded as float64 and column-centred,
    K = XXᵀ, L = YYᵀ, debiased HSIC (Song et al. 2012) in plain numpy; skipped where the
    estimate exceeds 8 GiB.

* ``rbf``: debiased RBF CKA (σ² = 0.5² × the median of all n² squared distances of the
  centred rows, diagonal included), p = 256, n ∈ {10,000, 30,000, 50,000}, by the sample
  route under ``memory="4GB"`` and by numpy where the n × n float64 kernels fit (8 GiB).

``--quick``: n = 2,000 with p ∈ {8,192, 32,768} and the RBF case at n = 10,000 (a few
minutes). ``--tiny``: a smoke test of every code path at toy sizes.

Every measurement runs in a fresh subprocess (:mod:`benchmarks.harness`): imports, opening
the store and dropping its files from the page cache are not timed; the time covers reading
the chunks and everything after. Peak RSS is the child's ``VmHWM`` (reset after imports; the
"process" column adds back the RSS at that point, i.e. the interpreter and its imports).
Writes ``<date>-wide[-quick|-tiny].json`` and ``.md`` into ``--out`` (default
``benchmarks/results``).

Data: per representation a low-rank signal plus noise plus a per-feature mean,
X = Z·Wx + E + μx and Y = [U, Z₁…₄₈]·Wy + E' + μy, with Z (n × 64) and U (n × 16) standard
normal latents and Wx, Wy (64 × p) with a decaying spectrum (Y shares 48 of X's 64 latent
directions, but its 16 strongest are its own); fixed seeds, generated in row blocks of about
64 MiB into float32 ``.npy`` files (appended, not memory-mapped), imported as float16, the
``.npy`` deleted afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks.harness import Skip

HERE = Path(__file__).resolve().parent
GiB = 1024**3
MODEL = "wide"
SEED = 20261203
RANK = 64
SHARED = 48
BLOCK_BYTES = 64 * 1024**2
SIGMA = 0.5
SAMPLE_MEMORY = "2GB"
RBF_MEMORY = "4GB"
FEATURE_MEMORY = "24GB"
#: Bytes a numpy reference may need before it is skipped.
NUMPY_LIMIT = 8 * GiB
#: Seconds the feature route may take (by the plan's estimate, then by the clock).
FEATURE_LIMIT_S = 600.0

TASK_REPR = "benchmarks.wide:reprstore_task"
TASK_NUMPY = "benchmarks.wide:numpy_task"
TASK_PREPARE = "benchmarks.wide:prepare_task"


@dataclass(frozen=True)
class Sizes:
    name: str
    linear: tuple[tuple[int, int], ...]
    rbf_n: tuple[int, ...]
    rbf_p: int = 256
    timeout: float = 1800.0


FULL = Sizes("full", ((2_000, 8_192), (2_000, 32_768), (2_000, 98_304), (10_000, 32_768)),
             (10_000, 30_000, 50_000))  # fmt: skip
QUICK = Sizes("quick", ((2_000, 8_192), (2_000, 32_768)), (10_000,), timeout=900.0)
TINY = Sizes("tiny", ((300, 512), (300, 1_536)), (600,), rbf_p=32, timeout=300.0)


# ---------------------------------------------------------------------------- data


def store_path(work: Path, n: int, p: int) -> Path:
    return work / f"n{n}-p{p}.zarr"


def _fixed(p: int) -> dict[str, np.ndarray]:
    """The matrices shared by every row block of width ``p``."""
    rng = np.random.default_rng([SEED, p])
    decay = (1.0 + np.arange(RANK)) ** -0.5
    decay *= 2.0 / np.linalg.norm(decay)  # signal variance ≈ 4 per feature, noise 1
    return {
        "wx": (decay[:, None] * rng.standard_normal((RANK, p))).astype(np.float32),
        "wy": (decay[:, None] * rng.standard_normal((RANK, p))).astype(np.float32),
        "mx": rng.normal(0.5, 1.0, p).astype(np.float32),
        "my": rng.normal(-0.3, 1.0, p).astype(np.float32),
    }


def generate(npy_dir: Path, n: int, p: int) -> list[Path]:
    """Write ``x.npy`` and ``y.npy`` (float32, n × p) block by block; return their paths."""
    npy_dir.mkdir(parents=True, exist_ok=True)
    fx = _fixed(p)
    paths = [npy_dir / "x.npy", npy_dir / "y.npy"]
    # plain appends, not a memory map: the dirty pages of a map would count as RSS
    outs = [open(f, "wb") for f in paths]  # noqa: SIM115
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
              "fortran_order": False, "shape": (n, p)}  # fmt: skip
    for fh in outs:
        np.lib.format.write_array_header_1_0(fh, header)
    rows = max(1, BLOCK_BYTES // (4 * p))
    for start in range(0, n, rows):
        m = min(rows, n - start)
        rng = np.random.default_rng([SEED, p, start])
        z = rng.standard_normal((m, RANK), dtype=np.float32)
        u = rng.standard_normal((m, RANK - SHARED), dtype=np.float32)
        x = z @ fx["wx"]
        x += rng.standard_normal((m, p), dtype=np.float32)
        x += fx["mx"]
        x.tofile(outs[0])
        del x
        y = np.concatenate([u, z[:, :SHARED]], axis=1) @ fx["wy"]
        y += rng.standard_normal((m, p), dtype=np.float32)
        y += fx["my"]
        y.tofile(outs[1])
        del y
    for fh in outs:
        fh.close()
    return paths


def prepare_task(params: dict[str, Any]) -> Any:
    """Generate the data of one size and import it (float16) into a fresh store."""
    import reprstore

    store, n, p = Path(params["store"]), int(params["n"]), int(params["p"])

    def run() -> dict[str, Any]:
        if store.exists():
            shutil.rmtree(store)
        npy_dir = store.with_suffix(".npy.d")
        t0 = time.perf_counter()
        files = generate(npy_dir, n, p)
        t_gen = time.perf_counter() - t0
        reprstore.import_files(
            str(store), [str(f) for f in files], name=MODEL, layer="{stem}", dtype="float16"
        )
        shutil.rmtree(npy_dir)
        xa, ya = _arrays(str(store))
        stored = int(xa.nbytes_stored() + ya.nbytes_stored())
        manifest = {
            "n": n, "p": p, "store": str(store), "stored_dtype": str(xa.dtype),
            "chunks": list(xa.chunks), "nbytes_stored": stored,
            "generate_s": t_gen, "import_s": time.perf_counter() - t0 - t_gen,
        }  # fmt: skip
        store.with_suffix(".json").write_text(json.dumps(manifest, indent=1))
        return manifest

    return run


def _arrays(store: str) -> tuple[Any, Any]:
    """The stored x and y of ``store`` (zarr arrays, through the package's Store API)."""
    import reprstore

    st = reprstore.Store.open(store)
    (kx,) = st.select_keys(f"model={MODEL},layer=x")
    (ky,) = st.select_keys(f"model={MODEL},layer=y")
    return st.array(kx), st.array(ky)


def _evict(store: str) -> None:
    from benchmarks.synth import evict

    evict(Path(store, "reprs"))


# --------------------------------------------------------------------------- tasks


def _spec(kernel: str) -> Any:
    from reprstore.engine import arrays as engine

    if kernel == "rbf":
        return engine.cka_spec(estimator="debiased", kernel="rbf", sigma=SIGMA)
    return engine.cka_spec(estimator="debiased", kernel="linear")


def reprstore_task(params: dict[str, Any]) -> Any:
    """``reprstore.engine.arrays.measure_arrays`` of (x, y) with ``route`` and ``memory``
    (and ``device``, ``precision`` where given).

    The plan is made first, untimed (``dry_run``): a planner refusal is recorded as
    ``refused: …``, a plan estimated over ``max_plan_s`` as ``skipped: …``.
    """
    from reprstore.engine import arrays as engine
    from reprstore.engine.planner import DryRun
    from reprstore.errors import ReprstoreError

    x, y = _arrays(params["store"])
    spec = _spec(params["kernel"])
    kw = {"route": params["route"], "memory": params["memory"]}
    kw.update(device=params.get("device", "cpu"), precision=params.get("precision", "float64"))
    try:
        engine.measure_arrays([x, y], [(0, 1)], [spec], dry_run=True, **kw)
    except DryRun as stop:
        plan = stop.plan
    except ReprstoreError as err:
        raise Skip(f"refused: {err}") from err
    limit = params.get("max_plan_s")
    if limit is not None and plan.seconds > limit:
        raise Skip(f"too slow: the plan estimates {plan.seconds:.0f} s (> {limit:.0f} s): "
                   f"{plan.line()}")  # fmt: skip
    _evict(params["store"])

    def run() -> dict[str, Any]:
        lines: list[str] = []
        out = engine.measure_arrays([x, y], [(0, 1)], [spec], report=lines.append, **kw)
        r = out.pairs[(0, 1)]
        return {
            "cka": float(r["cka"]),
            "route": r["route"],
            "sigma2_a": r.get("bandwidth_a"),
            "sigma2_b": r.get("bandwidth_b"),
            "sigma_method": r.get("sigma_method"),
            "plan": lines[0] if lines else plan.line(),
            "plan_s": plan.seconds,
            "plan_flops": plan.flops,
            "plan_memory_mib": plan.memory / 2**20,
        }

    return run


def hsic1(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Debiased HSIC (Song et al. 2012) of two n × n kernels whose diagonals are zero."""
    n = k.shape[0]
    tr = float(np.vdot(k, l))
    k1, l1 = k.sum(axis=1), l.sum(axis=1)
    return (tr + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 * float(k1 @ l1) / (n - 2)) / (
        n * (n - 3)
    )


def _load(a: Any) -> np.ndarray:
    x = np.asarray(a[:], dtype=np.float64)
    x -= x.mean(axis=0)
    return x


def _rbf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """exp(−D / 2σ²) of the rows of ``x`` (in place of its Gram matrix), σ² = SIGMA²·median D."""
    d = x @ x.T
    sq = np.diagonal(d).copy()
    d *= -2.0
    d += sq[:, None]
    d += sq[None, :]
    np.maximum(d, 0.0, out=d)
    np.fill_diagonal(d, 0.0)
    s2 = SIGMA**2 * float(np.median(d))
    d *= -1.0 / (2.0 * s2)
    np.exp(d, out=d)
    return d, s2


def numpy_need(n: int, p: int, kernel: str) -> int:
    """Bytes the numpy reference holds at its peak (estimate)."""
    if kernel == "rbf":  # one side's kernel, the other's distances, np.median's copy, rows
        return 3 * 8 * n * n + 8 * n * p + 2 * n * p
    return 2 * 8 * n * p + 2 * n * p + 2 * 8 * n * n  # both sides float64, a float16 read, K, L


def numpy_task(params: dict[str, Any]) -> Any:
    """numpy float64 in memory: the n × n kernels and debiased HSIC, as a script would."""
    xa, ya = _arrays(params["store"])
    n, p = (int(s) for s in xa.shape)
    kernel = params["kernel"]
    need = numpy_need(n, p, kernel)
    if need > params.get("limit", NUMPY_LIMIT):
        raise Skip(f"needs ≈ {need / GiB:.1f} GiB in memory (> {NUMPY_LIMIT / GiB:.0f} GiB)")
    _evict(params["store"])

    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        if kernel == "linear":
            x, y = _load(xa), _load(ya)
            k = x @ x.T
            lm = y @ y.T
            del x, y
        else:
            k, out["sigma2_a"] = _rbf(_load(xa))
            lm, out["sigma2_b"] = _rbf(_load(ya))
        np.fill_diagonal(k, 0.0)
        np.fill_diagonal(lm, 0.0)
        out["cka"] = hsic1(k, lm) / np.sqrt(hsic1(k, k) * hsic1(lm, lm))
        return out

    return run


# -------------------------------------------------------------------------- parent


def _call(route: str, memory: str, kernel: str) -> str:
    opts = "kernel='rbf', sigma=0.5" if kernel == "rbf" else "kernel='linear'"
    return (
        f"reprstore.engine.arrays.measure_arrays([x, y], [(0, 1)], "
        f"[cka_spec(estimator='debiased', {opts})], route={route!r}, memory={memory!r})"
    )


def _jobs(store: Path, n: int, p: int, kernel: str) -> list[tuple[str, str, dict[str, Any]]]:
    base = {"store": str(store), "kernel": kernel}
    if kernel == "rbf":
        return [
            ("reprstore sample route", TASK_REPR,
             {**base, "route": "samples", "memory": RBF_MEMORY}),
            ("numpy float64 in memory", TASK_NUMPY, base),
        ]  # fmt: skip
    return [
        ("reprstore sample route", TASK_REPR,
         {**base, "route": "samples", "memory": SAMPLE_MEMORY}),
        ("reprstore feature route", TASK_REPR,
         {**base, "route": "features", "memory": FEATURE_MEMORY, "max_plan_s": FEATURE_LIMIT_S}),
        ("numpy float64 in memory", TASK_NUMPY, base),
    ]  # fmt: skip


def _command(params: dict[str, Any]) -> str:
    if "route" in params:
        return _call(params["route"], params["memory"], params["kernel"])
    if params["kernel"] == "rbf":
        return ("numpy: centre, D = sq. distances, σ² = 0.25·median(D), K = exp(−D/2σ²), "
                "zero diagonals, HSIC₁")  # fmt: skip
    return "numpy: x, y float64, centre, K = x @ x.T, L = y @ y.T, zero diagonals, HSIC₁"


def _status(row: dict[str, Any]) -> tuple[str, str]:
    """(short status, reason) of a result row."""
    s = str(row.get("status", ""))
    for head in ("skipped: refused: ", "skipped: too slow: ", "skipped: "):
        if s.startswith(head):
            short = head.removeprefix("skipped: ").rstrip(": ") or "skipped"
            return ("refused" if short == "refused" else "skipped"), s[len(head) :]
    if s.startswith(("timeout", "killed")):
        return "skipped", s
    return s, ""


class Bench:
    def __init__(self, sizes: Sizes, work: Path, log: Path, mem_cap: int, repeats: int) -> None:
        self.sizes, self.work, self.log = sizes, work, log
        self.mem_cap, self.repeats = mem_cap, repeats
        self.rows: list[dict[str, Any]] = []
        self.prepared: list[dict[str, Any]] = []

    def prepare(self, n: int, p: int) -> Path:
        store = store_path(self.work, n, p)
        manifest = store.with_suffix(".json")
        if manifest.exists() and store.exists():
            return store
        print(f"  preparing n={n} p={p} (generate float32, import float16) …", flush=True)
        r = harness.run_task(
            TASK_PREPARE, {"store": str(store), "n": n, "p": p},
            timeout=3600, mem_cap=self.mem_cap, log=self.log,
        )  # fmt: skip
        if r["status"] != "ok":
            raise SystemExit(f"preparing n={n} p={p} failed: {r['status']} (log: {self.log})")
        print(f"    {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB, "
              f"{r['nbytes_stored'] / 2**20:.0f} MiB stored", flush=True)  # fmt: skip
        self.prepared.append(r)
        return store

    def case(self, case: str, n: int, p: int, kernel: str) -> None:
        store = self.prepare(n, p)
        jobs = _jobs(store, n, p, kernel)
        runs = [[self.measure(*job) for job in jobs] for _ in range(self.repeats)]
        kept = []
        for k, (method, _task, params) in enumerate(jobs):
            reps = [rep[k] for rep in runs]
            ok = [r for r in reps if r["status"] == "ok"]
            best = dict(min(ok, key=lambda r: r["wall_s"])) if ok else dict(reps[0])
            if ok:
                best["wall_s_runs"] = [r["wall_s"] for r in ok]
                best["peak_rss_mib"] = max(r["peak_rss_mib"] for r in ok)
                best["process_peak_rss_mib"] = max(r["process_peak_rss_mib"] for r in ok)
            short, why = _status(best)
            best.update(case=case, n=n, p=p, kernel=kernel, method=method, short=short,
                        reason=why, command=_command(params))  # fmt: skip
            kept.append(best)
        ref = next((r for r in kept if r["method"].startswith("numpy") and "cka" in r), None)
        for r in kept:
            if ref is not None and "cka" in r and r is not ref:
                r["abs_diff_vs_numpy"] = abs(r["cka"] - ref["cka"])
        self.rows.extend(kept)

    def measure(self, method: str, task: str, params: dict[str, Any]) -> dict[str, Any]:
        timeout = FEATURE_LIMIT_S if "max_plan_s" in params else self.sizes.timeout
        t0 = time.monotonic()
        r = harness.run_task(task, params, timeout=timeout, mem_cap=self.mem_cap, log=self.log)
        if r["status"] == "ok":
            r["process_peak_rss_mib"] = r["rss_at_start_mib"] + r["peak_rss_mib"]
        r["load_avg"] = os.getloadavg()[0]
        wall = f"{r['wall_s']:8.2f} s" if "wall_s" in r else " " * 10
        rss = f"{r['peak_rss_mib']:7.0f} MiB" if "peak_rss_mib" in r else " " * 11
        cka = f"cka {r['cka']:.10f}" if "cka" in r else r["status"][:90]
        print(f"  {method:<26} {wall} {rss}  {cka}  ({time.monotonic() - t0:.0f} s)", flush=True)
        return r


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.wide",
                                 description=(__doc__ or "").split("\n")[0])  # fmt: skip
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="the small cases (a few minutes)")
    which.add_argument("--tiny", action="store_true", help="toy sizes: checks that all runs")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved runs; fastest kept")
    ap.add_argument("--work", type=Path, default=HERE / "work" / "wide", help="store cache")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    ap.add_argument("--mem-cap", type=float, default=None,
                    help="GiB of RSS before a measurement is killed "
                    "(default: 24, at most 90%% of available memory)")  # fmt: skip
    args = ap.parse_args(argv)
    import psutil

    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    avail = psutil.virtual_memory().available
    cap = int(min((args.mem_cap or 24) * GiB, 0.9 * avail))
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{dt.date.today():%Y-%m-%d}-wide" + ("" if sizes is FULL else f"-{sizes.name}")
    log = args.out / f"{stem}.log"
    log.write_text("")
    bench = Bench(sizes, args.work, log, cap, max(1, args.repeats))
    print(f"wide CKA benchmark, set {sizes.name!r} (log: {log}; memory cap "
          f"{cap / GiB:.1f} GiB)", flush=True)  # fmt: skip
    t0 = time.monotonic()
    for n, p in sizes.linear:
        print(f"[linear n={n} p={p}]", flush=True)
        bench.case("linear", n, p, "linear")
    for n in sizes.rbf_n:
        print(f"[rbf n={n} p={sizes.rbf_p}]", flush=True)
        bench.case("rbf", n, sizes.rbf_p, "rbf")
    from benchmarks.runner import _machine, _versions

    doc = {
        "set": sizes.name,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.wide", *(sys.argv[1:] if argv is None
                                                             else argv)]),
        "repeats": bench.repeats,
        "mem_cap_gib": cap / GiB,
        "machine": _machine(),
        "versions": _versions(),
        "seconds": time.monotonic() - t0,
        "prepared": bench.prepared,
        "rows": bench.rows,
    }  # fmt: skip
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=str))
    (args.out / f"{stem}.md").write_text(markdown(doc))
    print(f"wrote {args.out / stem}.json, .md ({time.monotonic() - t0:.0f} s)")


def _f(x: Any, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"# Exact CKA of wide representations ({doc['set']}, {doc['date']})",
        "",
        f"`{doc['command']}` — {m['cores']} cores, {m['memory_gib']:.0f} GiB, {m['cpu']}; "
        f"load average at start {m['load_avg_at_start'][0]:.1f}; "
        f"{doc['repeats']} run(s) per method (fastest kept); memory cap "
        f"{doc['mem_cap_gib']:.1f} GiB; {doc['seconds']:.0f} s in all.",
        "",
        "Each measurement in a fresh process; time excludes imports and set-up (opening the "
        "store, planning, dropping the files from the page cache), and includes reading the "
        "float16 chunks. Peak RSS: VmHWM of the process reset after imports ('above "
        "imports'), and the same plus the RSS at that point ('process'). |Δ|: absolute "
        "difference from the numpy float64 CKA of the same data.",
        "",
        "| case | n | p | method | status | time (s) | peak RSS above imports (MiB) "
        "| peak RSS process (MiB) | CKA | \\|Δ\\| vs numpy | route / plan |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        status = r["short"] if r["short"] == "ok" else f"{r['short']}: {r['reason']}"
        status = status.replace("|", "\\|")
        extra = r.get("plan", "") if r.get("route") else ""
        if r.get("sigma2_a") is not None:
            extra += f"; σ²: {r['sigma2_a']:.6g}, {r['sigma2_b']:.6g}"
        lines.append(
            f"| {r['case']} | {r['n']:,} | {r['p']:,} | {r['method']} | {status} "
            f"| {_f(r.get('wall_s'), '.2f')} | {_f(r.get('peak_rss_mib'), '.0f')} "
            f"| {_f(r.get('process_peak_rss_mib'), '.0f')} | {_f(r.get('cka'), '.10f')} "
            f"| {_f(r.get('abs_diff_vs_numpy'), '.1e')} | {extra} |"
        )
    if doc["prepared"]:
        lines += ["", "Data prepared in this run (generate float32 `.npy` in row blocks, "
                  "`reprstore.import_files(…, dtype='float16')`):", "",
                  "| n | p | time (s) | peak RSS above imports (MiB) | stored (MiB) | chunks |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in doc["prepared"]:
            lines.append(
                f"| {r['n']:,} | {r['p']:,} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} "
                f"| {r['nbytes_stored'] / 2**20:.0f} | {r['chunks']} |"
            )
    lines += ["", "Commands:", "", f"- `{doc['command']}`"]
    for c in dict.fromkeys(r["command"] for r in doc["rows"]):
        lines.append(f"- `{c}`")
    v = doc["versions"]
    lines += [
        "",
        "Versions: " + ", ".join(f"{k} {v[k]}" for k in ("python", "reprstore", "numpy", "zarr",
                                                          "dask") if k in v)
        + (f"; BLAS {v['blas']}" if "blas" in v else ""),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
