"""CKA measurements, each a *task* run in its own process by :mod:`benchmarks.harness`.

Every task reads the same float16 store written by :mod:`benchmarks.synth`. Common
parameters:

store : str          the store path
xs, ys : list        ``[run, layer]`` of the run-X and run-Y representations compared
estimator : str      ``biased`` or ``debiased`` (exact), ``minibatch`` where it applies
batch_size : int     minibatch size (peers and reprstore's minibatch estimator)
mem_cap, gram_limit  bytes: skip what would not fit (see :func:`_gram_guard`)

Each returns ``{"values": [[…]]}`` (run X layers × run Y layers) plus what it knows
(``bytes_read``, ``flops``). Set-up (imports, opening the store, dropping the inputs from
the page cache so that every method reads cold) is not timed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Skip
from benchmarks.synth import MODEL, evict

Run = Callable[[], dict[str, Any]]


def _open(params: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Plain zarr arrays of ``xs`` and ``ys``, dropped from the page cache."""
    import zarr

    root = zarr.open_group(params["store"], mode="r")
    arrays = []
    for side in ("xs", "ys"):
        arrays.append([root[f"reprs/{MODEL}/{r}/final/default/l{k}"] for r, k in params[side]])
    for r, k in [*params["xs"], *params["ys"]]:
        evict(Path(params["store"], "reprs", MODEL, str(r), "final", "default", f"l{k}"))
    return arrays[0], arrays[1]


def _nbytes(arrays: list[Any]) -> int:
    return sum(int(a.nbytes_stored()) for a in arrays)


def _flops(xs: list[Any], ys: list[Any], pairs: int) -> float:
    """2·N·(Σ p² + Σ q² + pairs·p·q): the GEMM work of exact linear CKA (equal widths)."""
    n, p = xs[0].shape
    return 2.0 * n * p * p * (len(xs) + len(ys) + pairs)


def _gram_guard(n: int, params: dict[str, Any], copies: float) -> None:
    """Skip a Gram-space method whose n × n matrices are too large for this machine."""
    one = 8 * n * n
    if one > params["gram_limit"]:
        raise Skip(f"N×N = {one / 1e9:.0f} GB")
    need = copies * one
    if need > 0.9 * params["mem_cap"]:
        raise Skip(f"needs ≈ {need / 1e9:.0f} GB (N×N = {one / 1e9:.1f} GB), over the cap")


# ------------------------------------------------------------------------- reprstore


def _grid_fn() -> Callable[..., Any] | None:
    """The store-level grid function ``reprstore.workflows.comparison.compare``, if this
    version has it."""
    try:
        from reprstore.workflows.comparison import compare
    except ImportError:
        return None
    return compare


def _no_cache(grid: Callable[..., Any]) -> dict[str, Any]:
    """``cache=False`` where the grid function keeps results in the store: every timed run
    computes (a repeat would otherwise read the first run's values from the cache)."""
    return {"cache": False} if "cache" in inspect.signature(grid).parameters else {}


def _selector(side: list[list[Any]]) -> str:
    """``model=synth,seed=R`` (every layer of the run) or ``…,layer=lK`` for one layer."""
    sel = f"model={MODEL},seed={side[0][0]}"
    return sel if len(side) > 1 else f"{sel},layer=l{side[0][1]}"


def reprstore_cka(params: dict[str, Any]) -> Run:
    """reprstore: ``mode`` = ``pair`` (one :func:`reprstore.cka` per pair, in turn, on the
    zarr arrays) or ``grid`` (one call of the store grid ``reprstore.workflows.comparison.compare``
    with selectors ``seed=0`` × ``seed=1``: one pass over all pairs).

    ``precision``: that of the per-block products (``float64`` unless given); ``device``:
    where they run (``cuda``; numpy on the CPU unless given).

    ``workers``: in ``grid`` mode, ``compare(…, workers=K)`` (a local dask.distributed
    cluster of K single-threaded processes, started and stopped inside the timing, as the
    CLI's ``--workers K`` does).

    Imports are process start-up, outside the timing on every side (the peers import
    torch before theirs): pandas (with pyarrow, 0.2 s), which the grid's result table
    imports on first use, is imported here.
    """
    import pandas  # noqa: F401

    import reprstore

    xs, ys = _open(params)
    estimator = params.get("estimator", "debiased")
    kw: dict[str, Any] = {"estimator": estimator}
    if estimator == "minibatch":
        kw["batch_size"] = params["batch_size"]
    if params.get("kernel"):
        kw["kernel"] = params["kernel"]
    if params.get("precision"):
        kw["precision"] = params["precision"]
    if params.get("measures"):
        kw["measures"] = params["measures"]
    if params.get("device"):
        kw["device"] = params["device"]
    pairs = [(i, j) for i in range(len(xs)) for j in range(len(ys))]
    mode = params.get("mode", "pair")
    grid = _grid_fn()
    if mode == "grid" and grid is None:
        raise Skip("this reprstore has no reprstore.workflows.comparison.compare")
    if mode == "grid":
        kw.update(_no_cache(grid))  # decided here, outside the timing

    def run() -> dict[str, Any]:
        mat = np.zeros((len(xs), len(ys)))
        if mode == "grid":
            sel_x, sel_y = _selector(params["xs"]), _selector(params["ys"])
            df = grid(params["store"], sel_x, sel_y, workers=params.get("workers"),  # type: ignore[misc]
                      **kw)  # fmt: skip
            pos_x = {f"l{k}": i for i, (_, k) in enumerate(params["xs"])}
            pos_y = {f"l{k}": j for j, (_, k) in enumerate(params["ys"])}
            for row in df.itertuples():
                mat[pos_x[row.a_layer], pos_y[row.b_layer]] = row.cka
            read, flops = _nbytes([*xs, *ys]), _flops(xs, ys, len(pairs))
        else:
            for i, j in pairs:
                mat[i, j] = reprstore.cka(xs[i], ys[j], **kw).cka
            # every pair run reads both arrays and makes their own statistics again
            read = sum(_nbytes([xs[i], ys[j]]) for i, j in pairs)
            flops = len(pairs) * _flops(xs[:1], ys[:1], 1)
        return {
            "values": mat.tolist(),
            "bytes_read": read,
            "flops": flops if estimator != "minibatch" else None,
        }

    return run


# ------------------------------------------------------------------------ references


def numpy_measures(params: dict[str, Any]) -> Run:
    """numpy float64 in memory: cka, cca, procrustes, linreg and rsa of every pair by their
    published formulas on the centred matrices (feature space; RSA from the RDM sums, since
    the n(n−1)/2 distances of a large N do not fit)."""
    xs, ys = _open(params)

    def run() -> dict[str, Any]:
        cx = [np.asarray(a[:], dtype=np.float64) for a in xs]
        cy = [np.asarray(a[:], dtype=np.float64) for a in ys]
        cx = [a - a.mean(0) for a in cx]
        cy = [a - a.mean(0) for a in cy]
        qx = [np.linalg.qr(a)[0] for a in cx]  # once per side, as a script would
        qy = [np.linalg.qr(b)[0] for b in cy]
        gx = [np.linalg.norm(a.T @ a) for a in cx]
        gy = [np.linalg.norm(b.T @ b) for b in cy]
        mat = np.zeros((len(xs), len(ys)))
        for i, a in enumerate(cx):
            for j, b in enumerate(cy):
                ab = a.T @ b
                np.linalg.svd(qx[i].T @ qy[j], compute_uv=False)  # cca
                np.linalg.norm(ab, ord="nuc")  # procrustes
                np.linalg.norm(qx[i].T @ b) ** 2 / np.linalg.norm(b) ** 2  # linreg (QR lstsq)
                na, nb = (a * a).sum(1), (b * b).sum(1)  # rsa: the RDM sums
                float(na @ nb) + float(((a.T * na) @ b).sum())
                mat[i, j] = np.linalg.norm(ab) ** 2 / (gx[i] * gy[j])  # cka (biased)
        return {"values": mat.tolist(), "bytes_read": _nbytes([*xs, *ys])}

    return run


def rsatoolbox_rsa(params: dict[str, Any]) -> Run:
    """rsatoolbox (the peer for RSA), in memory: each side's squared-Euclidean RDM
    (``calc_rdm(…, method="euclidean")``, the n(n−1)/2 distances over p) once, then the
    Pearson correlation of every pair of RDMs (``compare(…, method="corr")``)."""
    import rsatoolbox

    xs, ys = _open(params)
    n, _p = xs[0].shape
    one = 8 * n * (n - 1) / 2  # one RDM's upper triangle in float64
    need = one * (len(xs) + 3)  # A's RDMs kept, one of B's at a time, calc_rdm's temporaries
    if need > 0.9 * params["mem_cap"]:
        raise Skip(f"needs ≈ {need / 1e9:.0f} GB of RDMs in memory, over the cap")

    def rdm(a: Any) -> Any:
        data = rsatoolbox.data.Dataset(np.asarray(a[:], dtype=np.float64))
        return rsatoolbox.rdm.calc_rdm(data, method="euclidean")

    def run() -> dict[str, Any]:
        rx = [rdm(a) for a in xs]
        mat = np.zeros((len(xs), len(ys)))
        for j, b in enumerate(ys):
            ry = rdm(b)
            for i, r in enumerate(rx):
                mat[i, j] = float(rsatoolbox.rdm.compare(r, ry, method="corr")[0, 0])
        return {"rsa": mat.tolist(), "bytes_read": _nbytes([*xs, *ys])}

    return run


def numpy_feature(params: dict[str, Any]) -> Run:
    """numpy in memory, feature space: load everything as ``dtype``, centre, multiply."""
    from benchmarks import references

    xs, ys = _open(params)
    dtype = np.dtype(params.get("dtype", "float64"))
    n, p = xs[0].shape
    need = (len(xs) + len(ys)) * n * p * dtype.itemsize
    if need > 0.9 * params["mem_cap"]:
        raise Skip(f"needs ≈ {need / 1e9:.0f} GB in memory, over the cap")
    estimators = params.get("estimators", ["biased", "debiased"])

    def run() -> dict[str, Any]:
        mx = [references.centre(np.asarray(a[:], dtype=dtype)) for a in xs]
        my = [references.centre(np.asarray(a[:], dtype=dtype)) for a in ys]
        out = references.feature_matrix(mx, my, estimators)
        return {
            "values_by_estimator": out,
            "bytes_read": _nbytes([*xs, *ys]),
            "flops": _flops(xs, ys, len(xs) * len(ys)),
        }

    return run


def numpy_gram(params: dict[str, Any]) -> Run:
    """numpy in memory, Gram space: the n × n float64 kernels (one pair)."""
    from benchmarks import references

    xs, ys = _open(params)
    n, _p = xs[0].shape
    _gram_guard(n, params, copies=2.2)
    estimator = params["estimator"]

    def run() -> dict[str, Any]:
        x = references.centre(np.asarray(xs[0][:], dtype=np.float64))
        y = references.centre(np.asarray(ys[0][:], dtype=np.float64))
        return {"values": [[references.gram_cka(x, y, estimator)]]}

    return run


# ----------------------------------------------------------------------------- peers


def _torch_threads() -> None:
    import torch

    torch.set_num_threads(max(1, len(__import__("os").sched_getaffinity(0))))


def peer_matrix(params: dict[str, Any]) -> Run:
    """A peer's layer-matrix API over a DataLoader of stored row blocks (minibatch).

    ``peer``: ``torch-cka``, ``cka-pytorch`` or ``ckatorch-class``.
    """
    from benchmarks import peers

    fn = {
        "torch-cka": peers.torch_cka_matrix,
        "cka-pytorch": peers.cka_pytorch_matrix,
        "ckatorch-class": peers.ckatorch_class_matrix,
    }[params["peer"]]
    # import the peer now, so that a missing one is "not installed" and imports are baseline
    __import__(
        {"torch-cka": "torch_cka", "cka-pytorch": "cka_pytorch", "ckatorch-class": "ckatorch"}[
            params["peer"]
        ]
    )
    _torch_threads()
    xs, ys = _open(params)

    def run() -> dict[str, Any]:
        mat = fn(xs, ys, params["batch_size"])
        return {"values": mat.tolist(), "bytes_read": _nbytes([*xs, *ys])}

    return run


def ckatorch_arrays(params: dict[str, Any]) -> Run:
    """ckatorch's array functions on whole in-memory tensors (one pair).

    ``fn``: ``base`` (``cka_base``, exact, Gram space) or ``batch`` (``cka_batch``).
    """
    import ckatorch  # noqa: F401
    import torch

    _torch_threads()
    xs, ys = _open(params)
    n, _p = xs[0].shape
    fn = params["fn"]
    if fn == "base":
        # gram_x, gram_y, their centred clones and allclose's temporaries
        _gram_guard(n, params, copies=6)
    from benchmarks import peers

    def run() -> dict[str, Any]:
        x = torch.from_numpy(np.asarray(xs[0][:], dtype=np.float32))
        y = torch.from_numpy(np.asarray(ys[0][:], dtype=np.float32))
        with torch.no_grad():
            if fn == "base":
                value = peers.ckatorch_base(x, y, params["estimator"])
            else:
                value = peers.ckatorch_batch(x, y, params["batch_size"])
        return {"values": [[value]], "bytes_read": _nbytes([*xs, *ys])}

    return run
