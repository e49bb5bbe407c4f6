"""Result files, the heatmap, and the ``reprstore cka`` command end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, run_cli

from reprstore.errors import InputError
from reprstore.report import check_output, plot_heatmap, write_results
from reprstore.report.plot import grid, side_labels
from reprstore.workflows.comparison import EXTRA_COLUMNS, RESULT_COLUMNS
from reprstore.workflows.ingest import import_files


def results(n_a: int = 2, n_b: int = 3) -> pd.DataFrame:
    rows = []
    for i in range(n_a):
        for j in range(n_b):
            rows.append({
                "a_model": "m", "a_seed": "0", "a_checkpoint": "final", "a_layer": f"l{i}",
                "b_model": "m", "b_seed": str(j % 2), "b_checkpoint": "final",
                "b_layer": f"l{j}", "dataset": "default", "estimator": "debiased",
                "kernel": "linear", "n_samples": 100, "cka": (i + 1) / (j + 2),
                "n_batches": None, "batch_size": None, "sigma": None, "sigma_method": None,
                "hsic_ab": 0.1, "hsic_aa": 0.2, "hsic_bb": 0.3,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=RESULT_COLUMNS + EXTRA_COLUMNS)


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_result_files_round_trip(tmp_path: Path, suffix: str) -> None:
    df = results()
    path = write_results(df, tmp_path / f"r{suffix}")
    if suffix == ".csv":
        back = pd.read_csv(path, dtype={"a_seed": str, "b_seed": str})
    elif suffix == ".json":
        data = json.loads(path.read_text())
        assert set(data) == {"provenance", "rows"} and data["rows"][0]["n_batches"] is None
        back = pd.DataFrame(data["rows"])
    else:
        back = pd.read_parquet(path)
    assert list(back.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    np.testing.assert_allclose(back["cka"], df["cka"])
    assert list(back["b_seed"]) == list(df["b_seed"])


def test_bad_output_names(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"ending in \.csv, \.json, \.parquet"):
        write_results(results(), tmp_path / "r.xlsx")
    with pytest.raises(InputError, match="does not exist"):
        check_output(tmp_path / "missing" / "r.csv")
    with pytest.raises(InputError, match=r"ending in \.png, \.svg, \.pdf"):
        plot_heatmap(results(), tmp_path / "p.jpg")


def test_heatmap(tmp_path: Path) -> None:
    df = results()
    assert side_labels(df, "a") == ["l0"] * 3 + ["l1"] * 3
    assert side_labels(df, "b")[:3] == ["seed=0 · l0", "seed=1 · l1", "seed=0 · l2"]
    _, _, values = grid(df)
    assert values.shape == (2, 3) and values[1, 0] == pytest.approx(1.0)
    path = plot_heatmap(df, tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    base = rng.normal(size=(120, 5))
    for seed in ("0", "1"):
        for layer in ("a", "b"):
            x = base @ rng.normal(size=(5, 6)) + 0.5 * rng.normal(size=(120, 6))
            np.save(tmp_path / f"{layer}.npy", x.astype(np.float32))
        import_files(tmp_path / "s.zarr", [tmp_path / "a.npy", tmp_path / "b.npy"], name="m",
                     seed=seed, layer="{stem}", dtype="float32")  # fmt: skip
    return tmp_path


def test_cli_cka_writes_table_files_and_plot(cli_store: Path) -> None:
    result = run_cli("cka", "s.zarr", "--a", "seed=0", "--b", "seed=1", "--match", "layer",
                     "--out", "r.json", "--plot", "p.svg", cwd=cli_store)  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads((cli_store / "r.json").read_text())["rows"]
    assert [(r["a_layer"], r["b_layer"]) for r in rows] == [("a", "a"), ("b", "b")]
    for r in rows:
        assert f"{r['cka']:.6f}" in result.stdout
    assert (cli_store / "p.svg").read_bytes().startswith(b"<?xml")  # plot's formats too
    again = run_cli("cka", "s.zarr", "--pairs", "r.json", "--out", "again.json", cwd=cli_store)
    assert again.returncode == 0, again.stderr  # a results file of any format lists pairs
    pairs = [
        (r["a_layer"], r["b_layer"])
        for r in json.loads((cli_store / "again.json").read_text())["rows"]
    ]
    assert pairs == [("a", "a"), ("b", "b")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--a", "seed=0", "--b", "seed=1", "--estimator", "unbiased"], "Unknown estimator"),
        (["--a", "seed=0", "--b", "seed=1", "--where", "id < 2"], "keeps 2 of 120 rows"),
        (["--a", "seed=0", "--b", "seed=9"], "No representation matches --b"),
        (["--a", "seed=0"], "Give both --a and --b"),
        (["--a", "seed=0", "--b", "seed=1", "--memory", "lots"], "Invalid memory limit"),
        (["--a", "seed=0", "--b", "seed=1", "--out", "r.xlsx"], "ending in .csv"),
        (["--a", "seed=0", "--b", "seed=1", "--device", "cuda"], "cuda"),
        (["--a", "colour=red", "--b", "seed=1"], "Unknown selector key"),
        (["--a", "seed=0", "--b", "seed=1", "--match", "colour"], "Unknown key 'colour'"),
    ],
)
def test_cli_cka_errors_are_one_line(
    cli_store: Path, args: list[str], needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process (typer's CliRunner) for speed; the subprocess path is tested above."""
    from typer.testing import CliRunner

    from reprstore.cli.app import app

    monkeypatch.chdir(cli_store)
    r = CliRunner().invoke(app, ["cka", "s.zarr", *args])
    assert_user_error(subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr), needle)


def test_cli_minibatch_table_shows_batches(
    cli_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from reprstore.cli.app import app

    monkeypatch.chdir(cli_store)
    r = CliRunner().invoke(app, ["cka", "s.zarr", "--a", "seed=0", "--b", "seed=1", "--match",
                                 "layer", "--estimator", "minibatch", "--batch-size", "50",
                                 "--out", "m.csv"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    n = int(pd.read_csv(cli_store / "m.csv")["n_samples"].iloc[0])
    batches = max(1, n // 50)  # SPEC: k = max(1, ⌊n/B⌋) batches of near-equal size
    assert "n_batches" in r.stdout and f"│ {batches} " in r.stdout
