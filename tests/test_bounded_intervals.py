"""Intervals of bounded values stay inside their range: seed summaries and plot bands on
the logit scale of the range (delta method), checked against numpy written here and by a
coverage simulation; a measure's jackknife interval clipped to its range, and said so."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import reprstore
from reprstore.analysis.results import Value
from reprstore.engine.arrays import measure_arrays
from reprstore.report.figures import draw_profile
from reprstore.uncertainty import options


def logit_t_interval(values: np.ndarray, level: float, lo: float, hi: float) -> tuple:
    """x̄ ± t·sem on the logit scale of u = (x − lo)/(hi − lo): logit(ū) ± t·sem/((hi − lo)
    ū(1 − ū)), mapped back (the delta method)."""
    n = values.size
    mean, sem = values.mean(), values.std(ddof=1) / math.sqrt(n)
    q = stats.t.ppf(0.5 + level / 2, n - 1)
    u = (mean - lo) / (hi - lo)
    z, half = math.log(u / (1 - u)), q * sem / ((hi - lo) * u * (1 - u))
    return tuple(lo + (hi - lo) / (1 + math.exp(-v)) for v in (z - half, z + half))


def table(values: np.ndarray, column: str = "cca") -> pd.DataFrame:
    """One row per (group, seed): value[g, s] in ``column``, groups as layers."""
    groups, seeds = values.shape
    return pd.DataFrame([
        dict(a_model="m", a_seed=str(s), a_checkpoint="final", a_layer=f"g{g}", b_model="m",
             b_seed=str(s), b_checkpoint="final", b_layer=f"g{g}", dataset="default",
             n_samples=100, **{column: float(values[g, s])})
        for g in range(groups) for s in range(seeds)
    ])  # fmt: skip


def test_seed_intervals_near_the_bounds_stay_inside() -> None:
    rng = np.random.default_rng(3)
    near_zero = rng.beta(1, 40, size=(30, 3))  # a fraction close to 0, 3 seeds
    near_one = 1 - rng.beta(1, 40, size=(30, 3))
    values = np.vstack([near_zero, near_one, np.ones((1, 3))])  # last: every seed at 1
    out = reprstore.summarize(table(values), by="layer", measure="cca", level=0.95)
    assert ((out["ci_lo"] >= 0) & (out["ci_hi"] <= 1)).all()
    for g in range(60):
        want = logit_t_interval(values[g], 0.95, 0.0, 1.0)
        assert out.iloc[g][["ci_lo", "ci_hi"]].tolist() == pytest.approx(want, rel=1e-9)
    assert out.iloc[-1][["ci_lo", "ci_hi"]].tolist() == [1.0, 1.0]
    plain = values[:60].mean(1) - stats.t.ppf(0.975, 2) * values[:60].std(1, ddof=1) / 3**0.5
    assert (plain < 0).sum() > 10  # the plain t-interval would have left [0, 1]
    assert "logit scale" in out.attrs["interval"] and not out.attrs["notes"]


def test_complement_and_one_sided_ranges() -> None:
    rng = np.random.default_rng(5)
    cka = 1 - rng.beta(1, 30, size=(10, 4))  # 1 − cka close to 0, inside [0, 2]
    out = reprstore.summarize(table(cka, "cka"), by="layer", value="1-cka")
    for g in range(10):
        want = logit_t_interval(1 - cka[g], 0.95, 0.0, 2.0)
        assert out.iloc[g][["ci_lo", "ci_hi"]].tolist() == pytest.approx(want, rel=1e-9)
    r2 = 1 - rng.beta(1, 30, size=(10, 4))  # linreg R² ≤ 1: log scale of 1 − R²
    out = reprstore.summarize(table(r2, "linreg"), by="layer", measure="linreg")
    for g in range(10):
        d, n = 1 - r2[g], 4
        q = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n) / d.mean()
        want = (1 - d.mean() * math.exp(q), 1 - d.mean() * math.exp(-q))
        assert out.iloc[g][["ci_lo", "ci_hi"]].tolist() == pytest.approx(want, rel=1e-9)
        assert out.iloc[g]["ci_hi"] <= 1


def test_logit_interval_covers_a_bounded_mean() -> None:
    """400 sets of 4 seeds of a fraction with mean 0.05 (Beta(2, 38)): the interval covers
    the mean at 95 % within 3 binomial sd, where the plain t-interval undercovers and
    leaves [0, 1] in over a third of the sets."""
    rng = np.random.default_rng(11)
    sets, seeds, mu = 400, 4, 2 / 40
    values = rng.beta(2, 38, size=(sets, seeds))
    out = reprstore.summarize(table(values), by="layer", measure="cca", level=0.95)
    covered = ((out["ci_lo"] <= mu) & (mu <= out["ci_hi"])).mean()
    assert abs(covered - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / sets), covered
    half = stats.t.ppf(0.975, seeds - 1) * values.std(1, ddof=1) / math.sqrt(seeds)
    assert (values.mean(1) - half < 0).mean() > 1 / 3


def test_profile_band_stays_inside() -> None:
    rng = np.random.default_rng(8)
    values = rng.beta(1, 40, size=(3, 3))
    fig, _ = draw_profile(table(values, "cca"), Value("cca"), by=None, over="seed",
                          band="ci", level=0.95, title=None)  # fmt: skip
    ax = fig.axes[0]
    lows = []
    for bars in ax.containers:
        for seg in getattr(bars, "lines", (None, None, []))[2]:
            lows.extend(np.asarray(seg.get_segments())[:, :, 1].ravel().tolist())
    assert lows and min(lows) >= 0
    want = [logit_t_interval(v, 0.95, 0.0, 1.0) for v in values]
    assert min(lows) == pytest.approx(min(lo for lo, _ in want), rel=1e-9)


def test_jackknife_interval_clipped_to_the_range_and_said() -> None:
    """Independent sides: cca is near 0 and its bias-corrected centre − t·SE below it."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 2)), rng.normal(size=(400, 2))
    ci = options(ci=0.95, bootstrap=9, seed=1)
    row = measure_arrays([x, y], [(0, 1)], "cca", uncertainty=ci).pairs[(0, 1)]
    assert row["cca_lo"] == 0.0 and row["cca_r2_lo"] == 0.0 and row["cca_hi"] > row["cca"]
    assert "clipped to the measure's range for cca, cca_r2" in row["ci_method"]
