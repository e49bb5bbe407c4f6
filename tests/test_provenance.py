"""Every result file says how it was made, and the record reads back from all three formats."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from conftest import run_cli

from reprstore.errors import InputError
from reprstore.report import read_provenance, read_results, write_results
from reprstore.workflows.ingest import import_files

N = 60


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("prov")
    rng = np.random.default_rng(1)
    (tmp / "meta.csv").write_text("region\n" + "".join(f"r{i % 3}\n" for i in range(N)))
    for seed in ("0", "01"):
        for layer in ("a", "b"):
            np.save(tmp / f"{layer}.npy", rng.normal(size=(N, 4)).astype(np.float32))
        import_files(tmp / "s.zarr", [tmp / "a.npy", tmp / "b.npy"], name="m", seed=seed,
                     layer="{stem}", meta=tmp / "meta.csv")  # fmt: skip
    return tmp


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_cli_result_files_carry_their_provenance(store: Path, suffix: str) -> None:
    out = f"r{suffix}"
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    result = run_cli("cka", "s.zarr", "--a", "seed=0", "--b", "seed=01", "--match", "layer",
                     "--where", "region != 'r1'", "--pair-where", "a.layer == 'b'",
                     "--estimator", "biased", "--out", out, cwd=store)  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = read_provenance(store / out)
    assert record["store"] == "s.zarr"
    assert (record["a"], record["b"]) == ("seed=0", "seed=01")
    assert record["match"] == ["layer"] and record["differ"] == []
    assert record["where"] == "region != 'r1'" and record["pair_where"] == "a.layer == 'b'"
    kept = sum(1 for i in range(N) if i % 3 != 1)
    assert record["rows"] == {"default": {"n_samples": N, "rows_used": kept}}
    assert record["options"]["estimator"] == "biased" and record["options"]["kernel"] == "linear"
    assert record["n_pairs"] == 1
    assert record["versions"]["numpy"] == np.__version__
    assert record["versions"]["zarr"] == zarr.__version__
    assert record["versions"]["reprstore"] and record["versions"]["pandas"] == pd.__version__
    assert "cka s.zarr --a seed=0" in record["command"]
    made = dt.datetime.fromisoformat(record["time"])
    assert started <= made <= dt.datetime.now(dt.timezone.utc)
    df = read_results(store / out)
    assert list(df["a_seed"]) == ["0"] and list(df["b_seed"]) == ["01"]  # text, not numbers
    assert df.attrs["reprstore"] == record


def test_json_is_a_header_object_and_csv_a_plain_table_with_a_sidecar(store: Path) -> None:
    run_cli("cka", "s.zarr", "--a", "seed=0", "--b", "seed=01", "--out", "g.json", cwd=store)
    run_cli("cka", "s.zarr", "--a", "seed=0", "--b", "seed=01", "--out", "g.csv", cwd=store)
    body = json.loads((store / "g.json").read_text())
    assert set(body) == {"provenance", "rows"} and len(body["rows"]) == 4
    csv = pd.read_csv(store / "g.csv")  # any CSV reader sees just the table
    assert len(csv) == 4 and "provenance" not in " ".join(csv.columns)
    side = json.loads((store / "g.csv.json").read_text())
    assert side["sha256"] == hashlib.sha256((store / "g.csv").read_bytes()).hexdigest()
    assert side["provenance"]["rows"]["default"]["rows_used"] == N


@pytest.mark.parametrize("command", [("cka",), ("compare", "--measure", "cka,rsa")])
def test_pairs_file_is_recorded_with_its_hash(store: Path, command: tuple[str, ...]) -> None:
    """Both commands record the --pairs file (compare did not before they shared one
    runner)."""
    (store / "pairs.csv").write_text(
        "a_model,a_seed,a_checkpoint,a_layer,b_model,b_seed,b_checkpoint,b_layer\n"
        "m,0,final,a,m,01,final,b\n"
    )
    result = run_cli(*command, "s.zarr", "--pairs", "pairs.csv", "--out", "p.parquet", cwd=store)
    assert result.returncode == 0, result.stderr
    record = read_provenance(store / "p.parquet")
    digest = hashlib.sha256((store / "pairs.csv").read_bytes()).hexdigest()
    assert record["pairs_file"] == {"path": "pairs.csv", "sha256": digest}
    assert record["pairs_listed"] == 1 and record["where"] is None


def test_a_changed_csv_no_longer_matches_its_record(store: Path, tmp_path: Path) -> None:
    df = pd.DataFrame({"a_model": ["m"], "cka": [0.5]})
    path = write_results(df, tmp_path / "r.csv", provenance={"store": "x"})
    assert read_provenance(path)["store"] == "x"
    path.write_text(path.read_text().replace("0.5", "0.9"))
    with pytest.raises(InputError, match="changed after"):
        read_provenance(path)
    moved = tmp_path / "moved.csv"
    moved.write_bytes(write_results(df, tmp_path / "s.csv").read_bytes())  # sidecar left behind
    with pytest.raises(InputError, match="no provenance sidecar"):
        read_provenance(moved)


def test_results_made_outside_compare_still_record_versions(tmp_path: Path) -> None:
    df = pd.DataFrame({"a_model": ["m"], "cka": [0.5]})
    for suffix in (".csv", ".json", ".parquet"):
        record = read_provenance(write_results(df, tmp_path / f"r{suffix}"))
        assert record["versions"]["numpy"] == np.__version__ and record["time"]
