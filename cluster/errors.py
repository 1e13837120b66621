"""Errors a user can act on: each names where the problem is and what to do."""

from __future__ import annotations


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
