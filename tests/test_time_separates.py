"""Time separates, never joins: for the shipped judgement of every level, a pair scored with its times never
scores higher than without them, a larger gap never scores higher than a smaller one, and so a pair below the
threshold without times stays below it at every gap. Checked over many random pairs and gaps, on feature rows
and through the real score over headlines with times; a judgement built to let time join fails the same checks.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.learned import (
    FEATURES,
    TIME_FEATURES,
    HeadlineTable,
    LearnedParams,
    LearnedSimilarity,
    load_params,
    pair_features,
    probability,
)
from cluster.normalize import normalize

LEARNED_LEVELS = ("event", "duplicate", "story")
_TIME = FEATURES.index("time_gap")
_TIME_SQ = FEATURES.index("time_gap_sq")
_COS_TIME = FEATURES.index("cos_time_gap")


def _shipped(level: str) -> tuple[LearnedParams, float]:
    try:
        return load_params(level)
    except KeyError:
        pytest.skip(f"the {level} level is not a learned judgement")


def random_rows(n: int, seed: int) -> np.ndarray:
    """Feature rows of plausible pairs (cosine near the gate and above, every other signal in its range)."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, len(FEATURES)), dtype=np.float32)
    cos = rng.uniform(0.70, 1.0, n)
    script = rng.integers(0, 3, n)  # 0 both Arabic, 1 same other script, 2 different scripts
    ar, cross = (script == 0).astype(float), (script == 2).astype(float)
    values = {
        "bias": np.ones(n),
        "cos": cos,
        "ar": ar,
        "cos_ar": cos * ar,
        "cross": cross,
        "cos_cross": cos * cross,
        "stem_overlap": rng.uniform(0, 1, n),
        "shared_stems": rng.integers(0, 6, n) / 5.0,
        "gram_cos": rng.uniform(0, 1, n),
        "num_agree": rng.integers(0, 2, n),
        "num_clash": 0.0,
        "len_min": rng.integers(1, 21, n) / 20.0,
        "len_ratio": rng.uniform(0.2, 1.0, n),
    }
    values["num_clash"] = (1 - values["num_agree"]) * rng.integers(0, 2, n)
    for name, value in values.items():
        rows[:, FEATURES.index(name)] = value
    rows[:, [FEATURES.index(t) for t in TIME_FEATURES]] = np.nan
    return rows


def at_gap(rows: np.ndarray, gap: float) -> np.ndarray:
    out = rows.copy()
    out[:, _TIME] = gap
    out[:, _TIME_SQ] = gap * gap
    out[:, _COS_TIME] = out[:, 1] * gap
    return out


@pytest.mark.parametrize("level", LEARNED_LEVELS)
def test_a_known_gap_never_raises_a_score_and_a_larger_gap_never_scores_higher(level: str) -> None:
    params, threshold = _shipped(level)
    rows = random_rows(20_000, seed=7)
    without = probability(rows, params)
    previous = without
    for gap in np.linspace(0.0, 1.0, 41):  # 0 .. a week and more, on the feature's log scale
        scored = probability(at_gap(rows, float(gap)), params)
        assert (scored <= without + 1e-6).all(), f"gap {gap:.3f} raised a score above its no-time score"
        assert (scored <= previous + 1e-6).all(), f"gap {gap:.3f} scored higher than a smaller gap"
        below = without < threshold
        assert (scored[below] < threshold).all(), "a pair below the threshold without times reached it"
        previous = scored


@settings(max_examples=200, deadline=None)
@given(
    hours=st.lists(st.floats(min_value=0.0, max_value=24 * 60.0), min_size=2, max_size=2),
    later=st.floats(min_value=0.0, max_value=24 * 30.0),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_through_the_real_score_a_pair_with_times_never_beats_it_without(
    hours: list[float], later: float, seed: int
) -> None:
    params, _ = _shipped("event")
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(16)
    vectors = np.stack([base + 0.3 * rng.standard_normal(16) for _ in range(2)])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    texts = [normalize("الهلال يفوز على النصر 2-1 في الدوري"), normalize("فوز الهلال على النصر بهدفين لهدف")]
    t0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
    near = [t0 + timedelta(hours=h) for h in hours]
    far = [near[0], near[1] + timedelta(hours=later) if near[1] >= near[0] else near[1] - timedelta(hours=later)]
    scores = {}
    for name, times in (("none", None), ("near", near), ("far", far)):
        scores[name] = LearnedSimilarity(vectors, texts, times=times, params=params).pair(0, 1)
    assert scores["near"] <= scores["none"] + 1e-6
    assert scores["far"] <= scores["near"] + 1e-6


def test_a_judgement_that_lets_time_join_fails_the_check() -> None:
    """The checks above can fail: weights that reward a small gap (as the earlier fit did, by scoring an
    unknown time as a typical positive's gap) break them."""
    params, threshold = _shipped("event")
    weights = list(params.weights)
    weights[_TIME] = -8.0
    weights[_COS_TIME] = 8.5
    joining = replace(params, weights=tuple(weights), unknown_gap=0.7)
    rows = random_rows(5_000, seed=3)
    without = probability(rows, joining)
    with_near_time = probability(at_gap(rows, 0.0), joining)
    assert (with_near_time > without + 1e-6).any()


def test_the_shipped_event_weights_score_an_unknown_time_as_no_gap() -> None:
    params, _ = _shipped("event")
    assert params.unknown_gap == 0.0
    table = HeadlineTable(np.eye(2, dtype=np.float32), ["a b c", "a b d"])
    row = pair_features(table, np.array([0]), np.array([1]))
    assert np.isnan(row[0, _TIME])


class _DefaultNamed:
    """Fake vectors under the default model's name, so that its shipped learned judgements score them."""

    name = "multilingual-e5-small"
    model_id = "fake-under-default-name/1"
    dimension = 64

    def __init__(self, noise: float):
        from test_store import FakeEmbedder

        self.fake = FakeEmbedder(noise=noise)

    def encode(self, texts):
        return self.fake.encode(texts)


@settings(max_examples=40, deadline=None)
@given(
    topics=st.lists(st.integers(min_value=0, max_value=5), min_size=2, max_size=24),
    noise=st.floats(min_value=0.2, max_value=0.9),
    default_name=st.booleans(),
    with_times=st.booleans(),
    strict_story=st.booleans(),
)
def test_events_nest_in_stories_on_every_input(
    topics: list[int], noise: float, default_name: bool, with_times: bool, strict_story: bool
):
    """The story level is at least as coarse as the event level: every event lies inside one story, for the
    shipped learned judgements and for the cosine of a model without calibration, even when a caller asks
    for a story threshold stricter than the event one (stories are grouped over whole events)."""
    from test_store import FakeEmbedder

    from cluster import collapse

    embedder = _DefaultNamed(noise) if default_name else FakeEmbedder(noise=noise)
    t0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
    items = [
        {"text": f"topic{t} item {k}", "published_at": t0 + timedelta(hours=7 * k) if with_times else None}
        for k, t in enumerate(topics)
    ]
    events = collapse(items, level="event", embedder=embedder)
    stories = collapse(items, level="story", embedder=embedder, threshold=0.999 if strict_story else None)
    story_of = {m.index: s.id for s in stories.stories for m in s.members}
    for event in events.stories:
        assert len({story_of[m.index] for m in event.members}) == 1, "an event spans two stories"
    nested = collapse(items, embedder=embedder, nested=True)
    assert sorted(len(s.events) for s in nested.nested) and sum(len(s.events) for s in nested.nested) == len(
        events.stories
    )
