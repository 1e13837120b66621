"""File-system helpers: atomic replacement of files and folders, and an advisory lock.

Every file the product writes for later reading (an index's vector file, nightly outputs, settings, a
converted model) goes through :func:`atomic_file` or :func:`staged_folder`, so a reader sees the old
version or the new one, never a part, and a killed writer leaves at most a uniquely named temporary
behind (never a half-written file under the real name).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import DiskFullError, HeadlineClusterError, is_disk_full

__all__ = [
    "LockWaitExpired",
    "atomic_file",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_lock",
    "fsync_dir",
    "lock_deadline",
    "staged_folder",
]

_POLL_S = 0.05  # how often a lock with a deadline is tried again
_deadline = threading.local()  # per thread: the service's writes run in worker threads


class LockWaitExpired(HeadlineClusterError):
    """A lock taken under :func:`lock_deadline` was still held by another process at the deadline."""


@contextlib.contextmanager
def lock_deadline(seconds: float) -> Iterator[None]:
    """Within the block, :func:`file_lock` (in this thread) waits at most ``seconds`` for a busy lock, then
    raises :class:`LockWaitExpired`: a service's write must not wait longer than its client does."""
    before = getattr(_deadline, "at", None)
    _deadline.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _deadline.at = before


def _default_mode() -> int:
    # mkstemp creates files 0600; give them the mode a plain open() would (0666 less the umask), so that
    # every file of an index has the same permissions.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable: it survives a power cut only once the folder is synced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, *, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, it replaces ``path``.

    The temporary is fsynced before the rename and the folder after it. On error the temporary is
    removed and ``path`` is left as it was; a full disk is a :class:`DiskFullError` naming the folder
    (``size``: the bytes to be written, when known, for the space it says is needed).
    """
    path = Path(path)
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        temporary = Path(name)
        os.fchmod(fd, _default_mode())
        os.close(fd)
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        fsync_dir(path.parent)
    except Exception as exc:
        _remove(temporary)  # first: the space it took counts as free in the message
        if is_disk_full(exc):
            raise DiskFullError(path.parent, size) from None
        raise
    finally:
        _remove(temporary)


def _remove(temporary: Path | None) -> None:
    if temporary is not None and temporary.exists():
        temporary.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path, size=len(data)) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8 (newlines as given) so that readers see the old file or the new one."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success it replaces ``target`` in one rename.

    A ``target`` left half-built by a killed run is replaced. Call it under :func:`file_lock` when
    several processes may build the same folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
        fsync_dir(target.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def file_lock(
    path: str | Path, *, wait: bool = True, on_wait: Callable[[str], None] | None = None, what: str = ""
) -> Iterator[bool]:
    """Hold an exclusive advisory lock (``flock``) on ``path``, created when missing.

    Yields True once held. With ``wait=False`` it yields False at once when another process holds it.
    ``on_wait`` receives one message when the lock is busy and the call is about to wait for it. The
    lock goes with the descriptor, so a killed holder never leaves it held.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask_bits())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            if on_wait is not None:
                on_wait(f"waiting for {what or f'another process holding {path}'} ...")
            _wait_for(fd, what or f"another process holding {path}")
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _wait_for(fd: int, what: str) -> None:
    """Block until the lock is ours; under :func:`lock_deadline`, poll until the deadline instead."""
    deadline = getattr(_deadline, "at", None)
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockWaitExpired(f"{what} still held the lock at the deadline") from None
            time.sleep(_POLL_S)


def _umask_bits() -> int:
    return 0o666 & ~_default_mode()
