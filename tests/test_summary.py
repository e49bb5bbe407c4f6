"""Seed summaries and group contrasts against plain numpy written here, and by simulation."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, run_cli
from scipy import stats
from test_bounded_intervals import logit_t_interval

import reprstore
from reprstore.errors import InputError, NotFoundError


def _row(**kw: object) -> dict[str, object]:
    row: dict[str, object] = dict(
        a_model="base", a_seed="0", a_checkpoint="final", a_layer="layer_0", b_model="base",
        b_seed="0", b_checkpoint="final", b_layer="layer_0", dataset="default",
        estimator="debiased", kernel="linear", n_samples=500, cka=1.0,
    )  # fmt: skip
    row.update(kw)
    return row


def study(rng: np.random.Generator, seeds: int = 3, layers: int = 3) -> pd.DataFrame:
    """base vs lora/full fine-tuning, per layer and seed, as `cka --match layer` gives."""
    rows = []
    for method, scale in (("lora", 0.06), ("full", 0.10)):
        for seed in range(seeds):
            for layer in (0, 2, 10)[:layers]:
                cka = 1 - scale * (1 + layer / 4) + rng.normal() * 0.01
                rows.append(_row(b_model=method, b_seed=str(seed), a_layer=f"layer_{layer}",
                                 b_layer=f"layer_{layer}", cka=cka))  # fmt: skip
    return pd.DataFrame(rows)


def t_quantile_df2(p: float) -> float:
    """Closed form of Student's t quantile with 2 degrees of freedom."""
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


# -- summarize ----------------------------------------------------------------------------
def test_summarize_matches_numpy_per_group(rng: np.random.Generator) -> None:
    df = study(rng)
    out = reprstore.summarize(df, by="model,layer", drift=True, level=0.9)
    assert list(out["b_layer"][:3]) == ["layer_0", "layer_2", "layer_10"]  # natural order
    assert list(out["b_model"]) == ["full"] * 3 + ["lora"] * 3
    for _, row in out.iterrows():
        sel = df[(df.b_model == row.b_model) & (df.b_layer == row.b_layer)]
        v = 1.0 - sel["cka"].to_numpy()
        mean, sd = v.sum() / v.size, math.sqrt(((v - v.mean()) ** 2).sum() / (v.size - 1))
        q = t_quantile_df2(0.95)
        u, w = mean / 2, 2.0  # 1 − cka lies in [0, 2]: the interval on its logit scale
        z, h = math.log(u / (1 - u)), q * sd / math.sqrt(v.size) / (w * u * (1 - u))
        want = [w / (1 + math.exp(-(z - h))), w / (1 + math.exp(-(z + h)))]
        assert row.n == 3 and row.rows == 3 and row.value == "1-cka"
        assert row["mean"] == pytest.approx(mean, rel=1e-12)
        assert row["sd"] == pytest.approx(sd, rel=1e-12)
        assert row["sem"] == pytest.approx(sd / math.sqrt(3), rel=1e-12)
        assert [row.ci_lo, row.ci_hi] == pytest.approx(want, rel=1e-10)


def test_rows_of_one_seed_are_averaged_first_and_said(rng: np.random.Generator) -> None:
    df = study(rng, seeds=4)
    out = reprstore.summarize(df, by="b_model", measure="cka", level=0.95)
    assert out.attrs["notes"] == [  # one fact, one note: a_layer goes with b_layer
        "rows averaged within each replicate over b_layer (3 values; with a_layer): add it to "
        "--by to keep them apart"
    ]
    for _, row in out.iterrows():
        per_seed = df[df.b_model == row.b_model].groupby("b_seed")["cka"].mean().to_numpy()
        want = logit_t_interval(per_seed, 0.95, -1.0, 1.0)  # cka lies in [−1, 1]
        assert row.n == 4 and row.rows == 12
        assert row["mean"] == pytest.approx(per_seed.mean(), rel=1e-12)
        assert [row.ci_lo, row.ci_hi] == pytest.approx(want, rel=1e-10)


def test_seed_pairs_are_replicates(rng: np.random.Generator) -> None:
    rows = [_row(a_seed=str(i), b_seed=str(j), cka=rng.uniform(0.5, 1))
            for i in range(3) for j in range(3) if i != j]  # fmt: skip
    out = reprstore.summarize(pd.DataFrame(rows), over="seed")
    values = np.array([r["cka"] for r in rows])
    assert out["n"].item() == 6 and out["mean"].item() == pytest.approx(values.mean())


def _seed_grid(rng: np.random.Generator, keep) -> pd.DataFrame:
    """A `cka --a '*' --b '*' --match layer` grid of 3 seeds × 2 layers, pairs kept by ``keep``."""
    rows = []
    for i, j, layer in itertools.product(range(3), range(3), ("l0", "l1")):
        if keep(i, j):
            value = 1.0 if i == j else 0.8 + 0.01 * (i + j) + rng.normal() * 1e-3
            rows.append(_row(a_seed=str(i), b_seed=str(j), a_layer=layer, b_layer=layer,
                             cka=value))  # fmt: skip
    return pd.DataFrame(rows)


def test_plain_averaging_over_seeds_prints_no_notes(rng: np.random.Generator) -> None:
    unordered = reprstore.summarize(_seed_grid(rng, lambda i, j: i < j), by="layer")
    assert unordered.attrs["notes"] == [] and list(unordered["n"]) == [3, 3]
    base_vs_tuned = reprstore.summarize(study(rng), by="model,layer")
    assert base_vs_tuned.attrs["notes"] == []
    # a timeline's reference against itself is a group of self-pairs only: no note either
    timeline = pd.DataFrame([_row(a_seed=s, b_seed=s, a_checkpoint="final", b_checkpoint=c,
                                  cka=1.0 if c == "final" else 0.7 + 0.01 * int(s))
                             for s in "012" for c in ("step1", "final")])  # fmt: skip
    assert reprstore.summarize(timeline, by="b_checkpoint").attrs["notes"] == []


def test_self_pairs_and_mirrors_in_a_seed_grid_are_noted_with_the_remedy(
    rng: np.random.Generator,
) -> None:
    out = reprstore.summarize(_seed_grid(rng, lambda i, j: True), by="layer")
    assert list(out["n"]) == [9, 9]  # what the notes warn about: 3 self-pairs, 6 mirrors
    assert out.attrs["notes"] == [
        "6 row(s) compare a representation with itself (the same key on both sides) and are "
        "averaged with real pairs in 2 group(s): rerun the comparison with --differ seed to "
        "leave them out",
        "12 replicate(s) are the mirror of another (a and b swapped): one comparison counted "
        "twice narrows the interval; rerun the comparison with --unordered",
    ]


def test_t_interval_covers_the_mean_95_percent_of_the_time() -> None:
    """Coverage over 4000 simulated seed sets of 4 seeds: 0.95 ± 4 binomial sd."""
    rng = np.random.default_rng(7)
    groups, seeds, mu = 4000, 4, 0.5
    values = rng.normal(mu, 0.05, size=(groups, seeds))
    df = pd.DataFrame([
        _row(b_layer=f"g{g}", a_layer=f"g{g}", b_seed=str(s), cka=values[g, s])
        for g in range(groups) for s in range(seeds)
    ])  # fmt: skip
    out = reprstore.summarize(df, by="layer")
    covered = ((out["ci_lo"] <= mu) & (mu <= out["ci_hi"])).mean()
    tol = 4 * math.sqrt(0.95 * 0.05 / groups)
    assert abs(covered - 0.95) < tol, covered


def test_single_replicate_groups_are_stated(rng: np.random.Generator) -> None:
    out = reprstore.summarize(study(rng, seeds=1), by="model,layer")
    assert out["sd"].isna().all() and "single replicate" in out.attrs["notes"][-1]


# -- contrast -----------------------------------------------------------------------------
def exact_p(x: np.ndarray, y: np.ndarray, alternative: str = "two-sided", r0: float = 1.0):
    """All C(n, n_x) splits of the pooled values, enumerated here by itertools."""
    pooled = list(x) + [r0 * v for v in y]
    n, nx = len(pooled), len(x)
    observed = np.mean(x) - r0 * np.mean(y)
    hits = total = 0
    for chosen in itertools.combinations(range(n), nx):
        first = [pooled[i] for i in chosen]
        rest = [pooled[i] for i in range(n) if i not in chosen]
        t = sum(first) / nx - sum(rest) / (n - nx)
        total += 1
        if alternative == "two-sided":
            hits += abs(t) >= abs(observed) - 1e-12
        elif alternative == "less":
            hits += t <= observed + 1e-12
        else:
            hits += t >= observed - 1e-12
    return hits / total


def test_contrast_matches_hand_computation(rng: np.random.Generator) -> None:
    df = study(rng)
    out = reprstore.contrast(df, "model=lora:full", by="layer", drift=True)
    assert list(out["b_layer"]) == ["layer_0", "layer_2", "layer_10"]
    for _, row in out.iterrows():
        part = df[df.b_layer == row.b_layer]
        x = 1 - part.loc[part.b_model == "lora", "cka"].to_numpy()
        y = 1 - part.loc[part.b_model == "full", "cka"].to_numpy()
        vx, vy = x.var(ddof=1) / 3, y.var(ddof=1) / 3
        dof = (vx + vy) ** 2 / (vx**2 / 2 + vy**2 / 2)
        half = stats.t.ppf(0.975, dof) * math.sqrt(vx + vy)
        diff = x.mean() - y.mean()
        assert row.key == "b_model" and (row.n_x, row.n_y) == (3, 3)
        assert row["diff"] == pytest.approx(diff, rel=1e-12)
        assert (row.diff_lo, row.diff_hi) == pytest.approx((diff - half, diff + half), rel=1e-9)
        assert row.ratio == pytest.approx(x.mean() / y.mean(), rel=1e-12)
        assert row.reduction == pytest.approx(1 - x.mean() / y.mean(), rel=1e-12)
        assert row.p == pytest.approx(exact_p(x, y), abs=1e-12)
        assert row.p_min == pytest.approx(0.1) and row.test == "exact: all 20 arrangements"


def test_fieller_endpoints_solve_the_defining_equation(rng: np.random.Generator) -> None:
    """At each end ρ of the interval (x̄ − ρȳ)² = t²(v_x + ρ²v_y); inside, it is below."""
    df = study(rng, seeds=5)
    out = reprstore.contrast(df, "model=lora:full", by="layer", drift=True, level=0.9)
    for _, row in out.iterrows():
        part = df[df.b_layer == row.b_layer]
        x = 1 - part.loc[part.b_model == "lora", "cka"].to_numpy()
        y = 1 - part.loc[part.b_model == "full", "cka"].to_numpy()
        vx, vy, r = x.var(ddof=1) / 5, y.var(ddof=1) / 5, x.mean() / y.mean()
        dof = (vx + r**2 * vy) ** 2 / (vx**2 / 4 + r**4 * vy**2 / 4)
        t2 = stats.t.ppf(0.95, dof) ** 2
        for rho in (row.ratio_lo, row.ratio_hi):
            lhs, rhs = (x.mean() - rho * y.mean()) ** 2, t2 * (vx + rho**2 * vy)
            assert lhs == pytest.approx(rhs, rel=1e-8)
        mid = (x.mean() - r * y.mean()) ** 2
        assert mid <= t2 * (vx + r**2 * vy) and row.ratio_lo < r < row.ratio_hi


def test_ratio_interval_covers_the_true_ratio() -> None:
    """Fieller's 95 % interval over 2000 simulated 5 vs 5 seed sets: 0.95 ± 4 binomial sd."""
    rng = np.random.default_rng(11)
    sims, n, mx, my = 2000, 5, 0.08, 0.10
    rows = []
    for g in range(sims):
        for method, mu in (("lora", mx), ("full", my)):
            for s, v in enumerate(rng.normal(mu, 0.015, size=n)):
                rows.append(_row(b_model=method, b_seed=str(s), a_layer=f"g{g}", b_layer=f"g{g}",
                                 cka=1 - v))  # fmt: skip
    out = reprstore.contrast(pd.DataFrame(rows), "model=lora:full", by="layer", drift=True)
    covered = ((out["ratio_lo"] <= mx / my) & (mx / my <= out["ratio_hi"])).mean()
    assert abs(covered - 0.95) < 4 * math.sqrt(0.95 * 0.05 / sims), covered


def test_exact_p_is_uniform_under_the_null_and_small_under_a_planted_difference() -> None:
    """4 vs 4 seeds, 2000 null datasets: P(p ≤ k·2/70) = k·2/70 at every attainable level."""
    rng = np.random.default_rng(3)
    sims = 2000
    values = rng.normal(0.7, 0.02, size=(sims, 2, 4))
    df = pd.DataFrame([
        _row(b_model=m, b_seed=str(s), a_layer=f"g{g}", b_layer=f"g{g}", cka=values[g, k, s])
        for g in range(sims) for k, m in enumerate(("x", "y")) for s in range(4)
    ])  # fmt: skip
    p = reprstore.contrast(df, "model=x:y", by="layer")["p"].to_numpy()
    levels = np.arange(1, 36) * 2 / 70
    cdf = np.array([(p <= lv + 1e-12).mean() for lv in levels])
    assert np.abs(cdf - levels).max() < 4 * math.sqrt(0.25 / sims)  # a discrete KS bound
    planted = pd.DataFrame(
        [
            _row(b_model=m, b_seed=str(s), cka=v + (0.1 if m == "x" else 0))
            for m in ("x", "y")
            for s, v in enumerate(rng.normal(0.7, 0.01, 6))
        ]
    )
    assert reprstore.contrast(planted, "model=x:y")["p"].item() == pytest.approx(2 / 924)


def test_one_sided_and_null_ratio_match_enumeration(rng: np.random.Generator) -> None:
    df = study(rng, seeds=4)
    out = reprstore.contrast(df, "model=lora:full", by="layer", drift=True,
                             alternative="less", null_ratio=0.8)  # fmt: skip
    for _, row in out.iterrows():
        part = df[df.b_layer == row.b_layer]
        x = 1 - part.loc[part.b_model == "lora", "cka"].to_numpy()
        y = 1 - part.loc[part.b_model == "full", "cka"].to_numpy()
        assert row.p == pytest.approx(exact_p(x, y, "less", 0.8), abs=1e-12)
        assert row.p_min == pytest.approx(1 / 70)


def test_design_that_cannot_reach_alpha_is_stated(rng: np.random.Generator) -> None:
    df = study(rng)
    two = reprstore.contrast(df, "model=lora:full", by="layer", drift=True)
    note = " ".join(two.attrs["notes"])
    assert "3 vs 3 seeds" in note and "smallest attainable two-sided p is 0.1" in note
    assert "cannot reach p ≤ 0.05" in note and "4 vs 4 seeds can" in note
    one = reprstore.contrast(df, "model=lora:full", by="layer", drift=True, alternative="less")
    assert (one["p_min"] == 0.05).all()
    assert not any("cannot reach" in n for n in one.attrs["notes"])  # 0.05 ≤ alpha 0.05


def test_sampled_p_when_arrangements_are_many(rng: np.random.Generator) -> None:
    df = study(rng, seeds=6, layers=1)
    exact = reprstore.contrast(df, "model=lora:full", drift=True)
    kw = dict(drift=True, max_exact=100, permutations=4000, seed=5)
    first = reprstore.contrast(df, "model=lora:full", **kw)
    again = reprstore.contrast(df, "model=lora:full", **kw)
    assert first["test"].item() == "sampled: 4,000 of 924 arrangements, seed 5"
    assert first["p"].item() == again["p"].item()  # seeded: identical on a rerun
    assert first["p_min"].item() == pytest.approx(1 / 4001)
    p = exact["p"].item()
    assert abs(first["p"].item() - p) < 4 * math.sqrt(p * (1 - p) / 4000) + 1 / 4001


def test_holm_adjustment(rng: np.random.Generator) -> None:
    out = reprstore.contrast(study(rng, seeds=4), "model=lora:full", by="layer", drift=True)
    p = out["p"].to_numpy()
    order = np.argsort(p)
    expected, running = np.empty(3), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * p[i]))
        expected[i] = running
    assert out["p_holm"].to_numpy() == pytest.approx(expected)


# -- bad input ----------------------------------------------------------------------------
def test_bad_input_in_python(rng: np.random.Generator) -> None:
    df = study(rng)
    with pytest.raises(InputError, match="Too few seeds"):
        reprstore.contrast(study(rng, seeds=1), "model=lora:full", by="layer")
    with pytest.raises(NotFoundError, match=r"'lorra' \(closest: lora\)"):
        reprstore.contrast(df, "model=lorra:full", by="layer")
    with pytest.raises(InputError, match="expected KEY=X:Y"):
        reprstore.contrast(df, "model=lora", by="layer")
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        reprstore.summarize(df, by="layer", level=1.0)
    with pytest.raises(NotFoundError, match="closest: cka"):
        reprstore.summarize(df, by="layer", measure="ckaa")
    with pytest.raises(InputError, match="Cannot read the value"):
        reprstore.summarize(df, value="__import__('os')")
    with pytest.raises(NotFoundError, match="closest: layer"):
        reprstore.summarize(df, by="layr")
    grid = pd.DataFrame(
        [_row(a_layer=f"l{i}", b_layer=f"l{j}") for i in range(2) for j in range(2)]
    )
    with pytest.raises(InputError, match="ambiguous"):
        reprstore.summarize(grid, by="layer")


def test_cli_summary_and_contrast_files(tmp_path: Path, rng: np.random.Generator) -> None:
    df = study(rng)
    df.to_csv(tmp_path / "drift.csv", index=False)
    done = run_cli("summarize", "drift.csv", "--by", "model,layer", "--drift", "--out", "s.json",
                   cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert len(rows) == 6 and rows[0]["b_model"] == "full" and rows[0]["n"] == 3
    done = run_cli("summarize", "drift.csv", "--by", "layer", "--drift", "--contrast",
                   "model=lora:full", "--out", "c.csv", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "smallest attainable two-sided p is 0.1" in " ".join(done.stdout.split())
    back = pd.read_csv(tmp_path / "c.csv")
    assert back["p"].tolist() == pytest.approx(
        reprstore.contrast(df, "model=lora:full", by="layer", drift=True)["p"].tolist()
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["drift.csv", "--by", "layer", "--contrast", "model=lora:full", "--level", "1.5"],
         "between 0 and 1"),
        (["one.csv", "--by", "layer", "--contrast", "model=lora:full"], "too few seeds"),
        (["drift.csv", "--by", "layer", "--contrast", "model=lora:fulll"], "closest: full"),
        (["drift.csv", "--measure", "ckb"], "no measure column 'ckb'"),
        (["missing.csv"], "no such file"),
        (["drift.txt"], "expected a file name ending in"),
        (["bad.json"], "not a list of result rows"),
        (["empty.csv"], "Cannot read results"),
    ],
)  # fmt: skip
def test_cli_bad_input_is_one_line(
    tmp_path: Path, rng: np.random.Generator, args: list[str], needle: str
) -> None:
    study(rng).to_csv(tmp_path / "drift.csv", index=False)
    study(rng, seeds=1).to_csv(tmp_path / "one.csv", index=False)
    (tmp_path / "drift.txt").write_text("x")
    (tmp_path / "bad.json").write_text('{"a": 1}')
    (tmp_path / "empty.csv").write_text("")
    assert_user_error(run_cli("summarize", *args, cwd=tmp_path), needle)


def test_run_attribute_columns_group_and_contrast(rng: np.random.Generator) -> None:
    """`a_<attr>`/`b_<attr>` columns (reprstore tag) work like keys: method=lora:full."""
    df = study(rng, seeds=3)
    df["a_method"] = "none"
    df["b_method"] = df["b_model"]
    df["b_model"] = df["b_model"] + "-" + df["b_seed"]  # one model name per run
    out = reprstore.contrast(df, "method=lora:full", by="layer", drift=True)
    assert (out["key"] == "b_method").all()
    plain = df.drop(columns=["a_method", "b_method"]).assign(b_model=df["b_method"])
    want = reprstore.contrast(plain, "model=lora:full", by="layer", drift=True)
    assert out["p"].tolist() == want["p"].tolist()
    assert out["diff"].to_numpy() == pytest.approx(want["diff"].to_numpy(), rel=1e-12)


def test_summarize_reads_a_json_results_file_with_its_provenance(tmp_path: Path) -> None:
    """``cka --out r.json`` writes {"provenance": …, "rows": […]}; summarize reads it."""
    import reprstore
    from reprstore.report import write_results

    df = pd.DataFrame(
        {"a_layer": ["l1", "l1", "l2", "l2"], "a_seed": ["0", "1", "0", "1"],
         "cka": [0.5, 0.7, 0.2, 0.4]}
    )  # fmt: skip
    write_results(df, tmp_path / "r.json")
    out = reprstore.summarize(tmp_path / "r.json", by=["a_layer"], over="a_seed")
    assert out["mean"].tolist() == pytest.approx([0.6, 0.3])


# -- large result files ---------------------------------------------------------------------
PEAK_RSS = """
import resource, runpy, sys
sys.argv = ["reprstore", *sys.argv[1:]]
try:
    runpy.run_module("reprstore", run_name="__main__")
finally:
    sys.stderr.write(f"\\nMAXRSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n")
"""


def _peak_kib(*args: str, cwd: Path) -> int:
    """Peak RSS (KiB) of a fresh ``reprstore ARGS`` process; it must succeed."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(done.stderr.rsplit("MAXRSS", 1)[1])


@pytest.mark.slow
def test_summarize_and_plot_read_a_large_result_file_in_bounded_memory(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """200,000 result rows (trust-v3: a 10⁶-row file took 2.7 GiB, 20× the file): summarize
    and a timeline plot hold at most 4× the file's size above the same command on 12 rows,
    and the summary's means match numpy's."""
    a_seed, a_layer, b_model, b_seed, ckpt, b_layer = np.meshgrid(
        np.arange(2), np.arange(20), np.arange(2), np.arange(5), np.arange(10), np.arange(50),
        indexing="ij",
    )  # fmt: skip
    n = a_seed.size
    cka = rng.uniform(0, 1, n)
    df = pd.DataFrame({
        "a_model": "base", "a_seed": a_seed.ravel().astype(str), "a_checkpoint": "final",
        "a_layer": [f"encoder.layer.{k}" for k in a_layer.ravel()],
        "b_model": np.array(["lora", "full"])[b_model.ravel()],
        "b_seed": b_seed.ravel().astype(str),
        "b_checkpoint": [f"step{100 * k}" for k in ckpt.ravel()],
        "b_layer": [f"encoder.layer.{k}" for k in b_layer.ravel()],
        "dataset": "default", "estimator": "debiased", "kernel": "linear", "n_samples": 10_000,
        "cka": cka,
    })  # fmt: skip
    df.to_csv(tmp_path / "big.csv", index=False)
    df.iloc[:12].to_csv(tmp_path / "small.csv", index=False)
    size_kib = (tmp_path / "big.csv").stat().st_size / 1024
    summarize = ["summarize", "--by", "b_model", "--over", "seed", "--out", "{}.out.csv"]
    # layers averaged on purpose: a figure never pools rows that differ in a key silently
    timeline = ["plot", "--kind", "timeline", "--by", "b_model", "--average", "layer",
                "--out", "{}.png"]  # fmt: skip
    for command in (summarize, timeline):
        peaks = {}
        for name in ("small", "big"):
            args = [a.format(name) for a in command]
            peaks[name] = _peak_kib(args[0], f"{name}.csv", *args[1:], cwd=tmp_path)
        assert peaks["big"] - peaks["small"] <= 4 * size_kib, (command[0], peaks, size_kib)
    out = pd.read_csv(tmp_path / "big.out.csv", dtype={"b_model": str})
    for model, code in (("lora", 0), ("full", 1)):
        mine = b_model.ravel() == code
        per_seed = [cka[mine & (b_seed.ravel() == s) & (a_seed.ravel() == a)].mean()
                    for s in range(5) for a in range(2)]  # fmt: skip
        got = out.loc[out["b_model"] == model, "mean"].item()
        assert abs(got - np.mean(per_seed)) < 1e-12
