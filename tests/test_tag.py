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

from reprstore.keys import ReprKey
from reprstore.store import Store
from reprstore.workflows.ingest import import_files

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


# --- trust-v3: names conditions can read, strict CSV files, escaped result CSVs, NFC names
@pytest.mark.parametrize(
    ("item", "needle"),
    [("__x__=1", "'__x__'"), ("__class__=1", "'__class__'"), ("step=100", "'step'"),
     ("if=1", "Python keyword"), ("dataset=probe", "key field")],
)  # fmt: skip
def test_tag_refuses_names_conditions_cannot_read(store: Path, item: str, needle: str) -> None:
    before = store_digest(store)
    assert_user_error(run_cli("tag", str(store), "model=lora", item), needle, "attribute name")
    assert store_digest(store) == before


def test_tag_removes_a_name_set_before_the_rules(store: Path) -> None:
    group = zarr.open_group(str(store), mode="r+").require_group("attributes")
    group.attrs.put({"models": {"lora": {"step": "5", "method": "lora"}}})
    assert run_cli("tag", str(store), "model=lora", "step=").returncode == 0
    assert Store.open(store).run_attributes().level("models") == {"lora": {"method": "lora"}}
    assert_user_error(run_cli("tag", str(store), "model=lora", "a=1", "a=2"), "given twice")


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD_FILES = [
    ("dup.csv", b"model,tasks,tasks\nlora,a,b\n", "line 1", "'tasks' appears twice"),
    ("extra.csv", b"model,tasks\nfull,a\nlora,a,b\n", "line 3", "3 cells but the header has 2"),
    ("nul.csv", b"model,tasks\nfull,a\nlora,a\0b\n", "line 3", "NUL byte"),
    ("header.csv", b"model,seed,tasks\n", "line 1", "no rows"),
    ("blank.csv", b"model,tasks\n\n\n", "line 1", "no rows"),
    ("empty.csv", b"", "empty.csv", "is empty"),
    ("utf16.csv", "model,tasks\nlora,é\n".encode("utf-16"), "utf16.csv", "save it as UTF-8"),
    ("latin1.csv", "model,tasks\nfull,a\nlora,café\n".encode("latin-1"), "line 3",
     "byte 0xE9 is not UTF-8"),
    ("long.csv", b"model,tasks\nlora," + b"x" * 131_073 + b"\n", "line 2 column 2",
     "at most 131,072"),
    ("quote.csv", b'model,tasks\nlora,"a"b\n', "line 2", "not valid CSV"),
    ("step.csv", b"model,step\nlora,100\n", "line 1", "'step'"),
    ("dunder.csv", b"model,__class__\nlora,1\n", "line 1", "'__class__'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "data", "where", "what"), BAD_FILES, ids=[f[0] for f in BAD_FILES]
)
def test_bad_csv_file_is_one_line_naming_file_row_and_cause(
    store: Path, tmp_path: Path, name: str, data: bytes, where: str, what: str
) -> None:
    before = store_digest(store)
    result = run_cli("tag", str(store), "--from", str(_write(tmp_path, name, data)))
    assert_user_error(result, name, where, what)
    assert "Unexpected" not in result.stderr
    assert store_digest(store) == before


def test_csv_in_utf8_with_bom_blank_lines_and_a_long_cell_at_the_limit(
    store: Path, tmp_path: Path
) -> None:
    text = '\ufeffmodel,seed,note\r\n\r\nlora,1,"a,\nb"\r\nfull,,ü' + "x" * 131_071 + "\r\n"
    result = run_cli("tag", str(store), "--from", str(_write(tmp_path, "ok.csv", text.encode())))
    assert result.returncode == 0, result.stderr
    st = Store.open(store)
    assert st.attributes(ReprKey("lora", "1", "final", "default", "l1")) == {"note": "a,\nb"}
    assert st.attributes(ReprKey("full", "0", "final", "default", "l1"))["note"][:2] == "üx"


FORMULAS = {"eq": "=1+2", "at": "@SUM(A1)", "plus": "+cmd", "minus": "-x", "neg": "-0.5",
            "cmd": "=cmd|' /C calc'!A0", "tab": "\t=1", "cr": "\r=1", "quoted": "'=1",
            "plain": "a=b"}  # fmt: skip


def test_formula_cells_are_escaped_in_result_csv_only(store: Path, tmp_path: Path) -> None:
    import pandas as pd

    from reprstore.report import read_results

    import_files(store, [tmp_path / "x.npy"], name="@m", layer="l1", dtype="float32")
    assert run_cli("tag", str(store), "model=lora",
                   *(f"{k}={v}" for k, v in FORMULAS.items())).returncode == 0  # fmt: skip
    assert Store.open(store).attributes(ReprKey("lora", "1", "final", "default", "l1")) == FORMULAS
    args = ["cka", str(store), "--a", "model=lora,seed=1", "--b", "model=@m"]
    for suffix in ("csv", "json"):
        result = run_cli(*args, "--out", str(tmp_path / f"r.{suffix}"))
        assert result.returncode == 0, result.stderr
    cells = pd.read_csv(tmp_path / "r.csv", dtype=str, keep_default_na=False).iloc[0]
    assert cells["b_model"] == "'@m"
    assert {k: cells[f"a_{k}"] for k in FORMULAS} == {
        "eq": "'=1+2", "at": "'@SUM(A1)", "plus": "'+cmd", "minus": "'-x", "neg": "-0.5",
        "cmd": "'=cmd|' /C calc'!A0", "tab": "'\t=1", "cr": "'\r=1", "quoted": "''=1",
        "plain": "a=b"}  # fmt: skip
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert {k: rows[0][f"a_{k}"] for k in FORMULAS} == FORMULAS and rows[0]["b_model"] == "@m"
    back = read_results(tmp_path / "r.csv").iloc[0]  # read back as written
    assert {k: back[f"a_{k}"] for k in FORMULAS if k != "neg"} == {
        k: v for k, v in FORMULAS.items() if k != "neg"}  # fmt: skip
    again = run_cli("cka", str(store), "--pairs", str(tmp_path / "r.csv"))  # a pairs file
    assert again.returncode == 0, again.stderr


def test_spreadsheet_escape_round_trips() -> None:
    from reprstore.store.csvtext import spreadsheet_safe, unescape_cell

    values = ["=1", "+1", "-1", "-0.5", "+3", "1e-5", "-1e+5", ".5", "-", "-x", "@", "\tx",
              "\rx", "'=1", "''@x", "'x", "'", "", "x=1", "- 1", 5, None, -0.5]  # fmt: skip
    kept = {"+1", "-1", "-0.5", "+3", "1e-5", "-1e+5", ".5", "'x", "'", "", "x=1", 5, None, -0.5}
    for value in values:
        escaped = spreadsheet_safe(value)
        assert (escaped == value) == (value in kept), value
        assert unescape_cell(escaped) == value
        if isinstance(escaped, str) and escaped != value:
            assert escaped == "'" + value


NFC, NFD = "caf\u00e9", "cafe\u0301"


def test_nfc_and_nfd_spellings_are_one_model(store: Path, tmp_path: Path) -> None:
    for name in (NFD, NFC):
        result = run_cli("import", str(store), str(tmp_path / "x.npy"), "--name", name,
                         "--layer", f"l{len(name)}", "--dtype", "float32")  # fmt: skip
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (store / "reprs").iterdir() if p.is_dir()) == [
        "base", NFC, "full", "lora"]  # fmt: skip
    runs = _csv(tmp_path, f"model,method\n{NFD},x\n")
    assert run_cli("tag", str(store), "--from", str(runs)).returncode == 0
    rows = json.loads(run_cli("ls", str(store), f"model={NFD},method=x", "--json").stdout)
    assert {(r["model"], r["layer"]) for r in rows} == {(NFC, "l4"), (NFC, "l5")}


def test_a_name_stored_in_another_spelling_is_refused_and_still_found(
    store: Path, tmp_path: Path
) -> None:
    """A store written before names were normalised may hold NFD folders."""
    import_files(store, [tmp_path / "x.npy"], name=NFC, layer="l1", dtype="float32")
    (store / "reprs" / NFC).rename(store / "reprs" / NFD)
    before = store_digest(store)
    for cmd in (
        ["import", str(store), str(tmp_path / "x.npy"), "--name", NFC, "--layer", "l2"],
        ["import", str(store), str(tmp_path / "x.npy"), "--name", NFD, "--layer", "l2"],
    ):
        assert_user_error(run_cli(*cmd), "spelled two ways", r"'caf\xe9'", r"'cafe\u0301'")
    assert store_digest(store) == before
    # what is stored stays readable, found by either spelling, and can be tagged
    assert run_cli("tag", str(store), f"model={NFC}", "method=x").returncode == 0
    rows = json.loads(run_cli("ls", str(store), "method=x", "--json").stdout)
    assert [(r["model"], r["attributes"]) for r in rows] == [(NFD, {"method": "x"})]
    result = run_cli("cka", str(store), "--a", f"model={NFC}", "--b", "model=full,seed=0",
                     "--pair-where", f"a.model == '{NFC}'")  # fmt: skip
    assert result.returncode == 0, result.stderr
