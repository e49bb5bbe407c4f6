"""Run attributes: ``reprstore tag`` from a CSV or one at a time, shown by ls/info, used by
selectors, merged model < run < checkpoint, stored where plain zarr reads them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import TESTS, assert_user_error, run_cli, store_digest

from reprstore.ingest import import_files
from reprstore.keys import ReprKey
from reprstore.store import Store

MODELS = {"full": ("0", "1"), "lora": ("0", "1", "2"), "base": ("0",)}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(3)
    for model, seeds in MODELS.items():
        for seed in seeds:
            np.save(tmp_path / "x.npy", rng.normal(size=(12, 4)).astype(np.float32))
            import_files(path, [tmp_path / "x.npy"], name=model, layer="l1", seed=seed,
                         dtype="float32")  # fmt: skip
    np.save(tmp_path / "x.npy", rng.normal(size=(12, 4)).astype(np.float32))
    import_files(path, [tmp_path / "x.npy"], name="lora", layer="l1", seed="0",
                 checkpoint="step100", dtype="float32")  # fmt: skip
    return path


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runs.csv"
    path.write_text(text)
    return path


def test_tag_from_csv_keeps_strings_and_merges_levels(store: Path, tmp_path: Path) -> None:
    runs = _csv(tmp_path, "model,seed,checkpoint,tasks,method,id\n"
                          "full,,,\"a,b\",full,01234\n"
                          "lora,,,\"b,c\",lora,007\n"
                          "lora,1,,,lora-r8,\n"
                          "lora,0,step100,,,0.50\n")  # fmt: skip
    result = run_cli("tag", str(store), "--from", str(runs))
    assert result.returncode == 0, result.stderr
    st = Store.open(store)
    assert st.attributes(ReprKey("full", "1", "final", "default", "l1")) == {
        "tasks": "a,b", "method": "full", "id": "01234"}  # fmt: skip
    assert st.attributes(ReprKey("lora", "1", "final", "default", "l1")) == {
        "tasks": "b,c", "method": "lora-r8", "id": "007"}  # fmt: skip
    assert st.attributes(ReprKey("lora", "0", "step100", "default", "l1")) == {
        "tasks": "b,c", "method": "lora", "id": "0.50"}  # fmt: skip
    assert st.attributes(ReprKey("base", "0", "final", "default", "l1")) == {}
    # plain zarr sees them, as strings
    raw = zarr.open_group(str(store), mode="r")["attributes"].attrs.asdict()
    assert raw["models"]["full"] == {"tasks": "a,b", "method": "full", "id": "01234"}
    assert raw["runs"]["lora/1"] == {"method": "lora-r8"}
    assert raw["checkpoints"]["lora/0/step100"] == {"id": "0.50"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [("model,tasks\nfull,a\nnope,b\n", "no model 'nope'"),
     ("model,seed,tasks\nlora,7,a\n", "no seed '7'"),
     ("model,seed,checkpoint,tasks\nlora,0,step9,a\n", "no checkpoint 'step9'"),
     ("model,bad name\nfull,a\n", "column 'bad name'"),
     ("model,layer\nfull,a\n", "key field"),
     ("seed,tasks\n0,a\n", "'model' column"),
     ("model,tasks,tasks2\nfull,a,\nfull,b,\n", "two values for 'tasks'")],
)  # fmt: skip
def test_bad_attribute_csv_writes_nothing(store: Path, tmp_path: Path, text: str,
                                          needle: str) -> None:  # fmt: skip
    before = store_digest(store)
    result = run_cli("tag", str(store), "--from", str(_csv(tmp_path, text)))
    assert_user_error(result, needle)
    assert store_digest(store) == before


def test_tag_one_at_a_time_and_remove(store: Path) -> None:
    assert run_cli("tag", str(store), "model=lora|full", "method=ft").returncode == 0
    assert run_cli("tag", str(store), "model=lora,seed=2", "variant=r16").returncode == 0
    st = Store.open(store)
    assert st.attributes(ReprKey("lora", "2", "final", "default", "l1")) == {
        "method": "ft", "variant": "r16"}  # fmt: skip
    assert st.attributes(ReprKey("lora", "1", "final", "default", "l1")) == {"method": "ft"}
    assert run_cli("tag", str(store), "model=lora,seed=2", "variant=").returncode == 0
    assert Store.open(store).attributes(ReprKey("lora", "2", "final", "default", "l1")) == {
        "method": "ft"}  # fmt: skip
    before = store_digest(store)
    assert_user_error(
        run_cli("tag", str(store), "model=lorra", "a=b"), "no model 'lorra'", "closest: lora"
    )
    assert_user_error(
        run_cli("tag", str(store), "model=nope", "a=b"), "there are: base, full, lora"
    )
    assert_user_error(run_cli("tag", str(store), "layer=l1", "a=b"), "models and runs")
    assert_user_error(run_cli("tag", str(store), "model=lora", "a.b=c"), "attribute name")
    assert_user_error(run_cli("tag", str(store), "model=lora"), "KEY=VALUE")
    assert store_digest(store) == before


def test_ls_info_show_attributes_and_selectors_use_them(store: Path) -> None:
    run_cli("tag", str(store), "model=lora", "method=lora", "tasks=b,c")
    run_cli("tag", str(store), "model=full", "method=full")
    ls = run_cli("ls", str(store))
    assert "attributes lora: method=lora, tasks=b,c" in ls.stdout
    rows = json.loads(run_cli("ls", str(store), "method=lora", "--json").stdout)
    assert [(r["model"], r["seed"], r["checkpoint"]) for r in rows] == [
        ("lora", "0", "final"), ("lora", "0", "step100"), ("lora", "1", "final"),
        ("lora", "2", "final")]  # fmt: skip
    assert rows[0]["attributes"] == {"method": "lora", "tasks": "b,c"}
    rows = json.loads(run_cli("ls", str(store), "method!=lora", "--json").stdout)
    assert sorted({r["model"] for r in rows}) == ["base", "full"]
    info = run_cli("info", str(store), "model=full,seed=0")
    assert "run attributes" in info.stdout and "method: full" in info.stdout
    assert_user_error(run_cli("ls", str(store), "method=lorra"),
                      "no run attribute method 'lorra'", "closest: lora")  # fmt: skip
    assert_user_error(run_cli("ls", str(store), "colour=red"), "Unknown selector key 'colour'")


TAG_LOOP = """
import sys
from reprstore.store import Store
st = Store.open(sys.argv[1], writable=True)
for i in range(15):
    st.set_attributes({("models", sys.argv[2]): {f"{sys.argv[3]}{i}": str(i)}})
"""


def test_concurrent_taggers_lose_nothing(store: Path) -> None:
    jobs = (("full", "a"), ("lora", "b"), ("full", "c"))
    env = {"PYTHONPATH": str(TESTS)}
    cmd = [sys.executable, "-c", TAG_LOOP, str(store)]
    procs = [subprocess.Popen([*cmd, model, prefix], env=env) for model, prefix in jobs]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    attrs = Store.open(store).run_attributes().level("models")
    assert attrs["full"] == {**{f"a{i}": str(i) for i in range(15)},
                             **{f"c{i}": str(i) for i in range(15)}}  # fmt: skip
    assert attrs["lora"] == {f"b{i}": str(i) for i in range(15)}
    assert not list(store.rglob("writer.lock"))
