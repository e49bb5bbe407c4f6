"""Bad input across every command: one line on stderr, exit 1, the store unchanged.

Each case runs the real CLI in a process of its own (forked, see ``conftest.run_cli``) against one shared store and compares a hash
of every file in the store before and after.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_user_error, run_cli, store_digest

from reprstore.keys import ReprKey
from reprstore.store import Encoding, ReprSettings, Store
from reprstore.workflows.ingest import import_files


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
    from models_for_tests import mlp

    torch.save(mlp().state_dict(), root / "mlp_state.pt")
    torch.save(torch.nn.Linear(8, 4), root / "pickled.pt")
    (root / "text.npy").write_text("this is not an array")
    (root / "table.xyz").write_text("1,2")
    (root / "plain.txt").write_text("hello")
    (root / "notastore").mkdir()
    (root / "notastore" / "readme.txt").write_text("hi")
    # a folder made an hour ago, as a user's is: a brand-new one is waited for (10 s) as a
    # store another process may be creating (tests/test_store.py::test_open_errors)
    hour_ago = time.time() - 3600
    os.utime(root / "notastore", (hour_ago, hour_ago))
    (root / "ids_short.txt").write_text("a\nb\n")
    _bad_files(root, rng, n)
    _tag_and_name_files(root)
    _result_files(root)
    _template_and_drift_files(root, rng, n)
    return root


def _bad_files(root: Path, rng: np.random.Generator, n: int) -> None:
    """Inputs that are broken in the ways an outside tester tried (issue: trust v2)."""
    good = rng.normal(size=(n, 8)).astype(np.float32)
    np.save(root / "x5.npy", rng.normal(size=(n, 5)).astype(np.float32))
    np.save(root / "zero_rows.npy", np.zeros((0, 8), np.float32))
    np.save(root / "zero_cols.npy", np.zeros((n, 0), np.float32))
    np.save(root / "vector.npy", np.zeros(n, np.float32))
    np.save(root / "cube.npy", np.zeros((n, 2, 3), np.float32))
    np.save(root / "strings.npy", np.array(["a"] * n))
    np.save(root / "full.npy", good)
    whole = (root / "full.npy").read_bytes()
    (root / "truncated.npy").write_bytes(whole[: len(whole) // 2])
    (root / "header_only.npy").write_bytes(whole[:128])
    (root / "empty.npy").write_bytes(b"")
    (root / "random.npy").write_bytes(bytes(rng.integers(0, 256, 4096, dtype=np.uint8)))
    np.save(root / "ids_object.npy", np.array([object()] * n, dtype=object), allow_pickle=True)
    np.save(root / "ids_2d.npy", np.arange(2 * n).reshape(n, 2))
    (root / "ids_dup.txt").write_text("".join(f"{i % 150}\n" for i in range(n)))
    (root / "meta_short.csv").write_text("label\n" + "".join(f"{i}\n" for i in range(50)))
    (root / "meta_reserved.csv").write_text("zarr.json\n" + "".join(f"{i}\n" for i in range(n)))
    (root / "meta_binary.csv").write_bytes(bytes(range(256)) * 8)
    (root / "meta_empty.csv").write_text("")
    (root / "pairs_binary.csv").write_bytes(bytes(rng.integers(0, 256, 2048, dtype=np.uint8)))
    (root / "pairs_empty.csv").write_text("")
    (root / "pairs_cols.csv").write_text("a,b\n1,2\n")
    (root / "pairs_unknown.csv").write_text(
        "a_model,a_seed,a_checkpoint,a_layer,b_model,b_seed,b_checkpoint,b_layer\n"
        "m,0,final,nope,m,1,final,l1\n"
    )
    np.savez(root / "empty.npz")
    torch.save({"name": "not a tensor"}, root / "no_tensor.pt")
    torch.save(torch.nn.Linear(2, 2), root / "legacy_mod.pt", _use_new_zipfile_serialization=False)
    (root / "garbage.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    (root / "adir.npy").mkdir()
    hf = root / "hf_pickled"
    hf.mkdir()
    (hf / "config.json").write_text(
        '{"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, '
        '"num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 30}'
    )
    torch.save({"bert.embeddings.word_embeddings.weight": torch.nn.Linear(2, 2)},
               hf / "pytorch_model.bin")  # fmt: skip
    (root / "hf_empty").mkdir()
    garbage = root / "garbage.zarr"
    garbage.mkdir()
    (garbage / "zarr.json").write_text("{this is not json")
    import shutil

    shutil.copytree(root / "s.zarr", root / "noids.zarr")
    shutil.rmtree(root / "noids.zarr" / "datasets" / "default" / "ids")


def _tag_and_name_files(root: Path) -> None:
    """Broken ``tag --from`` files, and a store holding a name in another Unicode spelling
    (issue: trust v3)."""
    files = {
        "tag_dup.csv": b"model,tasks,tasks\nm,a,b\n",
        "tag_extra.csv": b"model,tasks\nm,a,b\n",
        "tag_nul.csv": b"model,tasks\nm,a\0\n",
        "tag_header.csv": b"model,tasks\n",
        "tag_empty.csv": b"",
        "tag_utf16.csv": "model,tasks\nm,\u00e9\n".encode("utf-16"),
        "tag_latin1.csv": "model,tasks\nm,caf\u00e9\n".encode("latin-1"),
        "tag_long.csv": b"model,tasks\nm," + b"x" * 131_073 + b"\n",
        "tag_step.csv": b"model,step\nm,100\n",
        "tag_dunder.csv": b"model,__x__\nm,1\n",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    x = np.load(root / "x.npy")
    np.save(root / "x_nfd.npy", x)
    import_files(root / "nfd.zarr", [root / "x_nfd.npy"], name=NFC, layer="l1", dataset=NFC)
    (root / "nfd.zarr" / "reprs" / NFC).rename(root / "nfd.zarr" / "reprs" / NFD)
    (root / "nfd.zarr" / "datasets" / NFC).rename(root / "nfd.zarr" / "datasets" / NFD)


def _result_files(root: Path) -> None:
    """Damaged result tables for summarize and plot (issue: trust v3, item 8)."""
    head = "a_model,a_seed,a_layer,b_model,b_seed,b_layer,dataset,estimator,kernel,n_samples,"
    rows = [f"m,{s},l{k},m,{s},l{k + 1},default,debiased,linear,200," for s in (0, 1, 2)
            for k in (1, 2)]  # fmt: skip
    values = ["0.91", "0.82", "0.90", "0.80", "0.92", "0.81"]

    def table(name: str, column: str = "cka", cells: list[str] = values, extra: str = "") -> None:
        body = "".join(f"{r}{c}\n" for r, c in zip(rows, cells, strict=True))
        (root / name).write_text(head + column + "\n" + body + extra)

    table("res_nan.csv", cells=[*values[:3], "nan", *values[4:]])
    table("res_text.csv", cells=[*values[:4], "high", *values[5:]])
    table("res_empty_cell.csv", cells=["", *values[1:]])
    table("res_inf.csv", cells=[*values[:2], "inf", *values[3:]])
    table("res_big.csv", cells=[*values[:1], "7.5", *values[2:]])
    table("res_neg.csv", cells=[*values[:5], "-1.5"])
    table("res_svcca.csv", "svcca", [*values[:3], "1.2", *values[4:]])
    table("res_dup.csv", extra=f"{rows[2]}{values[2]}\n")
    table("res_dup_value.csv", extra=f"{rows[2]}0.5\n")
    (root / "res_nan.json").write_text(
        '[{"a_model": "m", "a_seed": "0", "a_layer": "l1", "b_model": "m", "b_seed": "1", '
        '"b_layer": "l2", "cka": NaN}]'
    )
    (root / "res_not_rows.json").write_text('{"rows": 3}')
    (root / "res_header.csv").write_text(head + "cka\n")


RES = ["--by", "b_layer", "--over", "seed"]
NFC, NFD = "caf\u00e9", "cafe\u0301"


def _template_and_drift_files(root: Path, rng: np.random.Generator, n: int) -> None:
    """Dump trees and checkpoints broken in the ways of issue trust-v3 (items 7 and 9)."""
    x = rng.normal(size=(n, 4)).astype(np.float32)
    for tree, meta in (("tpl_deep", '{"a": ' * 100_000 + "1" + "}" * 100_000),
                       ("tpl_seed", '{"seed": 7, "lr": 0.1}'), ("tpl_step", '{"step": 100}'),
                       ("tpl_link", None), ("tpl_broken", None), ("tpl_hidden", None)):  # fmt: skip
        (root / tree / "m").mkdir(parents=True)
        np.save(root / tree / "m" / "l1.npy", x)
        if meta is not None:
            (root / tree / "m" / "metadata.json").write_text(meta)
    (root / "tpl_link" / "m" / "l2.npy").symlink_to(root / "plain.txt")
    (root / "tpl_broken" / "m" / "l2.npy").symlink_to(root / "nowhere.npy")
    (root / "tpl_hidden" / "m").rename(root / "tpl_hidden" / ".git")  # only hidden files fit
    w = torch.randn(4, 3)
    torch.save({"w": w, "pos": torch.arange(5.0)}, root / "drift_float_pos.pt")
    torch.save({"w": w, "pos": torch.arange(5)}, root / "drift_int_pos.pt")
    torch.save({"step": torch.tensor(3), "ids": torch.arange(4)}, root / "drift_ints.pt")
    import warnings

    with warnings.catch_warnings():  # torch.jit is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), root / "script.pt")
    (root / "text.pt").write_text("not a checkpoint, just text\n")
    from safetensors.torch import save_file

    save_file({"w": torch.randn(64, 64)}, root / "whole.safetensors")
    (root / "cut.safetensors").write_bytes((root / "whole.safetensors").read_bytes()[:4000])


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

L1 = ["--a", "seed=0,layer=l1", "--b", "seed=1,layer=l1"]
IMP = ["import", "s.zarr", "x.npy", "--name", "m"]
NEW = ["import", "fresh.zarr", "x.npy", "--name", "m"]  # a store that must not be left half-made
LONG = "x" * 300

# issue #12 (trust v2): an outside tester's cases, and every other one we could think of
CASES += [
    # code must never run from a filter
    ("cka where @ reaches python", [*CKA, *L1, "--where", "@pd.io.common.os.system('touch pwned') == 0"], "where"),
    ("cka where @ ored with a column", [*CKA, *L1, "--where", "@pd.io.common.os.system('touch pwned') == 0 or id >= 0"], "where"),
    ("cka where __import__", [*CKA, *L1, "--where", "__import__('os').system('touch pwned') == 0"], "where"),
    ("cka where attribute access", [*CKA, *L1, "--where", "id.__class__ == 1"], "where"),
    ("cka where dunder name", [*CKA, *L1, "--where", "__builtins__ == 1"], "where"),
    ("cka where lambda", [*CKA, *L1, "--where", "(lambda: 1)() == 1"], "where"),
    ("cka where syntax error", [*CKA, *L1, "--where", "id >"], "where"),
    ("cka where not boolean", [*CKA, *L1, "--where", "id + 1"], "where"),
    ("cka where unknown function", [*CKA, *L1, "--where", "open('x') == 1"], "where"),
    ("cka where string repeat bomb", [*CKA, *L1, "--where", "region == 'a' * 1000000000"], "not a number"),
    ("cka where power bomb", [*CKA, *L1, "--where", "id ** 10 ** 10 > 0"], "where"),
    ("cka where too long", [*CKA, *L1, "--where", "id > 0 and " * 300 + "id > 0"], "where"),
    ("cka where deep nesting", [*CKA, *L1, "--where", "(" * 300 + "id > 0" + ")" * 300], "where"),
    ("cka where subscript", [*CKA, *L1, "--where", "region[0] == 'r'"], "where"),
    ("cka where comprehension", [*CKA, *L1, "--where", "[c for c in region] == 1"], "where"),
    ("cka where keyword argument", [*CKA, *L1, "--where", "match(region, pattern='r')"], "where"),
    ("cka where f-string", [*CKA, *L1, "--where", "f'{id}' == '1'"], "where"),
    ("cka where walrus", [*CKA, *L1, "--where", "(x := 1) == 1"], "where"),
    ("cka where class bases", [*CKA, *L1, "--where", "().__class__.__bases__ == 1"], "where"),
    ("cka where exec", [*CKA, *L1, "--where", "exec('import os') == 1"], "where"),
    ("cka where getattr", [*CKA, *L1, "--where", "getattr(id, 'real') > 0"], "where"),
    ("cka where second statement", [*CKA, *L1, "--where", "id > 0; import os"], "where"),
    ("cka where second line", [*CKA, *L1, "--where", "id > 0\nimport os"], "where"),
    ("cka where column typo", [*CKA, *L1, "--where", "regoin == 'r1'"], "regoin"),
    ("cka where bare number column", [*CKA, *L1, "--where", "label"], "where"),
    ("cka where string against number", [*CKA, *L1, "--where", "region > 3"], "where"),
    # options
    ("cka memory 1e999", [*CKA, *L1, "--memory", "1e999"], "memory"),
    ("cka memory zero", [*CKA, *L1, "--memory", "0"], "memory"),
    ("cka memory negative", [*CKA, *L1, "--memory", "-1GB"], "memory"),
    ("cka memory nan", [*CKA, *L1, "--memory", "nan"], "memory"),
    ("cka shuffle -1", [*CKA, *L1, "--estimator", "minibatch", "--shuffle", "-1"], "--shuffle"),
    ("cka scheduler garbage", [*CKA, *L1, "--scheduler", "garbage"], "--scheduler"),
    ("cka scheduler bad address", [*CKA, *L1, "--scheduler", "tcp://"], "--scheduler"),
    ("cka workers and scheduler", [*CKA, *L1, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "either"),
    ("cka workers 0", [*CKA, *L1, "--workers", "0"], "--workers"),
    ("cka timeout 0", [*CKA, *L1, "--timeout", "0"], "--timeout"),
    ("cka timeout nan", [*CKA, *L1, "--timeout", "nan"], "--timeout"),
    ("cka sigma 0", [*CKA, *L1, "--kernel", "rbf", "--sigma", "0"], "sigma"),
    ("cka sigma negative", [*CKA, *L1, "--kernel", "rbf", "--sigma", "-1"], "sigma"),
    ("cka sigma nan", [*CKA, *L1, "--kernel", "rbf", "--sigma", "nan"], "sigma"),
    ("cka sigma inf", [*CKA, *L1, "--kernel", "rbf", "--sigma", "inf"], "sigma"),
    ("cka batch size 0", [*CKA, *L1, "--estimator", "minibatch", "--batch-size", "0"], "--batch-size"),
    ("cka batch size negative", [*CKA, *L1, "--estimator", "minibatch", "--batch-size", "-4"], "batch_size"),
    ("cka device tpu", [*CKA, *L1, "--device", "tpu"], "tpu"),
    ("cka no cuda", [*CKA, *L1, "--device", "cuda"], "cuda"),
    ("cka precision float8", [*CKA, *L1, "--precision", "float8"], "float8"),
    ("cka plot not png", [*CKA, *L1, "--plot", "r.jpg"], ".png"),
    ("cka out into missing folder", [*CKA, *L1, "--out", "nofolder/r.csv"], "nofolder"),
    ("cka only --a", [*CKA, "--a", "seed=0"], "--b"),
    ("cka selector without =", [*CKA, "--a", "model", "--b", "seed=1"], "key=value"),
    ("cka selector unknown key", [*CKA, "--a", "colour=red", "--b", "seed=1"], "colour"),
    ("cka selector empty value", [*CKA, "--a", "seed=", "--b", "seed=1"], "empty value"),
    ("cka differ unknown key", [*CKA, *L1, "--differ", "colour"], "colour"),
    ("cka nothing left after match", [*CKA, "--a", "seed=0,layer=l1", "--b", "seed=1,layer=l2", "--match", "layer"], "No pair"),
    ("cka pairs missing file", [*CKA, "--pairs", "nope.csv"], "nope.csv"),
    ("cka pairs binary file", [*CKA, "--pairs", "pairs_binary.csv"], "pairs"),
    ("cka pairs empty file", [*CKA, "--pairs", "pairs_empty.csv"], "pairs"),
    ("cka pairs missing columns", [*CKA, "--pairs", "pairs_cols.csv"], "a_model"),
    ("cka pairs unknown repr", [*CKA, "--pairs", "pairs_unknown.csv"], "nope"),
    ("cka garbage root zarr.json", ["cka", "garbage.zarr", *L1], "garbage.zarr"),
    ("cka store missing ids", ["cka", "noids.zarr", *L1, "--where", "id > 3"], "ids"),
    ("cka store is a file", ["cka", "plain.txt", *L1], "is a file"),
    ("cka plain directory", ["cka", "notastore", *L1], "store"),
    ("cka rbf debiased over memory", [*CKA, *L1, "--kernel", "rbf", "--memory", "1KB"], "memory"),
    # ls / info / verify
    ("ls garbage root zarr.json", ["ls", "garbage.zarr"], "garbage.zarr"),
    ("info garbage root zarr.json", ["info", "garbage.zarr"], "garbage.zarr"),
    ("verify garbage root zarr.json", ["verify", "garbage.zarr"], "garbage.zarr"),
    ("verify store missing ids", ["verify", "noids.zarr"], "problem"),
    ("verify selector matches nothing", ["verify", "s.zarr", "layer=nope"], "No representation"),
    ("ls empty negation", ["ls", "s.zarr", "model!="], "model!"),
    # import: broken files
    ("import truncated npy", [*IMP[:2], "truncated.npy", "--name", "m", "--layer", "z"], "truncated.npy"),
    ("import header-only npy", [*IMP[:2], "header_only.npy", "--name", "m", "--layer", "z"], "header_only.npy"),
    ("import empty npy", [*IMP[:2], "empty.npy", "--name", "m", "--layer", "z"], "empty.npy"),
    ("import random bytes npy", [*IMP[:2], "random.npy", "--name", "m", "--layer", "z"], "random.npy"),
    ("import zero rows", ["import", "fresh.zarr", "zero_rows.npy", "--name", "m", "--layer", "z"], "no samples"),
    ("import zero columns", [*IMP[:2], "zero_cols.npy", "--name", "m", "--layer", "z"], "no features"),
    ("import 1-d array", [*IMP[:2], "vector.npy", "--name", "m", "--layer", "z"], "shape"),
    ("import 3-d without flatten", [*IMP[:2], "cube.npy", "--name", "m", "--layer", "z"], "flatten"),
    ("import strings npy", [*IMP[:2], "strings.npy", "--name", "m", "--layer", "z"], "strings.npy"),
    ("import empty npz", [*IMP[:2], "empty.npz", "--name", "m", "--layer", "z"], "empty.npz"),
    ("import pt without tensor", [*IMP[:2], "no_tensor.pt", "--name", "m", "--layer", "z"], "no_tensor.pt"),
    ("import legacy pickle pt", [*IMP[:2], "legacy_mod.pt", "--name", "m", "--layer", "z"], "legacy_mod.pt"),
    ("import pickled module pt", [*IMP[:2], "pickled.pt", "--name", "m", "--layer", "z"], "pickled.pt"),
    ("import garbage safetensors", [*IMP[:2], "garbage.safetensors", "--name", "m", "--layer", "z"], "garbage.safetensors"),
    ("import a directory", [*IMP[:2], "adir.npy", "--name", "m", "--layer", "z"], "adir.npy"),
    ("import missing file", [*IMP[:2], "nope.npy", "--name", "m", "--layer", "z"], "nope.npy"),
    ("import missing file into new store", ["import", "fresh.zarr", "nope.npy", "--name", "m", "--layer", "z"], "nope.npy"),
    ("import key not in file", [*IMP, "--layer", "z", "--key", "nope"], "nope"),
    ("import reduce median", [*IMP, "--layer", "z", "--reduce", "median"], "median"),
    ("import keep-bits negative", [*IMP, "--layer", "z", "--keep-bits", "-1"], "out of range"),
    ("import several files one layer", [*IMP, "x150.npy", "--layer", "z"], "{stem}"),
    # import: ids and metadata
    ("import object-dtype ids", [*NEW, "--layer", "z", "--ids", "ids_object.npy"], "ids_object.npy"),
    ("import 2-d ids", [*NEW, "--layer", "z", "--ids", "ids_2d.npy"], "1-D"),
    ("import duplicate ids", [*NEW, "--layer", "z", "--ids", "ids_dup.txt"], "duplicate"),
    ("import ids missing file", [*NEW, "--layer", "z", "--ids", "nope.txt"], "nope.txt"),
    ("import meta shorter than dataset", [*NEW, "--layer", "z", "--meta", "meta_short.csv"], "50 rows"),
    ("import meta reserved column", [*NEW, "--layer", "z", "--meta", "meta_reserved.csv"], "zarr.json"),
    ("import meta binary", [*NEW, "--layer", "z", "--meta", "meta_binary.csv"], "meta_binary.csv"),
    ("import meta empty", [*NEW, "--layer", "z", "--meta", "meta_empty.csv"], "meta_empty.csv"),
    # import: names
    ("import layer zarr.json", [*NEW, "--layer", "zarr.json"], "zarr.json"),
    ("import checkpoint zarr.json", [*NEW, "--layer", "z", "--checkpoint", "zarr.json"], "zarr.json"),
    ("import seed zarr.json", [*NEW, "--layer", "z", "--seed", "zarr.json"], "zarr.json"),
    ("import name zarr.json", ["import", "fresh.zarr", "x.npy", "--name", "zarr.json", "--layer", "z"], "zarr.json"),
    ("import dataset zarr.json", [*NEW, "--layer", "z", "--dataset", "zarr.json"], "zarr.json"),
    ("import layer writer.lock", [*NEW, "--layer", "writer.lock"], "writer.lock"),
    ("import hidden layer name", [*NEW, "--layer", ".staging"], ".staging"),
    ("import 300-character layer", [*NEW, "--layer", LONG], "characters"),
    ("import 300-character name", ["import", "fresh.zarr", "x.npy", "--name", LONG, "--layer", "z"], "characters"),
    ("import 300-character dataset", [*NEW, "--layer", "z", "--dataset", LONG], "characters"),
    ("import layer format attribute", [*NEW, "--layer", "{stem.__class__}"], "{stem.__class__}"),
    ("import layer format index", [*NEW, "--layer", "{stem[0]}"], "{stem[0]}"),
    ("import layer format conversion", [*NEW, "--layer", "{stem!r}"], "{stem!r}"),
    ("import layer positional field", [*NEW, "--layer", "{0}"], "{0}"),
    ("import layer unknown field", [*NEW, "--layer", "{colour}"], "colour"),
    ("import layer unbalanced brace", [*NEW, "--layer", "{stem"], "{stem"),
    ("import empty name", ["import", "fresh.zarr", "x.npy", "--name", "", "--layer", "z"], "non-empty"),
    ("import name with newline", ["import", "fresh.zarr", "x.npy", "--name", "a\nb", "--layer", "z"], "name"),
    ("import seed ..", [*NEW, "--layer", "z", "--seed", ".."], "'..'"),
    # extract
    ("extract wrong input width", ["extract", "s.zarr", "--model", "models_for_tests:mlp", "--data", "x5.npy", "--name", "net", "--layers", "0"], "cannot run on the data"),
    ("extract hf pickled weights", ["extract", "fresh.zarr", "--model", "hf:hf_pickled", "--data", "x.npy", "--name", "net", "--layers", "0"], "hf_pickled"),
    ("extract hf folder without config", ["extract", "fresh.zarr", "--model", "hf:hf_empty", "--data", "x.npy", "--name", "net", "--layers", "0"], "hf_empty"),
    ("extract hf missing folder", ["extract", "fresh.zarr", "--model", "hf:nope", "--data", "x.npy", "--name", "net", "--layers", "0"], "nope"),
    ("extract zero-row data", ["extract", "fresh.zarr", "--model", "models_for_tests:mlp", "--data", "zero_rows.npy", "--name", "net", "--layers", "0"], "no samples"),
    ("extract truncated data", ["extract", "fresh.zarr", "--model", "models_for_tests:mlp", "--data", "truncated.npy", "--name", "net", "--layers", "0"], "truncated.npy"),
    ("extract batch size 0", ["extract", "s.zarr", *MLP, "--layers", "0", "--batch-size", "0"], "--batch-size"),
    ("extract layer zarr.json name", ["extract", "fresh.zarr", "--model", "models_for_tests:mlp", "--data", "x.npy", "--name", "zarr.json", "--layers", "0"], "zarr.json"),
    ("extract checkpoint missing", ["extract", "s.zarr", *MLP, "--layers", "0", "--checkpoint", "nope.pt"], "nope.pt"),
    ("extract checkpoint label zarr.json", ["extract", "fresh.zarr", *MLP, "--layers", "0", "--checkpoint", "mlp_state.pt", "--checkpoint-label", "zarr.json"], "zarr.json"),
    ("extract 300-character name", ["extract", "fresh.zarr", "--model", "models_for_tests:mlp", "--data", "x.npy", "--name", LONG, "--layers", "0"], "characters"),
    ("extract keep-bits too many", ["extract", "s.zarr", *MLP, "--layers", "0", "--keep-bits", "99"], "out of range"),
    # --- trust-v3: tag and names ---
    ("tag attribute __x__", ["tag", "s.zarr", "model=m", "__x__=1"], "'__x__'"),
    ("tag attribute __class__", ["tag", "s.zarr", "model=m", "__class__=1"], "'__class__'"),
    ("tag attribute _private", ["tag", "s.zarr", "model=m", "_x=1"], "ASCII letter"),
    ("tag attribute step", ["tag", "s.zarr", "model=m", "step=100"], "'step'"),
    ("tag attribute python keyword", ["tag", "s.zarr", "model=m", "if=1"], "Python keyword"),
    ("tag attribute key field", ["tag", "s.zarr", "model=m", "dataset=x"], "key field"),
    ("tag attribute non-ascii", ["tag", "s.zarr", "model=m", "\u00e9tape=1"], "ASCII"),
    ("tag attribute given twice", ["tag", "s.zarr", "model=m", "a=1", "a=2"], "given twice"),
    ("tag csv duplicate header", ["tag", "s.zarr", "--from", "tag_dup.csv"], "appears twice"),
    ("tag csv extra cells", ["tag", "s.zarr", "--from", "tag_extra.csv"], "line 2: 3 cells"),
    ("tag csv NUL byte", ["tag", "s.zarr", "--from", "tag_nul.csv"], "line 2: a NUL byte"),
    ("tag csv header only", ["tag", "s.zarr", "--from", "tag_header.csv"], "no rows"),
    ("tag csv empty", ["tag", "s.zarr", "--from", "tag_empty.csv"], "tag_empty.csv is empty"),
    ("tag csv utf-16", ["tag", "s.zarr", "--from", "tag_utf16.csv"], "save it as UTF-8"),
    ("tag csv latin-1", ["tag", "s.zarr", "--from", "tag_latin1.csv"], "line 2: byte 0xE9"),
    ("tag csv cell over limit", ["tag", "s.zarr", "--from", "tag_long.csv"], "line 2 column 2"),
    ("tag csv step column", ["tag", "s.zarr", "--from", "tag_step.csv"], "'step'"),
    ("tag csv dunder column", ["tag", "s.zarr", "--from", "tag_dunder.csv"], "'__x__'"),
    ("tag csv missing file", ["tag", "s.zarr", "--from", "nope.csv"], "nope.csv"),
    ("import model spelled as stored NFD", ["import", "nfd.zarr", "x_nfd.npy", "--name", NFC, "--layer", "l2",
                                             "--dataset", "d"], "spelled two ways"),
    ("import NFD model beside stored NFD", ["import", "nfd.zarr", "x_nfd.npy", "--name", NFD, "--layer", "l2",
                                            "--dataset", "d"], "spelled two ways"),
    ("import dataset spelled as stored NFD", ["import", "nfd.zarr", "x_nfd.npy", "--name", "other", "--layer", "l1",
                                              "--dataset", NFC], "stored dataset"),
    ("extract model spelled as stored NFD", ["extract", "nfd.zarr", "--model", "models_for_tests:mlp", "--data",
                                             "x.npy", "--name", NFC, "--layers", "0", "--dataset", "d"],
     "spelled two ways"),
    # --- trust-v3: result files ---
    ("summarize nan in measure column", ["summarize", "res_nan.csv", *RES], "holds 'nan' on line 5"),
    ("summarize text in measure column", ["summarize", "res_text.csv", *RES], "holds 'high' on line 6"),
    ("summarize empty measure cell", ["summarize", "res_empty_cell.csv", *RES], "is empty on line 2"),
    ("summarize inf in measure column", ["summarize", "res_inf.csv", *RES], "on line 4"),
    ("summarize cka 7.5", ["summarize", "res_big.csv", *RES], "7.5 on line 3"),
    ("summarize cka -1.5", ["summarize", "res_neg.csv", *RES], "outside [-1, 1]"),
    ("summarize svcca 1.2", ["summarize", "res_svcca.csv", *RES, "--measure", "svcca"], "outside [0, 1]"),
    ("summarize duplicated row", ["summarize", "res_dup.csv", *RES], "line 4 of res_dup.csv and line 8"),
    ("summarize repeated comparison", ["summarize", "res_dup_value.csv", *RES], "one comparison twice"),
    ("summarize nan in json", ["summarize", "res_nan.json", *RES], "not a finite number"),
    ("summarize json not rows", ["summarize", "res_not_rows.json", *RES], "not a list of result rows"),
    ("summarize header only", ["summarize", "res_header.csv", *RES], "no rows"),
    ("summarize contrast on nan", ["summarize", "res_nan.csv", "--contrast", "b_layer=l2:l3", "--by", "a_model"],
     "holds 'nan'"),
    ("summarize drift on cka 7.5", ["summarize", "res_big.csv", *RES, "--drift"], "7.5 on line 3"),
    ("plot profile nan", ["plot", "res_nan.csv", "--kind", "profile", "--out", "r.png"], "holds 'nan'"),
    ("plot heatmap cka 7.5", ["plot", "res_big.csv", "--kind", "heatmap", "--out", "r.png"], "outside [-1, 1]"),
    ("plot seeds duplicated", ["plot", "res_dup.csv", "--kind", "seeds", "--out", "r.png"], "one comparison twice"),
    ("plot timeline text", ["plot", "res_text.csv", "--kind", "timeline", "--out", "r.png"], "holds 'high'"),
    # --- trust-v3: compare, describe, timeline, cache, rm, upgrade ---
    ("compare unknown measure", ["compare", "s.zarr", *L1, "--measure", "ckaa"], "Did you mean cka"),
    ("compare empty measure", ["compare", "s.zarr", *L1, "--measure", ""], "at least one measure"),
    ("compare unknown option", ["compare", "s.zarr", *L1, "--measure", "svcca:kep=0.99"], "kep"),
    ("compare option without value", ["compare", "s.zarr", *L1, "--measure", "svcca:keep"], "needs a value"),
    ("compare option out of range", ["compare", "s.zarr", *L1, "--measure", "svcca:keep=1.5"], "keep"),
    ("compare option not a number", ["compare", "s.zarr", *L1, "--measure", "cca:ridge=abc"], "ridge"),
    ("compare negative ridge", ["compare", "s.zarr", *L1, "--measure", "linreg:ridge=-1"], "ridge"),
    ("compare describe measure", ["compare", "s.zarr", *L1, "--measure", "pr"], "describe"),
    ("compare bad estimator", ["compare", "s.zarr", *L1, "--estimator", "fast"], "estimator"),
    ("compare bad kernel", ["compare", "s.zarr", *L1, "--kernel", "poly"], "kernel"),
    ("compare zero sigma", ["compare", "s.zarr", *L1, "--kernel", "rbf", "--sigma", "0"], "sigma"),
    ("compare bad route", ["compare", "s.zarr", *L1, "--route", "fastest"], "route"),
    ("compare bad memory", ["compare", "s.zarr", *L1, "--memory", "lots"], "Invalid memory limit"),
    ("compare tiny memory", ["compare", "s.zarr", *L1, "--memory", "1KB"], "memory"),
    ("compare bad precision", ["compare", "s.zarr", *L1, "--precision", "float8"], "precision"),
    ("compare bad device", ["compare", "s.zarr", *L1, "--device", "tpu"], "device"),
    ("compare ci level 1", ["compare", "s.zarr", *L1, "--ci", "1"], "--ci"),
    ("compare ci level 0", ["compare", "s.zarr", *L1, "--ci", "0"], "--ci"),
    ("compare zero bootstrap", ["compare", "s.zarr", *L1, "--ci", "0.95", "--bootstrap", "0"], "--bootstrap"),
    ("compare negative permutations", ["compare", "s.zarr", *L1, "--permutations", "-5"], "--permutations"),
    ("compare refresh and no-cache", ["compare", "s.zarr", *L1, "--refresh", "--no-cache"], "--refresh"),
    ("compare workers and scheduler", ["compare", "s.zarr", *L1, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "--workers"),
    ("compare zero workers", ["compare", "s.zarr", *L1, "--workers", "0"], "--workers"),
    ("compare match unknown key", ["compare", "s.zarr", "--a", "seed=0", "--b", "seed=1", "--match", "colour"], "colour"),
    ("compare pair-where unknown key", ["compare", "s.zarr", *L1, "--pair-where", "a.colour == 'x'"], "colour"),
    ("compare pair-where code", ["compare", "s.zarr", *L1, "--pair-where", "__import__('os')"], "__import__"),
    ("compare where unknown column", ["compare", "s.zarr", *L1, "--where", "colour == 'x'"], "colour"),
    ("compare where keeps nothing", ["compare", "s.zarr", *L1, "--where", "id < 0"], "keeps 0 of 200 rows"),
    ("compare out bad suffix", ["compare", "s.zarr", *L1, "--out", "r.txt"], ".csv"),
    ("compare plot not png", ["compare", "s.zarr", *L1, "--plot", "r.jpg"], ".png"),
    ("compare nothing selected", ["compare", "s.zarr", "--a", "layer=nope", "--b", "seed=1"], "nope"),
    ("compare across datasets", ["compare", "s.zarr", "--a", "seed=0,layer=l1", "--b", "layer=o1"], "dataset"),
    ("compare constant representation", ["compare", "s.zarr", "--a", "seed=3", "--b", "seed=0,layer=l1"], "constant"),
    ("compare nan representation", ["compare", "s.zarr", "--a", "seed=4", "--b", "seed=0,layer=l1"], "NaN or Inf values in 2 of 200 rows"),
    ("compare incomplete representation", ["compare", "s.zarr", "--a", "seed=2", "--b", "seed=0,layer=l1"], "incomplete"),
    ("describe unknown measure", ["describe", "s.zarr", "seed=0", "--measure", "prr"], "prr"),
    ("describe pair measure", ["describe", "s.zarr", "seed=0", "--measure", "cka"], "cka"),
    ("describe selectivity unknown label", ["describe", "s.zarr", "seed=0,layer=l1", "--measure", "selectivity:label=colour"], "colour"),
    ("describe sparsity bad tol", ["describe", "s.zarr", "seed=0", "--measure", "sparsity:tol=-1"], "tol"),
    ("describe nothing selected", ["describe", "s.zarr", "layer=nope"], "nope"),
    ("describe out bad suffix", ["describe", "s.zarr", "seed=0", "--out", "r.xlsx"], ".csv"),
    ("timeline unknown against", ["timeline", "s.zarr", "--against", "checkpoint=nope"], "nope"),
    ("timeline against not a checkpoint", ["timeline", "s.zarr", "--against", "colour=red"], "colour"),
    ("timeline bad band", ["timeline", "s.zarr", "--against", "checkpoint=final", "--select", "seed=0", "--band", "wide"], "band"),
    ("timeline bad level", ["timeline", "s.zarr", "--against", "checkpoint=final", "--select", "seed=0", "--level", "1.5"], "level"),
    ("timeline plot not png", ["timeline", "s.zarr", "--against", "checkpoint=final", "--plot", "t.gif"], ".png"),
    ("cache clear and prune", ["cache", "s.zarr", "--clear", "--prune"], "--clear"),
    ("cache missing store", ["cache", "missing.zarr"], "No store"),
    ("rm nothing matches", ["rm", "s.zarr", "layer=nope", "--yes"], "No representation"),
    ("rm unknown selector key", ["rm", "s.zarr", "colour=red", "--yes"], "Unknown selector key"),
    ("rm missing store", ["rm", "missing.zarr", "layer=l1", "--yes"], "No store"),
    ("upgrade missing store", ["upgrade", "missing.zarr"], "No store"),
    ("plot unknown kind", ["plot", "res_dup.csv", "--kind", "pie", "--out", "r.png"], "pie"),
    ("plot bad level", ["plot", "res_big.csv", "--kind", "profile", "--level", "2", "--out", "r.png"], "level"),
    ("summarize unknown by", ["summarize", "res_nan.csv", "--by", "colour"], "colour"),
    ("summarize value code", ["summarize", "res_nan.csv", "--value", "__import__('os')"], "Cannot read the value"),
]  # fmt: skip

TPL = "/{model}/{layer}.npy"

CASES += [
    # --- trust-v3: templates and drift ---
    ("import template metadata.json nested 100000 deep", ["import", "fresh.zarr", "tpl_deep" + TPL], "deeper than 32"),
    ("import template metadata key seed", ["import", "fresh.zarr", "tpl_seed" + TPL], "--attr-ignore seed"),
    ("import template metadata key step", ["import", "fresh.zarr", "tpl_step" + TPL], "--attr-rename step="),
    ("import template link to a text file", ["import", "fresh.zarr", "tpl_link" + TPL], "is not a readable .npy file: it holds text"),
    ("import template broken link", ["import", "fresh.zarr", "tpl_broken" + TPL], "does not exist"),
    ("import template only hidden files fit", ["import", "fresh.zarr", "tpl_hidden" + TPL], "fits the import template"),
    ("import attr-rename without =", ["import", "fresh.zarr", "tpl_step" + TPL, "--attr-rename", "step"], "OLD=NEW"),
    ("import attr-rename to a key field", ["import", "fresh.zarr", "tpl_step" + TPL, "--attr-rename", "step=seed"], "key field"),
    ("import attr-rename to a derived name", ["import", "fresh.zarr", "tpl_seed" + TPL, "--attr-rename", "seed=step"], "off the checkpoint label"),
    ("import attr-ignore empty name", ["import", "fresh.zarr", "tpl_seed" + TPL, "--attr-ignore", "seed,,lr"], "empty name"),
    ("import attr-ignore without template", [*NEW, "--layer", "z", "--attr-ignore", "seed"], "needs a path template"),
    ("import text file as .pt", [*IMP[:2], "text.pt", "--name", "m", "--layer", "z"], "holds text"),
    ("import torchscript archive", [*IMP[:2], "script.pt", "--name", "m", "--layer", "z"], "pickled Python objects"),
    ("drift integer tensor where the reference's is float", ["drift", "drift_float_pos.pt", "drift_int_pos.pt"], "pos is int64"),
    ("drift only integer tensors", ["drift", "drift_ints.pt", "drift_int_pos.pt"], "step (int64)"),
    ("drift params select only integer tensors", ["drift", "drift_int_pos.pt", "--params", "pos"], "not floating point"),
    ("drift torchscript archive", ["drift", "mlp_state.pt", "script.pt"], "pickled Python objects"),
    ("drift legacy pickle with a module", ["drift", "mlp_state.pt", "legacy_mod.pt"], "pickled Python objects"),
    ("drift text file as checkpoint", ["drift", "mlp_state.pt", "text.pt"], "holds text"),
    ("drift garbage safetensors", ["drift", "garbage.safetensors"], "garbage.safetensors"),
    ("drift truncated safetensors", ["drift", "whole.safetensors", "cut.safetensors"], "does not fit the file"),
]  # fmt: skip


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry of the test folder; stores by a hash of all their files."""
    return {
        p.name: store_digest(p) if p.is_dir() else str(p.stat().st_size) for p in root.iterdir()
    }


@pytest.mark.parametrize(("args", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(root: Path, args: list[str], needle: str) -> None:
    before = _snapshot(root)
    result = run_cli(*args, cwd=root)
    assert_user_error(result, needle)
    assert "Unexpected" not in result.stderr
    # every store unchanged, no half-made new store (fresh.zarr), no file written (pwned, r.*)
    assert _snapshot(root) == before


def test_there_are_at_least_a_hundred_cases() -> None:
    assert len(CASES) >= 100
    assert len({c[0] for c in CASES}) == len(CASES)
    assert {c[1][0] for c in CASES} >= {"ls", "info", "verify", "import", "extract", "cka"}
