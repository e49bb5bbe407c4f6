"""A store for notebooks: ``reprstore.open(STORE)`` lists and loads representations.

``reprstore.open("runs.zarr")`` returns an :class:`OpenStore`:

- ``.ls(selector)``: a DataFrame of the selected representations (key, step, shape, stored
  dtype, completeness, reduction, run attributes), one row each, in natural key order;
- ``.load(selector, as_="numpy" | "xarray" | "dask")``: exactly one representation, its rows
  as written (the stored dtype, float16 or float32). ``xarray`` labels the rows with the
  dataset's sample ids and metadata columns and carries the key and provenance as
  attributes; ``dask`` reads nothing until computed, one block per stored chunk.

Every read goes through :class:`reprstore.store.checked.CheckedRows`, as comparisons do: each
chunk is checked against the CRC-32 its writer recorded, so a damaged or missing chunk is an
error naming it, never zeros. An incomplete representation (an interrupted extraction)
loads only with ``allow_incomplete=True``, and then only its rows written so far.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from reprstore.errors import IncompleteError, InputError, SelectorError
from reprstore.keys import SELECTOR_KEYS, Selector, natural_key

if TYPE_CHECKING:
    import dask.array as da
    import numpy as np
    import pandas as pd
    import xarray as xr

    from reprstore.store import ReprInfo, Store
    from reprstore.store.checked import CheckedRows

LOAD_FORMATS = ("numpy", "xarray", "dask")
LS_COLUMNS = ["model", "seed", "checkpoint", "dataset", "layer", "step", "n_samples",
              "n_features", "stored_dtype", "complete", "rows_written", "reduction",
              "original_shape"]  # fmt: skip
XARRAY_HINT = "pip install 'reprstore[xarray]'"


def open(store: str | os.PathLike[str] | Store) -> OpenStore:
    """Open a store read-only for listing and loading (see :class:`OpenStore`)."""
    from reprstore.store import Store

    return OpenStore(store if isinstance(store, Store) else Store.open(store))


class OpenStore:
    """A store opened by :func:`reprstore.open`.

    Attributes
    ----------
    store : reprstore.Store
        The underlying store (for :func:`reprstore.compare` and the other use cases).
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def url(self) -> str:
        return self.store.url

    def __repr__(self) -> str:
        return f"reprstore.open({self.url!r})"

    def ls(self, selector: str | Selector | None = None) -> pd.DataFrame:
        """The representations ``selector`` matches, one row each (:data:`LS_COLUMNS`,
        then one column per run attribute); everything when ``selector`` is None.

        A selector that matches nothing raises :class:`~reprstore.errors.NotFoundError`
        naming the closest stored names, as ``reprstore ls`` does.
        """
        import pandas as pd

        infos = _selected(self.store, selector, "ls") if _given(selector) else \
            self.store.select(None)  # fmt: skip
        rows = [_ls_row(info, self.store.attributes(info.key)) for info in infos]
        names = sorted({name for row in rows for name in row} - set(LS_COLUMNS))
        return pd.DataFrame(rows, columns=[*LS_COLUMNS, *names])

    def load(
        self,
        selector: str | Selector,
        as_: str = "numpy",
        *,
        allow_incomplete: bool = False,
    ) -> np.ndarray | xr.DataArray | da.Array:
        """One representation's rows, ``(n_samples, n_features)``, exactly as stored.

        Parameters
        ----------
        selector : str or Selector
            Must match exactly one representation (``model=m,seed=0,layer=encoder.3``).
        as_ : {"numpy", "xarray", "dask"}
            ``numpy``: the decoded array, in the stored dtype. ``xarray``: a DataArray with
            dims ``("sample", "feature")`` (``flatten``-reduced outputs keep their
            per-sample shape: ``feature_0``, ``feature_1`` …), sample ids as the ``sample``
            coordinate, the dataset's metadata columns as coordinates on ``sample``, and
            the key, step, encoding, run attributes and provenance in ``attrs``. ``dask``:
            a lazy array with one block per stored chunk; nothing is read until computed.
        allow_incomplete : bool
            Load an interrupted representation's rows written so far (refused otherwise).

        Raises
        ------
        InputError
            An unknown ``as_``, or ``xarray`` without xarray installed.
        NotFoundError, SelectorError
            The selector matches nothing, or more than one representation.
        IncompleteError
            The representation is incomplete and ``allow_incomplete`` is false.
        CorruptDataError
            A chunk read does not match its recorded checksum.
        """
        if as_ not in LOAD_FORMATS:
            raise InputError(f"as_ must be one of {', '.join(LOAD_FORMATS)}. Got {as_!r} instead.")
        if as_ == "xarray":
            _require_xarray()
        info = self._one(selector)
        rows = self._checked(info, _rows_loadable(info, allow_incomplete))
        if as_ == "dask":
            return _lazy(rows, info)
        values = rows[0 : rows.shape[0]]  # every chunk decoded and checked, then handed on
        return values if as_ == "numpy" else self._labelled(info, values)

    # -- helpers ------------------------------------------------------------------------
    def _one(self, selector: str | Selector) -> ReprInfo:
        """The one representation ``selector`` names (errors name the matches)."""
        if not _given(selector):
            raise SelectorError("load needs a selector that names one representation, e.g. "
                                "'model=m,seed=0,layer=encoder.3'.")  # fmt: skip
        infos = _selected(self.store, selector, "load")
        if len(infos) == 1:
            return infos[0]
        raise SelectorError(_ambiguous(str(selector), infos))

    def _checked(self, info: ReprInfo, rows: int) -> CheckedRows:
        """Rows ``0:rows`` of ``info``, read chunk by chunk against the recorded CRC-32s."""
        from reprstore.store.checked import CheckedRows

        arr = self.store.array(info.key, allow_incomplete=True)
        checked = CheckedRows.from_array(self.store.url, arr, info.key.label())
        return dataclasses.replace(checked, shape=(rows, checked.shape[1]), _array=arr)

    def _labelled(self, info: ReprInfo, values: np.ndarray) -> xr.DataArray:
        """``values`` as a DataArray labelled with the dataset's samples and the key."""
        import numpy as np
        import xarray as xr

        dims, values = _feature_dims(info, values)
        table = self.store.dataset(info.dataset).table()
        n = values.shape[0]
        coords: dict[str, Any] = {"sample": np.asarray(table.pop("id"))[:n]}
        for column, column_values in table.items():
            name = column if column not in (*dims, "sample") else f"meta_{column}"
            coords[name] = ("sample", np.asarray(column_values)[:n])
        return xr.DataArray(values, dims=dims, coords=coords, name=info.key.label(),
                            attrs=_attributes(info, self.store.attributes(info.key)))  # fmt: skip


def _lazy(rows: CheckedRows, info: ReprInfo) -> da.Array:
    """``rows`` as a dask array with one block per stored chunk: nothing read yet."""
    from reprstore.engine.pass_context import lazy_rows

    name = f"reprstore-load-{rows.location}-{info.key.path}-{rows.shape[0]}-{hash(rows.crcs)}"
    return lazy_rows(rows, rows.chunk_rows, name)


def _given(selector: str | Selector | None) -> bool:
    return selector is not None and str(selector).strip() not in ("", "*")


def _selected(store: Store, selector: str | Selector | None, what: str) -> list[ReprInfo]:
    """What ``selector`` matches, damaged nodes and empty selections refused (as compare)."""
    from reprstore.workflows.comparison import select_reprs

    return select_reprs(store, selector, what)


def _ambiguous(selector: str, infos: list[ReprInfo]) -> str:
    """The one line for a selector that matches several representations."""
    shown = ", ".join(i.key.label() for i in infos[:4]) + (", …" if len(infos) > 4 else "")
    varying = [
        (k, sorted({getattr(i.key, k) for i in infos}, key=natural_key))
        for k in SELECTOR_KEYS
        if len({getattr(i.key, k) for i in infos}) > 1
    ]
    hint = ", ".join(f"{k}={values[0]}" for k, values in varying)
    return (f"load {selector!r} matches {len(infos)} representations ({shown}); load takes "
            f"one: narrow the selector, e.g. add {hint}.")  # fmt: skip


def _rows_loadable(info: ReprInfo, allow_incomplete: bool) -> int:
    """Rows to load: all of a complete representation, the rows written of an incomplete
    one (only when allowed)."""
    if info.complete:
        return int(info.shape[0])
    if not allow_incomplete:
        raise IncompleteError(
            f"{info.key.label()} is incomplete ({info.rows_written} of {info.shape[0]} rows): "
            "resume its extraction, or pass allow_incomplete=True to load the rows written."
        )
    return info.rows_written


def _require_xarray() -> None:
    try:
        import xarray  # noqa: F401
    except ImportError:
        raise InputError(f"as_='xarray' needs xarray: {XARRAY_HINT}.") from None


def _feature_dims(info: ReprInfo, values: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Dims of the loaded values: ``(sample, feature)``, or a flattened output's own
    per-sample shape (``feature_0``, ``feature_1`` …) when it is recorded and fits."""
    import math

    shape = info.attrs.get("original_shape") or []
    fits = all(isinstance(s, int) for s in shape) and math.prod(shape) == values.shape[1]
    if info.attrs.get("reduction") == "flatten" and len(shape) > 1 and fits:
        dims = ("sample", *(f"feature_{i}" for i in range(len(shape))))
        return dims, values.reshape(values.shape[0], *shape)
    return ("sample", "feature"), values


def _attributes(info: ReprInfo, run_attributes: dict[str, str]) -> dict[str, Any]:
    """The DataArray's attrs: the key, step, encoding, run attributes and provenance."""
    attrs: dict[str, Any] = {**info.key.as_dict(), "dataset": info.dataset}
    if info.step is not None:
        attrs["step"] = info.step
    for name in ("stored_dtype", "reduction", "original_shape", "keep_bits", "complete",
                 "rows_written", "provenance"):  # fmt: skip
        if info.attrs.get(name) is not None:
            attrs[name] = info.attrs[name]
    attrs["run_attributes"] = dict(run_attributes)
    return attrs


def _ls_row(info: ReprInfo, run_attributes: dict[str, str]) -> dict[str, Any]:
    """One row of :meth:`OpenStore.ls`; a run attribute named like a column gets ``attr_``."""
    attributes = {(f"attr_{k}" if k in LS_COLUMNS else k): v for k, v in run_attributes.items()}
    return {
        **info.key.as_dict(), "dataset": info.dataset, "step": info.step,
        "n_samples": int(info.shape[0]), "n_features": int(info.shape[1]),
        "stored_dtype": info.stored_dtype, "complete": info.complete,
        "rows_written": info.rows_written, "reduction": info.attrs.get("reduction"),
        "original_shape": tuple(info.attrs.get("original_shape") or ()), **attributes,
    }  # fmt: skip
