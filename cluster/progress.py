"""What a first run prints while it builds its model files: one line per step on stderr.

A step is announced when it starts ("headline-cluster: building the ONNX model (once) ..."). On a
terminal the line carries a progress bar while the step runs and ends with its duration; elsewhere
(cron, pipes, logs) the start line is all, so a log shows what ran without carriage returns. A quiet
reporter prints nothing. The embedding layer takes any object with ``step(title, total)``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Protocol, TextIO


class Step(Protocol):
    def advance(self, amount: int = 1) -> None: ...


class Reporter(Protocol):
    def step(self, title: str, total: int = 0) -> contextlib.AbstractContextManager[Step]: ...


class _NoStep:
    def advance(self, amount: int = 1) -> None:
        pass


class QuietReporter:
    """Reports nothing (``quiet=True``)."""

    @contextlib.contextmanager
    def step(self, title: str, total: int = 0) -> Iterator[Step]:
        yield _NoStep()


class _Bar:
    def __init__(self, stream: TextIO, line: str, total: int, live: bool):
        self.stream, self.line, self.total, self.live = stream, line, total, live
        self.done = 0
        self.started = time.perf_counter()

    def advance(self, amount: int = 1) -> None:
        self.done = min(self.total, self.done + amount) if self.total else self.done + amount
        if self.live:
            self._draw()

    def _draw(self, suffix: str = "") -> None:
        bar = ""
        if self.total:
            filled = round(24 * self.done / self.total)
            bar = f" [{'#' * filled}{'.' * (24 - filled)}] {self.done}/{self.total}"
        self.stream.write(f"\r{self.line}{bar}{suffix}")
        self.stream.flush()

    def finish(self, failed: bool) -> None:
        if not self.live:
            return
        seconds = time.perf_counter() - self.started
        self._draw(" failed\n" if failed else f" done in {seconds:.1f} s\n")


class StderrReporter:
    """One line per step on ``stream`` (stderr); a live bar when it is a terminal."""

    def __init__(self, stream: TextIO | None = None, *, prefix: str = "headline-cluster: "):
        self._stream = stream
        self.prefix = prefix

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr  # pytest swaps sys.stderr

    @contextlib.contextmanager
    def step(self, title: str, total: int = 0) -> Iterator[Step]:
        stream = self.stream
        live = bool(getattr(stream, "isatty", lambda: False)())
        line = f"{self.prefix}{title} ..."
        if not live:
            stream.write(line + "\n")
            stream.flush()
        bar = _Bar(stream, line, total, live)
        if live:
            bar.advance(0)
        failed = True
        try:
            yield bar
            failed = False
        finally:
            bar.finish(failed)


def reporter_for(reporter: Reporter | None, quiet: bool) -> Reporter:
    """The reporter a caller asked for: ``quiet`` wins, then ``reporter``, then step lines on stderr."""
    if quiet:
        return QuietReporter()
    return reporter if reporter is not None else StderrReporter()
