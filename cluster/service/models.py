"""Request and response bodies of the service (pydantic, so /openapi.json documents them).

Requests are declared here: they are the service's own contract. Responses are *derived* from the
library's result types (cluster.stories, cluster.store) through the shapes below; what a shape leaves
out is listed with the reason, and everything else a library type has is in the schema. Descriptions
are attached here because the library types carry comments, not schema text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..limits import MAX_ID_CHARS
from ..normalize import is_blank
from ..records import to_utc
from ..settings import DEFAULT_LEVEL
from ..store import AddResult, Headline, QueryHit, StoryInfo, StoryMember
from ..stories import CollapseResult, Member, Story
from .derive import Shape, build_model

# --- requests -------------------------------------------------------------------------------------------------


def _visible(text: str) -> str:
    # The same rule as the readers and the library: a headline of only invisible characters is empty.
    if is_blank(text):
        raise ValueError("the headline is empty (it has no visible characters)")
    return text


def _in_utc(moment: datetime | None) -> datetime | None:
    # A time UTC cannot hold (0001-01-01T00:00:00+14:00) is a bad field, not a server error.
    return None if moment is None else to_utc(moment)


HeadlineText = Annotated[str, Field(min_length=1, description="The headline as displayed."), AfterValidator(_visible)]


class _Strict(BaseModel):
    # Unknown fields are refused: a misspelt "headline" or "treshold" must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


UtcTime = Annotated[datetime | None, AfterValidator(_in_utc)]


class CollapseItem(_Strict):
    text: HeadlineText
    id: str | None = Field(None, max_length=MAX_ID_CHARS, description="Your id; echoed back with the member.")
    published_at: UtcTime = Field(
        None, description="ISO 8601; UTC when no offset is given. The event level weighs the time between two."
    )


class CollapseRequest(_Strict):
    headlines: list[HeadlineText | CollapseItem] = Field(min_length=1, description="Headlines, in display order.")
    threshold: float | None = Field(
        None, ge=-1.0, le=1.0, description="Similarity needed to group (default: the model's, as the CLI's)."
    )
    level: Literal["event", "story", "duplicate"] = Field(
        DEFAULT_LEVEL, description="event: one news event; story: an aggregator's coarser topic; duplicate: reworded."
    )


class NewHeadline(_Strict):
    id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="Your id of the article; unique in the index.")
    text: HeadlineText
    published_at: UtcTime = Field(None, description="ISO 8601; UTC when no offset is given.")
    source: str | None = Field(None, max_length=256, description="Where it was published (kept, not matched).")
    url: str | None = Field(None, max_length=4096, description="The article's address (kept, not matched).")


class AddRequest(_Strict):
    headlines: list[NewHeadline] = Field(min_length=1, description="The articles to store.")


# --- responses derived from the library's result types --------------------------------------------------------

_HEADLINE_TEXT = {
    "id": "The article's id, as sent when it was added.",
    "text": "The headline as sent.",
    "published_at": "ISO 8601 UTC publication time, or null when none was sent (the time it was added counts).",
    "source": "The source sent with the headline, or null.",
    "url": "The URL sent with the headline, or null.",
    "story_id": "The story the headline belongs to now.",
    "event_id": "The event the headline belongs to now; every headline of an event has the same story_id.",
    "added_at": "ISO 8601 UTC time the index stored it.",
}

# A stored headline: `row` and `t` are the index's internal row number and numeric time (its own bookkeeping).
HEADLINE = Shape(
    Headline,
    "HeadlineOut",
    omit={"row": "internal row number of the index", "t": "internal numeric time; published_at is its ISO form"},
    describe=_HEADLINE_TEXT,
)

_MEMBER_TEXT = {
    "index": "0-based position of the headline in the request.",
    "text": "The headline as sent.",
    "score": "Similarity to the story's representative.",
    "id": "The id sent with the headline, or null.",
}

COLLAPSE_MEMBER = Shape(
    Member,
    "CollapseMember",
    omit={
        "linked_to": "only with explain, which the service does not ask collapse for",
        "link_score": "only with explain, which the service does not ask collapse for",
    },
    optional=("id",),
    describe=_MEMBER_TEXT,
)
# CollapseResult.to_dict gives a representative its index and text only (its score, 1.0, is in members).
COLLAPSE_REPRESENTATIVE = Shape(
    Member,
    "CollapseRepresentative",
    only=("index", "id", "text"),
    optional=("id",),
    describe=_MEMBER_TEXT,
)
COLLAPSE_STORY = Shape(
    Story,
    "CollapseStory",
    nested={"representative": COLLAPSE_REPRESENTATIVE, "members": COLLAPSE_MEMBER},
    describe={
        "id": "0-based story number in this answer.",
        "representative": "The headline that represents the story.",
        "members": "Every headline of the story (the representative too), in request order.",
    },
)
COLLAPSE = Shape(
    CollapseResult,
    "CollapseResponse",
    doc="The JSON of ``headline-cluster collapse --format json``: ``id`` is the one the request gave, or null.",
    omit={
        "level": "chose the threshold, which is in the answer",
        "linkage": "an engine setting, the same for every answer",
        "texts": "the request's own headlines, in members",
        "normalized": "matching input, not for display",
        "nested": "the service answers at the request's level, flat (the CLI nests events in stories)",
        "story_threshold": "only with nested stories, which the service does not ask collapse for",
    },
    nested={"stories": COLLAPSE_STORY},
    describe={
        "model": "The embedding model.",
        "threshold": "The similarity threshold used.",
        "stories": "The distinct stories, in request order of their representatives.",
    },
)

# The index answers with the id and story id of each headline it was sent.
ADDED_HEADLINE = Shape(
    Headline,
    "AddedHeadline",
    only=("id", "story_id", "event_id"),
    extra={
        "status": (
            Literal["added", "present"],
            "present: the id was already in the index (kept).",
        )
    },
    describe=_HEADLINE_TEXT,
)
AddedHeadline = build_model(ADDED_HEADLINE)  # built once: AddResponse's list and the schema share it
ADD = Shape(
    AddResult,
    "AddResponse",
    omit={
        "updated": "always 0: the service adds without update (an id already stored is kept as it is)",
        "embedded": "cost accounting for the CLI's summary line",
        "reused": "cost accounting for the CLI's summary line",
        "elapsed": "server timing; /metrics has the latency",
        "repeated": "counted in present: an id repeated in one request is already present for the client",
    },
    rename={"headlines": "index_headlines", "stories": "index_stories"},
    extra={"headlines": (list[AddedHeadline], "Each headline sent, in request order.")},  # type: ignore[valid-type]
    first=("headlines",),
    describe={
        "added": "Headlines stored by this request.",
        "present": "Headlines whose id was already stored (or repeated in this request).",
        "new_stories": "Stories this request started.",
        "new_events": "Events this request started (each inside a story).",
        "joined": "New headlines that joined an existing story.",
        "index_headlines": "Headlines in the index afterwards.",
        "index_stories": "Active stories in the index afterwards.",
    },
)

# StoryInfo.to_dict gives the representative as id and text, and each member without url, story_id, added_at.
STORY_REPRESENTATIVE = Shape(Headline, "StoryRepresentative", only=("id", "text"), describe=_HEADLINE_TEXT)
STORY_MEMBER = Shape(
    StoryMember,
    "StoryMemberOut",
    inline={
        "headline": Shape(
            Headline,
            "StoryMemberHeadline",
            only=("id", "text", "published_at", "source", "event_id"),
            describe=_HEADLINE_TEXT,
        )
    },
    describe={"score": "Similarity to the story's representative."},
)


class StoryEvent(BaseModel):
    # Declared here: StoryInfo.to_dict groups its members by event_id; no library type holds that list.
    id: str = Field(description="The event's id (events lie inside one story).")
    size: int = Field(description="Headlines of the event.")
    members: list[str] = Field(description="Ids of the event's headlines, in time order.")


class HistoryEntry(BaseModel):
    # Declared here: HeadlineIndex.history() returns plain dicts, there is no library type to derive from.
    old_id: str = Field(description="The story (s...) or event (e...) id before the change.")
    new_id: str = Field(description="The id after it.")
    at: str = Field(description="ISO 8601 UTC time of the change.")
    kind: str = Field(description="merge or split, recorded by nightly runs.")
    reason: str = Field(description="Why the nightly run changed it.")
    run: int | None = Field(description="The nightly run that made the change.")


STORY = Shape(
    StoryInfo,
    "StoryOut",
    properties=("size",),
    nested={"representative": STORY_REPRESENTATIVE, "members": STORY_MEMBER},
    extra={
        "events": (list[StoryEvent], "The story's events, in order of their first headline."),
        "history": (list[HistoryEntry], "Merges and splits involving this story, oldest first."),
    },
    first=("id", "representative", "size", "first_seen", "last_seen", "members"),
    describe={
        "id": "The story's current id: an id merged away leads to the story it went into.",
        "representative": "The story's most central headline.",
        "size": "Headlines in the story.",
        "first_seen": "ISO 8601 UTC time of its earliest headline.",
        "last_seen": "ISO 8601 UTC time of its latest headline.",
        "members": "The story's headlines in time order.",
    },
)

SIMILAR_HIT = Shape(
    QueryHit,
    "SimilarHit",
    omit={"threshold": "the threshold behind would_join; would_join carries the answer"},
    inline={"headline": HEADLINE},
    properties=("would_join",),
    optional=("story_size", "story_similarity", "would_join"),
    describe={
        "score": "Similarity of the text to this headline.",
        "story_size": "With explain: headlines in the hit's event (the group a new headline joins).",
        "story_similarity": "With explain: mean similarity to the hit's event.",
        "would_join": "With explain: whether the text would join the hit's event (and so its story).",
    },
)

# Every shape of a library type that answers some route (tests check each against its library type).
SHAPES: tuple[Shape, ...] = (COLLAPSE, ADD, HEADLINE, STORY, SIMILAR_HIT)

CollapseResponse = build_model(COLLAPSE)
AddResponse = build_model(ADD)
HeadlineOut = build_model(HEADLINE)
StoryOut = build_model(STORY)
SimilarHit = build_model(SIMILAR_HIT)


# --- the service's own answers ----------------------------------------------------------------------------


class SimilarResponse(BaseModel):
    hits: list[SimilarHit] = Field(description="Best first.")  # type: ignore[valid-type]


class Health(BaseModel):
    status: str = Field(description="ok")
    model: str = Field(description="The index's embedding model.")
    version: str = Field(description="The headline-cluster version.")


class ErrorBody(BaseModel):
    error: str = Field(description="A stable code: unauthorized, not_found, invalid_request, too_large, ...")
    message: str = Field(description="What is wrong and what to do, for a person.")
    field: str | None = Field(None, description="The offending field, such as headlines[3].text.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong API key (when one is configured)."},
    404: {"model": ErrorBody, "description": "No such headline or story (or no such route)."},
    408: {"model": ErrorBody, "description": "The request body did not arrive in time."},
    413: {"model": ErrorBody, "description": "Body over the size limit."},
    422: {"model": ErrorBody, "description": "Invalid JSON, fields or limits; names the field."},
    503: {
        "model": ErrorBody,
        "description": "The index cannot be used (damaged, not writable, disk full: see the message), or, for a write, "
        "another writer held it longer than the server's write wait (error 'busy'): retry after the seconds in "
        "the Retry-After header.",
        "headers": {
            "Retry-After": {"description": "Seconds before a retry ('busy' only).", "schema": {"type": "integer"}}
        },
    },
}
