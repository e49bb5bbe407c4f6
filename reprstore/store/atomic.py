"""Replace a local file atomically: write a temporary file beside it, fsync, rename.

Every file reprstore writes in one piece goes through :func:`replacing`: result tables and
their CSV sidecars (``--out``), figures (``--plot``, ``reprstore plot --out``), the
store's cache entries and ``reprstore upgrade``'s journal. The new content is written to
``.NAME.tmp-<pid>-<random>`` in the same folder (so the rename never crosses file
systems), flushed to the disk, then renamed onto ``NAME`` with :func:`os.replace`, which
is atomic on POSIX and Windows. Whatever fails (a full disk, a killed process between
the steps, an exception of the library that writes) the file called ``NAME`` is either
the whole new file or the old one, byte for byte; on an exception the temporary file is
removed, and :func:`is_temporary` tells a sweep which names a killed writer left.

Local paths only: object-store outputs replace an object in one PUT anyway, and
``--out``/``--plot`` take local paths.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from reprstore.errors import FileWriteError

#: ``.NAME.tmp-<pid>-<8 hex>``; the older ``.tmp-…`` (cache) and ``.NAME.<pid>.tmp``
#: (upgrade) names are recognised too, for what killed writers of earlier versions left.
_TEMPORARY = re.compile(r"\..+\.tmp-\d+-[0-9a-f]{8}|\.tmp-.*|\..+\.\d+\.tmp")


def temporary_name(path: Path) -> Path:
    """A fresh temporary name beside ``path``: ``.NAME.tmp-<pid>-<random>``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`temporary_name`'s (a sweep may remove it)."""
    return _TEMPORARY.fullmatch(name) is not None


def _target(path: str | os.PathLike[str]) -> Path:
    """The file to replace: a symbolic link's target (writing through the link, as
    ``open(path, "w")`` would), else ``path`` itself."""
    out = Path(path)
    return Path(os.path.realpath(out)) if out.is_symlink() else out


def _create(tmp: Path, like: Path) -> None:
    """Create ``tmp`` empty, with the mode ``like`` has, or a new file's (0o666 less the
    umask) when there is no ``like``: what ``open(like, "w")`` would leave."""
    try:
        mode: int | None = stat.S_IMODE(like.stat().st_mode)
    except OSError:
        mode = None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)  # the umask narrowed it at creation; the old file's is kept
    finally:
        os.close(fd)


def _sync(path: Path) -> None:
    """Flush a closed file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every system can)."""
    with contextlib.suppress(OSError):
        _sync(folder)


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()


def _failed(err: OSError, path: Path) -> FileWriteError:
    """The one-line error of a failed write, naming the file; the OS's errno and reason
    stay on it (``strerror``) for callers that report those."""
    reason = err.strerror or " ".join(str(err).split()) or type(err).__name__
    out = FileWriteError(
        f"Cannot write {os.fspath(path)}: {reason}. Nothing was changed "
        f"({'the old file is kept' if path.exists() else 'no file was made'}); "
        "fix that and run the same command again."
    )
    out.errno, out.strerror, out.filename = err.errno, reason, os.fspath(path)
    return out


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """Write ``path`` atomically: yields a temporary path beside it to write (by name, as
    a library does); when the block ends, that file is synced and renamed onto ``path``.

    ``durable=False`` skips the fsyncs: the rename still makes a killed process leave the
    old file or the new one, but not a power cut (the cache's checkpoints: rewritten
    often, and only ever a speed-up).

    If the block or the sync raises, the temporary file is removed and ``path`` is as it
    was; an :class:`OSError` comes out as :class:`~reprstore.errors.FileWriteError`.
    """
    target = _target(path)
    tmp = temporary_name(target)
    try:
        _create(tmp, target)
        yield tmp
        if durable:
            _sync(tmp)
        os.replace(tmp, target)
    except OSError as err:
        _discard(tmp)
        if isinstance(err, FileWriteError):
            raise
        raise _failed(err, target) from err
    except BaseException:
        _discard(tmp)
        raise
    if durable:
        _sync_folder(target.parent)


def write_atomic(
    path: str | os.PathLike[str], fill: Callable[[BinaryIO], object], *, durable: bool = True
) -> Path:
    """Replace ``path`` with what ``fill`` writes to a binary file (see :func:`replacing`)."""
    with replacing(path, durable=durable) as tmp, open(tmp, "wb") as fh:
        fill(fh)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8), atomically."""
    return write_atomic(path, lambda fh: fh.write(text.encode()))
