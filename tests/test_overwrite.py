"""``--overwrite`` is atomic: the old representation stays whole until the new one is.

Real SIGKILLs at random moments of a real ``reprstore import --overwrite``, crashes at each
step of the swap, a comparison running during overwrites, and a full disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from cli_fork import ForkedProcess
from conftest import TESTS, assert_user_error, run_cli, spawn_cli, store_digest, tmpfs

from reprstore.errors import ReprstoreError
from reprstore.keys import ReprKey
from reprstore.store import Store
from reprstore.store import replace as replace_mod
from reprstore.workflows.ingest import import_files

KEY = "reprs/m/0/final/default/a"
N, P = 40_000, 128


def _popen(*args: str, cwd: Path) -> ForkedProcess:
    """The CLI in a process of its own (forked with the imports done, as run_cli's), not
    waited for: the kill loops SIGKILL it."""
    return spawn_cli(*args, cwd=cwd, stdout=False)


def _staged_rows(store: Path) -> int:
    total = 0
    for meta in store.glob(".staging/*/array/zarr.json"):
        with contextlib.suppress(ValueError, KeyError, OSError):
            total += int(json.loads(meta.read_text())["attributes"].get("rows_written", 0))
    return total


def _stored(store: Path) -> np.ndarray:
    arr = zarr.open_array(str(store / KEY), mode="r")
    assert arr.attrs["complete"] is True
    assert arr.attrs["rows_written"] == arr.shape[0]
    return np.asarray(arr[:])


@pytest.fixture
def two_versions(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    old = rng.normal(size=(N, P)).astype(np.float32)
    new = rng.normal(size=(N, P)).astype(np.float32) + 5
    np.save(tmp_path / "old.npy", old)
    np.save(tmp_path / "new.npy", new)
    import_files(tmp_path / "s.zarr", [tmp_path / "old.npy"], name="m", layer="a",
                 dtype="float32")  # fmt: skip
    return old, new


OVERWRITE = ["import", "s.zarr", "new.npy", "--name", "m", "--layer", "a", "--dtype",
             "float32", "--overwrite"]  # fmt: skip


def test_overwrite_replaces_and_leaves_nothing_behind(tmp_path: Path, two_versions) -> None:
    _, new = two_versions
    result = run_cli(*OVERWRITE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(_stored(tmp_path / "s.zarr"), new)
    assert not (tmp_path / "s.zarr" / ".staging").exists()
    assert run_cli("verify", "s.zarr", cwd=tmp_path).returncode == 0


@pytest.mark.slow
def test_overwrite_survives_random_kills(tmp_path: Path, two_versions) -> None:
    old, new = two_versions
    store = tmp_path / "s.zarr"
    rnd = random.Random(5)
    outcomes = []
    while sum(o[0] == "killed" for o in outcomes) < 4 and len(outcomes) < 15:
        proc = _popen(*OVERWRITE, cwd=tmp_path)
        deadline = time.time() + 120
        while _staged_rows(store) == 0 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(rnd.uniform(0.0, 0.05))
        proc.kill()
        proc.wait()
        killed = proc.returncode == -9
        # straight after the kill, before anything repairs the store: the old one whole at
        # its path, or the swap committed (the new one whole in its stage)
        journals = list(store.glob(".staging/*/swap.json"))
        if not journals and (store / KEY / "zarr.json").exists():
            got = _stored(store)
            assert np.array_equal(got, old) or np.array_equal(got, new)
        # any later open finishes a committed swap
        Store.open(store)
        got = _stored(store)
        is_old, is_new = np.array_equal(got, old), np.array_equal(got, new)
        assert is_old or is_new
        outcomes.append(("killed" if killed else "finished", "old" if is_old else "new"))
        if is_new:  # start again from the old one
            back = [*OVERWRITE[:2], "old.npy", *OVERWRITE[3:]]
            assert run_cli(*back, cwd=tmp_path).returncode == 0
    assert sum(o[0] == "killed" for o in outcomes) == 4, outcomes  # four kills mid-swap
    final = run_cli(*OVERWRITE, cwd=tmp_path)
    assert final.returncode == 0, final.stderr
    np.testing.assert_array_equal(_stored(store), new)
    assert not list(store.glob(".staging/*"))
    assert run_cli("verify", "s.zarr", cwd=tmp_path).returncode == 0


class _Crash(BaseException):
    """Stands for a SIGKILL at one step of the swap (nothing after it runs)."""


@pytest.mark.parametrize("step", [0, 1, 2, 3])
def test_crash_at_each_step_of_the_swap_is_finished_by_the_next_open(
    tmp_path: Path, two_versions, monkeypatch: pytest.MonkeyPatch, step: int
) -> None:
    """Crash after the journal (0), the old moved away (1), the new moved in (2), the stage
    renamed to garbage (3)."""
    old, new = two_versions
    store = tmp_path / "s.zarr"
    calls = {"n": 0}
    real_move, real_delete = replace_mod._move, replace_mod._delete_tree

    def crashing_move(a: Path, b: Path) -> None:
        if calls["n"] == step:
            raise _Crash
        calls["n"] += 1
        real_move(a, b)

    def crashing_delete(store: object, prefix: str) -> None:
        if calls["n"] == step and prefix.endswith(".done"):
            raise _Crash
        real_delete(store, prefix)  # type: ignore[arg-type]

    monkeypatch.setattr(replace_mod, "_move", crashing_move)
    monkeypatch.setattr(replace_mod, "_delete_tree", crashing_delete)
    with pytest.raises(_Crash):
        import_files(store, [tmp_path / "new.npy"], name="m", layer="a", dtype="float32",
                     overwrite=True)  # fmt: skip
    monkeypatch.undo()
    assert list(store.glob(".staging/*/swap.json"))  # the crash came after the commit point
    if step == 0:
        np.testing.assert_array_equal(_stored(store), old)  # not yet moved: still whole
    elif step == 1:
        assert not (store / KEY).exists()  # between the two renames
    else:
        np.testing.assert_array_equal(_stored(store), new)
    listing = run_cli("ls", "s.zarr", cwd=tmp_path)  # a plain read finishes the swap
    assert listing.returncode == 0, listing.stderr
    np.testing.assert_array_equal(_stored(store), new)
    assert not (store / ".staging").exists()


def test_abandoned_stage_is_removed_and_old_kept(tmp_path: Path, two_versions) -> None:
    old, _ = two_versions
    store = tmp_path / "s.zarr"
    proc = _popen(*OVERWRITE, cwd=tmp_path)
    while _staged_rows(store) == 0 and proc.poll() is None:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    np.testing.assert_array_equal(_stored(store), old)
    # a write of another representation sweeps the dead stage away
    np.save(tmp_path / "b.npy", old[:, :4])
    assert run_cli("import", "s.zarr", "b.npy", "--name", "m", "--layer", "b",
                   cwd=tmp_path).returncode == 0  # fmt: skip
    assert run_cli(*OVERWRITE, cwd=tmp_path).returncode == 0
    assert not (store / ".staging").exists()


CKA_LOOP = """
import sys, json
from reprstore.workflows.comparison import compare
from reprstore.errors import ReprstoreError
out = []
for _ in range(int(sys.argv[2])):
    try:
        df = compare(sys.argv[1], "layer=a", "layer=ref", estimator="biased")
        out.append(float(df["cka"].iloc[0]))
    except ReprstoreError as err:
        out.append(str(err))
print(json.dumps(out))
"""


def test_comparison_during_overwrites_never_reads_a_mix(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n, p = 20_000, 64
    ref = rng.normal(size=(n, p))
    versions = [ref + s * rng.normal(size=(n, p)) for s in (0.3, 3.0)]
    for i, x in enumerate(versions):
        np.save(tmp_path / f"v{i}.npy", x.astype(np.float32))
    np.save(tmp_path / "ref.npy", ref.astype(np.float32))
    for name, layer in (("v0", "a"), ("ref", "ref")):
        import_files(tmp_path / "s.zarr", [tmp_path / f"{name}.npy"], name="m", layer=layer,
                     dtype="float32")  # fmt: skip

    def reference(x: np.ndarray) -> float:
        x = x.astype(np.float32).astype(np.float64)
        y = ref.astype(np.float32).astype(np.float64)
        x, y = x - x.mean(0), y - y.mean(0)
        return float(np.linalg.norm(y.T @ x) ** 2
                     / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))  # fmt: skip

    want = [reference(x) for x in versions]
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    reader = subprocess.Popen([sys.executable, "-c", CKA_LOOP, str(tmp_path / "s.zarr"), "40"],
                              env=env, stdout=subprocess.PIPE, text=True)  # fmt: skip
    i = 0
    while reader.poll() is None:
        i += 1
        run_cli("import", "s.zarr", f"v{i % 2}.npy", "--name", "m", "--layer", "a",
                "--dtype", "float32", "--overwrite", cwd=tmp_path)  # fmt: skip
    got = json.loads(reader.communicate()[0])
    values = [v for v in got if isinstance(v, float)]
    assert values, got
    for v in values:
        assert min(abs(v - w) for w in want) < 1e-6, (v, want)
    for message in (v for v in got if isinstance(v, str)):
        assert "rewritten" in message or "No representation" in message, message
    assert i >= 2


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MiB tmpfs (needs root; skipped where mounting is not allowed)."""
    with tmpfs(tmp_path, "3m") as mount:
        yield mount


def test_disk_full_during_overwrite_keeps_the_old(tiny_disk: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    old = rng.normal(size=(4_000, 64)).astype(np.float32)  # 1 MiB
    new = rng.normal(size=(12_000, 64)).astype(np.float32)  # 3 MiB: does not fit beside it
    np.save(tmp_path / "old.npy", old)
    np.save(tmp_path / "new.npy", new[:4000])
    np.save(tmp_path / "wide.npy", rng.normal(size=(4_000, 256)).astype(np.float32))
    store = tiny_disk / "s.zarr"
    import_files(store, [tmp_path / "old.npy"], name="m", layer="a", dtype="float32")
    before = store_digest(store)
    result = run_cli("import", str(store), str(tmp_path / "wide.npy"), "--name", "m", "--layer",
                     "a", "--dtype", "float32", "--overwrite")  # fmt: skip
    assert_user_error(result, "No space left")
    np.testing.assert_array_equal(_stored(store), old)
    assert not (store / ".staging").exists()
    assert store_digest(store) == before
    with pytest.raises(ReprstoreError):
        Store.open(store).array(ReprKey("m", "0", "final", "default", "b"))
