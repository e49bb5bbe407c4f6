"""timeline --moments: planted jumps are found at their checkpoints, per line; a timeline
without jumps says so; the robust z is the documented formula, written here in numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, run_cli

from reprstore.analysis.moments import find_moments, robust_z
from reprstore.errors import InputError
from reprstore.workflows.ingest import import_files

STEPS = [f"step{100 * k}" for k in range(16)]


def timeline_table(series: dict[tuple[str, str], np.ndarray], labels: list[str]) -> pd.DataFrame:
    """A result table as ``reprstore timeline`` writes it: (seed, layer) lines over ``labels``,
    against ``final`` (whose point with itself is 1); rows deliberately out of step order."""
    rows = []
    for (seed, layer), values in series.items():
        for label, v in [*zip(labels, values, strict=True), ("final", 1.0)][::-1]:
            rows.append(dict(a_model="m", a_seed=seed, a_checkpoint="final", a_layer=layer,
                             b_model="m", b_seed=seed, b_checkpoint=label, b_layer=layer,
                             dataset="default", n_samples=100, cka=v))  # fmt: skip
    return pd.DataFrame(rows)


def reference_z(values: np.ndarray) -> np.ndarray:
    """The docs' rule in plain numpy: z = (d − median d) / (1.4826 · MAD d), MAD > 0."""
    d = np.diff(values.astype(np.float64))
    med = np.median(d)
    return (d - med) / (1.4826 * np.median(np.abs(d - med)))


def noisy(rng: np.random.Generator, jumps: dict[int, float]) -> np.ndarray:
    v = 0.4 + 0.004 * np.arange(len(STEPS)) + rng.normal(0, 0.004, len(STEPS))
    for at, size in jumps.items():
        v[at:] += size
    return v


def test_planted_jumps_are_found_per_line_at_their_checkpoints() -> None:
    rng = np.random.default_rng(11)
    series = {("0", "layer_2"): noisy(rng, {6: 0.25}), ("0", "layer_10"): noisy(rng, {}),
              ("1", "layer_2"): noisy(rng, {3: -0.2, 11: 0.3})}  # fmt: skip
    found = find_moments(timeline_table(series, STEPS), "cka")
    table = found.table
    assert found.lines == 3 and found.line_columns == ["b_seed", "b_layer"]
    got = [tuple(r) for r in table[["b_seed", "b_layer", "rank", "before", "during", "after"]]
           .itertuples(index=False, name=None)]  # fmt: skip
    assert got == [("0", "layer_2", 1, "step500", "step600", "step700"),
                   ("1", "layer_2", 1, "step1000", "step1100", "step1200"),
                   ("1", "layer_2", 2, "step200", "step300", "step400")]  # fmt: skip
    for row in table.itertuples(index=False):
        z = reference_z(series[(row.b_seed, row.b_layer)])
        k = STEPS.index(row.during) - 1
        assert row.z == pytest.approx(z[k], rel=1e-12) and abs(row.z) >= 3.5
        assert row.change == pytest.approx(np.diff(series[(row.b_seed, row.b_layer)])[k])
        assert row.rule == "MAD"
    assert "3 moment(s) in 2 of 3 line(s)" in found.summary
    # the line without a jump has no |z| over the threshold, by the same formula
    assert np.abs(reference_z(series[("0", "layer_10")])).max() < 3.5


def test_no_jump_says_none_and_a_jump_at_the_last_step_has_no_after() -> None:
    rng = np.random.default_rng(4)
    calm = find_moments(timeline_table({("0", "l"): noisy(rng, {})}, STEPS))
    assert calm.table.empty and calm.summary.startswith("no moments found in 1 line(s)")
    late = find_moments(timeline_table({("0", "l"): noisy(rng, {15: 0.3})}, STEPS))
    assert late.table[["before", "during", "after"]].values.tolist() == [
        ["step1400", "step1500", ""]]  # fmt: skip


def test_mad_zero_falls_back_to_mean_absolute_deviation_and_steady_change_has_none() -> None:
    plateau = np.array([0.2] * 6 + [0.8] * 6)  # every change 0 but one: MAD is 0
    z, scale, rule = robust_z(np.diff(plateau))
    d = np.diff(plateau)
    assert rule == "mean absolute deviation"
    assert scale == pytest.approx(1.2533 * np.mean(np.abs(d - np.median(d))))
    assert np.flatnonzero(np.abs(z) >= 3.5).tolist() == [5]
    ramp = 0.05 * np.arange(12) + 0.1  # equal changes, up to rounding: no moment
    assert robust_z(np.diff(ramp))[2] == "none"
    assert find_moments(timeline_table({("0", "l"): ramp}, STEPS[:12])).table.empty


def test_short_lines_are_named_and_options_checked() -> None:
    rng = np.random.default_rng(2)
    found = find_moments(timeline_table({("0", "l"): noisy(rng, {})[:3]}, STEPS[:3]))
    assert found.table.empty and "fewer than 4 checkpoints" in found.notes[-1]
    with pytest.raises(InputError, match="--moment-threshold must be a positive"):
        find_moments(timeline_table({("0", "l"): noisy(rng, {})}, STEPS), threshold=0)
    with pytest.raises(InputError, match="--max-moments must be at least 1"):
        find_moments(timeline_table({("0", "l"): noisy(rng, {})}, STEPS), top=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """layer_0 changes abruptly between step400 and step500; layer_1 drifts evenly."""
    root = tmp_path_factory.mktemp("moments")
    rng = np.random.default_rng(0)
    final = rng.normal(size=(80, 6))
    for k in range(10):
        for layer in (0, 1):
            noise = (2.0 if k < 5 else 0.3) if layer == 0 else 1.0
            f = root / f"{k}_{layer}.npy"
            np.save(f, (final + noise * rng.normal(size=final.shape)).astype(np.float32))
            import_files(root / "t.zarr", [f], name="toy", layer=f"layer_{layer}",
                         checkpoint=f"step{100 * k}", dtype="float32")  # fmt: skip
    np.save(root / "one.npy", final.astype(np.float32))
    import_files(root / "one.zarr", [root / "one.npy"], name="toy", layer="l", dtype="float32")
    return root


def test_cli_reports_marks_and_writes_the_moments(store: Path, tmp_path: Path) -> None:
    out, png = tmp_path / "t.csv", tmp_path / "t.png"
    done = run_cli("timeline", str(store / "t.zarr"), "--against", "step900", "--moments",
                   "--out", str(out), "--plot", str(png))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 moment(s) in 1 of 2 line(s)" in done.stdout
    side = pd.read_csv(tmp_path / "t.moments.csv", dtype=str)
    assert side[["b_layer", "before", "during", "after"]].values.tolist() == [
        ["layer_0", "step400", "step500", "step600"]]  # fmt: skip
    assert (tmp_path / "t.moments.csv.json").exists() and png.stat().st_size > 0
    calm = run_cli("timeline", str(store / "t.zarr"), "--against", "step900", "--select",
                   "layer=layer_1", "--moments")  # fmt: skip
    assert calm.returncode == 0 and "no moments found in 1 line(s)" in calm.stdout


def test_cli_refuses_a_single_checkpoint_and_stray_moment_options(store: Path) -> None:
    assert_user_error(run_cli("timeline", str(store / "one.zarr"), "--against", "final"),
                      "at least two checkpoints", "holds only 'final'")  # fmt: skip
    assert_user_error(
        run_cli("timeline", str(store / "t.zarr"), "--against", "step900", "--max-moments", "2"),
        "--max-moments applies to --moments",
    )
    assert_user_error(
        run_cli(
            "timeline",
            str(store / "t.zarr"),
            "--against",
            "step900",
            "--moments",
            "--moment-threshold",
            "-1",
        ),
        "positive",
    )
