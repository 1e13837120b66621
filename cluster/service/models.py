"""Request and response bodies of the service (pydantic, so /openapi.json documents them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    # Unknown fields are refused: a misspelt "headline" or "treshold" must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class CollapseItem(_Strict):
    text: str = Field(description="The headline as displayed.")
    id: str | None = Field(None, max_length=256, description="Your id; echoed back with the member.")


class CollapseRequest(_Strict):
    headlines: list[str | CollapseItem] = Field(min_length=1, description="Headlines, in display order.")
    threshold: float | None = Field(
        None, ge=-1.0, le=1.0, description="Similarity needed to group (default: the model's, as the CLI's)."
    )


class CollapseRepresentative(BaseModel):
    index: int
    text: str
    id: str | None = None


class CollapseMember(BaseModel):
    index: int = Field(description="0-based position of the headline in the request.")
    text: str
    score: float = Field(description="Similarity to the story's representative.")
    id: str | None = Field(None, description="The id sent with the headline, if any.")


class CollapseStory(BaseModel):
    id: int
    representative: CollapseRepresentative
    members: list[CollapseMember]


class CollapseResponse(BaseModel):
    """The JSON of ``headline-cluster collapse --format json``, plus ``id`` where the request gave one."""

    model: str
    threshold: float
    stories: list[CollapseStory]


class NewHeadline(_Strict):
    id: str = Field(min_length=1, max_length=256, description="Your id of the article; unique in the index.")
    text: str
    published_at: datetime | None = Field(None, description="ISO 8601; UTC when no offset is given.")
    source: str | None = Field(None, max_length=256)
    url: str | None = Field(None, max_length=4096)


class AddRequest(_Strict):
    headlines: list[NewHeadline] = Field(min_length=1)


class AddedHeadline(BaseModel):
    id: str
    story_id: str
    status: Literal["added", "present"] = Field(description="present: the id was already in the index (kept).")


class AddResponse(BaseModel):
    headlines: list[AddedHeadline]
    added: int
    present: int
    new_stories: int
    joined: int = Field(description="New headlines that joined an existing story.")
    index_headlines: int
    index_stories: int


class HeadlineOut(BaseModel):
    id: str
    text: str
    published_at: str | None
    source: str | None
    url: str | None
    story_id: str
    added_at: str


class StoryRepresentative(BaseModel):
    id: str
    text: str


class StoryMemberOut(BaseModel):
    id: str
    text: str
    published_at: str | None
    source: str | None
    score: float = Field(description="Similarity to the story's representative.")


class HistoryEntry(BaseModel):
    old_id: str
    new_id: str
    at: str
    kind: str = Field(description="merge or split, recorded by nightly runs.")
    reason: str
    run: int | None


class StoryOut(BaseModel):
    id: str = Field(description="The story's current id: an id merged away leads to the story it went into.")
    representative: StoryRepresentative
    size: int
    first_seen: str
    last_seen: str
    members: list[StoryMemberOut]
    history: list[HistoryEntry] = Field(description="Merges and splits involving this story, oldest first.")


class SimilarHit(HeadlineOut):
    score: float
    story_size: int | None = None
    story_similarity: float | None = Field(None, description="With explain: mean similarity to the story.")
    would_join: bool | None = Field(None, description="With explain: whether the text would join the story.")


class SimilarResponse(BaseModel):
    hits: list[SimilarHit]


class Health(BaseModel):
    status: str
    model: str
    version: str


class ErrorBody(BaseModel):
    error: str = Field(description="A stable code: unauthorized, not_found, invalid_request, too_large, ...")
    message: str
    field: str | None = Field(None, description="The offending field, such as headlines[3].text.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong API key (when one is configured)."},
    413: {"model": ErrorBody, "description": "Body over the size limit."},
    422: {"model": ErrorBody, "description": "Invalid JSON, fields or limits; names the field."},
}
