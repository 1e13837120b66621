"""Errors a user can act on: each names where the problem is and what to do."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path


class HeadlineClusterError(Exception):
    """Base class for errors that the CLI reports as a message (exit code 2), never a traceback."""


class InputError(HeadlineClusterError):
    """Bad input: names the file and line when known, what is wrong, and what to do."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        hint: str = "",
        whole_file: bool = False,
    ):
        self.path = path
        self.line = line
        # A problem with how the whole file is read (its header, a field option): skipping rows cannot help.
        self.whole_file = whole_file
        self.reason = message
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        text = f"{where}{self.reason}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class ModelLoadError(HeadlineClusterError):
    """A sentence-transformers model could not be loaded."""


class IndexDamagedError(InputError):
    """An index's database cannot be read where it should be: ``index repair`` rebuilds what survives."""


class DiskFullError(InputError):
    """No space was left on the disk of ``folder``. Every write of the product is one SQLite transaction or
    an atomic file, so the step that failed left nothing behind: the message says so, how much space is
    free, and about how much more the step needs (``needed`` bytes when the writer knows, else the size of
    what lies in ``folder``, which a compaction or repair may write anew)."""

    def __init__(self, folder: str | os.PathLike[str], needed: int | None = None):
        self.folder = Path(folder)
        self.free = free_bytes(self.folder)
        self.needed = max(needed if needed is not None else _tree_bytes(self.folder), _MIN_NEEDED)
        super().__init__(
            f"no space left on the disk of {self.folder}: {_mib(self.free)} free, about {_mib(self.needed)} needed",
            hint=f"nothing was lost: the step that failed was rolled back and what was written before it is kept "
            f"whole; free at least {_mib(self.needed)} there, then run the command again",
        )


_MIN_NEEDED = 1 << 20  # below a MiB a retry would only fill the disk again at once


def free_bytes(folder: Path) -> int:
    """Bytes this user may still write on the disk of ``folder`` (0 when it cannot be told)."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return 0
    return stats.f_bavail * stats.f_frsize


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full: ENOSPC (or EDQUOT, a full quota) from the OS, SQLite's
    SQLITE_FULL, or FAISS's write error, which carries the OS's message in its text."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text or "database or disk is full" in text


def _tree_bytes(folder: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for path in folder.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file():
                    total += path.stat().st_size
    return total


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"
