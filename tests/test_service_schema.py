"""The service's response schemas are derived from the library's result types, and stay in step with them.

In process, fake embedder, no model: the schema is read from the app's own /openapi.json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from test_store import FakeEmbedder

from cluster.service import create_app
from cluster.service.derive import Shape, build_model, values
from cluster.service.models import (
    ADD,
    HEADLINE,
    SHAPES,
    SIMILAR_HIT,
    AddResponse,
    CollapseResponse,
    HeadlineOut,
    SimilarHit,
    StoryOut,
)
from cluster.store import AddResult, Headline, QueryHit, StoryInfo, StoryMember
from cluster.stories import CollapseResult, Member, Story, collapse

LIBRARY_TYPES = {CollapseResult, Story, Member, Headline, QueryHit, StoryInfo, StoryMember, AddResult}


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(tmp_path_factory.mktemp("schema") / "idx", create=True, embedder=FakeEmbedder(), readers=1)
    with TestClient(app) as client:
        return client.get("/openapi.json").json()


@pytest.fixture(scope="module")
def components(openapi: dict[str, Any]) -> dict[str, Any]:
    return openapi["components"]["schemas"]


def walk(shape: Shape, owner: str | None = None) -> Iterator[tuple[Shape, str]]:
    """Every shape under ``shape`` with the component that holds its keys (an inlined one: its parent's)."""
    here = owner or shape.name
    yield shape, here
    for inner in shape.nested.values():
        yield from walk(inner)
    for inner in shape.inline.values():
        yield from walk(inner, here)


ALL = [pair for top in SHAPES for pair in walk(top)]


@pytest.mark.parametrize(("shape", "component"), ALL, ids=[f"{s.name}-in-{c}" for s, c in ALL])
def test_every_field_of_a_library_type_is_in_the_schema(shape: Shape, component: str, components: dict) -> None:
    properties = components[component]["properties"]
    for f in dataclasses.fields(shape.source):
        if f.name.startswith("_") or f.name in shape.inline:
            continue  # private state; an inlined field's own fields are checked as their shape
        if shape.only is not None and f.name not in shape.only:
            continue  # a projection the library's to_dict makes (a full shape of the type is checked too)
        if f.name in shape.omit:
            assert len(shape.omit[f.name]) > 10, f"{shape.name}.{f.name}: say why it is omitted"
            continue
        key = shape.rename.get(f.name, f.name)
        assert key in properties, f"{shape.source.__name__}.{f.name} is missing from {component} in /openapi.json"
    for prop in shape.properties:
        assert prop in properties


def test_every_library_type_has_a_full_shape() -> None:
    # A type seen only through projections (``only``) could gain a field no schema checks.
    full = {shape.source for shape, _ in ALL if shape.only is None}
    assert full >= LIBRARY_TYPES, LIBRARY_TYPES - full


def test_every_schema_field_is_described(components: dict) -> None:
    undescribed = [
        f"{name}.{key}"
        for name, schema in components.items()
        for key, field in schema.get("properties", {}).items()
        if not field.get("description")
    ]
    assert undescribed == []


@dataclasses.dataclass(frozen=True)
class GrownHeadline(Headline):
    """Headline as it would be with one more field."""

    language: str = "ar"


def test_a_field_added_to_a_library_type_reaches_the_schema() -> None:
    grown = dataclasses.replace(HEADLINE, source=GrownHeadline, name="GrownHeadlineOut")
    assert build_model(grown).model_json_schema()["properties"]["language"] == {"title": "Language", "type": "string"}
    # Through an inlined field too: a similarity hit carries every field of its headline.
    hit = dataclasses.replace(SIMILAR_HIT, name="GrownSimilarHit", inline={"headline": grown})
    assert "language" in build_model(hit).model_fields
    headline = GrownHeadline(**dataclasses.asdict(sample_headline()), language="fa")
    assert values(hit, QueryHit(headline, 0.5))["language"] == "fa"


def test_a_stale_name_in_a_shape_fails_at_once() -> None:
    with pytest.raises(ValueError, match="names no field of Headline"):
        Shape(Headline, "Stale", omit={"row_number": "renamed in the library"})
    with pytest.raises(ValueError, match="not a property"):
        Shape(Headline, "Stale", properties=("size",))
    # Two schemas under one component name would be renamed by FastAPI behind the clients' backs.
    with pytest.raises(ValueError, match="two different shapes are named HeadlineOut"):
        build_model(
            dataclasses.replace(HEADLINE, omit={"row": "internal row number", "t": "internal time", "url": "x"})
        )


# --- the library's JSON passes through the response models unchanged ------------------------------------------


def sample_headline(n: int = 1, published_at: str | None = "2024-05-01T08:00:00Z") -> Headline:
    return Headline(
        row=n,
        id=f"h{n}",
        text=f"topic1 headline {n}",
        published_at=published_at,
        source="wire" if published_at else None,
        url=f"https://example.com/{n}",
        story_id="s000001",
        added_at="2024-05-01T08:00:05Z",
        t=1714550400.0 + n,
        event_id="e000001",
    )


def through(model: Any, body: dict) -> dict:
    """What FastAPI sends for ``body`` under ``response_model=model``."""
    return model.model_validate(body).model_dump(mode="json")


def test_headline_json() -> None:
    for headline in (sample_headline(), sample_headline(2, published_at=None)):
        body = headline.to_dict()
        assert through(HeadlineOut, body) == body
        assert list(HeadlineOut.model_fields) == list(body)


def test_similar_hit_json() -> None:
    explained = QueryHit(sample_headline(), 0.912345, story_size=3, story_similarity=0.9061, threshold=0.9)
    assert through(SimilarHit, explained.to_dict()) == explained.to_dict()
    assert set(SimilarHit.model_fields) == set(explained.to_dict())
    plain = QueryHit(sample_headline(), 0.91).to_dict()
    # Without explain the library leaves the story keys out; the service has always sent them as null.
    assert through(SimilarHit, plain) == {**plain, "story_size": None, "story_similarity": None, "would_join": None}


def test_story_json() -> None:
    members = [StoryMember(sample_headline(1), 1.0), StoryMember(sample_headline(2, None), 0.93456)]
    info = StoryInfo("s000001", sample_headline(1), members, "2024-05-01T08:00:01Z", "2024-05-01T08:00:02Z")
    history = [{"old_id": "s000004", "new_id": "s000001", "at": "2024-05-02T02:15:00Z", "kind": "merge",
                "reason": "mean similarity 0.93", "run": 7}]  # fmt: skip
    body = {**info.to_dict(), "history": history}
    assert through(StoryOut, body) == body
    assert list(StoryOut.model_fields) == list(body)


def test_collapse_json() -> None:
    result = collapse(["topic1 a", "topic1 b", "other"], threshold=0.75, embedder=FakeEmbedder())
    body = result.to_dict()
    for story in body["stories"]:
        for member in [story["representative"], *story["members"]]:
            member["id"] = "x" if member["index"] == 1 else None  # as the service adds them
    assert through(CollapseResponse, body) == body
    assert len(body["stories"]) == 2  # the two topic1 headlines are one story: nesting is exercised


def test_add_json_is_built_from_add_result() -> None:
    result = AddResult(
        added=2, present=1, embedded=2, new_stories=1, joined=1, new_events=2, elapsed=0.2, headlines=9, stories=4
    )
    sent = [{"id": "a", "story_id": "s000001", "event_id": "e000001", "status": "added"}]
    body = through(AddResponse, {**values(ADD, result), "headlines": sent})
    assert body == {
        "headlines": sent,
        "added": 2,
        "present": 1,
        "new_stories": 1,
        "joined": 1,
        "new_events": 2,
        "index_headlines": 9,
        "index_stories": 4,
    }
    assert list(body) == list(AddResponse.model_fields)


def test_every_route_answers_with_a_derived_model(openapi: dict[str, Any]) -> None:
    answers = {
        ("post", "/v1/collapse"): CollapseResponse,
        ("post", "/v1/headlines"): AddResponse,
        ("get", "/v1/headlines/{headline_id}"): HeadlineOut,
        ("get", "/v1/stories/{story_id}"): StoryOut,
    }
    for (method, path), model in answers.items():
        ok = openapi["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{model.__name__}"}
    similar = openapi["paths"]["/v1/similar"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    hits = openapi["components"]["schemas"][similar["$ref"].rsplit("/", 1)[1]]["properties"]["hits"]
    assert hits["items"] == {"$ref": f"#/components/schemas/{SimilarHit.__name__}"}
