"""dask.distributed clusters for comparisons: connect, watch, and fail in one line.

A comparison on a cluster must not hang when the cluster goes away: :class:`ClusterWatch`
probes the scheduler while the comparison runs; when the scheduler does not answer or no
worker is left for ``timeout`` seconds in a row it closes the client, which cancels the
running computation, and :func:`cluster_errors` turns what dask raises then (cancelled
futures, closed comms, 30 lines of log) into one :class:`~reprstore.errors.ClusterError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from reprstore.errors import ClusterError, InputError, ReprstoreError

DEFAULT_TIMEOUT_S = 60.0
#: dask's own scheduler names, accepted by ``--scheduler`` besides addresses
LOCAL_SCHEDULERS = ("threads", "threading", "sync", "synchronous", "single-threaded", "processes")


def quiet_distributed_logs() -> None:
    """Keep dask.distributed's log lines (here and in worker processes) off the terminal.

    A lost scheduler or worker logs dozens of lines; the CLI says what happened in one.
    """
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
    import distributed  # noqa: F401  (it configures its loggers on import: override after)

    for name in ["distributed", "tornado", "asyncio", *logging.root.manager.loggerDict]:
        if name.split(".")[0] in ("distributed", "tornado", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def check_timeout(timeout: float | None) -> float:
    """``--timeout`` in seconds (positive, finite)."""
    value = DEFAULT_TIMEOUT_S if timeout is None else float(timeout)
    if not (value > 0 and value < float("inf")):
        raise InputError(f"--timeout must be a positive number of seconds. Got {timeout!r}.")
    return value


def check_scheduler(scheduler: Any) -> Any:
    """Refuse a ``--scheduler`` string that is neither an address nor a dask scheduler name."""
    if isinstance(scheduler, str):
        if "://" in scheduler:
            proto, _, rest = scheduler.partition("://")
            if not proto.isidentifier() or not rest or " " in scheduler:
                raise InputError(
                    f"--scheduler {scheduler!r} is not an address like tcp://host:8786."
                )
        elif scheduler not in LOCAL_SCHEDULERS:
            raise InputError(
                f"--scheduler {scheduler!r} is not a dask scheduler address (tcp://host:8786) "
                f"or one of {', '.join(LOCAL_SCHEDULERS)}."
            )
    return scheduler


class ClusterWatch:
    """Probe a client's scheduler in a thread; close the client when the cluster is gone.

    Parameters
    ----------
    client : distributed.Client
    timeout : float
        Seconds without an answering scheduler or without any worker before giving up.
    where : str
        The cluster's name in messages.
    """

    def __init__(self, client: Any, timeout: float, where: str) -> None:
        self.client = client
        self.timeout = timeout
        self.where = where
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reprstore-watch", daemon=True)

    def __enter__(self) -> ClusterWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _probe(self) -> str | None:
        """What is wrong with the cluster now, or None."""
        if getattr(self.client, "status", "running") != "running":
            return "the connection to the scheduler is lost"
        answer: dict[str, Any] = {}

        def ask() -> None:
            with contextlib.suppress(BaseException):
                answer["workers"] = len(self.client.nthreads())

        probe = threading.Thread(target=ask, daemon=True)
        probe.start()
        probe.join(min(10.0, self.timeout))
        if "workers" not in answer:
            return "the scheduler does not answer"
        return None if answer["workers"] else "no worker is left"

    def _run(self) -> None:
        interval = min(1.0, self.timeout / 4)
        bad_since: float | None = None
        while not self._stop.wait(interval):
            problem = self._probe()
            if problem is None:
                bad_since = None
                continue
            bad_since = bad_since or time.monotonic()
            if time.monotonic() - bad_since >= self.timeout:
                self.reason = problem
                with contextlib.suppress(BaseException):
                    self.client.close(timeout=5)
                return


_CANCELLED = (asyncio.CancelledError, concurrent.futures.CancelledError)


@contextlib.contextmanager
def cluster_errors(where: str, watch: ClusterWatch | None, timeout: float) -> Iterator[None]:
    """Turn the ways a lost cluster surfaces into one ClusterError line."""
    try:
        yield
    except ReprstoreError:
        raise
    except (Exception, *_CANCELLED) as err:
        module = type(err).__module__ or ""
        lost = watch is not None and watch.reason is not None
        if not (
            lost
            or isinstance(err, (*_CANCELLED, OSError))
            or module.startswith(("distributed", "tornado"))
        ):
            raise
        reason = watch.reason if watch is not None and watch.reason else _reason(err)
        raise ClusterError(
            f"The dask cluster at {where} failed during the comparison: {reason} "
            f"(waited {timeout:g} s). Check the scheduler and its workers, or run without "
            "--scheduler/--workers."
        ) from None


def _reason(err: BaseException) -> str:
    """What a dask error means, in words (not its class name)."""
    text, name = str(err), type(err).__name__
    if "connection-lost" in text or "CommClosed" in name or "closed" in text.lower():
        return "the connection to the scheduler was lost"
    if isinstance(err, _CANCELLED) or "Cancelled" in name:
        return "its tasks were cancelled (a worker or the scheduler went away)"
    if isinstance(err, (TimeoutError, asyncio.TimeoutError)):
        return "the scheduler did not answer in time"
    return _short(err)


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def check_cluster_choice(workers: int | None, scheduler: Any) -> None:
    """``workers`` (a local cluster) and ``scheduler`` (a running one) exclude each other."""
    if workers is not None and scheduler is not None:
        raise InputError("Give either --workers or --scheduler, not both.")


#: Why ``--workers N`` on one machine runs N threads, not N processes (the plan says so).
#: Measured (``benchmarks/results``, 2 cores): a 6 × 6 grid at 10,000 × 256 float16 took
#: 1.16 s on threads and 2.84 s on a 2-process dask.distributed cluster (×2.44).
LOCAL_WORKERS = (
    "{n} thread(s) in this process, not processes: the grid's steps (chunk decoding, BLAS "
    "products) release the GIL, and a local process cluster only adds start-up and copies "
    "(×2.4 slower measured); for several machines give --scheduler ADDRESS"
)


@contextlib.contextmanager
def dask_scheduler(
    workers: int | None = None, scheduler: Any = None, timeout: float | None = None
) -> Iterator[Any]:
    """The dask scheduler to compute with, for the duration of a comparison.

    ``workers=N`` computes with N threads of this process (see :data:`LOCAL_WORKERS`);
    ``scheduler`` is the address of a running scheduler (``tcp://host:8786``), a
    ``distributed.Client``, or any value ``dask.compute(scheduler=…)`` takes. Neither:
    local threads. On a cluster, a scheduler that stops answering or a cluster without
    workers for ``timeout`` seconds ends the comparison with one
    :class:`~reprstore.errors.ClusterError`. The values come from a
    :class:`~reprstore.engine.options.ComputeOptions`, which checked them.
    """
    wait = check_timeout(timeout)  # the default for None (ComputeOptions checked the rest)
    if workers is not None:
        import dask

        with dask.config.set(scheduler="threads", num_workers=workers):
            yield "threads"
        return
    if isinstance(scheduler, str) and "://" in scheduler:
        from distributed import Client

        # Client.__init__ carries no annotations: called through a typed name (--strict)
        connect: Callable[..., Client] = Client
        try:
            client = connect(scheduler, timeout=min(wait, 10))
        except (OSError, TimeoutError, ValueError) as err:
            raise InputError(f"Cannot reach the dask scheduler at {scheduler}: {err}") from None
        with (
            client,
            ClusterWatch(client, wait, scheduler) as watch,
            cluster_errors(scheduler, watch, wait),
        ):
            yield client
        return
    yield scheduler
