"""One battery of checks run over every registered measure (cf. scikit-learn's
``parametrize_with_checks``): identity, declared symmetry, declared invariances hold and
undeclared ones fail, streamed == the in-memory oracle of the published formula for any
chunking, a large-mean float16 case, and graph building that computes nothing."""

from __future__ import annotations

import zlib

import dask
import dask.array as da
import numpy as np
import pytest
from test_measures_reference import ORACLES, ref_describe

from reprstore.engine import dask_graph
from reprstore.engine.arrays import describe_arrays, measure_arrays
from reprstore.errors import ComparisonError
from reprstore.metrics.base import INVARIANCES
from reprstore.metrics.registry import REGISTRY, get, parse_spec
from reprstore.stats.minibatch import assign_batches

#: The option sets each measure is checked with (a measure missing here is checked with
#: its defaults: a new measure is picked up by every check below).
CASES: dict[str, list[str]] = {
    "cka": ["cka", "cka:estimator=biased", "cka:estimator=minibatch:batch_size=20",
            "cka:kernel=rbf", "cka:estimator=minibatch:kernel=rbf:batch_size=30"],
    "cca": ["cca", "cca:ridge=0.1"],
    "svcca": ["svcca:keep=0.8", "svcca:k=3"],
    "shape": ["shape", "shape:alpha=0", "shape:alpha=0.5"],
    "linreg": ["linreg", "linreg:ridge=0.1"],
    "rsa": ["rsa", "rsa:rdm=cosine", "rsa:rdm=correlation"],
    "pca": ["pca:k=3", "pca"],
    "sparsity": ["sparsity:tol=0.3", "sparsity"],
    "selectivity": ["selectivity:label=label"],
}  # fmt: skip
ALL = [case for name in REGISTRY for case in CASES.get(name, [name])]
PAIRED = [c for c in ALL if get(c.split(":")[0]).pairing != "single"]
SINGLE = [c for c in ALL if get(c.split(":")[0]).pairing == "single"]
REL, ABS = 1e-6, 1e-9
N = 90
ATTENTION = {"attention_entropy", "head_specialization"}
HEADS = 3


def data(seed: int = 0, n: int = N, p: int = 6, q: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Two related, non-negative-ish representations with unequal variances per feature."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) * np.linspace(0.5, 2.0, p) + 1.0
    y = np.tanh(x @ rng.normal(size=(p, q))) + 0.4 * rng.normal(size=(n, q)) + 0.5
    return x, y


def attention_maps(seed: int = 0, n: int = N, t: int = 5) -> np.ndarray:
    """Softmax maps (n, HEADS·t·t) of samples of 1…t real tokens, padded with zeros."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, HEADS, t, t))
    for i, length in enumerate(rng.integers(1, t + 1, size=n)):
        scores = 2.0 * rng.normal(size=(HEADS, length, length))
        p = np.exp(scores - scores.max(axis=-1, keepdims=True))
        out[i, :, :length, :length] = p / p.sum(axis=-1, keepdims=True)
    return out.reshape(n, -1)


def case_data(case: str, seed: int) -> np.ndarray:
    """What a single-representation measure is checked on."""
    if case.split(":")[0] in ATTENTION:
        return attention_maps(seed)
    return positive(data(seed)[0])


def labels(n: int = N) -> np.ndarray:
    return np.arange(n) % 3


def paired(case: str, x, y, pairs=((0, 1),), chunks=None) -> dict:
    arrays = [x, y] if chunks is None else [da.from_array(x, chunks=(chunks, -1)), y]
    return measure_arrays(arrays, list(pairs), case, scheduler="sync").pairs


def single(case: str, x, chunks=None) -> dict:
    arr = x if chunks is None else da.from_array(x, chunks=(chunks, -1))
    heads = HEADS if case.split(":")[0] in ATTENTION else None
    return describe_arrays([arr], case, labels=labels(x.shape[0]), heads=heads,
                           scheduler="sync")[0]  # fmt: skip


def spec_of(case: str):
    return parse_spec(case)


def oracle_kwargs(spec) -> dict:
    """The options given (not left at their defaults), as the oracles' keyword arguments."""
    defaults = {o.name: o.default for o in spec.measure.options}
    return {k: v for k, v in spec.opts.items() if v != defaults[k]}


def scalars(case: str) -> tuple[str, ...]:
    s = spec_of(case)
    return tuple(s.column(c) for c in s.measure.columns(s.opts)[0])


def close(got: dict, want: dict, keys, rel: float = REL, abs_: float = ABS) -> None:
    for k in keys:
        assert np.allclose(got[k], want[k], rtol=rel, atol=abs_), (k, got[k], want[k])


def positive(x: np.ndarray) -> np.ndarray:
    """ReLU-like activations: non-negative, a third of them exactly zero."""
    return np.maximum(x - 0.6, 0.0)


# --------------------------------------------------------------------------- registry


def test_every_measure_is_checked_and_declares_itself() -> None:
    for name in REGISTRY:
        m = get(name)
        assert m.name == name and m.summary and m.pairing in ("rows", "features", "single")
        opts = parse_spec(name if name != "selectivity" else "selectivity:label=c").opts
        assert m.invariances(opts) <= set(INVARIANCES)
        assert m.columns(opts)[0], f"{name} has no scalar column"
        assert name in ORACLES or m.pairing == "single", f"{name} has no oracle"


# ---------------------------------------------------------------------------- oracles


@pytest.mark.parametrize("chunks", [None, 1, 7, 13], ids=["numpy", "rows1", "rows7", "ragged13"])
@pytest.mark.parametrize("case", PAIRED)
def test_streamed_equals_oracle(case: str, chunks: int | None) -> None:
    """Random chunkings (1 and 7 rows, 13 with a ragged last block) against the oracle."""
    x, y = data(1)
    spec = spec_of(case)
    want = ORACLES[spec.name](x, y, **oracle_kwargs(spec))
    got = paired(case, x, y, chunks=chunks)[(0, 1)]
    close(got, want, want.keys())


@pytest.mark.parametrize("chunks", [None, 1, 7])
@pytest.mark.parametrize("case", SINGLE)
def test_describe_equals_oracle(case: str, chunks: int | None) -> None:
    x = case_data(case, 2)
    spec = spec_of(case)
    kw = {"tol": spec.opts["tol"]} if spec.name == "sparsity" else {}
    kw = {"heads": HEADS} if spec.name in ATTENTION else kw
    want = ref_describe(x, spec.name, labels=labels(), **kw)
    close(single(case, x, chunks), want, want.keys())


@pytest.mark.parametrize("case", PAIRED)
def test_large_mean_float16(case: str) -> None:
    """Means 1000× the spread, stored as float16: the streamed sums lose nothing."""
    x, y = data(3)
    x16 = (1000.0 + x).astype(np.float16)
    y16 = (-1000.0 + 2.0 * y).astype(np.float16)
    spec = spec_of(case)
    want = ORACLES[spec.name](x16.astype(np.float64), y16.astype(np.float64),
                              **oracle_kwargs(spec))  # fmt: skip
    got = paired(case, da.from_array(x16, chunks=(11, -1)), y16)[(0, 1)]
    close(got, want, want.keys(), rel=1e-6, abs_=1e-8)


# -------------------------------------------------------------------------- properties


@pytest.mark.parametrize("case", PAIRED)
def test_identity_and_symmetry(case: str) -> None:
    x, y = data(4)
    spec = spec_of(case)
    got = paired(case, x, y, pairs=[(0, 1), (1, 0), (0, 0)])
    for col, value in spec.measure.identity(spec.opts).items():
        want = got[(0, 0)][spec.column(value)] if isinstance(value, str) else value
        assert got[(0, 0)][spec.column(col)] == pytest.approx(want, rel=1e-9, abs=1e-7), col
    keys = scalars(case)
    forward = np.array([got[(0, 1)][k] for k in keys])
    backward = np.array([got[(1, 0)][k] for k in keys])
    if spec.measure.symmetric:
        np.testing.assert_allclose(forward, backward, rtol=1e-9, atol=1e-12)
    else:
        assert not np.allclose(forward, backward, rtol=1e-4, atol=1e-6), "declared asymmetric"


def _transform(kind: str, rng: np.random.Generator, p: int) -> callable:
    if kind == "orthogonal":
        q, _ = np.linalg.qr(rng.normal(size=(p, p)))
        return lambda z: z @ q
    if kind == "scale":  # away from 1: a scale near 1 leaves a thresholded count unchanged
        s = rng.uniform(0.05, 0.5) if rng.random() < 0.5 else rng.uniform(2.0, 20.0)
        return lambda z: s * z
    if kind == "translation":
        t = 3.0 * rng.normal(size=p)
        return lambda z: z + t
    q1, _ = np.linalg.qr(rng.normal(size=(p, p)))
    q2, _ = np.linalg.qr(rng.normal(size=(p, p)))
    a = q1 @ np.diag(np.linspace(0.3, 3.0, p)) @ q2
    return lambda z: z @ a


@pytest.mark.parametrize("kind", INVARIANCES)
@pytest.mark.parametrize("case", ALL)
def test_declared_invariances_hold_and_others_fail(case: str, kind: str) -> None:
    """Row-paired sides get independent transforms; feature-paired sides the same one for
    orthogonal and linear maps (their features correspond)."""
    spec = spec_of(case)
    m = spec.measure
    x, y = data(5)
    if m.pairing == "single":
        x = case_data(case, 5)
    rng = np.random.default_rng(zlib.crc32(f"{case}/{kind}".encode()))  # not hash(): per run
    tx = _transform(kind, rng, x.shape[1])
    same = m.pairing == "features" and kind in ("orthogonal", "linear")
    ty = tx if same else _transform(kind, rng, y.shape[1])
    keys = scalars(case)
    base = single(case, x) if m.pairing == "single" else paired(case, x, y)[(0, 1)]
    declared = kind in m.invariances(spec.opts)
    try:
        moved = single(case, tx(x)) if m.pairing == "single" else paired(case, tx(x), ty(y))[(0, 1)]
    except ComparisonError:  # undefined after the transform (selectivity of negative values)
        assert not declared
        return
    a = np.array([base[k] for k in keys])
    b = np.array([moved[k] for k in keys])
    if declared:
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-8)
    else:
        assert not np.allclose(b, a, rtol=1e-4, atol=1e-6), f"{case} is {kind}-invariant"


# ----------------------------------------------------------------------- laziness, passes


class RaisingScheduler:
    """Counts graph executions; cf. xarray's ``raise_if_dask_computes``."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, dsk, keys, **kwargs):
        self.calls += 1
        return dask.get(dsk, keys, **kwargs)


def test_graph_building_computes_nothing() -> None:
    x, y = data(6)
    dx, dy = da.from_array(x, chunks=(10, -1)), da.from_array(y, chunks=(10, -1))
    counter = RaisingScheduler()
    views = [(0, "raw"), (0, "unit"), (1, "raw"), (1, "unitc")]
    with dask.config.set(scheduler=counter):
        dask_graph.linear_pass([dx, dy], [0, 1, 2, 3], [(0, 2), (1, 3)], views=views)
        dask_graph.minibatch_pass([dx, dy], assign_batches(N, 20), [0, 1], [(0, 1)],
                                  kernel="rbf", sigma2=[1.0, 1.0])  # fmt: skip
        dask_graph.counts_pass(dx, None, [0.0], labels(), 3)
        assert counter.calls == 0


def test_five_measures_are_one_pass() -> None:
    """cka, cca, procrustes, linreg and rsa (with cosine RDMs: another row view) of a
    3 × 3 grid: one dask computation, reading every row of every array once."""
    rng = np.random.default_rng(7)
    base = rng.normal(size=(N, 4))
    mats = [base @ rng.normal(size=(4, 5)) + 0.3 * rng.normal(size=(N, 5)) for _ in range(6)]

    class Recording:
        def __init__(self, data):
            self.data, self.shape, self.dtype, self.ndim, self.rows = (
                data,
                data.shape,
                data.dtype,
                2,
                0,
            )

        def __getitem__(self, key):
            out = self.data[key]
            self.rows += out.shape[0]
            return out

    recs = [Recording(m) for m in mats]
    counter = RaisingScheduler()
    pairs = [(i, j) for i in range(3) for j in range(3, 6)]
    out = measure_arrays([da.from_array(r, chunks=(9, -1)) for r in recs], pairs,
                         "cka,cca,procrustes,linreg,rsa:rdm=cosine", scheduler=counter)  # fmt: skip
    assert counter.calls == 1
    assert [r.rows for r in recs] == [N] * 6
    for i, j in pairs:
        assert set(out.pairs[(i, j)]) >= {"cka", "cca", "procrustes", "linreg", "rsa"}


@pytest.mark.parametrize(("rdm", "method"), [("sqeuclidean", "euclidean"),
                                              ("correlation", "correlation")])  # fmt: skip
def test_rsa_agrees_with_rsatoolbox(rdm: str, method: str) -> None:
    """A peer, where it installs (not a dependency): rsatoolbox's RDMs (its 'euclidean' is
    the squared distance over p) compared by Pearson correlation."""
    rsatoolbox = pytest.importorskip("rsatoolbox")
    x, y = data(8)
    rdms = [rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(m), method=method) for m in (x, y)]
    want = float(rsatoolbox.rdm.compare(rdms[0], rdms[1], method="corr")[0, 0])
    got = paired(f"rsa:rdm={rdm}", da.from_array(x, chunks=(7, -1)), y)[(0, 1)]
    assert got["rsa"] == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize(("smallest", "rank"), [(1e-3, 12), (1e-8, 12), (1e-12, 11), (0.0, 11)])
def test_rank_from_the_cholesky_certificate_matches_the_eigenvalues(
    smallest: float, rank: int
) -> None:
    """The rank is p without an eigenproblem only where the factor proves it; a direction
    below 1e-10 × the largest variance still drops the rank (the eigenvalues decide)."""
    from reprstore.metrics.base import Side
    from reprstore.stats.linear import moments

    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    spectrum = np.geomspace(1.0, 1e-2, 12)
    spectrum[-1] = smallest
    z = rng.standard_normal((400, 12))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T, bias=True))).T
    x = 5.0 + (z * np.sqrt(spectrum)) @ q.T  # covariance q diag(spectrum) qᵀ exactly
    side = Side("x", {"raw": moments(x)})
    assert side.rank == rank
    expected = np.linalg.eigvalsh(np.cov(x.T, bias=True))[::-1]  # the plain float64 rank
    assert rank == int((expected > 1e-10 * expected[0]).sum())
    assert (side.full_rank_factor is not None) == (smallest >= 1e-8)
