"""Turn errors into one line on stderr and an exit status, in one place."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from reprstore.errors import ReprstoreError, ReprstoreWarning

F = TypeVar("F", bound=Callable[..., Any])


def debug_enabled() -> bool:
    """``REPRSTORE_DEBUG=1`` shows full tracebacks."""
    return os.environ.get("REPRSTORE_DEBUG", "") not in ("", "0")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``Error: message`` as one line on stderr; return the Exit to raise."""
    line = " ".join(str(message).split())
    # the process ends now: reads still in flight when an error stopped a comparison (zarr's
    # event loop) must not add "Task was destroyed but it is pending!" or "coroutine … was
    # never awaited" lines at exit
    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
    warnings.filterwarnings(
        "ignore", message="coroutine .* was never awaited", category=RuntimeWarning
    )
    # nor "Exception ignored in: <coroutine …>" tracebacks of those reads, closed at exit
    sys.unraisablehook = lambda unraisable: None
    sys.stderr.write(f"Error: {line}\n")
    sys.stderr.flush()
    return typer.Exit(code)


def _one_line_warning(
    message: Any,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: Any = None,
) -> None:
    """reprstore's warnings as one ``Warning: …`` line (others keep Python's format)."""
    if issubclass(category, ReprstoreWarning):
        text = f"Warning: {' '.join(str(message).split())}\n"
    else:
        text = warnings.formatwarning(message, category, filename, lineno, line)
    (file or sys.stderr).write(text)


def upgrade_interference() -> str | None:
    """The one line saying that ``reprstore upgrade`` moved a store this command was
    reading (then what went wrong is that, not the error it caused), or ``None``."""
    store_module = sys.modules.get("reprstore.store.handle")  # no store opened: not imported
    return None if store_module is None else store_module.upgrade_interference()


def handle_errors(fn: F) -> F:
    """Decorate a command: reprstore errors → exit 1, Ctrl-C → 130, bugs → one line too."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.showwarning = _one_line_warning
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise fail("Interrupted. Run the same command again to resume.", 130) from None
        except MemoryError:
            raise fail("Out of memory. Lower --batch-size or --memory.") from None
        except Exception as err:
            if debug_enabled():
                raise
            raise fail(upgrade_interference() or error_line(err, kwargs.get("store"))) from None

    return wrapper  # type: ignore[return-value]


def error_line(err: Exception, store: Any = None) -> str:
    """The line the CLI prints for an error a command raised."""
    if isinstance(err, ReprstoreError):
        return str(err)
    if isinstance(err, OSError):
        return f"{err.strerror or err}: {err.filename or ''}".strip(": ")
    remote = remote_store_error(err, store)
    if remote is not None:
        return remote
    return f"Unexpected {type(err).__name__}: {err} (set REPRSTORE_DEBUG=1 for the traceback)"


#: botocore's errors of a store server that cannot be reached, and of missing credentials
#: (matched by name: botocore is imported only by remote stores).
UNREACHABLE = frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                         "ConnectionClosedError", "ProxyConnectionError"})  # fmt: skip
UNAUTHENTICATED = frozenset({"NoCredentialsError", "PartialCredentialsError",
                             "CredentialRetrievalError"})  # fmt: skip


def remote_store_error(err: BaseException, store: Any = None) -> str | None:
    """The one line for a remote store's connection or credential failure, or ``None``."""
    names = {t.__name__ for t in type(err).__mro__}
    where = f" at {store}" if store else ""
    if names & UNREACHABLE:
        return (
            f"Cannot reach the store{where}: {err}. Check the endpoint (AWS_ENDPOINT_URL or "
            "the profile's endpoint) and the network, then run the same command again."
        )
    if names & UNAUTHENTICATED:
        return (
            f"Cannot authenticate to the store{where}: {err}. Set credentials "
            "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)."
        )
    return None
