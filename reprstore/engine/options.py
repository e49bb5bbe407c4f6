"""How a comparison computes, as one frozen object checked when it is made: the device
and precision of the products, the memory budget, the scheduler (local threads or a
cluster), the route and the result cache. The command line and the Python API build the
same object, so every option is checked once, in one place, before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reprstore.engine.cluster import check_cluster_choice, check_scheduler, check_timeout
from reprstore.engine.pass_context import resolve_backend
from reprstore.engine.planner import check_route
from reprstore.errors import InputError
from reprstore.stats.plan import parse_memory


def check_cache_choice(cache: bool, refresh: bool) -> None:
    """``--refresh`` and ``--no-cache`` exclude each other."""
    if refresh and not cache:
        raise InputError(
            "Give either --refresh (recompute, rewrite the cache) or --no-cache "
            "(leave the cache alone), not both."
        )


@dataclass(frozen=True)
class ComputeOptions:
    """How to compute (see :func:`reprstore.compare` for each option's meaning).

    ``memory`` keeps what was given (``"2GB"``, bytes or ``None``); :attr:`budget` is it
    in bytes, parsed once.
    """

    device: str = "cpu"
    precision: str = "float64"
    memory: int | str | None = None
    workers: int | None = None
    scheduler: Any = None
    split_every: int | None = None
    timeout: float | None = None
    route: str = "auto"
    dry_run: bool = False
    cache: bool = True
    refresh: bool = False
    budget: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", parse_memory(self.memory))
        resolve_backend(self.device, self.precision)  # unknown device, no GPU, bad precision
        check_route(self.route)
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise InputError(f"--workers must be at least 1. Got {self.workers!r} instead.")
        check_cluster_choice(self.workers, self.scheduler)
        check_scheduler(self.scheduler)
        check_timeout(self.timeout)
        if self.split_every is not None and (
            isinstance(self.split_every, bool)
            or not isinstance(self.split_every, int)
            or self.split_every < 2
        ):
            raise InputError(f"split_every must be an integer ≥ 2. Got {self.split_every!r}.")
        check_cache_choice(self.cache, self.refresh)

    @property
    def device_kind(self) -> str:
        """``cpu`` or ``cuda`` (without a device number), as cache keys record it."""
        return self.device.split(":")[0]

    def engine_settings(self) -> dict[str, Any]:
        """The keyword arguments of the engine's passes (memory as bytes)."""
        out: dict[str, Any] = dict(
            device=self.device, precision=self.precision, memory=self.budget, route=self.route
        )
        if self.split_every is not None:
            out["split_every"] = self.split_every
        return out

    def provenance(self) -> dict[str, Any]:
        """The settings a result file records (memory in bytes, however it was given)."""
        out: dict[str, Any] = dict(
            device=self.device, precision=self.precision, memory=self.budget, route=self.route
        )
        if self.split_every is not None:
            out["split_every"] = self.split_every
        return out
