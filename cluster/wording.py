"""Counts and rates in words, the same way in every message, page and report."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 story``, ``2 stories``, ``1,000 headlines``: the count with thousands separators and the
    noun in the form the count needs."""
    if count == 1:
        return f"1 {singular}"
    if plural_form is None:
        consonant_y = singular.endswith("y") and singular[-2:-1] not in "aeiou"
        plural_form = singular[:-1] + "ies" if consonant_y else singular + "s"
    return f"{count:,} {plural_form}"


def rate(count: int, seconds: float, unit: str) -> str | None:
    """``1,234 headlines/s`` (``0.4 headlines/s`` below 10), or None when there is no rate worth printing:
    nothing was processed, or no time was measured (callers then leave the rate out rather than print 0/s)."""
    if count <= 0 or seconds <= 0:
        return None
    per_second = count / seconds
    shown = f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.1f}"
    return f"{shown} {unit}/s"
