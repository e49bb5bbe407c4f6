"""chunks ↔ zarr: the store layout, datasets, the streaming writer and write leases."""

from reprstore.store.attrs import ReprSettings, provenance, sha256_file
from reprstore.store.datasets import Dataset, check_dataset, write_dataset
from reprstore.store.encoding import DEFAULT_DTYPE, STORAGE_DTYPES, Encoding, bitround
from reprstore.store.handle import ReprInfo, Store
from reprstore.store.runattrs import RunAttributes
from reprstore.store.safeblosc import install as _install_checked_blosc
from reprstore.store.writer import ReprWriter

_install_checked_blosc()  # every blosc chunk read by any array checks its frame first

__all__ = [
    "DEFAULT_DTYPE",
    "STORAGE_DTYPES",
    "Dataset",
    "Encoding",
    "ReprInfo",
    "ReprSettings",
    "ReprWriter",
    "RunAttributes",
    "Store",
    "bitround",
    "check_dataset",
    "provenance",
    "sha256_file",
    "write_dataset",
]
