"""Store formats: a format-1 store (made by the previous release) reads as it is, refuses
writes, and ``reprstore upgrade`` moves it to format 2 losing nothing, even when killed."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import TESTS, assert_user_error, run_cli, store_digest

from reprstore.keys import ReprKey
from reprstore.store import Store
from reprstore.store.migration import STAGING, upgrade
from reprstore.workflows.comparison import compare

FIXTURE = TESTS / "fixtures" / "v1_store"  # written by reprstore at commit bcd61cd
V1_KEYS = [  # (model, seed, checkpoint, layer, dataset) in natural order
    ("base", "0", "final", "layer_2", "probe"),
    ("m", "0", "step20", "default", "default"),
    ("m", "0", "step20", "layer_2", "default"),
    ("m", "0", "step20", "layer_10", "default"),
    ("m", "0", "step100", "layer_2", "default"),
    ("m", "0", "step100", "layer_10", "default"),
    ("m", "1", "step20", "layer_2", "default"),
    ("m", "1", "step20", "layer_10", "default"),
    ("m", "1", "step100", "layer_2", "default"),
    ("m", "1", "step100", "layer_10", "default"),
    ("part", "0", "final", "l", "default"),
]


def _copy(tmp_path: Path, name: str = "v1.zarr") -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURE, dst)
    return dst


def _v1_files(store: Path) -> dict[str, bytes]:
    """Every file of the format-1 store, keyed by where format 2 keeps it."""
    out = {}
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        rel = path.relative_to(store).as_posix()
        parts = rel.split("/")
        if parts[0] == "reprs" and len(parts) > 5:  # reprs/m/s/c/<layer>/<file…>
            meta = json.loads((store / "/".join(parts[:5]) / "zarr.json").read_text())
            dataset = meta["attributes"]["dataset"]
            rel = "/".join([*parts[:4], dataset, *parts[4:]])
        out[rel] = path.read_bytes()
    return out


def _files(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes()
            for p in sorted(store.rglob("*")) if p.is_file()}  # fmt: skip


def _cka_biased(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def test_fixture_is_a_format_1_store() -> None:
    root = zarr.open_group(str(FIXTURE), mode="r")
    assert root.attrs["reprstore"]["format"] == 1
    assert "step20" in root["reprs/m/0"] and "layer_2" in root["reprs/m/0/step20"]
    assert isinstance(root["reprs/m/0/step20/layer_2"], zarr.Array)


def test_format_1_reads_as_it_is(tmp_path: Path) -> None:
    store = _copy(tmp_path)
    before = store_digest(store)
    st = Store.open(store)
    assert st.format == 1
    assert [(k.model, k.seed, k.checkpoint, k.layer, k.dataset) for k in st.keys(None)] == V1_KEYS
    raw = zarr.open_group(str(store), mode="r")
    key = ReprKey("m", "1", "step100", "default", "layer_10")
    np.testing.assert_array_equal(st.array(key)[:], raw["reprs/m/1/step100/layer_10"][:])
    assert st.exists(ReprKey("base", "0", "final", "probe", "layer_2"))
    assert not st.exists(ReprKey("base", "0", "final", "default", "layer_2"))
    assert [i.key.model for i in st.select("dataset=probe")] == ["base"]
    a = "model=m,seed=0,checkpoint=step20,layer=layer_2"
    df = compare(st, a, "model=m,seed=1,checkpoint=step100,layer=layer_10", estimator="biased")
    x = raw["reprs/m/0/step20/layer_2"][:].astype(np.float64)
    y = raw["reprs/m/1/step100/layer_10"][:].astype(np.float64)
    assert df["cka"].item() == pytest.approx(_cka_biased(x, y), rel=1e-9)
    result = run_cli("ls", str(store), "--json")
    assert result.returncode == 0, result.stderr
    assert [(r["model"], r["layer"], r["dataset"]) for r in json.loads(result.stdout)] == [
        (m, layer, d) for m, _, _, layer, d in V1_KEYS
    ]
    assert store_digest(store) == before


@pytest.mark.parametrize(
    "args",
    [["import", "S", "x.npy", "--name", "new", "--layer", "l"],
     ["tag", "S", "model=m", "method=full"],
     ["rm", "S", "model=part", "--yes"]],
    ids=["import", "tag", "rm"],
)  # fmt: skip
def test_format_1_refuses_writes(tmp_path: Path, args: list[str]) -> None:
    store = _copy(tmp_path)
    np.save(tmp_path / "x.npy", np.ones((10, 3), np.float32))
    before = store_digest(store)
    result = run_cli(*[str(store) if a == "S" else a for a in args], cwd=tmp_path)
    assert_user_error(result, "format-1", "reprstore upgrade")
    assert store_digest(store) == before


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    store = _copy(tmp_path)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["reprstore"]["format"] = 99
    (store / "zarr.json").write_text(json.dumps(meta))
    np.save(tmp_path / "x.npy", np.ones((10, 3), np.float32))
    before = store_digest(store)
    for args in (["ls", str(store)], ["upgrade", str(store)],
                 ["import", str(store), "x.npy", "--name", "n", "--layer", "l"]):  # fmt: skip
        assert_user_error(run_cli(*args, cwd=tmp_path), "format 99")
    assert store_digest(store) == before


def test_upgrade_moves_every_array_byte_for_byte(tmp_path: Path) -> None:
    store = _copy(tmp_path)
    expected = _v1_files(store)
    result = run_cli("upgrade", str(store))
    assert result.returncode == 0, result.stderr
    assert "from format 1 to 2 (11 arrays)" in result.stdout
    got = _files(store)
    new_groups = {k for k in got if k not in expected}
    # only the new dataset-level groups were added, each an empty zarr group
    assert all(k.endswith("/zarr.json") and k.count("/") == 5 for k in new_groups), new_groups
    assert all(json.loads(got[k])["node_type"] == "group" for k in new_groups)
    for rel, data in expected.items():
        if rel != "zarr.json":
            assert got[rel] == data, rel
    marker = json.loads(got["zarr.json"])["attributes"]["reprstore"]
    assert marker["format"] == 2 and marker["upgraded"]["from"] == 1
    st = Store.open(store, create=True)  # writable now
    assert [(k.model, k.seed, k.checkpoint, k.layer, k.dataset) for k in st.keys(None)] == V1_KEYS
    assert zarr.open_group(str(store), mode="r")["reprs/m/0/step20/default/default"].shape == (
        10,
        2,
    )
    again = run_cli("upgrade", str(store))
    assert again.returncode == 0 and "already format 2" in again.stdout


def _big_v1_store(tmp_path: Path, name: str, copies: int = 30) -> Path:
    """The fixture with its model 'm' copied ``copies`` times: ~270 arrays to move."""
    store = _copy(tmp_path, name)
    for i in range(copies):
        shutil.copytree(store / "reprs/m", store / f"reprs/m{i}")
    return store


UPGRADE_SCRIPT = """
import sys, time
from reprstore.store.migration import upgrade
upgrade(sys.argv[1], progress=lambda done, total: time.sleep(0.002))
"""


@pytest.mark.slow
def test_upgrade_survives_sigkill_at_random_moments(tmp_path: Path) -> None:
    killed = _big_v1_store(tmp_path, "killed.zarr")
    clean = _big_v1_store(tmp_path, "clean.zarr")
    n_arrays = len(list(Store.open(killed).keys()))
    upgrade(clean)
    rnd = random.Random(20261201)
    journal = killed / "upgrade-journal.json"
    phases = []
    for i in range(6):
        proc = subprocess.Popen([sys.executable, "-c", UPGRADE_SCRIPT, str(killed)])
        deadline = time.time() + 60
        while not journal.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.001)  # observed progress: the journal is written
        time.sleep(rnd.uniform(*((0.0, 0.4) if i % 2 == 0 else (0.6, 1.2))))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not journal.exists():
            break  # it finished before the kill
        phases.append(json.loads(journal.read_text())["phase"])
        # every array is in exactly one of its three places, whole
        arrays = [p for p in killed.rglob("zarr.json")
                  if json.loads(p.read_text())["node_type"] == "array"
                  and "datasets" not in p.parts]  # fmt: skip
        assert len(arrays) == n_arrays
        assert_user_error(run_cli("ls", str(killed)), "interrupted", "reprstore upgrade")
    assert phases, "no kill landed during the upgrade"
    result = run_cli("upgrade", str(killed))
    assert result.returncode == 0, result.stderr
    assert not journal.exists() and not (killed / STAGING).exists()
    assert not list(killed.rglob("writer.lock"))
    a, b = _files(killed), _files(clean)
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    for rel in a:
        if rel != "zarr.json":
            assert a[rel] == b[rel], rel
    root_a, root_b = (json.loads(x["zarr.json"])["attributes"] for x in (a, b))
    for marker in (root_a["reprstore"], root_b["reprstore"]):
        marker["upgraded"].pop("time")
    assert root_a == root_b
    assert Store.open(killed).format == 2


def test_upgrade_refuses_remote_stores() -> None:
    from reprstore.store.migration import upgrade as run

    group = zarr.open_group("memory://v1-remote", mode="w")
    group.attrs["reprstore"] = {"format": 1}
    with pytest.raises(Exception, match="local stores only"):
        run("memory://v1-remote")


@pytest.mark.parametrize("stop_at", [1, 5, 11, 12, 13, 21, 22])
def test_upgrade_interrupted_after_any_step_resumes(tmp_path: Path, stop_at: int) -> None:
    """Stopped after each step of either phase (11 stage + 11 place renames)."""
    store = _copy(tmp_path)
    expected = _v1_files(store)

    def stop(done: int, total: int) -> None:
        if done == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upgrade(store, progress=stop)
    assert_user_error(run_cli("info", str(store), "model=m"), "interrupted")
    report = upgrade(store)
    assert report.resumed and report.moved == 11
    got = _files(store)
    assert all(got[rel] == data for rel, data in expected.items() if rel != "zarr.json")
    assert len(Store.open(store).select()) == 11


def test_upgrade_refuses_while_a_writer_holds_an_array(tmp_path: Path) -> None:
    from reprstore.store.lock import Lease

    store = _copy(tmp_path)
    root = zarr.open_group(str(store), mode="r+")
    lease = Lease(root.store, "reprs/m/1/step20/layer_10").acquire()
    try:
        before = store_digest(store)
        assert_user_error(run_cli("upgrade", str(store)), "being written by process")
        assert store_digest(store) == before
    finally:
        lease.release()
    assert run_cli("upgrade", str(store)).returncode == 0


def test_a_read_that_an_upgrade_overlaps_says_so(tmp_path: Path) -> None:
    """A format-1 store opened before an upgrade began: its reads during the upgrade, and
    after it, raise the upgrade's one line instead of a partial listing or a KeyError."""
    from reprstore.errors import StoreFormatError

    store = _copy(tmp_path)
    st = Store.open(store)
    assert len(st.select()) == len(V1_KEYS)
    moved = ReprKey("m", "0", "step20", "default", "layer_2")  # staged by step 3
    seen: list[str] = []

    def read_midway(done: int, total: int) -> None:
        if done == 5:  # stage phase: 5 of 11 arrays are under __upgrade__/
            for read in (st.select, lambda: st.array(moved), st.damaged):
                with pytest.raises(StoreFormatError) as err:
                    read()
                seen.append(str(err.value))

    upgrade(store, progress=read_midway)
    assert len(seen) == 3
    assert all("is being upgraded (reprstore upgrade is running)" in s for s in seen), seen
    with pytest.raises(StoreFormatError, match=r"was upgraded .* while it was being read"):
        st.select()
    assert len(Store.open(store).select()) == len(V1_KEYS)  # opened anew: format 2


UPGRADE_ON_GO = """
import sys, time
from reprstore.store.migration import upgrade
print("ready", flush=True)
sys.stdin.readline()
upgrade(sys.argv[1], progress=lambda done, total: time.sleep(0.01))
"""

BEING_UPGRADED = ("is being upgraded (reprstore upgrade is running); retry when it finishes",
                  "was upgraded (reprstore upgrade ran) while it was being read")  # fmt: skip


def _ls_keys(result: subprocess.CompletedProcess) -> list[tuple[str, ...]]:
    rows = json.loads(result.stdout)
    return [(r["model"], r["seed"], r["checkpoint"], r["dataset"], r["layer"]) for r in rows]


def _ls_cmd(store: Path) -> list[str]:
    return [sys.executable, "-m", "reprstore", "ls", str(store), "--json"]


@pytest.mark.slow
def test_ls_during_an_upgrade_lists_the_store_or_says_it_is_being_upgraded(
    tmp_path: Path,
) -> None:
    """``ls`` run again and again while a real upgrade renames ~280 arrays (slowed by its
    progress hook): each lists every representation, or says in one line that the store is
    being upgraded; never an "Unexpected KeyError" nor a wrong "No representation"."""
    store = _big_v1_store(tmp_path, "big.zarr")
    first = run_cli("ls", str(store), "--json")
    assert first.returncode == 0, first.stderr
    expected = _ls_keys(first)
    up = subprocess.Popen([sys.executable, "-c", UPGRADE_ON_GO, str(store)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert up.stdout is not None and up.stdin is not None
    assert up.stdout.readline().strip() == "ready"
    # two started before the upgrade: they open the store before its journal exists
    early = [subprocess.Popen(_ls_cmd(store), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]  # fmt: skip
    time.sleep(0.4)
    up.stdin.write("go\n")
    up.stdin.flush()
    results = []
    while up.poll() is None:
        results.append(run_cli("ls", str(store), "--json"))
    for proc in early:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert up.wait() == 0
    said = 0
    for result in results:
        if result.returncode == 0:
            assert _ls_keys(result) == expected
        else:
            assert_user_error(result)
            assert any(s in result.stderr for s in BEING_UPGRADED), result.stderr
            said += 1
    assert said, "no ls ran during the upgrade"
    last = run_cli("ls", str(store), "--json")
    assert last.returncode == 0 and _ls_keys(last) == expected
