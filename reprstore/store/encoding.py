"""How rows are stored: dtype policy, lossy bit rounding, compression and chunk size.

Decisions (measured on real MiniLM activations, see the benchmarks):

* Lossless compression of activations gains little (about 1.1×), so the storage dtype is
  the big lever: ``float16`` is the default. ``bfloat16`` is stored as ``float32`` whose low
  16 bits are zero, which the bit shuffle + LZ4 codec squeezes to about 1.5 bytes a value
  while keeping the array readable by plain zarr/numpy (numpy has no bfloat16).
* ``keep_bits`` rounds mantissas (round to nearest, ties to even, as numcodecs' BitRound)
  *before* the array is written, so the stored values are the rounded values and any zarr
  reader decodes them with standard codecs only.
* Codec: Blosc(LZ4, level 5, bit shuffle) (``python -m benchmarks.codecs``, real MiniLM
  layers, one core): float16 decodes at 4.1 GB/s and stores 1.094× smaller than raw,
  against 1.1 GB/s and 1.082× for the Blosc(zstd 3, byte shuffle) of stores written before
  (float32 3.6 against 1.3 GB/s, bfloat16 2.9 against 1.2 GB/s, both also smaller). Old
  arrays name their own codec and read as before; ``reprstore upgrade --reencode``
  rewrites them.
* Chunks span rows only; their row count is a power of two so chunks of representations
  with different widths line up and a comparison can read each chunk exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from reprstore.errors import InputError

if TYPE_CHECKING:
    from zarr.codecs import BloscCodec

STORAGE_DTYPES = ("float16", "float32", "bfloat16")
DEFAULT_DTYPE = "float16"
TARGET_CHUNK_BYTES = 4 * 2**20
MIN_CHUNK_ROWS = 16
MAX_CHUNK_ROWS = 2**16
_MANTISSA_BITS = {np.dtype("float16"): 10, np.dtype("float32"): 23, np.dtype("float64"): 52}
_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


@dataclass(frozen=True)
class Encoding:
    """The storage of one representation: zarr dtype plus optional mantissa rounding."""

    name: str  # what the user asked for: float16 | float32 | bfloat16
    keep_bits: int | None = None

    def __post_init__(self) -> None:
        if self.name not in STORAGE_DTYPES:
            raise InputError(
                f"Unknown storage dtype {self.name!r}. Expected one of {', '.join(STORAGE_DTYPES)}."
            )
        limit = _MANTISSA_BITS[self.zarr_dtype] if self.name != "bfloat16" else 7
        if self.keep_bits is not None and not 0 <= self.keep_bits <= limit:
            raise InputError(
                f"--keep-bits {self.keep_bits} is out of range for {self.name}: "
                f"expected 0..{limit} mantissa bits."
            )

    @property
    def zarr_dtype(self) -> np.dtype:
        return np.dtype("float16" if self.name == "float16" else "float32")

    @property
    def effective_keep_bits(self) -> int | None:
        """Mantissa bits kept after rounding (bfloat16 means 7 bits of a float32)."""
        if self.name == "bfloat16":
            return min(7, self.keep_bits) if self.keep_bits is not None else 7
        return self.keep_bits

    def encode(self, block: np.ndarray) -> np.ndarray:
        """Cast a row block to the stored dtype and apply rounding; returns a new array."""
        out = np.asarray(block).astype(self.zarr_dtype, copy=True)
        bits = self.effective_keep_bits
        if bits is not None:
            bitround(out, bits)
        return out


FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
#: float16 is kept only while its rounding error, measured per column on the first block
#: (RMS error / the column's standard deviation) and weighted by each column's variance
#: (sqrt(Σ err² / Σ var): the noise-to-signal ratio of the Gram matrix CKA is made of),
#: stays below this. Measured: real MiniLM activations give 2.6e-4..4.4e-4 (CKA moves by
#: ≤ 6e-6, float16's accepted cost); a common offset of 10 × the spread gives 2.3e-3 (CKA
#: +1.6e-5), 100 × gives 1.8e-2 (+8e-4), 1000 × gives 0.15 (+2.7e-2): float32 from ~8 ×.
#: Columns of negligible variance (dead units) do not count, as they do not count in CKA.
FLOAT16_REL_RMS_LIMIT = 2e-3
GUARD_ROWS = 8192


def float16_loss(block: np.ndarray, check_precision: bool = True) -> str | None:
    """Why float16 cannot hold ``block`` faithfully (one clause), or None when it can.

    Parameters
    ----------
    block : ndarray (n, p)
        Rows as computed (any float dtype); the first :data:`GUARD_ROWS` are measured.
    check_precision : bool
        Also measure the per-column rounding error (not only the range).
    """
    whole = np.asarray(block)
    with np.errstate(over="ignore", invalid="ignore"):
        over = np.isinf(whole.astype(np.float16)) & np.isfinite(whole)
    if over.any():
        biggest = float(np.abs(whole[over]).max())
        return (
            f"{int(over.sum())} value(s) beyond float16's range (|x| > {FLOAT16_MAX:.0f}, "
            f"largest {biggest:.4g}) would be stored as Inf"
        )
    if not check_precision or len(whole) < 2:
        return None
    x = whole[:GUARD_ROWS].reshape(min(len(whole), GUARD_ROWS), -1).astype(np.float64)
    finite = np.isfinite(x)
    q = x.astype(np.float16).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.where(finite, q - x, 0.0)
        count = np.maximum(finite.sum(axis=0), 1)
        err = np.sqrt((diff**2).sum(axis=0) / count)
        mean = np.where(finite, x, 0.0).sum(axis=0) / count
        std = np.sqrt((np.where(finite, x - mean, 0.0) ** 2).sum(axis=0) / count)
        total = float((std**2).sum())
        overall = float(np.sqrt((err**2).sum() / total)) if total > 0 else 0.0
        weighted = np.where(std > 0, err * std, 0.0)  # each column's share of the total
    if overall > FLOAT16_REL_RMS_LIMIT:
        worst = int(np.argmax(weighted))
        return (
            f"float16 rounding would add noise of {overall:.2g} of the signal's spread (limit "
            f"{FLOAT16_REL_RMS_LIMIT:g}; worst column {worst}: mean {mean[worst]:.4g}, std "
            f"{std[worst]:.4g}, e.g. a large common offset)"
        )
    return None


def bitround(values: np.ndarray, keep_bits: int) -> np.ndarray:
    """Round the mantissa of floats to ``keep_bits`` bits in place (ties to even).

    The same rounding as numcodecs' ``BitRound`` and Klöwer et al. (2021); NaN and Inf
    pass through unchanged.
    """
    mbits = _MANTISSA_BITS[values.dtype]
    if keep_bits >= mbits:
        return values
    uint: Any = _UINT[values.dtype.itemsize]
    bits = values.view(uint)
    drop = mbits - keep_bits
    one = uint(1)
    half = uint((1 << (drop - 1)) - 1)
    mask = ~uint((1 << drop) - 1)
    finite = np.isfinite(values)
    rounded = ((bits + half + ((bits >> uint(drop)) & one)) & mask).astype(uint)
    np.copyto(bits, rounded, where=finite)
    return values


def chunk_rows_for(n_features: int, itemsize: int, n_samples: int | None) -> int:
    """Rows per chunk: a power of two near ``TARGET_CHUNK_BYTES``, no larger than needed."""
    row_bytes = max(1, n_features * itemsize)
    rows = MIN_CHUNK_ROWS
    while rows * 2 * row_bytes <= TARGET_CHUNK_BYTES and rows * 2 <= MAX_CHUNK_ROWS:
        rows *= 2
    if n_samples is not None:
        while rows > MIN_CHUNK_ROWS and rows // 2 >= n_samples:
            rows //= 2
    return rows


def compressors(dtype: np.dtype) -> list[BloscCodec]:
    """The zarr v3 codec chain new arrays of a stored dtype are written with."""
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=dtype.itemsize)]
