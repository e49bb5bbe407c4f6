"""Coverage of ``--ci`` for every measure that offers it (evidence for docs/uncertainty.md).

``python -m benchmarks.coverage [--trials T] [--out DIR]`` draws T datasets per design
from X ~ N(0, diag(s²)) (s from 2 down to 0.3), Y = X·B + E (p = q = 20, B with
N(0, 0.25²) entries, E ~ N(0, I)),
runs reprstore's interval (``measure_arrays(..., uncertainty=options(ci=0.95, ...))``) on
each and counts how often it covers the *population value*. The population value of a
measure is its value on one sample of ``POPULATION_ROWS`` rows of the same model (its
sampling error is ~1e-3 of the intervals' widths at the designs' n).

Designs: p/n ∈ {0.01, 0.1, 0.2} with G = 200 row groups, and G = 50 at p/n = 0.1. Each
interval column is reported twice: the plug-in centre ± t·SE, and the jackknife's
bias-corrected centre G·θ̂ − (G − 1)·mean(θ̂₍₋g₎) ± t·SE (what reprstore uses for the
measures that declare a biased plug-in).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

P = 20
LEVEL = 0.95
POPULATION_ROWS = 1_000_000
MEASURES = ("cka,cka:estimator=biased,cca,svcca:k=10,pwcca,procrustes,shape:alpha=0.5,linreg,"
            "linreg:ridge=0.1,rsa,cosine,pca:k=5")  # fmt: skip
DESIGNS = ((2000, 200), (200, 200), (200, 50), (100, 200))  # (n, groups)


#: Standard deviations of X's features: a spectrum with gaps (PCA's directions exist).
SCALES = np.linspace(2.0, 0.3, P)


def model(rng: np.random.Generator, n: int, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, P)) * SCALES
    return x, x @ b + rng.standard_normal((n, P))


def population(b: np.ndarray) -> dict[str, float]:
    from reprstore.engine.arrays import measure_arrays

    x, y = model(np.random.default_rng(12345), POPULATION_ROWS, b)
    row = measure_arrays([x, y], [(0, 1)], MEASURES).pairs[(0, 1)]
    return {k: float(v) for k, v in row.items() if _scalar(v) and not k.startswith("hsic")}


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)


def run_design(n: int, groups: int, trials: int, b: np.ndarray, pop: dict[str, float]) -> dict:
    from scipy.stats import t

    from reprstore.engine.arrays import measure_arrays
    from reprstore.stats import resample  # noqa: F401  (the package's groups)
    from reprstore.uncertainty import options

    q = float(t.ppf(0.5 + LEVEL / 2, groups - 1))
    rng = np.random.default_rng(n * 1000 + groups)
    hits: dict[str, list[int]] = {}
    for trial in range(trials):
        x, y = model(rng, n, b)
        opts = options(ci=LEVEL, bootstrap=groups, seed=trial)
        row = measure_arrays([x, y], [(0, 1)], MEASURES, uncertainty=opts).pairs[(0, 1)]
        for col, value in pop.items():
            if row.get(f"{col}_se") is None:
                continue
            est, se = float(row[col]), float(row[f"{col}_se"])
            centre = (float(row[f"{col}_lo"]) + float(row[f"{col}_hi"])) / 2.0
            plain = est - q * se <= value <= est + q * se
            corrected = row[f"{col}_lo"] <= value <= row[f"{col}_hi"]
            hits.setdefault(col, [0, 0, 0])
            hits[col][0] += plain
            hits[col][1] += corrected
            hits[col][2] += centre != est
    return {c: {"plain": h[0] / trials, "reprstore": h[1] / trials, "corrected": bool(h[2])}
            for c, h in hits.items()}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from reprstore.metrics.registry import REGISTRY, get

    for name in REGISTRY:  # measure every design, including those --ci refuses
        get(name).ci_limit = lambda opts: None  # type: ignore[method-assign]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coverage", description=__doc__)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    b = np.random.default_rng(7).standard_normal((P, P)) * 0.25
    t0 = time.monotonic()
    pop = population(b)
    rows = {}
    for n, groups in DESIGNS:
        rows[f"n={n} p/n={P / n:g} G={groups}"] = run_design(n, groups, args.trials, b, pop)
        print(f"n={n} G={groups} done ({time.monotonic() - t0:.0f} s)", flush=True)
    sd = math.sqrt(LEVEL * (1 - LEVEL) / args.trials)
    doc = {"date": dt.datetime.now().isoformat(timespec="seconds"), "trials": args.trials,
           "level": LEVEL, "binomial_sd": sd, "population": pop, "designs": rows,
           "seconds": time.monotonic() - t0}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{dt.date.today():%Y-%m-%d}-coverage"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    stem.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))


def markdown(doc: dict) -> str:
    designs = list(doc["designs"])
    cols = sorted({c for d in doc["designs"].values() for c in d})
    lines = [
        f"# Coverage of 95 % intervals ({doc['date']}, {doc['trials']} datasets per design)",
        "",
        f"`python -m benchmarks.coverage --trials {doc['trials']}`; binomial SD "
        f"{doc['binomial_sd']:.3f}. Each cell: reprstore's interval (plug-in centre ± t·SE "
        "in brackets where reprstore centres on the bias-corrected estimate).",
        "",
        "| column | " + " | ".join(designs) + " |",
        "|---|" + "---|" * len(designs),
    ]
    for c in cols:
        cells = []
        for d in designs:
            r = doc["designs"][d].get(c)
            if r is None:
                cells.append("–")
            elif r["corrected"]:
                cells.append(f"{r['reprstore']:.3f} ({r['plain']:.3f})")
            else:
                cells.append(f"{r['reprstore']:.3f}")
        lines.append(f"| `{c}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
