"""Reproducible synthetic representations, written once per size into a reprstore store.

Structure (what real layer activations look like to CKA): a shared low-rank signal with a
decaying spectrum, plus noise, plus a non-zero mean per feature. Run ``0`` has ``layers``
layers whose signal drifts from layer to layer; run ``1`` holds, for each layer, a noisy
linear map of run ``0``'s layer (so the pairs are similar but not identical, and the
6 × 6 grid has structure). Every block of rows comes from its own seeded generator, so
any size is generated in bounded memory and the same rows come out every time.

Layout under the cache directory (``benchmarks/work`` by default)::

    npy/<tag>/<run>/l<k>.npy     float32 (n, features)
    stores/<tag>.zarr            reprstore store, float16, model "synth", seeds "0"/"1"
    stores/<tag>.json            manifest: sizes, bytes stored, float64 oracle CKA values
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import references

MODEL = "synth"
RUNS = ("0", "1")
RANK = 32
BLOCK_ROWS = 32_768
SEED = 20240501


@dataclass(frozen=True)
class Dataset:
    """Where one generated size lives and what it holds."""

    root: Path
    n: int
    features: int
    layers: int

    @property
    def tag(self) -> str:
        return f"n{self.n}-p{self.features}-l{self.layers}"

    def npy(self, run: str, layer: int) -> Path:
        return self.root / "npy" / self.tag / run / f"l{layer}.npy"

    @property
    def store(self) -> Path:
        return self.root / "stores" / f"{self.tag}.zarr"

    @property
    def manifest_path(self) -> Path:
        return self.root / "stores" / f"{self.tag}.json"

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text())

    def array_dir(self, run: str, layer: int) -> Path:
        return self.store / "reprs" / MODEL / run / "final" / "default" / f"l{layer}"


def _fixed(features: int, layers: int) -> dict[str, Any]:
    """The matrices shared by all blocks: spectrum, per-layer mixing, means, maps."""
    rng = np.random.default_rng([SEED, features, layers])
    decay = (1.0 + np.arange(RANK)) ** -0.7
    mixes, maps, means_a, means_b, noise_a = [], [], [], [], []
    mix = rng.standard_normal((RANK, features))
    for k in range(layers):
        if k:  # the signal of layer k drifts away from layer k - 1
            mix = 0.6 * mix + 0.8 * rng.standard_normal((RANK, features))
        scale = np.sqrt((decay**2).sum())
        mixes.append((decay[:, None] * mix / scale).astype(np.float32))
        maps.append(
            (rng.standard_normal((features, features)) / np.sqrt(features)).astype(np.float32)
        )
        means_a.append(rng.normal(0.5, 1.0, features).astype(np.float32))
        means_b.append(rng.normal(-0.3, 1.0, features).astype(np.float32))
        noise_a.append(1.0 + 0.3 * k)
    return {
        "mixes": mixes,
        "maps": maps,
        "means_a": means_a,
        "means_b": means_b,
        "noise_a": noise_a,
    }


def generate_npy(ds: Dataset) -> None:
    """Write the float32 ``.npy`` files of ``ds`` (skipped when they exist)."""
    done = ds.root / "npy" / ds.tag / "done"
    if done.exists():
        return
    fx = _fixed(ds.features, ds.layers)
    outs = {}
    for run in RUNS:
        for k in range(ds.layers):
            ds.npy(run, k).parent.mkdir(parents=True, exist_ok=True)
            outs[(run, k)] = np.lib.format.open_memmap(
                ds.npy(run, k), mode="w+", dtype=np.float32, shape=(ds.n, ds.features)
            )
    for b, start in enumerate(range(0, ds.n, BLOCK_ROWS)):
        rows = min(BLOCK_ROWS, ds.n - start)
        rng = np.random.default_rng([SEED, ds.features, b])
        latent = rng.standard_normal((rows, RANK), dtype=np.float32)
        for k in range(ds.layers):
            x = latent @ fx["mixes"][k]
            x += fx["noise_a"][k] * rng.standard_normal((rows, ds.features), dtype=np.float32)
            y = x @ fx["maps"][k]
            y += 1.0 * rng.standard_normal((rows, ds.features), dtype=np.float32)
            outs[("0", k)][start : start + rows] = x + fx["means_a"][k]
            outs[("1", k)][start : start + rows] = y + fx["means_b"][k]
    for arr in outs.values():
        arr.flush()
    del outs
    done.write_text("ok\n")


def prepare_store(ds: Dataset, *, keep_npy: bool = True) -> dict[str, Any]:
    """Generate, import (float16) and compute the float64 oracle of ``ds``, once.

    Returns the manifest: ``{"n", "features", "layers", "store", "nbytes_stored",
    "oracle": {"biased": [[…]], "debiased": [[…]]}}`` (run 0 layers × run 1 layers).
    """
    if ds.manifest_path.exists():
        return ds.manifest()
    import zarr

    import reprstore

    generate_npy(ds)
    if ds.store.exists():
        shutil.rmtree(ds.store)
    ds.store.parent.mkdir(parents=True, exist_ok=True)
    for run in RUNS:
        files = [str(ds.npy(run, k)) for k in range(ds.layers)]
        reprstore.import_files(
            str(ds.store), files, name=MODEL, layer="{stem}", seed=run, dtype="float16"
        )
    root = zarr.open_group(str(ds.store), mode="r")
    arrs = {
        (run, k): root[f"reprs/{MODEL}/{run}/final/default/l{k}"]
        for run in RUNS
        for k in range(ds.layers)
    }
    oracle = references.oracle(
        [arrs[("0", k)] for k in range(ds.layers)], [arrs[("1", k)] for k in range(ds.layers)]
    )
    manifest = {
        "n": ds.n,
        "features": ds.features,
        "layers": ds.layers,
        "store": str(ds.store),
        "stored_dtype": "float16",
        "chunk_rows": int(arrs[("0", 0)].chunks[0]),
        "nbytes_stored": {f"{r}/l{k}": int(a.nbytes_stored()) for (r, k), a in arrs.items()},
        "oracle": oracle,
    }
    ds.manifest_path.write_text(json.dumps(manifest, indent=1))
    if not keep_npy:
        shutil.rmtree(ds.root / "npy" / ds.tag, ignore_errors=True)
    return manifest


def evict(*paths: str | os.PathLike[str]) -> None:
    """Drop the files under ``paths`` from the page cache, so the next read is cold.

    ``posix_fadvise(DONTNEED)`` works without privileges for clean pages; where it is not
    available this does nothing (reads may then be served from memory).
    """
    if not hasattr(os, "posix_fadvise"):
        return
    for path in paths:
        p = Path(path)
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        for f in files:
            try:
                fd = os.open(f, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
            finally:
                os.close(fd)


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.synth ROOT N FEATURES LAYERS [npy]``: prepare, print the manifest.

    The runner prepares data in this separate process so that its own memory stays small:
    on Linux a child's ``ru_maxrss`` starts at its parent's RSS at fork time.
    """
    import sys

    root, n, features, layers, *what = sys.argv[1:] if argv is None else argv
    ds = Dataset(Path(root), int(n), int(features), int(layers))
    if what == ["npy"]:
        generate_npy(ds)
        print(json.dumps({"npy": str(ds.npy("0", 0))}))
    else:
        print(json.dumps(prepare_store(ds)))


if __name__ == "__main__":
    main()
