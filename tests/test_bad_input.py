"""Bad input across every command: one line on stderr, exit 1, the store unchanged.

Each case runs the real CLI in a subprocess against one shared store and compares a hash
of every file in the store before and after.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_user_error, run_cli, store_digest

from reprstore.ingest import import_files
from reprstore.keys import ReprKey
from reprstore.store import Encoding, ReprSettings, Store


def _import(root: Path, name: str, x: np.ndarray, seed: str, layer: str, dataset: str = "default",
            **kw: object) -> None:  # fmt: skip
    np.save(root / f"{name}.npy", x.astype(np.float32))
    import_files(root / "s.zarr", [root / f"{name}.npy"], name="m", seed=seed, layer=layer,
                 dataset=dataset, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with good, incomplete, constant and NaN representations, plus bad files."""
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(3)
    n = 200
    (root / "meta.csv").write_text(
        "label,region\n" + "".join(f"{i % 4},r{i % 3}\n" for i in range(n))
    )
    for seed in ("0", "1"):
        for layer in ("l1", "l2"):
            _import(root, f"s{seed}{layer}", rng.normal(size=(n, 6)), seed, layer,
                    meta=root / "meta.csv" if seed == "0" and layer == "l1" else None)  # fmt: skip
    _import(root, "o1", rng.normal(size=(150, 6)), "0", "o1", dataset="other")
    _import(root, "const", np.ones((n, 6)), "3", "l1")
    nan = rng.normal(size=(n, 6))
    nan[[5, 17], 2] = np.nan
    _import(root, "nan", nan, "4", "l1")
    store = Store.open(root / "s.zarr", create=True)
    settings = ReprSettings("default", 6, n, (6,), "none", "float16", "float32")
    writer = store.writer(
        ReprKey("m", "2", "final", "default", "l1"), settings, encoding=Encoding("float16")
    )
    writer.abort()  # an interrupted (incomplete) representation
    # extraction inputs
    np.save(root / "x.npy", rng.normal(size=(n, 8)).astype(np.float32))
    np.save(root / "x150.npy", rng.normal(size=(150, 8)).astype(np.float32))
    torch.save({"weight": torch.zeros(2, 2)}, root / "wrong_keys.pt")
    torch.save(torch.nn.Linear(8, 4), root / "pickled.pt")
    (root / "text.npy").write_text("this is not an array")
    (root / "table.xyz").write_text("1,2")
    (root / "plain.txt").write_text("hello")
    (root / "notastore").mkdir()
    (root / "notastore" / "readme.txt").write_text("hi")
    (root / "ids_short.txt").write_text("a\nb\n")
    return root


MLP = ["--model", "models_for_tests:mlp", "--data", "x.npy", "--name", "net"]
CKA = ["cka", "s.zarr"]

CASES: list[tuple[str, list[str], str]] = [
    # ls / info / verify
    ("ls missing store", ["ls", "missing.zarr"], "No store"),
    ("ls a plain directory", ["ls", "notastore"], "store"),
    ("ls a file", ["ls", "plain.txt"], "is a file"),
    ("ls unknown selector key", ["ls", "s.zarr", "colour=red"], "Unknown selector key"),
    ("ls selector without =", ["ls", "s.zarr", "model"], "not key=value"),
    ("info nothing matches", ["info", "s.zarr", "layer=nope"], "No representation"),
    ("verify missing store", ["verify", "missing.zarr"], "No store"),
    ("verify empty selector value", ["verify", "s.zarr", "seed="], "empty value"),
    # import
    ("import wrong row count", ["import", "s.zarr", "x150.npy", "--name", "m", "--layer", "z"], "200 samples"),
    ("import name with /", ["import", "s.zarr", "x.npy", "--name", "a/b", "--layer", "z"], "'/'"),
    ("import layer ..", ["import", "s.zarr", "x.npy", "--name", "m", "--layer", ".."], "'..'"),
    ("import not an array", ["import", "s.zarr", "text.npy", "--name", "m", "--layer", "z"], "not a readable"),
    ("import unknown suffix", ["import", "s.zarr", "table.xyz", "--name", "m", "--layer", "z"], "unsupported file type"),
    ("import over complete", ["import", "s.zarr", "x.npy", "--name", "m", "--seed", "0", "--layer", "l1"], "--overwrite"),
    ("import bad dtype", ["import", "s.zarr", "x.npy", "--name", "m", "--layer", "z", "--dtype", "int8"], "storage dtype"),
    ("import keep-bits too many", ["import", "s.zarr", "x.npy", "--name", "m", "--layer", "z", "--keep-bits", "30"], "out of range"),
    ("import ids count", ["import", "s.zarr", "x.npy", "--name", "m", "--layer", "z", "--dataset", "new", "--ids", "ids_short.txt"], "--ids has 2"),
    ("import meta missing", ["import", "s.zarr", "x.npy", "--name", "m", "--layer", "z", "--meta", "nope.csv"], "--meta file not found"),
    ("import into a plain directory", ["import", "notastore", "x.npy", "--name", "m", "--layer", "z"], "not a zarr store"),
    # extract
    ("extract unknown layer", ["extract", "s.zarr", *MLP, "--layers", "fc9"], "fc9"),
    ("extract model not importable", ["extract", "s.zarr", "--model", "nosuchmod:fn", "--data", "x.npy", "--name", "net", "--layers", "0"], "nosuchmod"),
    ("extract callable not a module", ["extract", "s.zarr", "--model", "models_for_tests:not_a_module", "--data", "x.npy", "--name", "net", "--layers", "0"], "nn.Module"),
    ("extract checkpoint keys", ["extract", "s.zarr", *MLP, "--layers", "0", "--checkpoint", "wrong_keys.pt"], "wrong_keys.pt"),
    ("extract pickled checkpoint", ["extract", "s.zarr", *MLP, "--layers", "0", "--checkpoint", "pickled.pt"], "--trust-checkpoint"),
    ("extract rows differ from dataset", ["extract", "s.zarr", "--model", "models_for_tests:mlp", "--data", "x150.npy", "--name", "net", "--layers", "0"], "200"),
    ("extract missing data", ["extract", "s.zarr", "--model", "models_for_tests:mlp", "--data", "nope.npy", "--name", "net", "--layers", "0"], "nope.npy"),
    ("extract no cuda", ["extract", "s.zarr", *MLP, "--layers", "0", "--device", "cuda"], "cuda"),
    ("extract unknown device", ["extract", "s.zarr", *MLP, "--layers", "0", "--device", "tpu9"], "tpu9"),
    ("extract name with /", ["extract", "s.zarr", "--model", "models_for_tests:mlp", "--data", "x.npy", "--name", "a/b", "--layers", "0"], "'/'"),
    ("extract bad reduce", ["extract", "s.zarr", *MLP, "--layers", "0", "--reduce", "median"], "median"),
    ("extract bad dtype", ["extract", "s.zarr", *MLP, "--layers", "0", "--dtype", "int4"], "int4"),
    ("extract into a file", ["extract", "plain.txt", *MLP, "--layers", "0"], "is a file"),
    # cka
    ("cka unknown estimator", [*CKA, "--a", "seed=0", "--b", "seed=1", "--estimator", "magic"], "magic"),
    ("cka unknown kernel", [*CKA, "--a", "seed=0", "--b", "seed=1", "--kernel", "poly"], "poly"),
    ("cka different datasets", [*CKA, "--a", "seed=0,layer=l1", "--b", "dataset=other"], "dataset"),
    ("cka empty selection", [*CKA, "--a", "model=nope", "--b", "seed=1"], "nope"),
    ("cka where keeps < 4 rows", [*CKA, "--a", "seed=0,layer=l1", "--b", "seed=1,layer=l1", "--where", "id < 3"], "4"),
    ("cka where unknown column", [*CKA, "--a", "seed=0,layer=l1", "--b", "seed=1,layer=l1", "--where", "colour == 'red'"], "colour"),
    ("cka constant representation", [*CKA, "--a", "seed=3", "--b", "seed=0,layer=l1"], "constant"),
    ("cka incomplete", [*CKA, "--a", "seed=2", "--b", "seed=0,layer=l1"], "incomplete"),
    ("cka NaN rows", [*CKA, "--a", "seed=4", "--b", "seed=0,layer=l1"], "NaN"),
    ("cka bad out format", [*CKA, "--a", "seed=0", "--b", "seed=1", "--out", "r.xlsx"], "xlsx"),
    ("cka bad precision", [*CKA, "--a", "seed=0", "--b", "seed=1", "--precision", "float16"], "float16"),
    ("cka bad memory", [*CKA, "--a", "seed=0", "--b", "seed=1", "--memory", "lots"], "lots"),
    ("cka minibatch batch too small", [*CKA, "--a", "seed=0,layer=l1", "--b", "seed=1,layer=l1", "--estimator",
                                       "minibatch", "--batch-size", "2"], "--batch-size"),
    ("cka minibatch kernels over memory", [*CKA, "--a", "seed=0,layer=l1", "--b", "seed=1,layer=l1", "--estimator",
                                           "minibatch", "--batch-size", "4000", "--memory", "64MB"],
     "Lower --batch-size"),
    ("cka unknown match key", [*CKA, "--a", "seed=0", "--b", "seed=1", "--match", "colour"], "colour"),
    ("cka missing store", ["cka", "missing.zarr", "--a", "seed=0", "--b", "seed=1"], "No store"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(root: Path, args: list[str], needle: str) -> None:
    before = store_digest(root / "s.zarr")
    result = run_cli(*args, cwd=root)
    assert_user_error(result, needle)
    assert store_digest(root / "s.zarr") == before
    assert not (root / "r.xlsx").exists()


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
    assert {c[1][0] for c in CASES} >= {"ls", "info", "verify", "import", "extract", "cka"}
