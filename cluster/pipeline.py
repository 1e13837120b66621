"""One pipeline: headlines in, normalized texts, vectors and the judgement's score out.

Every entry point that groups or compares headlines goes through here — ``collapse`` and ``explain``
(the library and the CLI), ``eval`` and ``calibrate``, the index's online assignment, ``index query``,
``nightly`` and the HTTP service — so the same headlines get the same score, and so the same grouping,
whichever way they came in. Data flows one way: normalize, embed, then score with the level's
:class:`~cluster.judge.Judgement`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

import numpy as np

from .errors import InputError
from .judge import Judgement, PairwiseSimilarity
from .normalize import is_blank, is_valid_unicode, normalize
from .settings import DEFAULT_LEVEL, judgement_for

__all__ = ["EmbedderLike", "Prepared", "TEXT_FIELDS", "headline_items", "judgement_of", "prepare", "score"]

TEXT_FIELDS = ("text", "title")


class EmbedderLike(Protocol):
    """What the pipeline needs of an embedder: :class:`cluster.embed.Embedder` or a test double."""

    name: str
    model_id: str
    dimension: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass
class Prepared:
    """Headlines ready to group: their texts, normalized texts, unit vectors and the score over them."""

    texts: list[str]
    normalized: list[str]
    vectors: np.ndarray
    times: list[object] | None  # publication times (datetime, Unix seconds or None each), or None
    judgement: Judgement
    similarity: PairwiseSimilarity


def judgement_of(embedder: EmbedderLike, level: str = DEFAULT_LEVEL, threshold: float | None = None) -> Judgement:
    """The judgement for ``embedder``'s model at ``level``; ``threshold`` overrides the model's."""
    return judgement_for(embedder.name, level, threshold)


def score(
    normalized: Sequence[str],
    vectors: np.ndarray,
    judgement: Judgement,
    times: Sequence[object] | np.ndarray | None = None,
) -> PairwiseSimilarity:
    """The judgement's score over already embedded headlines (the index and nightly read theirs from disk).

    ``times`` as for :func:`prepare`, or an array of Unix seconds with NaN where unknown.
    """
    known = times if isinstance(times, np.ndarray) else _known_times(times)
    return judgement.similarity(vectors, list(normalized), known)


def prepare(
    texts: Sequence[str],
    *,
    embedder: EmbedderLike,
    judgement: Judgement,
    times: Sequence[object] | None = None,
    prefixes: Sequence[str] | None = None,
) -> Prepared:
    """Normalize and embed ``texts`` (their publication ``times`` optional) and score them."""
    texts = list(texts)
    if times is not None and len(times) != len(texts):
        raise ValueError(f"{len(times)} times for {len(texts)} headlines")
    normalized = [normalize(t, prefixes=prefixes) for t in texts]
    vectors = np.asarray(embedder.encode(normalized), dtype=np.float32)
    known = _known_times(times)
    return Prepared(texts, normalized, vectors, known, judgement, judgement.similarity(vectors, normalized, known))


def _known_times(times: Sequence[object] | None) -> list[object] | None:
    if times is None or all(t is None for t in times):
        return None
    return list(times)


def headline_items(
    headlines: Sequence[str | Mapping], text_field: str | None = None
) -> tuple[list[str], list[datetime | None], list[str | int | None]]:
    """The text, publication time and id of each headline: strings as they are (no time, no id),
    mappings by ``text_field`` (else ``text``, then ``title``) with an optional ``published_at`` datetime
    and an optional ``id`` (text or an integer, kept as given)."""
    texts: list[str] = []
    times: list[datetime | None] = []
    ids: list[str | int | None] = []
    for position, item in enumerate(headlines):
        when = None
        headline_id = None
        if isinstance(item, str):
            text = item
        elif isinstance(item, Mapping):
            fields = (text_field,) if text_field else TEXT_FIELDS
            text = next((item[f] for f in fields if isinstance(item.get(f), str)), None)
            if text is None:
                raise InputError(f"headline {position} has no text field (looked for {', '.join(fields)})")
            when = _as_time(item.get("published_at"), position)
            headline_id = item.get("id")
            # bool is an int subclass, and True as an id is a caller's mistake, not an id.
            if headline_id is not None and (isinstance(headline_id, bool) or not isinstance(headline_id, str | int)):
                kind = type(headline_id).__name__
                raise InputError(f"headline {position}: id must be text or an integer, not {kind}")
        else:
            raise InputError(f"headline {position} is a {type(item).__name__}: pass strings or mappings")
        if not is_valid_unicode(text):
            raise InputError(f"headline {position}: text is not valid Unicode (it holds a lone surrogate)")
        if is_blank(text):
            raise InputError(
                f"headline {position} is empty (it has no visible characters)", hint="remove it or give it text"
            )
        texts.append(text.strip())
        times.append(when)
        ids.append(headline_id)
    return texts, times, ids


def _as_time(value: object, position: int) -> datetime | None:
    """A ``published_at`` value as a datetime: a datetime, an ISO 8601 string (UTC unless it says), or None."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
        except ValueError:
            raise InputError(
                f"headline {position}: cannot read published_at {value!r}",
                hint="give a datetime or an ISO 8601 time such as 2024-05-01T06:00:00Z",
            ) from None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    kind = type(value).__name__
    raise InputError(f"headline {position}: published_at must be a datetime or ISO 8601 text, not {kind}")
