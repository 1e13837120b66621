"""Per-request limits and their checks (each refusal is a 422 naming the field and the limit)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..normalize import is_blank, is_valid_unicode
from ..store import MAX_HEADLINE_CHARS
from .errors import ApiError

__all__ = ["Limits", "check_count", "check_texts"]


@dataclass(frozen=True)
class Limits:
    """Per-request limits. Anything over them is refused with a JSON error naming the limit."""

    max_headlines: int = 1000
    max_text_chars: int = MAX_HEADLINE_CHARS
    # 1,000 headlines of 2,000 Arabic characters (2 bytes each in UTF-8) plus JSON overhead fit in 4 MiB.
    max_body_bytes: int = 4 * 1024 * 1024
    max_k: int = 100
    body_seconds: float = 15.0  # the whole request body (and before it, its headers) must arrive within this long
    # A write waits this long for the index's write lock (another write, a CLI `index add`), then gets 503:
    # below the 30 s timeout common in HTTP clients, so the server never writes what a client gave up on.
    write_seconds: float = 20.0

    def __post_init__(self) -> None:
        for name in ("max_headlines", "max_text_chars", "max_body_bytes", "max_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.body_seconds <= 0 or self.write_seconds <= 0:
            raise ValueError("body_seconds and write_seconds must be positive")
        if self.max_text_chars > MAX_HEADLINE_CHARS:
            # The index refuses longer headlines (it returns what it stored, so it never cuts text).
            raise ValueError(f"max_text_chars cannot exceed {MAX_HEADLINE_CHARS}, the index's own limit")


def check_texts(texts: Sequence[tuple[str, str]], limits: Limits) -> None:
    """(field, text) pairs: each non-empty and within the length limit, else a 422 naming the field."""
    for field, text in texts:
        if not text.strip():
            raise ApiError(422, "invalid_request", f"{field}: the headline is empty", field)
        # The same rules as the readers and the library: invisible-only or unencodable text is no headline.
        if not is_valid_unicode(text):
            raise ApiError(422, "invalid_request", f"{field}: the text is not valid Unicode", field)
        if is_blank(text):
            raise ApiError(422, "invalid_request", f"{field}: the text has no visible characters", field)
        if len(text) > limits.max_text_chars:
            raise ApiError(
                422,
                "invalid_request",
                f"{field}: {len(text):,} characters, over the limit of {limits.max_text_chars:,}",
                field,
            )


def check_count(count: int, limits: Limits) -> None:
    if count > limits.max_headlines:
        raise ApiError(
            422,
            "invalid_request",
            f"headlines: {count:,} headlines, over the limit of {limits.max_headlines:,} per request: split them",
            "headlines",
        )
