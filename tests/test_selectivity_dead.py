"""Class selectivity with dead units (every class mean zero, 0/0): counted, reported, left
out of the mean by default (``selectivity:dead=skip|zero|error``); a unit with negative
class means is a different error. Values against float64 numpy of Morcos et al. (2018)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

import reprstore
from reprstore.errors import ComparisonError
from reprstore.workflows.ingest import import_files

N, P, DEAD = 60, 7, (1, 4)


def relu_units(rng: np.random.Generator) -> np.ndarray:
    """Non-negative activations; units 1 and 4 are zero on every row."""
    x = np.maximum(rng.normal(0.3, 1.0, size=(N, P)), 0.0)
    x[:, list(DEAD)] = 0.0
    return x


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dead")
    rng = np.random.default_rng(28)
    (tmp / "meta.csv").write_text("label\n" + "".join(f"c{i % 3}\n" for i in range(N)))
    np.save(tmp / "relu.npy", relu_units(rng).astype(np.float32))
    negative = np.maximum(rng.normal(0.3, 1.0, size=(N, P)), 0.0)
    negative[:, 2] = -np.abs(rng.normal(size=N)) - 0.1  # negative class means, not dead
    np.save(tmp / "neg.npy", negative.astype(np.float32))
    path = tmp / "s.zarr"
    import_files(path, [tmp / "relu.npy", tmp / "neg.npy"], name="m", layer="{stem}",
                 dtype="float32", meta=tmp / "meta.csv")  # fmt: skip
    return path


def numpy_units(x: np.ndarray) -> np.ndarray:
    """Per-unit (μmax − μrest)/(μmax + μrest) over the 3 class means; NaN where 0/0."""
    labels = np.arange(N) % 3
    means = np.stack([x[labels == c].mean(axis=0) for c in range(3)])
    top = means.max(axis=0)
    rest = (means.sum(axis=0) - top) / 2
    with np.errstate(invalid="ignore"):
        return (top - rest) / (top + rest)


def stored() -> np.ndarray:
    """The values of layer relu as stored (float32)."""
    return relu_units(np.random.default_rng(28)).astype(np.float32).astype(np.float64)


def test_dead_units_skipped_by_default(store: Path) -> None:
    df = reprstore.describe(store, "layer=relu", measures="selectivity:label=label")
    want = numpy_units(stored())
    live = np.ones(P, bool)
    live[list(DEAD)] = False
    row = df.iloc[0]
    assert row["selectivity"] == pytest.approx(want[live].mean(), rel=1e-9)
    assert row["selectivity_dead"] == len(DEAD)
    units = row["selectivity_units"]
    assert [i for i, u in enumerate(units) if u is None] == list(DEAD)
    assert [u for u in units if u is not None] == pytest.approx(want[live], rel=1e-9)
    (note,) = df.attrs["notes"]
    assert "2 dead unit(s)" in note and "left out of the mean" in note


def test_dead_units_as_zero_or_error(store: Path) -> None:
    df = reprstore.describe(store, "layer=relu", measures="selectivity:label=label:dead=zero")
    want = np.nan_to_num(numpy_units(stored()), nan=0.0)
    assert df["selectivity"].iloc[0] == pytest.approx(want.mean(), rel=1e-9)
    assert "counted as 0" in df.attrs["notes"][0]
    with pytest.raises(ComparisonError, match=r"2 dead unit\(s\).*dead=skip"):
        reprstore.describe(store, "layer=relu", measures="selectivity:label=label:dead=error")


def test_cli_reports_dead_units_and_refuses_negative_means(store: Path) -> None:
    ok = run_cli("describe", str(store), "layer=relu", "--measure", "selectivity:label=label")
    assert ok.returncode == 0, ok.stderr
    assert "note: selectivity: 2 dead unit(s)" in " ".join(ok.stdout.split())
    bad = run_cli("describe", str(store), "layer=neg", "--measure", "selectivity:label=label")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    lines = [line for line in (bad.stdout + bad.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "1 unit(s) whose class means are negative" in lines[0]
    assert "dead" not in lines[0]
    opt = run_cli("describe", str(store), "--measure", "selectivity:label=label:dead=maybe")
    assert opt.returncode == 1 and "selectivity:dead must be one of skip, zero, error" in opt.stderr
