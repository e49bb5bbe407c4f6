"""Feature-paired pairs across two datasets (``pca``): the printed A and B name each
side's dataset, the result file carries ``dataset`` (A's) and ``b_dataset`` (B's), and the
values are those of each side's own rows (float64 numpy in the test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from reprstore.workflows.ingest import import_files

P = 5


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Layer l1 of run m/0 on dataset default (80 rows) and on dataset other (50 rows)."""
    tmp = tmp_path_factory.mktemp("across")
    rng = np.random.default_rng(4)
    path, values = tmp / "s.zarr", {}
    for dataset, n in (("default", 80), ("other", 50)):
        x = (rng.normal(size=(n, P)) * np.array([3.0, 2.0, 1.0, 0.5, 0.2])).astype(np.float32)
        np.save(tmp / "l1.npy", x)
        import_files(path, [tmp / "l1.npy"], name="m", seed="0", layer="l1", dataset=dataset,
                     dtype="float32")  # fmt: skip
        values[dataset] = x.astype(np.float64)
    return path, values


def cev_b_in_a(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Σ_{i≤k} vᵢᵀ C_yy vᵢ / tr C_yy, vᵢ the top PCs of x."""
    cx, cy = np.cov(x, rowvar=False, bias=True), np.cov(y, rowvar=False, bias=True)
    _, vecs = np.linalg.eigh(cx)
    v = vecs[:, ::-1][:, :k]
    return float(np.trace(v.T @ cy @ v) / np.trace(cy))


def pca_cli(path: Path, a: str, b: str, out: Path) -> tuple[str, dict]:
    """``compare --measure pca:k=2`` of dataset ``a`` against ``b``: stdout, the one row."""
    done = run_cli("compare", str(path), "--a", f"dataset={a}", "--b", f"dataset={b}",
                   "--measure", "pca:k=2", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())["rows"]
    return " ".join(done.stdout.split()), row


def test_labels_and_columns_name_both_datasets(store, tmp_path: Path) -> None:
    path, values = store
    text, row = pca_cli(path, "default", "other", tmp_path / "r.json")
    assert "m/0/final/default:l1" in text and "m/0/final/other:l1" in text
    assert "b_dataset" in text and "b_n_samples" in text
    assert (row["dataset"], row["n_samples"]) == ("default", 80)
    assert (row["b_dataset"], row["b_n_samples"]) == ("other", 50)
    want = cev_b_in_a(values["default"], values["other"], 2)
    assert row["cev_b_in_a"] == pytest.approx(want, rel=1e-9)


def test_same_dataset_pairs_keep_plain_labels(store, tmp_path: Path) -> None:
    path, values = store
    text, row = pca_cli(path, "other", "other", tmp_path / "r.json")
    assert "m/0/final:l1" in text and "b_dataset" not in text
    assert "b_dataset" not in row and row["dataset"] == "other"
    want = cev_b_in_a(values["other"], values["other"], 2)
    assert row["cev_b_in_a"] == pytest.approx(want, rel=1e-9)
