"""``reprstore.cka(x, y)``: CKA of two arrays in memory or out of core (numpy, dask, zarr,
torch), with its interval and permutation test on request. The store-level grids are
:func:`reprstore.workflows.comparison.compare`."""

from __future__ import annotations

from typing import Any

from reprstore.engine import dask_graph
from reprstore.engine.arrays import DEFAULT_BATCH_SIZE, compare_arrays
from reprstore.engine.pass_context import content_key
from reprstore.metrics.cka import CKAResult
from reprstore.stats.linear import Backend


def cka(
    x: Any,
    y: Any,
    estimator: str = "debiased",
    kernel: str = "linear",
    sigma: float = 0.5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    shuffle: int | None = None,
    device: str | Backend = "cpu",
    *,
    memory: int | str | None = None,
    scheduler: Any = None,
    split_every: int = dask_graph.DEFAULT_SPLIT_EVERY,
    precision: str = "float64",
    ci: float | None = None,
    bootstrap: int | None = None,
    permutations: int | None = None,
    seed: int | None = None,
    route: str = "auto",
) -> CKAResult:
    """Centred kernel alignment of two representations of the same samples.

    Parameters
    ----------
    x : array-like, shape (n_samples, p)
        numpy, dask, zarr or torch array (or any array-like with ``shape``, ``dtype`` and
        row slicing). Out-of-core inputs are streamed; float16 and friends are accumulated
        in float64.
    y : array-like, shape (n_samples, q)
    estimator : {"debiased", "biased", "minibatch"}
        ``debiased`` (default): Song et al.'s unbiased HSIC; ``biased``: Kornblith et al.
        (2019); ``minibatch``: Nguyen et al. (2021) over batches of ``batch_size`` rows.
    kernel : {"linear", "rbf"}
    sigma : float
        RBF width as a multiple of the median distance: σ² = sigma² × median ‖xᵢ − xⱼ‖².
    batch_size : int
        Rows per minibatch (``minibatch`` only).
    shuffle : int, optional
        Seed of random batch membership; ``None`` = consecutive rows.
    device : {"cpu", "cuda", "cuda:N"}
        Where the per-block products run (float64 either way).
    memory : int or str, optional
        Bytes (or ``"2GB"``) the statistics of one pass may take; default 2 GiB.
    scheduler : dask scheduler, optional
    split_every : int
        Fan-in of the reduction tree.
    precision : {"float64", "float32"}
        Precision of the per-block products (accumulation is always float64). float32 is
        faster and, thanks to the shift, stayed within ~1e-8 of float64 in our tests.
    ci, bootstrap, permutations, seed
        A confidence interval at level ``ci`` from ``bootstrap`` replicates (default 200)
        and/or a permutation test with ``permutations`` permutations; ``seed`` (default 0)
        keys both. See :mod:`reprstore.uncertainty` and docs/uncertainty.md.
    route : {"auto", "features", "samples"}
        How an exact value is computed: p × q feature statistics, or tiles of the n × n
        kernels (any width); ``auto`` takes the cheaper. The rbf kernel always takes
        ``samples``.

    Returns
    -------
    CKAResult
        ``.cka`` is the value; the other fields say how it was computed (with ``ci`` or
        ``permutations``, a :class:`~reprstore.uncertainty.UncertainResult`: ``cka_lo``,
        ``cka_hi``, ``cka_se``, ``cka_p`` …).

    Raises
    ------
    ComparisonError
        Too few rows, a constant representation, NaN/Inf in the input, different row counts.
    InputError
        Unknown estimator, kernel or device; bad sigma or batch size.
    """
    same = x is y  # one representation with itself: one side, exactly 1 (SPEC: exactness)
    unc = _uncertainty_options(ci, bootstrap, permutations, seed)
    # (y, x) computed as (x, y) and swapped: the same bits both ways (SPEC: exactness)
    flip = not same and unc is None and content_key(y) < content_key(x)
    arrays = [x] if same else [y, x] if flip else [x, y]
    (result,) = compare_arrays(
        arrays,
        [(0, 0)] if same else [(0, 1)],
        names=["A"] if same else ["B", "A"] if flip else ["A", "B"],
        estimator=estimator,
        kernel=kernel,
        sigma=sigma,
        batch_size=batch_size,
        shuffle=shuffle,
        device=device,
        memory=memory,
        scheduler=scheduler,
        split_every=split_every,
        precision=precision,
        uncertainty=unc,
        route=route,
    )
    if flip:
        from reprstore.metrics.cka import swapped

        return swapped(result)
    return result


def _uncertainty_options(
    ci: float | None, bootstrap: int | None, permutations: int | None, seed: int | None
) -> Any:
    if ci is None and bootstrap is None and permutations is None:
        return None
    from reprstore.uncertainty import options

    return options(ci=ci, bootstrap=bootstrap, permutations=permutations, seed=seed)
