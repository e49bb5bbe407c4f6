"""Measures over a real store: one pass for five measures, feature-paired pairs across
datasets, result files with list columns, describe, and every way the input can be wrong
(one line, exit status 1, the store untouched)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from test_compare import LAYERS, N, _chunk_reads, _counting, store, stored  # noqa: F401
from test_measures_reference import ORACLES, ref_describe

import reprstore
from reprstore.errors import ComparisonError, DatasetMismatchError, InputError
from reprstore.workflows.ingest import import_files

FIVE = "cka,cca,procrustes,linreg,rsa"


def test_five_measures_read_every_chunk_once(store: Path) -> None:  # noqa: F811
    st, counts = _counting(store)
    df = reprstore.compare(st, "model=m,seed=0", "model=m,seed=*", measures=FIVE,
                           scheduler="threads")  # fmt: skip
    assert len(df) == 18
    group = zarr.open_group(str(store), mode="r")
    for seed in ("0", "1"):
        for layer in LAYERS:
            reads = _chunk_reads(counts, f"m/{seed}/final/default/{layer}")
            chunks = group[f"reprs/m/{seed}/final/default/{layer}"].chunks[0]
            assert len(reads) == -(-N // chunks) and set(reads) == {1}
    for _, row in df.head(4).iterrows():
        x = stored(store, f"m/0/final/default/{row['a_layer']}")
        y = stored(store, f"m/{row['b_seed']}/final/default/{row['b_layer']}")
        for name in ("cca", "procrustes", "linreg", "rsa"):
            assert row[name] == pytest.approx(ORACLES[name](x, y)[name], rel=1e-6), name


def test_columns_and_list_outputs(store: Path, tmp_path: Path) -> None:  # noqa: F811
    df = reprstore.compare(store, "model=m,seed=0,layer=l1", "model=m,seed=1,layer=l1",
                           measures="cca,pca:k=2,svcca:keep=0.9")  # fmt: skip
    assert list(df.columns[:11]) == [
        "a_model", "a_seed", "a_checkpoint", "a_layer", "b_model", "b_seed", "b_checkpoint",
        "b_layer", "dataset", "n_samples", "cca",
    ]  # fmt: skip
    assert isinstance(df["cca_rho"].iloc[0], list) and len(df["angles"].iloc[0]) == 2
    from reprstore.report import write_results

    write_results(df, tmp_path / "r.csv")
    write_results(df, tmp_path / "r.json")
    write_results(df, tmp_path / "r.parquet")
    csv = pd.read_csv(tmp_path / "r.csv")
    assert json.loads(csv["cca_rho"].iloc[0]) == pytest.approx(df["cca_rho"].iloc[0])
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert rows[0]["cev_b_in_a_curve"] == pytest.approx(df["cev_b_in_a_curve"].iloc[0])
    back = pd.read_parquet(tmp_path / "r.parquet")
    assert list(back["angles"].iloc[0]) == pytest.approx(df["angles"].iloc[0])


def test_pca_across_datasets_and_row_paired_refused(store: Path) -> None:  # noqa: F811
    df = reprstore.compare(store, "model=m,seed=0,layer=l1", "model=m2", measures="pca:k=2")
    row = df.iloc[0]
    assert (row["dataset"], row["b_dataset"], row["b_n_samples"]) == ("default", "other", 150)
    x = stored(store, "m/0/final/default/l1")
    y = zarr.open_group(str(store), mode="r")["reprs/m2/0/final/other/l1"][:].astype(np.float64)
    want = ORACLES["pca"](x, y, k=2)
    for col in ("cev_b_in_a", "cev_a_in_b", "pr_a", "pr_b", "pr_b_in_a"):
        assert row[col] == pytest.approx(want[col], rel=1e-6), col
    with pytest.raises(DatasetMismatchError, match="rows must be the same samples"):
        reprstore.compare(store, "model=m,seed=0,layer=l1", "model=m2", measures="pca,cca")


def test_describe_over_the_store(store: Path) -> None:  # noqa: F811
    wanted = "pr,erank,variance,sparsity:tol=3,selectivity:label=label"
    df = reprstore.describe(store, "model=m,seed=0", measures=wanted)
    assert len(df) == 3 and set(df["n_samples"]) == {N}
    labels = np.arange(N) % 3  # the fixture's label column
    for _, row in df.iterrows():
        x = stored(store, f"m/0/final/default/{row['layer']}")
        for name, kw in [("pr", {}), ("erank", {}), ("variance", {}), ("sparsity", {"tol": 3}),
                         ("selectivity", {"labels": labels})]:  # fmt: skip
            assert row[name] == pytest.approx(ref_describe(x, name, **kw)[name], rel=1e-6)


BAD = [
    ({"measures": "cosine"}, ComparisonError, "cosine needs the same number of features"),
    ({"measures": "ckaa"}, InputError, "Unknown measure 'ckaa'. Did you mean cka"),
    ({"measures": "svcca:kep=0.9"}, InputError, "Unknown option 'kep' of measure svcca. Did you"),
    ({"measures": "svcca:keep=x"}, InputError, "svcca:keep expects float"),
    ({"measures": "svcca:k=50"}, ComparisonError, "svcca:k=50 is larger than the rank"),
    (
        {"measures": "pca:k=9", "b": "model=m,seed=1,layer=l1"},
        ComparisonError,
        "pca:k=9 is larger than the rank",
    ),
    ({"measures": "pr"}, InputError, "use reprstore describe"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD)
def test_bad_measures(store: Path, kwargs: dict, error: type, match: str) -> None:  # noqa: F811
    st, counts = _counting(store)
    b = kwargs.pop("b", "model=m,seed=1,layer=l2")
    with pytest.raises(error, match=match):
        reprstore.compare(st, "model=m,seed=0,layer=l1", b, **kwargs)
    if error is InputError or "features" in match:
        assert not any(k.startswith("reprs/") and "/c/" in k for k in counts)  # nothing read


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for f in sorted(files):
            h.update(f.encode() + (Path(root) / f).read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def deficient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("deficient")
    rng = np.random.default_rng(9)
    x = rng.normal(size=(80, 4))
    np.save(tmp / "full.npy", x.astype(np.float32))
    np.save(tmp / "dup.npy", np.c_[x[:, :3], x[:, :1]].astype(np.float32))  # rank 3 of 4
    np.save(tmp / "narrow.npy", x[:, :2].astype(np.float32))
    import_files(tmp / "s.zarr", [tmp / f"{n}.npy" for n in ("full", "dup", "narrow")],
                 name="m", layer="{stem}", dtype="float32")  # fmt: skip
    return tmp


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["reprstore", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--a", "layer=dup", "--b", "layer=full", "--measure", "cca"],
         "rank-deficient.*cca:ridge="),
        (["--a", "layer=full", "--b", "layer=narrow", "--measure", "cosine"],
         "cosine needs the same number of features"),
        (["--a", "layer=full", "--b", "layer=dup", "--measure", "cka,procrutes"],
         "Unknown measure 'procrutes'. Did you mean procrustes"),
        (["--a", "layer=full", "--b", "layer=dup", "--measure", "pca:k=7"],
         "pca:k=7 is larger than the rank"),
    ],
)  # fmt: skip
def test_cli_bad_input_is_one_line_and_leaves_the_store(deficient: Path, args, message) -> None:
    before = _digest(deficient / "s.zarr")
    r = _cli(deficient, "compare", "s.zarr", *args)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    import re

    assert re.search(message, lines[0]), lines[0]
    assert _digest(deficient / "s.zarr") == before


def test_cli_ridge_fixes_rank_deficient_cca_and_help_lists_measures(deficient: Path) -> None:
    wanted = "cca:ridge=0.01,linreg,pca:k=2"
    r = _cli(deficient, "compare", "s.zarr", "--a", "layer=dup", "--b", "layer=full",
             "--measure", wanted, "--out", "r.csv", "--plot", "p.png")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "cca_r2" in r.stdout and (deficient / "p.png").stat().st_size > 0
    help_ = _cli(deficient, "compare", "s.zarr", "--measure", "help")
    assert help_.returncode == 0
    for name in reprstore.measures():
        assert f"  {name} " in help_.stdout
    d = _cli(deficient, "describe", "s.zarr", "layer=full", "--measure", "pr,erank,variance")
    assert d.returncode == 0 and "erank" in d.stdout, d.stderr
