"""Crash safety, verify, disk full and read-only stores (issue: reliability)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from cli_fork import ForkedProcess
from conftest import assert_user_error, run_cli, spawn_cli, store_digest, tmpfs

from reprstore.keys import ReprKey
from reprstore.store import Store
from reprstore.workflows.ingest import import_files


def _cli_popen(*args: str, cwd: Path) -> ForkedProcess:
    """The CLI in a process of its own (forked with the imports done, as run_cli's), not
    waited for: the kill loops SIGKILL it."""
    return spawn_cli(*args, cwd=cwd, stdout=False)


def _values(store: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(store), mode="r")
    out = {}
    for model in group["reprs"].group_keys():
        for seed in group[f"reprs/{model}"].group_keys():
            for ckpt in group[f"reprs/{model}/{seed}"].group_keys():
                run = f"reprs/{model}/{seed}/{ckpt}"
                for dataset in group[run].group_keys():
                    for layer in group[f"{run}/{dataset}"].array_keys():
                        arr = group[f"{run}/{dataset}/{layer}"]
                        assert arr.attrs["complete"] is True
                        out[arr.path] = arr[:]
    return out


def _progress(store: Path) -> int:
    """Rows written so far over every array (0 before the store exists)."""
    return sum(int(i["rows_written"] or 0) for i in _complete_flags(store).values())


def kill_and_resume(args: list[str], cwd: Path, kills: int, window: tuple[float, float],
                    seed: int) -> list[str]:  # fmt: skip
    """Start a command, SIGKILL it at random moments, restart it each time; run it to the end.

    Each kill comes a random ``window`` of seconds after the run has written its first new
    rows, so it lands mid-write whatever the machine's load; between kills no array may
    claim to be complete without all of its rows. A run that finished before its kill (a
    fast machine) is recorded, and the store is removed so that the next run has work
    again: the loop goes on until ``kills`` kills have landed mid-run (at most three times
    as many runs). Returns what happened to each run.
    """
    rnd = random.Random(seed)
    store = cwd / args[1]
    seen: list[str] = []
    while seen.count("killed") < kills and len(seen) < 3 * kills:
        before = _progress(store)
        proc = _cli_popen(*args, cwd=cwd)
        deadline = time.time() + 120
        while _progress(store) <= before and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rnd.uniform(*window))
        proc.kill()
        proc.wait()
        seen.append("killed" if proc.returncode == -9 else f"finished rc={proc.returncode}")
        for path, info in _complete_flags(store).items():
            if info["complete"]:
                assert info["rows_written"] == info["n"], path
        if proc.returncode != -9:
            shutil.rmtree(store)
    final = _cli_popen(*args, cwd=cwd)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    return seen


def _complete_flags(store: Path) -> dict[str, dict]:
    out = {}
    for meta in store.glob("reprs/*/*/*/*/*/zarr.json"):
        doc = json.loads(meta.read_text())
        attrs = doc.get("attributes", {})
        out[str(meta.parent)] = {"complete": attrs.get("complete"),
                                 "rows_written": attrs.get("rows_written"),
                                 "n": doc["shape"][0]}  # fmt: skip
    return out


def assert_same_as_uninterrupted(args: list[str], cwd: Path, inputs: list[str], n: int) -> None:
    """Run the same command once, uninterrupted, elsewhere; the stores must hold equal values."""
    reference = cwd / "ref"
    reference.mkdir()
    for name in inputs:
        (reference / name).symlink_to(cwd / name)
    assert run_cli(*args, cwd=reference).returncode == 0
    got, want = _values(cwd / "s.zarr"), _values(reference / "s.zarr")
    assert got.keys() == want.keys() and len(got) == n
    for path in want:
        np.testing.assert_array_equal(got[path], want[path])
    assert run_cli("verify", "s.zarr", cwd=cwd).returncode == 0


@pytest.mark.slow
def test_import_survives_ten_random_kills(tmp_path: Path, rng: np.random.Generator) -> None:
    inputs = [f"layer_{i}.npy" for i in range(3)]
    for name in inputs:
        np.save(tmp_path / name, rng.normal(size=(60_000, 128)).astype(np.float32))
    args = ["import", "s.zarr", *inputs, "--name", "m", "--layer", "{stem}", "--dtype", "float32"]
    seen = kill_and_resume(args, tmp_path, kills=10, window=(0.0, 0.05), seed=1)
    assert seen.count("killed") == 10, seen  # the kills landed mid-run
    assert_same_as_uninterrupted(args, tmp_path, inputs, n=3)


@pytest.mark.slow
def test_extract_survives_ten_random_kills(tmp_path: Path, rng: np.random.Generator) -> None:
    np.save(tmp_path / "x.npy", rng.normal(size=(1200, 8)).astype(np.float32))
    args = ["extract", "s.zarr", "--model", "models_for_tests:slow_wide", "--data", "x.npy",
            "--layers", "wide,wide2,net.2", "--name", "w", "--dtype", "float32",
            "--batch-size", "8"]  # fmt: skip
    seen = kill_and_resume(args, tmp_path, kills=10, window=(0.0, 0.3), seed=2)
    assert seen.count("killed") == 10, seen
    assert_same_as_uninterrupted(args, tmp_path, ["x.npy"], n=3)


def _two_layer_store(path: Path, rng: np.random.Generator) -> Path:
    for i in range(2):
        np.save(path / f"l{i}.npy", rng.normal(size=(5000, 300)).astype(np.float32))
    import_files(path / "s.zarr", [path / "l0.npy", path / "l1.npy"], name="m", layer="{stem}")
    return path / "s.zarr"


def test_verify_clean_store(tmp_path: Path, rng: np.random.Generator) -> None:
    store = _two_layer_store(tmp_path, rng)
    result = run_cli("verify", str(store), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["representations"] == 2 and report["problems"] == []
    assert report["chunks"] == 2 * -(-5000 // Store.open(store).info(
        ReprKey("m", "0", "final", "default", "l0")).chunks[0])  # fmt: skip


def test_verify_names_corrupted_and_missing_chunks(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    store = _two_layer_store(tmp_path, rng)
    chunk = store / "reprs/m/0/final/default/l0/c/1/0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x55
    chunk.write_bytes(bytes(data))
    (store / "reprs/m/0/final/default/l1/c/0/0").unlink()
    result = run_cli("verify", str(store))
    assert result.returncode == 1
    assert "m/0/final:l0: chunk 1 (rows" in result.stdout
    assert "corrupted" in result.stdout or "does not decode" in result.stdout
    assert "m/0/final:l1: chunk 0 (rows 0.." in result.stdout and "missing" in result.stdout
    assert_user_error(result, "2 problem(s)")


def test_verify_reports_truncated_chunk_and_incomplete(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    store = _two_layer_store(tmp_path, rng)
    chunk = store / "reprs/m/0/final/default/l1/c/0/0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    meta = store / "reprs/m/0/final/default/l0/zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["complete"] = False
    meta.write_text(json.dumps(doc))
    out = run_cli("verify", str(store)).stdout
    assert "l1: chunk 0" in out and ("does not decode" in out or "checksum" in out)
    assert "l0: is incomplete" in out


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (needs root; skipped where mounting is not allowed)."""
    with tmpfs(tmp_path, "1m") as mount:
        yield mount


def test_disk_full_fails_cleanly_then_resumes(tiny_disk: Path, tmp_path: Path,
                                              rng: np.random.Generator) -> None:  # fmt: skip
    x = rng.normal(size=(20_000, 64)).astype(np.float32)  # 5 MiB, incompressible noise
    np.save(tmp_path / "x.npy", x)
    args = ["import", str(tiny_disk / "s.zarr"), str(tmp_path / "x.npy"), "--name", "m",
            "--layer", "a", "--dtype", "float32"]  # fmt: skip
    result = run_cli(*args)
    assert_user_error(result, "No space left")
    info = Store.open(tiny_disk / "s.zarr").info(ReprKey("m", "0", "final", "default", "a"))
    assert not info.complete and info.rows_written < 20_000
    subprocess.run(["mount", "-o", "remount,size=32m", str(tiny_disk)], check=True)
    assert run_cli(*args).returncode == 0
    stored = zarr.open_array(str(tiny_disk / "s.zarr/reprs/m/0/final/default/a"), mode="r")
    np.testing.assert_array_equal(stored[:], x)
    assert stored.attrs["complete"] is True


def test_read_only_store_fails_cleanly(tiny_disk: Path, tmp_path: Path,
                                       rng: np.random.Generator) -> None:  # fmt: skip
    np.save(tmp_path / "x.npy", rng.normal(size=(100, 4)).astype(np.float32))
    args = ["import", str(tiny_disk / "s.zarr"), str(tmp_path / "x.npy"), "--name", "m",
            "--layer", "a"]  # fmt: skip
    assert run_cli(*args).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    before = store_digest(tiny_disk / "s.zarr")
    other = [*args[:-1], "b"]
    assert_user_error(run_cli(*other), "read-only")
    assert store_digest(tiny_disk / "s.zarr") == before
    listing = run_cli("ls", str(tiny_disk / "s.zarr"))
    assert listing.returncode == 0 and "a" in listing.stdout


def test_concurrent_writers_same_and_different_representations(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    for name in ("a", "b", "c"):
        np.save(tmp_path / f"{name}.npy", rng.normal(size=(60_000, 128)).astype(np.float32))
    # two processes write different layers into one fresh store (racing on the dataset)
    procs = [
        _cli_popen("import", "s.zarr", f"{n}.npy", "--name", "m", "--layer", n, cwd=tmp_path)
        for n in ("a", "b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    # a second writer of the same representation is refused while the first is alive
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITER, str(tmp_path / "s.zarr")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "writing"
    second = run_cli("import", "s.zarr", "c.npy", "--name", "m", "--layer", "c", cwd=tmp_path)
    holder.communicate("done\n", timeout=60)
    assert holder.returncode == 0
    assert_user_error(second, "being written by process")
    assert run_cli("import", "s.zarr", "c.npy", "--name", "m", "--layer", "c", "--overwrite",
                   cwd=tmp_path).returncode == 0  # fmt: skip
    values = _values(tmp_path / "s.zarr")
    for n in ("a", "b", "c"):
        stored = values[f"reprs/m/0/final/default/{n}"]
        np.testing.assert_array_equal(stored, np.load(tmp_path / f"{n}.npy").astype(np.float16))


HOLD_WRITER = """
import sys
from reprstore.keys import ReprKey
from reprstore.store import Encoding, ReprSettings, Store
st = Store.open(sys.argv[1], create=True)
s = ReprSettings("default", 128, 60000, (128,), "none", "float16", "float32")
w = st.writer(ReprKey("m", "0", "final", "default", "c"), s, encoding=Encoding("float16"))
print("writing", flush=True)
sys.stdin.readline()
w.abort()
"""


def _forked_cli(args: list[str], cwd: Path, log: Path) -> int:
    """Start the real CLI (``reprstore ARGS``) in a forked child, its stderr to ``log``."""
    import os

    from cli_fork import _child

    pid = os.fork()
    if pid == 0:
        _child({"args": args, "cwd": str(cwd)}, log.with_suffix(".out"), log)
    return pid


@pytest.mark.slow
def test_concurrent_meta_imports_into_a_fresh_store_twenty_times(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """Three `import --meta` writers racing to create one dataset (trust-v3): every one
    succeeds, 20 times in a row, and the stored columns are the file's. Before the fix a
    writer checking its input saw another's column created but not yet filled."""
    import os

    import reprstore.cli.app  # noqa: F401  (imports done once, before the forks)

    n = 60_000
    for k in range(3):
        np.save(tmp_path / f"x{k}.npy", rng.normal(size=(n, 2)).astype(np.float32))
    lines = "".join(f"{i % 4},r{i % 3},a longer text value {i}\n" for i in range(n))
    (tmp_path / "meta.csv").write_text("label,region,text\n" + lines)
    for round_ in range(20):
        store = tmp_path / f"s{round_}.zarr"
        logs = [tmp_path / f"err{round_}_{k}.txt" for k in range(3)]
        pids = [
            _forked_cli(["import", store.name, f"x{k}.npy", "--name", "m", "--seed", str(k),
                         "--layer", "l1", "--meta", "meta.csv", "--quiet"], tmp_path, log)
            for k, log in enumerate(logs)
        ]  # fmt: skip
        for pid, log in zip(pids, logs, strict=True):
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, f"round {round_}: {log.read_text()}"
    ds = Store.open(tmp_path / "s19.zarr").dataset("default")
    assert ds.meta_columns() == ["label", "region", "text"]
    assert ds.meta("text")[n - 1] == f"a longer text value {n - 1}"
    assert list(ds.meta("label")[:5]) == ["0", "1", "2", "3", "0"]


def test_the_first_creator_of_a_store_keeps_its_marker(tmp_path: Path) -> None:
    """Creating the root group and its marker is one exclusive step: a second creator
    never rewrites ``zarr.json`` (before, it could erase the first one's marker)."""
    import json

    from reprstore.store.handle import _create_local_root

    path = tmp_path / "s.zarr"
    _create_local_root(path)
    first = (path / "zarr.json").read_text()
    _create_local_root(path)
    assert (path / "zarr.json").read_text() == first
    assert json.loads(first)["attributes"]["reprstore"]["format"] == 2
    assert [p.name for p in path.iterdir()] == ["zarr.json"]  # no temporary file left
