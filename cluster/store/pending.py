"""Headlines on their way into the index: validated, normalized and keyed, before anything is written."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..embed import text_key
from ..errors import InputError
from ..limits import MAX_HEADLINE_CHARS, MAX_ID_CHARS
from ..normalize import is_blank, is_valid_unicode, normalize
from ..records import Record, content_id, derived_id, to_utc
from .schema import UTC, iso_moment
from .types import Headline


@dataclass(frozen=True)
class Pending:
    """A headline about to be added, validated and normalized."""

    id: str
    record: Record
    normalized: str
    key: bytes
    published_at: str | None
    t: float | None


def pending(item: Record | Mapping | str, position: int) -> Pending:
    if isinstance(item, str):
        record = Record(item.strip())
    elif isinstance(item, Record):
        record = item
    elif isinstance(item, Mapping):
        text = item.get("text", item.get("title"))
        if not isinstance(text, str):
            raise InputError(f"headline {position} has no text (a 'text' or 'title' string)")
        published = item.get("published_at")
        if published is not None and not isinstance(published, datetime):
            raise InputError(f"headline {position}: published_at must be a datetime, not {type(published).__name__}")
        record = Record(
            text.strip(),
            None if item.get("id") is None else str(item["id"]),
            published,
            item.get("source"),
            item.get("url"),
        )
    else:
        raise InputError(f"headline {position} is a {type(item).__name__}: pass Records, mappings or strings")
    for name, value in (("text", record.text), ("id", record.id), ("source", record.source), ("url", record.url)):
        if value is not None and not is_valid_unicode(value):
            raise InputError(f"headline {position}: {name} is not valid Unicode (it holds a lone surrogate)")
    if is_blank(record.text):
        raise InputError(f"headline {position} is empty (it has no visible characters)")
    if record.id is not None and len(record.id) > MAX_ID_CHARS:
        raise InputError(f"headline {position}: the id is {len(record.id):,} characters long, over {MAX_ID_CHARS:,}")
    if len(record.text) > MAX_HEADLINE_CHARS:
        raise InputError(f"headline {position} is {len(record.text):,} characters long, over {MAX_HEADLINE_CHARS:,}")
    normalized = normalize(record.text)
    when = record.published_at
    if when is not None:
        try:
            when = to_utc(when if when.tzinfo else when.replace(tzinfo=UTC))
        except ValueError as exc:
            raise InputError(f"headline {position}: published_at {exc}") from None
    return Pending(
        record.id or derived_id(record.text, record.url),
        record,
        normalized,
        text_key(normalized),
        None if when is None else iso_moment(when),
        None if when is None else when.timestamp(),
    )


def stored_by_text(
    batch: Sequence[Pending], lookup: Callable[[list[str]], Mapping[str, Headline]]
) -> dict[str, Headline]:
    """Headlines stored before ids came from URLs, under their text's ``content_id``, that a URL-derived id
    now names (same text, same URL): already present, so re-adding an old file adds no second copy.
    ``lookup`` is ``HeadlineIndex._existing``; the result is keyed by the new ids."""
    wanted: dict[str, list[Pending]] = {}
    for p in batch:
        if p.record.id is None and p.id != content_id(p.record.text):  # an id taken from the URL
            wanted.setdefault(content_id(p.record.text), []).append(p)
    found = lookup(list(wanted)) if wanted else {}
    return {p.id: old for key, old in found.items() for p in wanted[key] if old.url == p.record.url}


def unchanged(old: Headline, new: Pending) -> bool:
    record = new.record
    return (
        old.text == record.text
        and old.source == record.source
        and old.url == record.url
        and (new.published_at is None or old.published_at == new.published_at)
    )
