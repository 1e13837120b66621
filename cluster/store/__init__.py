"""A persistent headline index: SQLite is the source of truth, the FAISS segment files are derived from it.

An index is a folder::

    headlines.sqlite   WAL-mode SQLite: meta, headlines, embeddings, stories, story_history, runs,
                       corrections
    segments/          immutable FAISS files, each the vectors of a range of headline rows (derived
                       data; the manifest naming them is in meta)
    write.lock         flock()ed by the one process that may write; readers never take it

The package, by module: ``schema`` (the database, its connection and transactions), ``segments``,
``vectors`` and ``ann`` (the segment files, keeping them in step, and search), ``fixtures`` (benchmark fixtures of
headlines with decided stories), ``pending`` (headlines on their way in), ``assign`` (online
story assignment), ``story_table`` (story records and reading stories back), ``maintenance`` (stats,
repair, nightly bookkeeping), ``bulk`` (``index build``'s one-transaction insert), ``corrections``
(editorial keep-apart and keep-together, stored), ``types`` (the results) and ``headline_index`` (the facade).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from ..limits import MAX_HEADLINE_CHARS
from ..pipeline import EmbedderLike
from ..records import ReadResult, read_many
from .ann import ANN_MIN_SIZE, VectorIndex, one_search_thread
from .headline_index import HeadlineIndex
from .ids import mint_event_id, mint_story_id, story_order
from .reading import indexed_span
from .schema import DB_FILE, FAISS_FILE, LOCK_FILE, iso
from .types import (
    COMMIT_EVERY,
    DEFAULT_WINDOW,
    AddResult,
    Headline,
    QueryHit,
    RemoveResult,
    Run,
    StoryInfo,
    StoryMember,
    WindowHeadlines,
    parse_duration,
)

__all__ = [
    "ANN_MIN_SIZE",
    "COMMIT_EVERY",
    "DB_FILE",
    "DEFAULT_WINDOW",
    "FAISS_FILE",
    "LOCK_FILE",
    "MAX_HEADLINE_CHARS",
    "AddResult",
    "EmbedderLike",
    "Headline",
    "HeadlineIndex",
    "QueryHit",
    "RemoveResult",
    "Run",
    "StoryInfo",
    "StoryMember",
    "VectorIndex",
    "WindowHeadlines",
    "indexed_span",
    "iso",
    "mint_event_id",
    "mint_story_id",
    "one_search_thread",
    "parse_duration",
    "read_input",
    "story_order",
]


def read_input(
    paths: Sequence[str],
    *,
    input_format: str | None = None,
    text_field: str | None = None,
    id_field: str = "id",
    time_field: str = "published_at",
    source_field: str = "source",
    url_field: str = "url",
    skip_invalid: bool = False,
    max_chars: int = MAX_HEADLINE_CHARS,
    required_fields: Collection[str] = (),
) -> ReadResult:
    """Read and validate headline files for indexing; '-' is standard input.

    :func:`cluster.records.read_many`, except that a headline longer than ``max_chars`` is an invalid row
    (an index returns what it stored, so it must not silently cut text), reported with its file and line.
    """
    return read_many(
        paths,
        input_format=input_format,
        text_field=text_field,
        id_field=id_field,
        time_field=time_field,
        source_field=source_field,
        url_field=url_field,
        skip_invalid=skip_invalid,
        max_chars=max_chars,
        reject_long=True,
        required_fields=required_fields,
    )
