"""Selectors on a real store (alternatives, negation, suggestions, empty selections) and
the housekeeping commands: rm, --quiet, --help that keeps every word."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TESTS, assert_user_error, run_cli, store_digest

from reprstore.errors import NotFoundError
from reprstore.keys import ReprKey
from reprstore.store import Store
from reprstore.store.lock import Lease
from reprstore.workflows.comparison import compare
from reprstore.workflows.ingest import import_files


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """models full, lora, base × seeds 0, 1 × layers layer_2, layer_10 (dataset default)."""
    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(5)
    for model in ("full", "lora", "base"):
        for seed in ("0", "1"):
            files = []
            for layer in ("layer_2", "layer_10"):
                files.append(tmp_path / f"{layer}.npy")
                np.save(files[-1], rng.normal(size=(16, 3)).astype(np.float32))
            import_files(path, files, name=model, layer="{stem}", seed=seed, dtype="float32")
    return path


def _ls(store: Path, *selector: str) -> list[tuple[str, str, str]]:
    result = run_cli("ls", str(store), *selector, "--json")
    assert result.returncode == 0, result.stderr
    return [(r["model"], r["seed"], r["layer"]) for r in json.loads(result.stdout)]


def test_alternatives_and_negation_on_a_store(store: Path) -> None:
    both = [(m, s, la) for m in ("full", "lora") for s in ("0", "1")
            for la in ("layer_2", "layer_10")]  # fmt: skip
    assert _ls(store, "model=full|lora") == both
    assert _ls(store, "model={full,lora}") == both
    assert _ls(store, "model!=base") == both
    assert _ls(store, "model!=base,seed!=1,layer=layer_1*") == [
        ("full", "0", "layer_10"), ("lora", "0", "layer_10")]  # fmt: skip


def test_unknown_value_gets_the_closest_names(store: Path) -> None:
    before = store_digest(store)
    assert_user_error(run_cli("ls", str(store), "model=lorra"), "no model 'lorra'", "closest: lora")
    assert_user_error(run_cli("info", str(store), "layer=layer_3"), "no layer 'layer_3'",
                      "layer_2")  # fmt: skip
    result = run_cli("cka", str(store), "--a", "model=ful", "--b", "model=lora")
    assert_user_error(result, "--a", "no model 'ful'", "closest: full")
    # every value exists, but not together: says so
    st = Store.open(store)
    with pytest.raises(NotFoundError, match="not together"):
        st.select("model=full,seed=1,layer=layer_3*", must_match="--b")
    assert store_digest(store) == before


def test_empty_store_lists_nothing_but_selections_must_match(tmp_path: Path) -> None:
    Store.open(tmp_path / "e.zarr", create=True)
    result = run_cli("ls", str(tmp_path / "e.zarr"))
    assert result.returncode == 0 and "0 representation(s)" in result.stdout
    assert_user_error(run_cli("ls", str(tmp_path / "e.zarr"), "model=x"), "is empty")


def test_compare_rows_in_natural_order(store: Path) -> None:
    df = compare(store, "model=full,seed=0", "model=lora,seed=0", estimator="biased")
    assert list(zip(df["a_layer"], df["b_layer"], strict=True)) == [
        ("layer_2", "layer_2"), ("layer_2", "layer_10"),
        ("layer_10", "layer_2"), ("layer_10", "layer_10")]  # fmt: skip


# -- rm ---------------------------------------------------------------------------------
def _array_files(store: Path, key: ReprKey) -> dict[str, bytes]:
    base = store / key.path
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def test_rm_deletes_only_the_selection(store: Path) -> None:
    keep = ReprKey("lora", "1", "final", "default", "layer_10")
    kept = _array_files(store, keep)
    result = run_cli("rm", str(store), "model=full|base,layer=layer_2", "--yes")
    assert result.returncode == 0, result.stderr
    assert "deleted 4 representation(s)" in result.stdout
    assert _ls(store, "layer=layer_2") == [("lora", "0", "layer_2"), ("lora", "1", "layer_2")]
    assert len(_ls(store)) == 8
    assert _array_files(store, keep) == kept
    assert not (store / "reprs/full/0/final/default/layer_2").exists()


def test_rm_asks_first(store: Path) -> None:
    before = store_digest(store)
    cmd = [sys.executable, "-m", "reprstore", "rm", str(store), "model=base"]
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    no = subprocess.run(cmd, input="n\n", capture_output=True, text=True, env=env)
    assert no.returncode == 1 and "Delete 4 representation(s)" in no.stdout
    assert store_digest(store) == before
    yes = subprocess.run(cmd, input="y\n", capture_output=True, text=True, env=env)
    assert yes.returncode == 0, yes.stderr
    assert [m for m, _, _ in _ls(store)].count("base") == 0


def test_rm_of_nothing_and_rm_during_a_write(store: Path) -> None:
    before = store_digest(store)
    assert_user_error(run_cli("rm", str(store), "model=gone", "--yes"), "no model 'gone'")
    assert_user_error(run_cli("rm", str(store), "", "--yes"), "needs a selector")
    writable = Store.open(store, writable=True).root.store
    lease = Lease(writable, "reprs/lora/0/final/default/layer_2").acquire()
    try:
        held = store_digest(store)
        result = run_cli("rm", str(store), "model=lora", "--yes")
        assert_user_error(result, "being written by process", str(os.getpid()))
        assert store_digest(store) == held
    finally:
        lease.release()
    assert store_digest(store) == before


# -- --quiet, --help ------------------------------------------------------------------------
def test_quiet_prints_only_errors(store: Path, tmp_path: Path) -> None:
    for args in (["--quiet", "ls", str(store)], ["ls", str(store), "--quiet"],
                 ["-q", "cka", str(store), "--a", "model=full,seed=0", "--b", "model=lora",
                  "--out", str(tmp_path / "r.csv")],
                 ["tag", str(store), "model=full", "method=x", "--quiet"]):  # fmt: skip
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "" and result.stderr == "", args
    assert (tmp_path / "r.csv").read_text().count("\n") == 9
    assert_user_error(run_cli("--quiet", "ls", str(store), "model=nope"), "no model 'nope'")
    # --json is output asked for: still printed
    assert json.loads(run_cli("--quiet", "ls", str(store), "--json").stdout)


def _help_words(text: str) -> str:
    return re.sub(r"[\s│╭╮╰╯─]+", "", text)


@pytest.mark.parametrize("columns", ["40", "80"])
def test_help_keeps_every_word_in_a_narrow_terminal(columns: str) -> None:
    import typer

    from reprstore.cli.app import app

    env = {k: v for k, v in os.environ.items() if k != "TERMINAL_WIDTH"}
    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        result = subprocess.run(
            [sys.executable, "-m", "reprstore", name, "--help"],
            capture_output=True, text=True, env={**env, "COLUMNS": columns},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        words = _help_words(result.stdout)
        for param in command.params:
            for opt in param.opts:
                assert opt in result.stdout, (name, opt)
            helptext = getattr(param, "help", None)
            if helptext:
                assert _help_words(helptext) in words, (name, param.name)
                words = words.replace(_help_words(helptext), "")
        words = words.replace(_help_words(command.help or ""), "")
        assert "…" not in words, (name, columns)  # nothing cut by the layout


def test_quiet_does_not_outlive_its_invocation(store: Path) -> None:
    from typer.testing import CliRunner

    from reprstore.cli.app import app

    runner = CliRunner()
    assert runner.invoke(app, ["--quiet", "ls", str(store)]).output == ""
    assert runner.invoke(app, ["ls", str(store), "-q"]).output == ""
    assert "12 representation(s)" in runner.invoke(app, ["ls", str(store)]).output


@pytest.mark.slow
def test_rm_killed_midway_never_leaves_a_half_array(tmp_path: Path) -> None:
    """SIGKILL an rm of 200 arrays at random moments: each array left is whole (verify passes),
    what a kill leaves half-deleted is invisible, and the next rm sweeps it away."""
    import random
    import shutil
    import signal
    import time

    path = tmp_path / "s.zarr"
    np.save(tmp_path / "x.npy", np.ones((96, 2**16), np.float16))  # 3 chunks of 32 rows
    np.save(tmp_path / "k.npy", np.ones((96, 2), np.float16))
    import_files(path, [tmp_path / "x.npy"], name="m", layer="l0")
    import_files(path, [tmp_path / "k.npy"], name="m", layer="keep")
    group = path / "reprs/m/0/final/default"
    assert len(list((group / "l0").rglob("c/*/*"))) == 3
    for i in range(1, 200):
        shutil.copytree(group / "l0", group / f"l{i}")
    keep = _array_files(path, ReprKey("m", "0", "final", "default", "keep"))
    rnd = random.Random(11)
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    cmd = [sys.executable, "-m", "reprstore", "rm", str(path), "layer=l[0-9]*", "--yes"]
    for _ in range(2):
        start = len(list(group.iterdir()))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while proc.poll() is None and len(list(group.iterdir())) == start:
            time.sleep(0.001)  # observed progress: an array is gone
        time.sleep(rnd.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        listed = Store.open(path).select()
        arrays = [d for d in group.iterdir() if (d / "zarr.json").exists()]
        assert len(listed) == len(arrays)
        for folder in arrays:  # every array still listed is whole: all its chunks are there
            if folder.is_dir() and folder.name != "keep":
                assert len(list(folder.glob("c/*/*"))) == 3, folder
    final = run_cli("rm", str(path), "layer=l[0-9]*", "--yes")
    assert final.returncode == 0, final.stderr
    assert sorted(p.name for p in group.iterdir()) == ["keep", "zarr.json"]
    assert _array_files(path, ReprKey("m", "0", "final", "default", "keep")) == keep
    assert run_cli("verify", str(path)).returncode == 0


def test_a_typo_among_alternatives_is_refused(store: Path) -> None:
    assert_user_error(run_cli("ls", str(store), "model=full|lorra"), "no model 'lorra'",
                      "closest: lora")  # fmt: skip
    # a value that exists, just not with the other terms, is no typo
    import_files(store, [store.parent / "layer_2.npy"], name="solo", layer="x", seed="7")
    assert _ls(store, "model=full|solo,seed=7") == [("solo", "7", "x")]
    assert _ls(store, "model!=nothere,seed=7") == [("solo", "7", "x")]  # negation is lenient
