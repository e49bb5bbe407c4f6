"""Calibration of candidate intervals for debiased linear CKA (evidence for docs/uncertainty.md).

``python -m benchmarks.uncertainty_calibration N P G R TRIALS`` draws TRIALS datasets of
N rows from X ~ N(0, I_P), Y = X·A + E (population CKA in closed form), hashes rows into
G groups, and reports how often four 95 % intervals cover the population value:

* ``jackknife_t``: delete-group jackknife SE, estimate ± t_{G−1}·SE (what reprstore uses);
* ``half_pct`` / ``half_t``: random half-samples of the groups (R of them), percentile
  and ± t·SE;
* ``poisson_pct``: Poisson(1) group bootstrap (R resamples), percentile. Repeated rows
  bias the unbiased HSIC upwards by about p/n, which this shows.

The estimator is a plain float64 oracle written on group sums here, independent of the
package; only the group and weight definitions come from reprstore.stats.resample.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from reprstore.stats import resample as rs


def _hsic1(n, sx, sqx, sy, sqy, cross, ay, bx, ab):  # type: ignore[no-untyped-def]
    tr = (cross**2).sum() - ab
    sk, sl = sx @ sx - sqx, sy @ sy - sqy
    skl = sx @ cross @ sy - ay @ sy - bx @ sx + ab
    return (tr + sk * sl / ((n - 1) * (n - 2)) - 2 * skl / (n - 2)) / (n * (n - 3))


def group_sums(x: np.ndarray, y: np.ndarray, g: np.ndarray, groups: int) -> dict:
    a, b = (x * x).sum(1), (y * y).sum(1)

    def gs(v: np.ndarray) -> np.ndarray:
        out = np.zeros((groups, *v.shape[1:]))
        np.add.at(out, g, v)
        return out

    return {
        "n": gs(np.ones(len(x))), "sx": gs(x), "sy": gs(y), "sqx": gs(a), "sqy": gs(b),
        "xx": gs(x[:, :, None] * x[:, None, :]), "yy": gs(y[:, :, None] * y[:, None, :]),
        "xy": gs(x[:, :, None] * y[:, None, :]), "a2": gs(a * a), "b2": gs(b * b),
        "ax": gs(a[:, None] * x), "by": gs(b[:, None] * y), "ay": gs(a[:, None] * y),
        "bx": gs(b[:, None] * x), "ab": gs(a * b),
    }  # fmt: skip


def cka(s: dict) -> np.ndarray:
    n = s["n"]
    hxy = _hsic1(n, s["sx"], s["sqx"], s["sy"], s["sqy"], s["xy"], s["ay"], s["bx"], s["ab"])
    hxx = _hsic1(n, s["sx"], s["sqx"], s["sx"], s["sqx"], s["xx"], s["ax"], s["ax"], s["a2"])
    hyy = _hsic1(n, s["sy"], s["sqy"], s["sy"], s["sqy"], s["yy"], s["by"], s["by"], s["b2"])
    return np.array([hxy / np.sqrt(hxx * hyy)])


def main(argv: list[str]) -> None:
    n, p, groups, reps, trials = (int(v) for v in argv)
    rng = np.random.default_rng(1)
    a = rng.normal(size=(p, p)) * 0.5
    syy = a.T @ a + np.eye(p)
    truth = (a**2).sum() / np.sqrt(p * (syy**2).sum())
    cover = dict.fromkeys(("jackknife_t", "half_pct", "half_t", "poisson_pct"), 0)
    start = time.time()
    for t in range(trials):
        x = rng.normal(size=(n, p))
        y = x @ a + rng.normal(size=(n, p))
        g = rs.group_ids(np.arange(n), t, groups)
        st = rs.stack_states([{k: v[i] for k, v in group_sums(x, y, g, groups).items()}
                              for i in range(groups)])  # fmt: skip
        full = cka({k: v.sum(0) for k, v in st.items()})[0]
        used = np.flatnonzero(st["n"] > 0)
        se = rs.jackknife_se(rs.jackknife_values(st, cka, used))[0]
        lo, hi = rs.t_interval(full, se, 0.95, used.size - 1)
        cover["jackknife_t"] += lo <= truth <= hi
        half = rs.replicate_values(rs.half_sample_weights(t, reps, groups), st, cka)[:, 0]
        lo, hi = rs.percentile_interval(half, 0.95)
        cover["half_pct"] += lo <= truth <= hi
        lo, hi = rs.t_interval(full, rs.half_sample_se(half), 0.95, used.size - 1)
        cover["half_t"] += lo <= truth <= hi
        pois = rs.replicate_values(rs.poisson_weights(t, reps, groups), st, cka)[:, 0]
        lo, hi = rs.percentile_interval(pois, 0.95)
        cover["poisson_pct"] += lo <= truth <= hi
    share = {k: round(v / trials, 4) for k, v in cover.items()}
    print(f"n={n} p=q={p} G={groups} R={reps} trials={trials} population CKA {truth:.4f}: "
          f"{share} ({time.time() - start:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
