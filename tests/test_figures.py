"""Every plot kind renders (PNG, SVG, PDF) and draws the numbers computed here by hand."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from cli_fork import shim
from conftest import assert_user_error, run_cli
from test_bounded_intervals import logit_t_interval

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import reprstore
from reprstore.analysis.results import Value
from reprstore.report.figures import draw_profile, draw_timeline
from reprstore.report.matrices import draw_matrices

MAGIC = {".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}
STEPS = {"step0": 0, "step20": 20, "step100": 100, "step1000": 1000, "final": None}
LAYERS = ("layer_10", "layer_2", "layer_0")  # stored out of order on purpose


def _row(**kw: object) -> dict[str, object]:
    row: dict[str, object] = dict(
        a_model="net", a_seed="0", a_checkpoint="final", a_layer="layer_0", b_model="net",
        b_seed="0", b_checkpoint="final", b_layer="layer_0", dataset="default",
        estimator="debiased", kernel="linear", n_samples=500, cka=1.0,
    )  # fmt: skip
    row.update(kw)
    return row


@pytest.fixture
def timeline(rng: np.random.Generator) -> pd.DataFrame:
    """`cka --a checkpoint=final --b 'checkpoint=*' --match layer,seed` over 3 seeds."""
    rows = [
        _row(a_seed=str(s), b_seed=str(s), b_checkpoint=c, a_layer=lay, b_layer=lay,
             cka=1.0 if c == "final" else rng.uniform(0.3, 0.95))
        for c in STEPS for s in range(3) for lay in LAYERS
    ]  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def profile(rng: np.random.Generator) -> pd.DataFrame:
    rows = [
        _row(a_model="base", b_model=m, b_seed=str(s), a_layer=lay, b_layer=lay,
             cka=rng.uniform(0.6, 0.95))
        for m in ("lora", "full") for s in range(4) for lay in LAYERS
    ]  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def grid(rng: np.random.Generator) -> pd.DataFrame:
    """Seed i vs seed j ≠ i, every layer pair, at two checkpoints."""
    rows = [
        _row(a_seed=str(i), b_seed=str(j), a_checkpoint=c, b_checkpoint=c, a_layer=la,
             b_layer=lb, cka=rng.uniform(0.1, 1.0))
        for c in ("step100", "final") for i in range(3) for j in range(3) if i != j
        for la in LAYERS for lb in LAYERS
    ]  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("kind", "suffix"),
    [("heatmap", ".svg"), ("timeline", ".pdf"), ("profile", ".png"), ("seeds", ".pdf")],
)
def test_every_kind_renders_in_every_format(
    tmp_path: Path, kind: str, suffix: str, timeline, profile, grid
) -> None:
    table = {"timeline": timeline, "profile": profile}.get(kind, grid)
    if kind == "heatmap":
        table = table[table.a_checkpoint == "final"].query("a_seed == '0' and b_seed == '1'")
    drawn = reprstore.plot_results(table, kind, tmp_path / f"fig{suffix}")
    data = drawn.path.read_bytes()
    assert len(data) > 2000 and data.startswith(MAGIC[suffix])


def test_timeline_x_are_true_steps_in_order(timeline: pd.DataFrame) -> None:
    fig, notes = draw_timeline(timeline, Value("cka"), by=None, over="seed", x=None,
                               band="ci", level=0.95, final_step=None, title=None)  # fmt: skip
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines] == ["layer_0", "layer_2", "layer_10"]
    final_at = 1000 + np.median(np.diff([0, 20, 100, 1000]))
    for line in ax.lines:
        assert list(line.get_xdata()) == [0, 20, 100, 1000, final_at]
        part = timeline[timeline.b_layer == line.get_label()]
        means = [part[part.b_checkpoint == c]["cka"].mean() for c in STEPS]
        assert np.asarray(line.get_ydata()) == pytest.approx(means, rel=1e-12)
    band = ax.collections[0].get_paths()[0].vertices  # layer_0's band: lo forward, hi back
    vals = timeline[(timeline.b_layer == "layer_0") & (timeline.b_checkpoint == "step0")]["cka"]
    lo, hi = logit_t_interval(vals.to_numpy(), 0.95, -1.0, 1.0)  # cka lies in [−1, 1]
    ys = band[np.isclose(band[:, 0], 0.0), 1]
    assert ys.min() == pytest.approx(lo) and ys.max() == pytest.approx(hi)
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "final"
    assert "final placed one spacing after step 1000" in notes[0]
    plt.close(fig)


def test_timeline_final_step_and_unnumbered_checkpoints(timeline: pd.DataFrame) -> None:
    extra = timeline[timeline.b_checkpoint == "step0"].assign(b_checkpoint="init")
    fig, notes = draw_timeline(pd.concat([timeline, extra], ignore_index=True), Value("cka"),
                               by=None, over="seed", x=None, band="sd", level=0.95,
                               final_step=5000, title=None)  # fmt: skip
    assert list(fig.axes[0].lines[0].get_xdata()) == [0, 20, 100, 1000, 5000]
    assert any("left out checkpoints without a step number: init" in n for n in notes)
    plt.close(fig)


def test_profile_layers_in_natural_order_with_seed_error_bars(profile: pd.DataFrame) -> None:
    fig, _ = draw_profile(profile, Value("cka", complement=True), by=None, over="seed",
                          band="sd", level=0.95, title=None)  # fmt: skip
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["layer_0", "layer_2", "layer_10"]
    assert ax.get_ylabel() == "drift (1 − cka)"
    labels = [c.get_label() for c in ax.containers]
    assert labels == ["full", "lora"]
    for container in ax.containers:
        y = container.lines[0].get_ydata()
        part = profile[profile.b_model == container.get_label()]
        drift = [1 - part[part.b_layer == f"layer_{i}"]["cka"] for i in (0, 2, 10)]
        assert np.asarray(y) == pytest.approx([d.mean() for d in drift], rel=1e-12)
        bars = container.lines[2][0].get_segments()
        half = [(seg[1][1] - seg[0][1]) / 2 for seg in bars]
        assert half == pytest.approx([d.std(ddof=1) for d in drift], rel=1e-9)
    plt.close(fig)


def test_heatmap_has_one_panel_per_checkpoint_in_step_order(grid: pd.DataFrame) -> None:
    fig, _ = draw_matrices(grid[(grid.a_seed == "0") & (grid.b_seed == "1")], Value("cka"),
                           over=None, title=None)  # fmt: skip
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    assert [ax.get_title() for ax in panels] == ["checkpoint step100", "checkpoint final"]
    order = ["layer_0", "layer_2", "layer_10"]
    for ax, ckpt in zip(panels, ("step100", "final"), strict=True):
        assert [t.get_text() for t in ax.get_yticklabels()] == order
        assert (ax.get_ylabel(), ax.get_xlabel()) == ("seed 0 · layer", "seed 1 · layer")
        part = grid[(grid.a_seed == "0") & (grid.b_seed == "1") & (grid.a_checkpoint == ckpt)]
        want = part.pivot(index="a_layer", columns="b_layer", values="cka").loc[order, order]
        assert np.asarray(ax.images[0].get_array()) == pytest.approx(want.to_numpy())
    plt.close(fig)


def test_seed_matrix_is_the_mean_over_seed_pairs(grid: pd.DataFrame) -> None:
    final = grid[grid.a_checkpoint == "final"]
    fig, _ = draw_matrices(final, Value("cka"), over="seed", title=None)
    image = np.asarray(fig.axes[0].images[0].get_array())
    order = ["layer_0", "layer_2", "layer_10"]
    want = final.groupby(["a_layer", "b_layer"])["cka"].mean().unstack().loc[order, order]
    assert image == pytest.approx(want.to_numpy(), rel=1e-12)
    assert "mean ± sd over 6 seed pair(s)" in fig._suptitle.get_text()  # type: ignore[union-attr]
    plt.close(fig)


def test_cli_plot_and_bad_input(tmp_path: Path, profile: pd.DataFrame) -> None:
    profile.to_csv(tmp_path / "r.csv", index=False)
    done = run_cli("plot", "r.csv", "--kind", "profile", "--drift", "--out", "p.svg",
                   cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.svg").read_bytes().startswith(b"<?xml")
    for args, needle in [
        (["--kind", "bars", "--out", "x.png"], "unknown plot kind 'bars'"),
        (["--kind", "profile", "--out", "x.jpg"], "expected a file name ending in .png"),
        (["--kind", "profile", "--out", "x.png", "--measure", "ckx"], "no measure column"),
        (["--kind", "profile", "--out", "x.png", "--level", "0"], "between 0 and 1"),
        (["--kind", "profile", "--out", "x.png", "--band", "iqr"], "unknown band"),
    ]:
        assert_user_error(run_cli("plot", "r.csv", *args, cwd=tmp_path), needle)
    assert_user_error(run_cli("plot", "nope.csv", "--kind", "profile", "--out", "x.png",
                              cwd=tmp_path), "no such file")  # fmt: skip
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow  # the README's examples end to end, in fresh processes (CI runs it)
def test_readme_statistics_section_runs_as_written(tmp_path: Path) -> None:
    """The README's Statistics examples, in order, in a fresh folder; their figures drawn."""
    import os
    import re
    import subprocess
    import sys

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index("## Statistics") :]
    section = section[: section.index("\n## ", 3)]
    script = "\n".join(re.findall(r"```bash\n(.*?)```", section, re.S))
    for kind in ("profile", "timeline", "seeds"):
        assert f"--kind {kind}" in script
    # each `reprstore` command forked from a server with the imports done (test_readme)
    with shim() as bindir:
        path = os.pathsep.join([str(bindir), str(Path(sys.executable).parent), os.environ["PATH"]])
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                              env={**os.environ, "PATH": path}, capture_output=True, text=True,
                              timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = " ".join(proc.stdout.split())
    assert "smallest attainable two-sided p is 0.1" in out and "4 vs 4 seeds can" in out
    contrast = pd.read_csv(tmp_path / "study" / "contrast.csv")
    assert len(contrast) == 4 and (contrast["ratio"] < 1).all()
    for name in ("study/profile.png", "training/timeline.png", "training/weights.png"):
        assert (tmp_path / name).read_bytes().startswith(MAGIC[".png"]), name
    assert (tmp_path / "training" / "seeds.pdf").read_bytes().startswith(MAGIC[".pdf"])
    timeline = pd.read_csv(tmp_path / "training" / "timeline.csv")
    fig, _ = draw_timeline(timeline, Value("cka"), by=None, over="seed", x=None, band="ci",
                           level=0.95, final_step=1000, title=None)  # fmt: skip
    assert list(fig.axes[0].lines[0].get_xdata()) == [0, 50, 100, 200, 400, 700, 1000]
    plt.close(fig)
    moments = pd.read_csv(tmp_path / "training" / "timeline.moments.csv", dtype=str)
    # the README says: one jump, seed 2's act2 from step0 to step50, z = +3.6
    assert moments[["b_seed", "b_layer", "before", "during", "after"]].values.tolist() == [
        ["2", "act2", "step0", "step50", "step100"]
    ]
    assert round(float(moments["z"].iloc[0]), 1) == 3.6


def test_profile_against_a_numeric_attribute(rng: np.random.Generator) -> None:
    """CKA vs task diversity with seed error bars: x is a run attribute, in natural order."""
    rows = [_row(a_seed=str(s), b_seed=str(s), b_tasks=t, a_tasks=t, cka=0.5 + 0.02 * t
                 + rng.normal() * 0.01) for t in (16, 2, 1, 4) for s in range(3)]  # fmt: skip
    fig, _ = draw_profile(pd.DataFrame(rows), Value("cka"), by=None, over="seed", band="sd",
                          level=0.95, title=None, x="tasks")  # fmt: skip
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "16"]
    assert ax.get_xlabel() == "tasks (b_tasks)"
    plt.close(fig)
