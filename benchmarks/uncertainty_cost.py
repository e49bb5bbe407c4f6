"""Cost of ``--ci`` and ``--permutations`` against the plain comparison, on one pair.

``python -m benchmarks.uncertainty_cost`` (default: one 50,000 × 768 pair of float32
representations, correlated through a shared 64-dimensional signal) times, each in this
process after one warm-up on a small pair:

* plain debiased CKA (one pass);
* ``ci=0.95, bootstrap=R`` (the delete-group jackknife: one grouped pass);
* ``permutations=P`` on the default (debiased) estimator (``auto``: exact row
  permutations when cheap, otherwise within 256-row batches, as the result says);
* plain minibatch CKA and minibatch with ``ci`` and ``permutations``;
* a second measure, cca (mean canonical correlation), through the engine: plain, with
  ``ci`` (the same grouped pass, then G × its finalize: two 768-wide eigendecompositions
  and an SVD per group) and with ``--cca-permutations`` row permutations (each one p × q
  product over all rows and one finalize; few, since each costs a full cross product).

Writes ``benchmarks/results/<date>-uncertainty.json`` and ``.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def pair(n: int, p: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 (n, p) representations sharing a 64-dimensional signal."""
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n, 64), dtype=np.float32)
    x = signal @ rng.standard_normal((64, p), dtype=np.float32)
    x += 2.0 * rng.standard_normal((n, p), dtype=np.float32)
    y = signal @ rng.standard_normal((64, p), dtype=np.float32)
    y += 2.0 * rng.standard_normal((n, p), dtype=np.float32)
    return x, y


def timed(label: str, fn: Any, repeat: int = 1) -> dict[str, Any]:
    """The fastest of ``repeat`` runs (the machine is shared: the fastest is the least
    disturbed), with every run's time."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        r = fn()
        runs.append(round(time.perf_counter() - start, 2))
    got = r if isinstance(r, dict) else {k: getattr(r, k, None) for k in
                                         ("cka", "cka_lo", "cka_hi", "cka_p", "ci_method",
                                          "permutation_method")}  # fmt: skip
    name = "cca" if "cca" in got else "cka"
    row = {"case": label, "seconds": min(runs), "runs": runs, "measure": name,
           "value": got[name]}  # fmt: skip
    for k in ("lo", "hi", "p"):
        if got.get(f"{name}_{k}") is not None:
            row[k] = got[f"{name}_{k}"]
    for k in ("ci_method", "permutation_method"):
        if got.get(k) is not None:
            row[k] = got[k]
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    import reprstore
    from reprstore.engine.arrays import measure_arrays
    from reprstore.uncertainty import options

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--p", type=int, default=768)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--memory", default="2GB")
    ap.add_argument("--cca-permutations", type=int, default=20)
    ap.add_argument("--cases", default="plain,ci,perm,mb,mb_ci_perm,cca,cca_ci,cca_perm")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest counts")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    x, y = pair(args.n, args.p)
    small = pair(500, 16, seed=1)
    reprstore.cka(*small, ci=0.95, permutations=9, seed=0)  # warm-up: imports, BLAS
    mem = {"memory": args.memory}
    b = args.batch_size
    cases = {
        "plain": ("plain debiased", lambda: reprstore.cka(x, y, **mem)),
        "ci": (f"debiased --ci 0.95 --bootstrap {args.bootstrap}",
               lambda: reprstore.cka(x, y, ci=0.95, bootstrap=args.bootstrap, seed=1, **mem)),
        "perm": (f"debiased --permutations {args.permutations}",
                 lambda: reprstore.cka(x, y, permutations=args.permutations, seed=1,
                                       batch_size=b, **mem)),
        "mb": (f"plain minibatch B={b}",
               lambda: reprstore.cka(x, y, estimator="minibatch", batch_size=b, **mem)),
        "mb_ci_perm": (f"minibatch B={b} --ci 0.95 --bootstrap {args.bootstrap} "
                       f"--permutations {args.permutations}",
                       lambda: reprstore.cka(x, y, estimator="minibatch", batch_size=b,
                                             ci=0.95, bootstrap=args.bootstrap,
                                             permutations=args.permutations, seed=1, **mem)),
    }  # fmt: skip

    def cca(**kw: Any) -> dict[str, Any]:
        unc = options(seed=1, **kw) if kw else None
        out = measure_arrays([x, y], [(0, 1)], "cca", uncertainty=unc, **mem)
        return out.pairs[(0, 1)]

    rc = args.cca_permutations
    cases.update({
        "cca": ("plain cca", lambda: cca()),
        "cca_ci": (f"cca --ci 0.95 --bootstrap {args.bootstrap}",
                   lambda: cca(ci=0.95, bootstrap=args.bootstrap)),
        "cca_perm": (f"cca --permutations {rc}", lambda: cca(permutations=rc)),
    })  # fmt: skip
    rows = [timed(*cases[c], repeat=args.repeat) for c in args.cases.split(",")]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "n": args.n, "p": args.p, "memory": args.memory, "peak_rss_mib": round(peak),
        "command": " ".join(["python -m benchmarks.uncertainty_cost", *(argv or sys.argv[1:])]),
        "rows": rows,
    }  # fmt: skip
    plain = {r["case"].split(" ")[1]: r["seconds"] for r in rows if r["case"].startswith("plain")}
    lines = [
        f"# Cost of --ci and --permutations ({args.n:,} × {args.p} pair, float32, "
        f"--memory {args.memory})", "",
        "| case | seconds | × plain | value | interval / p | method |",
        "|---|---:|---:|---:|---|---|",
    ]  # fmt: skip
    for r in rows:
        words = r["case"].split(" ")
        kind = "minibatch" if "minibatch" in r["case"] else words[words[0] == "plain"]
        ref = plain.get("debiased" if kind == "debiased" else kind)
        ratio = f"{r['seconds'] / ref:.1f}" if ref else ""
        extra = ""
        if "lo" in r:
            extra += f"[{r['lo']:.4f}, {r['hi']:.4f}] "
        if "p" in r:
            extra += f"p = {r['p']:.4g}"
        method = "; ".join(str(r[k]) for k in ("ci_method", "permutation_method") if k in r)
        lines.append(f"| {r['case']} | {r['seconds']} | {ratio} | {r['measure']} "
                     f"{r['value']:.4f} | {extra} | {method} |")  # fmt: skip
    lines += ["", f"Fastest of {args.repeat} run(s) per case (every run: the .json). Peak RSS "
              f"{peak:.0f} MiB. Command: `{report['command']}`"]  # fmt: skip
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        stem = RESULTS / f"{dt.date.today().isoformat()}-uncertainty"
        stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
