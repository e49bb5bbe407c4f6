"""Figures never pool rows that differ in a key or option: each kind drawn on mixed rows,
checked through the data behind the artists (line ydata, image arrays, titles, panels)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, run_cli

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from reprstore.analysis.results import Value
from reprstore.errors import InputError
from reprstore.report.lines import draw_profile, draw_timeline
from reprstore.report.matrices import draw_matrices
from reprstore.report.plot import covariance_rank, draw_comparison
from reprstore.report.style import Style, decimals

LAYERS = ("layer_10", "layer_2", "layer_9")  # natural order: 2, 9, 10
ORDER = ["layer_2", "layer_9", "layer_10"]


def _row(**kw: object) -> dict[str, object]:
    row: dict[str, object] = dict(
        a_model="net", a_seed="0", a_checkpoint="final", a_layer="layer_2", b_model="net",
        b_seed="1", b_checkpoint="final", b_layer="layer_2", dataset="default",
        estimator="debiased", kernel="linear", n_samples=500, cka=0.5,
    )  # fmt: skip
    row.update(kw)
    return row


@pytest.fixture
def kernels(rng: np.random.Generator) -> pd.DataFrame:
    """A layer grid computed twice, linear and rbf: two different numbers per cell."""
    rows = [_row(a_layer=a, b_layer=b, kernel=k, cka=rng.uniform(0.2, 0.99))
            for k in ("linear", "rbf") for a in LAYERS for b in LAYERS]  # fmt: skip
    return pd.DataFrame(rows)


def _close(fig: object) -> None:
    plt.close(fig)  # type: ignore[arg-type]


def test_heatmap_of_two_kernels_is_two_panels_never_their_mean(kernels: pd.DataFrame) -> None:
    fig, _ = draw_matrices(kernels, Value("cka"), over=None)
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["kernel linear", "kernel rbf"]
    for ax, kernel in zip(shown, ("linear", "rbf"), strict=True):
        part = kernels[kernels.kernel == kernel]
        want = part.pivot(index="a_layer", columns="b_layer", values="cka").loc[ORDER, ORDER]
        assert np.asarray(ax.images[0].get_array()) == pytest.approx(want.to_numpy(), abs=0)
        assert [t.get_text() for t in ax.get_yticklabels()] == ORDER
    title = fig._suptitle.get_text()  # type: ignore[union-attr]
    assert "linear" not in title and "n = 500" in title and title.startswith("CKA")
    _close(fig)


def test_heatmap_average_only_when_asked_and_said(kernels: pd.DataFrame) -> None:
    fig, _ = draw_matrices(kernels, Value("cka"), over=None, style=Style(average="kernel"))
    (ax,) = [ax for ax in fig.axes if ax.images]
    want = kernels.groupby(["a_layer", "b_layer"])["cka"].mean().unstack().loc[ORDER, ORDER]
    assert np.asarray(ax.images[0].get_array()) == pytest.approx(want.to_numpy(), rel=1e-12)
    assert "mean over kernel (linear, rbf)" in fig._suptitle.get_text()  # type: ignore[union-attr]
    _close(fig)


def test_heatmap_colour_range_decimals_and_diverging_map(kernels: pd.DataFrame) -> None:
    close = kernels[kernels.kernel == "linear"].assign(
        cka=np.linspace(0.993, 0.999, 9)
    )  # 0.993 … 0.999: every cell reads "1.00" at 2 decimals
    fig, _ = draw_matrices(close, Value("cka"), over=None)
    image = fig.axes[0].images[0]
    assert image.get_clim() == pytest.approx((0.993, 0.999))
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == sorted(f"{v:.4f}" for v in np.linspace(0.993, 0.999, 9))
    assert decimals(np.array([0.993, 0.999])) == 3
    _close(fig)
    signed = close.assign(cka=np.linspace(-0.2, 0.6, 9))
    fig, _ = draw_matrices(signed, Value("cka"), over=None, style=Style(vmax=0.9))
    image = fig.axes[0].images[0]
    assert image.get_cmap().name == "RdBu_r" and image.get_clim() == pytest.approx((-0.6, 0.9))
    _close(fig)


def test_describe_timeline_without_by_is_one_line_per_layer(rng: np.random.Generator) -> None:
    rows = [dict(model="net", seed=str(s), checkpoint=f"step{c}", layer=lay, dataset="default",
                 n_samples=100, pr=rng.uniform(1, 9))
            for c in (0, 10, 100) for s in range(3) for lay in LAYERS]  # fmt: skip
    df = pd.DataFrame(rows)
    fig, _ = draw_timeline(df, Value("pr"), by=None, over="seed", x=None, band="sd",
                           level=0.95, final_step=None, title=None)  # fmt: skip
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines] == ORDER
    for line in ax.lines:
        part = df[df.layer == line.get_label()]
        want = [part[part.checkpoint == f"step{c}"]["pr"].mean() for c in (0, 10, 100)]
        assert np.asarray(line.get_ydata()) == pytest.approx(want, rel=1e-12)
    assert ax.get_ylabel() == "participation ratio"
    _close(fig)


def test_timeline_refuses_rows_it_would_pool_and_averages_on_request(
    kernels: pd.DataFrame,
) -> None:
    df = pd.concat([kernels.assign(b_checkpoint=c) for c in ("step0", "step50")])
    df = df[df.a_layer == df.b_layer]
    with pytest.raises(InputError, match=r"differ in kernel .*--by kernel.*--average kernel"):
        draw_timeline(df, Value("cka"), by="layer", over="seed", x=None, band="none",
                      level=0.95, final_step=None, title=None)  # fmt: skip
    fig, _ = draw_timeline(df, Value("cka"), by="layer", over="seed", x=None, band="none",
                           level=0.95, final_step=None, title=None,
                           style=Style(average="kernel", logx=True))  # fmt: skip
    ax = fig.axes[0]
    assert "mean over kernel (linear, rbf)" in ax.get_title()
    assert ax.get_xscale() == "symlog"
    first = df[(df.b_layer == "layer_2") & (df.b_checkpoint == "step0")]["cka"].mean()
    assert ax.lines[0].get_ydata()[0] == pytest.approx(first, rel=1e-12)
    _close(fig)


def test_profile_draws_a_line_per_estimator(rng: np.random.Generator) -> None:
    rows = [_row(a_layer=lay, b_layer=lay, estimator=e, cka=rng.uniform(0.3, 0.9))
            for e in ("biased", "debiased") for lay in LAYERS]  # fmt: skip
    df = pd.DataFrame(rows)
    fig, _ = draw_profile(df, Value("cka"), by=None, over="seed", band="none", level=0.95,
                          title=None)  # fmt: skip
    ax = fig.axes[0]
    assert [c.get_label() for c in ax.containers] == ["biased", "debiased"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ORDER
    for c in ax.containers:
        part = df[df.estimator == c.get_label()].set_index("b_layer").loc[ORDER, "cka"]
        assert np.asarray(c.lines[0].get_ydata()) == pytest.approx(part.to_numpy())
    _close(fig)


def _matched(rng: np.random.Generator, width: int = 12, rank: int = 9) -> pd.DataFrame:
    """A ``compare --match layer --measure svcca,pca`` result over three layers."""
    rows = []
    for lay in LAYERS:
        lam = np.sort(rng.uniform(0.1, 1, rank))[::-1]
        own = np.concatenate([np.cumsum(lam) / lam.sum(), np.ones(width - rank)])
        other = np.minimum(1.0, np.linspace(0.05, 1.0, width))
        rows.append(_row(a_layer=lay, b_layer=lay, svcca=rng.uniform(0.3, 0.9),
                         cev_b_in_a=other[2], cev_a_in_b=other[2], cev_a_self=own[2],
                         cev_b_self=own[2], pr_a=3.0, pr_b=3.5, pr_b_in_a=2.0,
                         cev_b_in_a_curve=json.dumps(list(other)),
                         cev_a_in_b_curve=json.dumps(list(other)),
                         cev_a_self_curve=json.dumps(list(own)),
                         cev_b_self_curve=json.dumps(list(own)),
                         angles=json.dumps(list(np.linspace(0.1, 1.4, 3))), pca_k=3))  # fmt: skip
    return pd.DataFrame(rows).drop(columns=["cka", "estimator", "kernel"])


def test_matched_multi_measure_result_is_line_panels_and_pca_curves(
    rng: np.random.Generator,
) -> None:
    df = _matched(rng)
    fig, _ = draw_comparison(df)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    titles = [ax.get_title() for ax in axes]
    assert titles[:3] == ["SVCCA", "pca: variance in the top-k PCs", "pca: participation ratios"]
    svcca = axes[0]
    assert [t.get_text() for t in svcca.get_xticklabels()] == ORDER
    want = df.set_index("b_layer").loc[ORDER, "svcca"].to_numpy()
    assert np.asarray(svcca.containers[0].lines[0].get_ydata()) == pytest.approx(want)
    curves = axes[3]
    assert curves.get_xscale() == "log"
    marks = [ln.get_xdata()[0] for ln in curves.lines if ln.get_linestyle() in ("--", ":")
             and len(ln.get_xdata()) == 2]  # fmt: skip
    assert 9 in marks and 3 in marks  # the rank (9 of 12) and k
    angles = axes[4]
    assert np.asarray(angles.lines[0].get_ydata()) == pytest.approx(
        np.degrees(np.linspace(0.1, 1.4, 3))
    )
    w, h = fig.get_size_inches()
    assert w <= 16 and h <= 24
    plt.close(fig)
    assert covariance_rank(np.array([0.5, 0.9, 1.0, 1.0])) == 3


def test_cli_plot_refuses_pooling_in_one_line_and_takes_figure_options(
    tmp_path: Path, kernels: pd.DataFrame
) -> None:
    df = kernels[kernels.a_layer == kernels.b_layer]
    df.to_csv(tmp_path / "mixed.csv", index=False)
    done = run_cli("plot", "mixed.csv", "--kind", "profile", "--by", "model", "--out", "p.png",
                   cwd=tmp_path)  # fmt: skip
    assert_user_error(done, "--by kernel")
    done = run_cli("plot", "mixed.csv", "--kind", "profile", "--where", "kernel == 'rbf'",
                   "--label", "layer_2=embedding", "--out", "p.pdf", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.pdf").read_bytes().startswith(b"%PDF")
    for args, needle in [(["--vmin", "1", "--vmax", "0"], "must be below --vmax"),
                         (["--cols", "0"], "at least 1"),
                         (["--label", "oops"], "from=to")]:  # fmt: skip
        assert_user_error(run_cli("plot", "mixed.csv", "--kind", "heatmap", "--out", "h.png",
                                  *args, cwd=tmp_path), needle)  # fmt: skip


def test_ticks_from_a_run_attribute_label_the_layers(tmp_path: Path, kernels: pd.DataFrame) -> None:
    depth = {"layer_2": 2, "layer_9": 9, "layer_10": 10}
    df = kernels[kernels.kernel == "linear"].assign(
        a_depth=lambda d: d.a_layer.map(depth), b_depth=lambda d: d.b_layer.map(depth)
    )
    df.to_csv(tmp_path / "g.csv", index=False)
    from reprstore.report.figures import plot_results

    drawn = plot_results(df, "heatmap", tmp_path / "h.png", style=Style(ticks="depth"))
    assert drawn.path.stat().st_size > 0
    from reprstore.report.style import with_ticks

    style = with_ticks(Style(ticks="depth"), df)
    fig, _ = draw_matrices(df, Value("cka"), over=None, style=style)
    (ax,) = [ax for ax in fig.axes if ax.images]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "9", "10"]
    assert "depth" in ax.get_ylabel() and "layer" not in ax.get_ylabel()
    _close(fig)
    bad = run_cli("plot", "g.csv", "--kind", "heatmap", "--ticks", "width", "--out", "x.png",
                  cwd=tmp_path)  # fmt: skip
    assert_user_error(bad, "no run attribute 'width'")
    clash = df.assign(a_depth=range(len(df)))
    clash.to_csv(tmp_path / "c.csv", index=False)
    assert_user_error(run_cli("plot", "c.csv", "--kind", "heatmap", "--ticks", "depth",
                              "--out", "x.png", cwd=tmp_path), "several values")  # fmt: skip
