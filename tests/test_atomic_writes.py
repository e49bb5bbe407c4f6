"""Result and figure files are replaced whole or not at all (``reprstore.store.atomic``).

A real 1 MiB tmpfs (needs root; skipped where mounting is not allowed) is filled until
only two pages are free, so each output (21 KB to 130 KB) fails midway through its
write; the real CLI runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, run_cli, tmpfs

from reprstore.store.atomic import is_temporary, replacing, write_text_atomic
from reprstore.workflows.ingest import import_files

#: Bytes left free on the full disk: less than any output below.
LEFT = 8192
LAYERS = 12  # 144 pairs: a 21 KB CSV, 19 KB Parquet, 83 KB JSON, 130 KB PNG


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seeds of 12 small layers (on the ordinary disk: only the outputs go to tmpfs)."""
    where = tmp_path_factory.mktemp("atomic")
    rng = np.random.default_rng(3)
    base = rng.normal(size=(120, 5))
    for seed in ("0", "1"):
        files = []
        for k in range(LAYERS):
            x = base @ rng.normal(size=(5, 6)) + 0.5 * rng.normal(size=(120, 6))
            files.append(where / f"l{k:02d}.npy")
            np.save(files[-1], x.astype(np.float32))
        import_files(where / "s.zarr", files, name="m", seed=seed, layer="{stem}",
                     dtype="float32")  # fmt: skip
    return where / "s.zarr"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path, "1m") as mount:
        yield mount


def fill(disk: Path, leave: int = LEFT) -> None:
    """Fill ``disk`` with one file, then give ``leave`` bytes back."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096):
            try:
                while True:
                    os.write(fd, bytes(size))
            except OSError:
                pass
        os.ftruncate(fd, os.fstat(fd).st_size - leave)
    finally:
        os.close(fd)


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def cka(store: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("cka", str(store), "--a", "seed=0", "--b", "seed=1", *args)


def output_args(disk: Path, name: str) -> list[str]:
    return ["--plot" if name.endswith(".png") else "--out", str(disk / name)]


@pytest.mark.parametrize("name", ["x.csv", "x.parquet", "x.json", "x.png"])
def test_full_disk_keeps_the_old_file_then_the_same_command_writes_it(
    store: Path, disk: Path, name: str
) -> None:
    old = {name: b"the old file\n" + bytes(range(256))}
    if name.endswith(".csv"):
        old[name + ".json"] = b'{"the": "old sidecar"}\n'
    for file, data in old.items():
        (disk / file).write_bytes(data)
    fill(disk)
    result = cka(store, *output_args(disk, name))
    assert_user_error(result, "No space left on device", f"Cannot write {disk / name}",
                      "old file is kept")  # fmt: skip
    for file, data in old.items():
        assert (disk / file).read_bytes() == data, file
    assert names(disk) == {"filler", *old}  # no partial temporary file either
    subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
    again = cka(store, *output_args(disk, name))
    assert again.returncode == 0, again.stderr
    assert names(disk) == {"filler", *old}
    written = disk / name
    assert written.stat().st_size > LEFT  # so the failed write had stopped midway
    if name.endswith(".png"):
        assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        read = {".csv": pd.read_csv, ".parquet": pd.read_parquet,
                ".json": lambda f: json.loads(f.read_text())["rows"]}  # fmt: skip
        assert len(read[written.suffix](written)) == LAYERS * LAYERS


@pytest.mark.parametrize("name", ["x.csv", "x.png"])
def test_full_disk_makes_no_file_where_there_was_none(store: Path, disk: Path, name: str) -> None:
    fill(disk)
    assert_user_error(cka(store, *output_args(disk, name)), "No space left", "no file was made")
    assert names(disk) == {"filler"}


def test_successful_writes_leave_no_temporary_files(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for _ in range(2):  # a new file, then a replaced one
        done = cka(store, "--match", "layer", "--out", str(out / "r.csv"),
                   "--plot", str(out / "r.png"))  # fmt: skip
        assert done.returncode == 0, done.stderr
        for extra in (["--out", str(out / "r.parquet")], ["--out", str(out / "r.json")]):
            assert cka(store, "--match", "layer", *extra).returncode == 0
        drawn = run_cli("plot", str(out / "r.csv"), "--kind", "heatmap", "--out",
                        str(out / "p.svg"))  # fmt: skip
        assert drawn.returncode == 0, drawn.stderr
        assert names(out) == {"r.csv", "r.csv.json", "r.png", "r.parquet", "r.json", "p.svg"}
    # the sidecar describes the CSV under its final name and bytes
    shown = run_cli("summarize", str(out / "r.csv"))
    assert shown.returncode == 0 and "changed after" not in shown.stderr, shown.stderr


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    """Any exception of the library that writes (not only a full disk) discards the
    temporary file; the old file, its mode and a link to it stay as they were."""
    target = tmp_path / "r.json"
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(ZeroDivisionError), replacing(link) as tmp:
        tmp.write_bytes(b"half of the new")
        assert is_temporary(tmp.name) and tmp.parent == tmp_path
        _ = 1 / 0
    assert target.read_bytes() == b"old" and names(tmp_path) == {"r.json", "link.json"}
    write_text_atomic(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640
