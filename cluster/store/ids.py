"""Story and event ids: ``s`` / ``e`` and a zero-padded counter, minted in one place and never reused."""

from __future__ import annotations

PREFIX = "s"
EVENT_PREFIX = "e"


def mint_story_id(number: int) -> str:
    """The id of the ``number``-th story of an index (the counter lives in ``meta.next_story``)."""
    return f"{PREFIX}{number:06d}"


def mint_event_id(number: int) -> str:
    """The id of the ``number``-th event of an index (the counter lives in ``meta.next_event``)."""
    return f"{EVENT_PREFIX}{number:06d}"


def story_order(story_id: str) -> tuple[int, str]:
    """Sort key of story (and event) ids, oldest first: by number, since the counter may outgrow its padding."""
    return (len(story_id), story_id)
