"""reprstore: store neural-network representations in zarr and compare them out of core."""

from reprstore.errors import ReprstoreError
from reprstore.keys import ReprKey, Selector

__version__ = "0.1.0"
__all__ = ["ReprKey", "ReprstoreError", "Selector", "__version__"]
