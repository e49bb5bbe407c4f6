"""One writer per representation: a lease file that a crashed writer cannot leave stuck.

The lease is the key ``<array path>/writer.lock`` inside the array's own folder (zarr
ignores it; it is deleted on release, so nothing is left behind) and is created atomically
(``set_if_not_exists``: an exclusive link on local disks). It records the writer's host,
pid and a heartbeat the writer refreshes while it works. A lease is *stale*, and is
broken by the next writer, when its process is gone (same host: the pid no longer
exists) or its heartbeat is older than ``STALE_AFTER_S`` (any host).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Any

from zarr.abc.store import Store as ZarrStore

from reprstore.errors import LockedError
from reprstore.store.zarr_internals import default_buffer_prototype, sync

LOCK_NAME = "writer.lock"
STALE_AFTER_S = 600.0
HEARTBEAT_EVERY_S = 30.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """An exclusive lease on one store path; use as a context manager."""

    def __init__(self, store: ZarrStore, path: str) -> None:
        self.store = store
        self.key = f"{path}/{LOCK_NAME}"
        self.path = path
        self._last_beat = 0.0
        self.held = False
        self.token = uuid.uuid4().hex

    def _record(self) -> dict[str, Any]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": self.token,
            "heartbeat": time.time(),
        }

    def _write(self, exclusive: bool) -> bool:
        data = default_buffer_prototype().buffer.from_bytes(json.dumps(self._record()).encode())
        if exclusive:
            sync(self.store.set_if_not_exists(self.key, data))
            return self._owner_is_me()
        sync(self.store.set(self.key, data))
        return True

    def _read(self) -> dict[str, Any] | None:
        raw = sync(self.store.get(self.key, prototype=default_buffer_prototype()))
        if raw is None:
            return None
        try:
            record = json.loads(raw.to_bytes())
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def _owner_is_me(self) -> bool:
        return (self._read() or {}).get("token") == self.token

    def is_stale(self, record: dict[str, Any]) -> bool:
        """Whether a lease record belongs to a writer that is gone."""
        beat = float(record.get("heartbeat", 0.0))
        if time.time() - beat > STALE_AFTER_S:
            return True
        if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
            return not _pid_alive(record["pid"])
        return False

    def _busy(self, record: dict[str, Any]) -> LockedError:
        return LockedError(
            f"{self.path} is being written by process {record.get('pid')} on "
            f"{record.get('host')}. Wait for it to finish, or stop it first."
        )

    def raise_if_live(self) -> None:
        """Raise :class:`LockedError` if another live writer holds this lease now."""
        record = self._read()
        if record is not None and record.get("token") != self.token and not self.is_stale(record):
            raise self._busy(record)

    def is_live(self) -> bool:
        """Whether some live writer (this one included) holds this lease now."""
        record = self._read()
        return record is not None and not self.is_stale(record)

    def acquire(self, wait: float = 0.0) -> Lease:
        """Take the lease, breaking a stale one; raise :class:`LockedError` if it is live.

        ``wait`` seconds are spent polling a live lease before giving up (for short
        critical sections such as creating a dataset).
        """
        deadline = time.time() + wait
        for _ in range(3 + int(wait * 20)):
            if self._write(exclusive=True):
                self.held = True
                self._last_beat = time.time()
                return self
            record = self._read()
            if record is None:
                continue
            if not self.is_stale(record) and time.time() < deadline:
                time.sleep(0.05)
                continue
            if not self.is_stale(record):
                raise self._busy(record)
            sync(self.store.delete(self.key))
        raise LockedError(f"Could not take the write lock for {self.path}; try again.")

    def renew(self) -> None:
        """Write the lease again (after the array folder was recreated by an overwrite)."""
        self._write(exclusive=False)
        self._last_beat = time.time()

    def heartbeat(self) -> None:
        """Refresh the lease (cheap to call often; writes at most every 30 s)."""
        if self.held and time.time() - self._last_beat > HEARTBEAT_EVERY_S:
            self._write(exclusive=False)
            self._last_beat = time.time()

    def release(self) -> None:
        if self.held:
            sync(self.store.delete(self.key))
            self.held = False

    def __enter__(self) -> Lease:
        return self if self.held else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
