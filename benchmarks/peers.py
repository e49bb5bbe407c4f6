"""Adapters for the peer libraries, each used through its real public API.

* **torch-cka** 0.21 (``torch_cka.CKA(model1, model2, …).compare(loader)``) and
  **cka-pytorch** 1.1.3 (``CKACalculator(…).calculate_cka_matrix(loader)``) take two models
  and a DataLoader, hook the named layers and accumulate the unbiased HSIC per minibatch
  (Nguyen et al.'s minibatch CKA). We feed them the stored arrays through
  :class:`Views`, a parameter-free model whose ``nn.Identity`` layers return views of the
  row block it is given, over a DataLoader of consecutive row blocks read from the store
  (:class:`StoreBlocks`). No real forward pass runs, so their times are lower bounds.
* **ckatorch** 1.0.3 has array functions: ``cka_base(x, y, unbiased=…)`` (exact, in Gram
  space, float64) and ``cka_batch(x, y)`` (minibatch over a ``(k, B, p)`` stack), and a
  model/DataLoader class ``ckatorch.CKA`` whose ``__call__`` assigns each batch's CKA to
  the matrix instead of accumulating it, so it returns the *last* batch's value (a
  behaviour of that release that the minibatch case makes visible).

cka-pytorch imports ``lightning`` (``lightning.fabric.wrappers``) and ``torchmetrics``; a
peer that cannot be imported is recorded as "not installed".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


class Views(nn.Module):
    """A parameter-free model: layer ``name`` returns column ``c`` of a (B, A, F) block.

    Parameters
    ----------
    columns : which array (axis 1 of the input block) each layer shows
    names : the layer names (attributes holding ``nn.Identity``)
    batch_dim : if True, layers return (1, B, F) (what ``ckatorch.CKA`` expects)
    """

    def __init__(self, columns: Sequence[int], names: Sequence[str], batch_dim: bool = False):
        super().__init__()
        self.columns = list(columns)
        self.names = list(names)
        self.batch_dim = batch_dim
        for name in self.names:
            setattr(self, name, nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c, name in zip(self.columns, self.names, strict=True):
            view = x[:, c]
            getattr(self, name)(view.unsqueeze(0) if self.batch_dim else view)
        return x


class StoreBlocks(torch.utils.data.Dataset):
    """Consecutive row blocks of several stored arrays as float32 ``(B, A, F)`` tensors.

    Whole stored chunks are decoded once and cached while the blocks inside them are
    served, so a batch size smaller than the chunk does not decode chunks repeatedly.
    ``fmt`` is ``"tuple"`` (``(x, 0)``, torch-cka and cka-pytorch) or ``"dict"``
    (``{"x": x}``, ckatorch).
    """

    def __init__(self, arrays: Sequence[Any], batch_size: int, fmt: str = "tuple") -> None:
        self.arrays = list(arrays)
        self.batch_size = batch_size
        self.fmt = fmt
        self.n = int(self.arrays[0].shape[0])
        self.chunk = int(getattr(self.arrays[0], "chunks", (batch_size,))[0])
        self._span = (0, 0)
        self._cache: np.ndarray | None = None

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        lo, hi = self._span
        if not (lo <= start and stop <= hi):
            lo = start // self.chunk * self.chunk
            hi = min(self.n, -(-stop // self.chunk) * self.chunk)
            self._cache = np.stack(
                [np.asarray(a[lo:hi], dtype=np.float32) for a in self.arrays], axis=1
            )
            self._span = (lo, hi)
        assert self._cache is not None
        return self._cache[start - lo : stop - lo]

    def __getitem__(self, k: int) -> Any:
        start = k * self.batch_size
        x = torch.from_numpy(self._rows(start, min(self.n, start + self.batch_size)))
        return {"x": x} if self.fmt == "dict" else (x, 0)


def loader(arrays: Sequence[Any], batch_size: int, fmt: str = "tuple") -> Any:
    return torch.utils.data.DataLoader(StoreBlocks(arrays, batch_size, fmt), batch_size=None)


def _names(prefix: str, k: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(k)]


def torch_cka_matrix(xs: Sequence[Any], ys: Sequence[Any], batch_size: int) -> np.ndarray:
    """torch-cka's layer matrix (minibatch, unbiased HSIC per batch) of run X × run Y."""
    import torch_cka

    a, b = _names("x", len(xs)), _names("y", len(ys))
    m1 = Views(range(len(xs)), a)
    m2 = Views(range(len(xs), len(xs) + len(ys)), b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cka = torch_cka.CKA(m1, m2, "X", "Y", model1_layers=a, model2_layers=b, device="cpu")
        with torch.no_grad():
            cka.compare(loader([*xs, *ys], batch_size))
    return np.asarray(cka.export()["CKA"], dtype=np.float64)


def cka_pytorch_matrix(xs: Sequence[Any], ys: Sequence[Any], batch_size: int) -> np.ndarray:
    """cka-pytorch's ``CKACalculator`` layer matrix (minibatch), one epoch."""
    from cka_pytorch import CKACalculator

    a, b = _names("x", len(xs)), _names("y", len(ys))
    m1 = Views(range(len(xs)), a)
    m2 = Views(range(len(xs), len(xs) + len(ys)), b)
    calc = CKACalculator(
        m1, m2, model1_layers=a, model2_layers=b, device=torch.device("cpu"), verbose=False
    )
    mat = calc.calculate_cka_matrix(loader([*xs, *ys], batch_size), num_epochs=1)
    return np.asarray(mat, dtype=np.float64)


def ckatorch_class_matrix(xs: Sequence[Any], ys: Sequence[Any], batch_size: int) -> np.ndarray:
    """``ckatorch.CKA`` over a DataLoader, one epoch (its value is the last batch's)."""
    import ckatorch

    a, b = _names("x", len(xs)), _names("y", len(ys))
    m1 = Views(range(len(xs)), a, batch_dim=True)
    m2 = Views(range(len(xs), len(xs) + len(ys)), b, batch_dim=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cka = ckatorch.CKA(m1, m2, layers=a, second_layers=b, first_name="X", second_name="Y")
        mat = cka(loader([*xs, *ys], batch_size, fmt="dict"), epochs=1)
    return np.asarray(mat, dtype=np.float64)


def ckatorch_base(x: torch.Tensor, y: torch.Tensor, estimator: str) -> float:
    """``ckatorch.cka_base``: exact CKA from the n × n Gram matrices (float64)."""
    import ckatorch

    return float(ckatorch.cka_base(x, y, unbiased=estimator == "debiased"))


def ckatorch_batch(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """``ckatorch.cka_batch`` on the consecutive batches of whole arrays (k·B rows used)."""
    import ckatorch

    k = x.shape[0] // batch_size
    rows = k * batch_size
    return float(
        ckatorch.cka_batch(x[:rows].reshape(k, batch_size, -1), y[:rows].reshape(k, batch_size, -1))
    )


def versions() -> dict[str, str]:
    """Installed versions of the peers (or ``"not installed"``)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("torch-cka", "ckatorch", "cka-pytorch", "lightning", "torchmetrics"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out
