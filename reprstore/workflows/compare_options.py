"""Everything a comparison is asked, as one frozen object checked when it is made: the
measures (parsed, with cka's defaults), which pairs (selectors, filters), how to compute
(:class:`~reprstore.engine.options.ComputeOptions`) and the intervals and tests. The
command line and :func:`reprstore.compare` build it the same way
(:meth:`CompareOptions.make`), so an option is checked once, before any data is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from reprstore.engine.arrays import DEFAULT_BATCH_SIZE
from reprstore.engine.options import ComputeOptions
from reprstore.errors import InputError
from reprstore.keys import ReprKey, Selector, parse_keys
from reprstore.metrics.base import Spec
from reprstore.metrics.cka import check_options
from reprstore.metrics.registry import parse_measures
from reprstore.uncertainty import UncertaintyOptions, check_measures, options


@dataclass(frozen=True)
class GridSelection:
    """Which pairs of a store to compare, and on which rows (see :func:`reprstore.compare`).

    ``match``/``differ`` are normalised to key tuples; ``where`` and ``pair_where`` are
    parsed (never evaluated as code) when the selection is made.
    """

    a: str | Selector | None = None
    b: str | Selector | None = None
    where: str | None = None
    match: tuple[str, ...] = ()
    differ: tuple[str, ...] = ()
    pairs: tuple[tuple[ReprKey, ReprKey], ...] | None = None
    pair_where: str | None = None
    unordered: bool = False
    allow_incomplete: bool = False

    def __post_init__(self) -> None:
        from reprstore.expr import parse_pair_filter, parse_row_filter

        object.__setattr__(self, "match", _keys(self.match, "--match"))
        object.__setattr__(self, "differ", _keys(self.differ, "--differ"))
        if self.pairs is not None:
            object.__setattr__(self, "pairs", tuple(tuple(p) for p in self.pairs))
        if self.where is not None:
            parse_row_filter(self.where)
        if self.pair_where is not None:
            parse_pair_filter(self.pair_where)


def _keys(value: str | Sequence[str] | None, option: str) -> tuple[str, ...]:
    """``--match``/``--differ`` as the CLI reads them: ``"layer,seed"`` or a list of keys."""
    if value is None:
        return ()
    return parse_keys(value if isinstance(value, str) else ",".join(value), option)


@dataclass(frozen=True)
class CompareOptions:
    """A whole comparison request, checked: build it with :meth:`make`."""

    specs: tuple[Spec, ...]
    selection: GridSelection
    compute: ComputeOptions
    uncertainty: UncertaintyOptions | None
    #: cka's options as given (the provenance records them).
    cka: dict[str, Any]

    @classmethod
    def make(
        cls,
        a: str | Selector | None = None,
        b: str | Selector | None = None,
        *,
        measures: str | Sequence[str] = "cka",
        estimator: str = "debiased",
        kernel: str = "linear",
        sigma: float = 0.5,
        batch_size: int = DEFAULT_BATCH_SIZE,
        shuffle: int | None = None,
        where: str | None = None,
        match: str | Sequence[str] | None = (),
        differ: str | Sequence[str] | None = (),
        pairs: Sequence[tuple[ReprKey, ReprKey]] | None = None,
        pair_where: str | None = None,
        unordered: bool = False,
        allow_incomplete: bool = False,
        device: str = "cpu",
        precision: str = "float64",
        memory: int | str | None = None,
        workers: int | None = None,
        scheduler: Any = None,
        split_every: int | None = None,
        timeout: float | None = None,
        ci: float | None = None,
        bootstrap: int | None = None,
        permutations: int | None = None,
        seed: int | None = None,
        route: str = "auto",
        dry_run: bool = False,
        cache: bool = True,
        refresh: bool = False,
        report: Callable[[str], None] | None = None,
    ) -> CompareOptions:
        """Check every option (no store is opened, no data read) and bundle them."""
        check_options(estimator, kernel)
        if shuffle is not None and (
            isinstance(shuffle, bool) or not isinstance(shuffle, int) or shuffle < 0
        ):
            raise InputError(
                f"--shuffle must be a non-negative integer seed. Got {shuffle!r} instead."
            )
        cka = dict(
            estimator=estimator, kernel=kernel, sigma=sigma, batch_size=batch_size, shuffle=shuffle
        )
        specs = tuple(parse_measures(measures, defaults={"cka": cka}))
        single = [s.name for s in specs if s.measure.pairing == "single"]
        if single:
            raise InputError(
                f"{', '.join(single)} describe(s) one representation: use reprstore describe."
            )
        selection = GridSelection(
            a=a, b=b, where=where, match=_keys(match, "--match"),
            differ=_keys(differ, "--differ"), pairs=None if pairs is None else tuple(pairs),
            pair_where=pair_where, unordered=unordered, allow_incomplete=allow_incomplete,
        )  # fmt: skip
        compute = ComputeOptions(
            device=device, precision=precision, memory=memory, workers=workers,
            scheduler=scheduler, split_every=split_every, timeout=timeout, route=route,
            dry_run=dry_run, cache=cache, refresh=refresh,
        )  # fmt: skip
        unc = options(ci, bootstrap, permutations, seed, report=report)
        if unc is not None:
            check_measures(specs, unc)
        return cls(specs, selection, compute, unc, cka)
