"""Limits that every entry point shares (the readers, the index, the HTTP service)."""

from __future__ import annotations

MAX_HEADLINE_CHARS = 2000
"""The longest headline accepted, in characters: longer text is a headline with its article attached."""

MAX_ID_CHARS = 256
"""The longest id accepted for a headline."""
