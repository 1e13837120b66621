"""Auditing a judgement: explain's signal-by-signal breakdown, and review's random groups (issue 19 item 4).

The fake embedder stands in for the model (its judgement is plain cosine); the learned and hybrid
breakdowns are checked on their similarity classes over hand-made vectors, and once end to end with the
real model.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_store import FakeEmbedder, open_index, unit

from cluster.breakdown import breakdown
from cluster.cli import main
from cluster.judge import HybridParams, HybridSimilarity
from cluster.learned import BELOW_GATE, LearnedSimilarity, load_params
from cluster.review import draw, review_collapse, review_group, review_index
from cluster.stories import collapse

REPO = Path(__file__).resolve().parents[1]
UTC = timezone.utc
T0 = datetime(2024, 5, 1, tzinfo=UTC)

# Hand-made pairs: vectors at a chosen cosine, with Arabic and Latin texts, numbers that agree or clash,
# and times known or not.
TEXTS = [
    "زلزال بقوة 6.2 يضرب جنوب تركيا",
    "زلزال قوي بقوة 6.2 يهز جنوب تركيا",
    "زلزال بقوة 5 يضرب شمال ايران",
    "earthquake of 6.2 hits southern turkey",
    "central bank raises rates",
]
TIMES = [T0, T0 + timedelta(hours=3), None, T0 + timedelta(days=2), T0]


def vectors_at(cosines: list[float], dimension: int = 16) -> np.ndarray:
    """Unit vectors whose cosine to the first is each of ``cosines`` (the first is 1)."""
    out = []
    for k, c in enumerate(cosines):
        v = np.zeros(dimension)
        v[0] = c
        v[k + 1] = math.sqrt(max(0.0, 1.0 - c * c))
        out.append(v)
    return np.array(out, dtype=np.float32)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --- explain: the breakdown --------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", [(0, 1), (0, 2), (0, 3), (0, 4), (1, 3)])
def test_learned_contributions_add_up_to_the_logit_and_give_the_probability(pair) -> None:
    params, _ = load_params("event")
    similarity = LearnedSimilarity(vectors_at([1.0, 0.97, 0.9, 0.85, 0.3]), TEXTS, times=TIMES, params=params)
    i, j = pair
    parts = breakdown(similarity, TEXTS, TIMES, i, j)
    assert parts.kind == "learned"
    assert [s.name for s in parts.signals] == [
        "base", "cosine", "script", "shared words", "numbers", "length", "time gap"
    ]  # fmt: skip
    assert sum(s.contribution for s in parts.signals) == pytest.approx(parts.total, abs=1e-9)
    cos = float(similarity.vectors[i] @ similarity.vectors[j])
    assert parts.below_gate == (cos < params.gate)
    expected = sigmoid(parts.total) * (BELOW_GATE if parts.below_gate else 1.0)
    assert parts.score == pytest.approx(similarity.pair(i, j), abs=1e-6)
    assert parts.score == pytest.approx(expected, abs=1e-5)


def test_learned_breakdown_reads_each_signal_in_words() -> None:
    params, _ = load_params("event")
    similarity = LearnedSimilarity(vectors_at([1.0, 0.97, 0.9, 0.85, 0.3]), TEXTS, times=TIMES, params=params)
    value = {s.name: s.value for s in breakdown(similarity, TEXTS, TIMES, 0, 1).signals}
    assert value["cosine"] == "0.970" and value["time gap"] == "3.0 h" and value["numbers"] == "agree"
    assert value["script"] == "Arabic / Arabic" and value["shared words"] == "4 (80% of the shorter)"
    other = {s.name: s.value for s in breakdown(similarity, TEXTS, TIMES, 0, 2).signals}
    assert other["time gap"] == "unknown (no time penalty)" and other["numbers"] == "clash"
    across = {s.name: s.value for s in breakdown(similarity, TEXTS, TIMES, 0, 3).signals}
    assert across["script"] == "Arabic / Latin" and across["time gap"] == "48.0 h"
    lines = breakdown(similarity, TEXTS, TIMES, 0, 4).lines(0.35)
    assert lines[-1].startswith("probability ") and "is below the threshold 0.350" in lines[-1]
    assert "times 0.01 because the cosine is below the gate" in lines[-1]


def test_hybrid_contributions_add_up_to_the_score() -> None:
    params = HybridParams(
        lexical_weight=0.2, number_penalty=0.1, time_penalty=0.05, time_scale_hours=24.0, other_script_scale=1.5
    )
    similarity = HybridSimilarity(vectors_at([1.0, 0.97, 0.9, 0.85, 0.3]), TEXTS, times=TIMES, params=params)
    for i, j in [(0, 1), (0, 2), (0, 3), (3, 4)]:
        parts = breakdown(similarity, TEXTS, TIMES, i, j)
        assert parts.kind == "hybrid"
        assert [s.name for s in parts.signals] == ["cosine", "script", "shared words", "numbers", "time gap"]
        assert min(parts.total, 1.0) == pytest.approx(similarity.pair(i, j), abs=1e-5)
    clash = {s.name: s.contribution for s in breakdown(similarity, TEXTS, TIMES, 0, 2).signals}
    assert clash["numbers"] == pytest.approx(-0.1)


def test_collapse_explain_carries_the_breakdown_for_a_cosine_judgement() -> None:
    result = collapse(["topic1 rates rise", "topic1 rates go up", "topic2 storm"], embedder=FakeEmbedder())
    explanation = result.explain(0, 2)
    assert explanation.breakdown is not None and explanation.breakdown.kind == "cosine"
    (signal,) = explanation.breakdown.signals
    assert signal.contribution == pytest.approx(explanation.similarity)
    assert explanation.lines()[-1] == explanation.reason and explanation.lines()[0] == "[0] topic1 rates rise"
    assert result.explain(1, 1).breakdown is None
    data = explanation.to_dict()
    assert data["breakdown"]["kind"] == "cosine" and data["same_story"] is False


def test_the_breakdown_works_on_a_nested_collapse() -> None:
    # collapse's default output nests events in stories; explain takes the event level apart as before.
    texts = ["topic1 rates rise", "topic1 rates go up", "topic2 storm"]
    nested = collapse(texts, embedder=FakeEmbedder(), nested=True)
    flat = collapse(texts, embedder=FakeEmbedder())
    assert nested.nested is not None
    for i, j in [(0, 1), (0, 2)]:
        assert nested.explain(i, j).to_dict() == flat.explain(i, j).to_dict()
        assert nested.explain(i, j).breakdown is not None


def fake_run(*args: object, embedder: object = "fake"):
    obj = {"embedder": FakeEmbedder() if embedder == "fake" else embedder}
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, obj=obj)


def test_explain_cli_text_and_json() -> None:
    path = REPO / "examples" / "related_en.csv"
    text = fake_run("explain", path, "2", "3")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].startswith("[2] ") and lines[1].startswith("[3] ")
    assert lines[2].split()[0] == "cosine" and lines[2].split()[-1][0] in "+-"
    assert "the threshold" in lines[-2] and lines[-1].startswith(("same story", "different stories"))
    data = json.loads(fake_run("explain", path, "2", "3", "--format", "json").stdout)
    assert {"i", "j", "texts", "similarity", "threshold", "same_story", "reason", "breakdown"} <= set(data)
    assert data["breakdown"]["signals"][0]["name"] == "cosine"


@pytest.mark.slow
def test_explain_cli_json_with_the_learned_judgement(embedder) -> None:
    path = REPO / "examples" / "related_en.csv"
    data = json.loads(fake_run("explain", path, "2", "3", "--format", "json", embedder=embedder).stdout)
    parts = data["breakdown"]
    assert parts["kind"] == "learned" and len(parts["signals"]) == 7
    assert sum(s["contribution"] for s in parts["signals"]) == pytest.approx(parts["logit"], abs=1e-3)
    assert sigmoid(parts["logit"]) == pytest.approx(data["similarity"], abs=1e-3)
    text = fake_run("explain", path, "2", "3", embedder=embedder).stdout.splitlines()
    assert any(line.strip().startswith("= logit") for line in text)


# --- review ------------------------------------------------------------------------------------------------


def test_review_group_marks_the_member_least_similar_to_the_rest() -> None:
    scores = np.array([[1.0, 0.9, 0.8, 0.7], [0.9, 1.0, 0.85, 0.5], [0.8, 0.85, 1.0, 0.75], [0.7, 0.5, 0.75, 1.0]])
    group = review_group("s1", scores, 0, ["a", "b", "c", "d"], [None] * 4, [0, 1, 2, 3])
    assert group.least_similar.text == "d"
    assert group.least_similar.to_rest == pytest.approx((0.7 + 0.5 + 0.75) / 3)
    assert [m.score for m in group.members] == [1.0, 0.9, 0.8, 0.7]
    pair = review_group("s2", np.array([[1.0, 0.6], [0.6, 1.0]]), 0, ["a", "b"], [None, None], [0, 1])
    assert pair.least_similar.text == "b"  # a tie in a pair: the member, not the representative


def test_draw_is_deterministic_per_seed() -> None:
    assert draw(100, 10, 3) == draw(100, 10, 3)
    assert draw(100, 10, 3) != draw(100, 10, 4)
    assert draw(5, 10, 0) == [0, 1, 2, 3, 4]


def topic_headlines(topics: int = 12) -> list[str]:
    # Topic k has k % 3 + 1 headlines: a third of the topics stand alone and must never be drawn.
    texts = [f"topic{k} report {r}" for k in range(topics) for r in range(k % 3 + 1)]
    return texts + [f"lone headline {k}" for k in range(5)]


def test_review_of_a_file_draws_only_multi_headline_groups_the_same_per_seed() -> None:
    result = collapse(topic_headlines(), embedder=FakeEmbedder())
    multi = {s.id for s in result.stories if s.size > 1}
    assert len(multi) == 8
    review = review_collapse(result, n=4, seed=1)
    assert review.groups_total == 8 and len(review.groups) == 4
    assert {g.id for g in review.groups} <= multi
    assert all(len(g.members) > 1 and sum(m.least_similar for m in g.members) == 1 for g in review.groups)
    assert review == review_collapse(result, n=4, seed=1)
    seeds = {tuple(g.id for g in review_collapse(result, n=4, seed=s).groups) for s in range(6)}
    assert len(seeds) > 1
    assert {g.id for g in review_collapse(result, n=50).groups} == multi


def test_review_marks_the_least_similar_member_by_its_score_to_the_rest() -> None:
    vectors = {"a one": unit(1.0), "b two": unit(0.99, 0.14), "c three": unit(0.9, 0.1, 0.42)}
    result = collapse(["a one", "b two", "c three"], embedder=FakeEmbedder(vectors))
    (group,) = review_collapse(result).groups
    assert len(group.members) == 3 and group.least_similar.text == "c three"
    rest = {m.text: m.to_rest for m in group.members}
    assert rest["c three"] < min(rest["a one"], rest["b two"])
    rep = next(m for m in group.members if m.representative)
    assert rep.score == pytest.approx(1.0)


def test_review_cli_of_a_file_text_and_json(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("\n".join(topic_headlines()) + "\n", encoding="utf-8")
    text = fake_run("review", path, "--n", "3", "--seed", "2")
    assert text.exit_code == 0, text.output
    heads = [line for line in text.stdout.splitlines() if line.startswith("story ")]
    assert len(heads) == 3
    assert text.stdout.count("  < ") == 3 and text.stdout.count("  * ") == 3
    assert "3 groups of 8 multi-headline groups (seed 2" in text.stderr
    data = json.loads(fake_run("review", path, "--n", "3", "--seed", "2", "--format", "json").stdout)
    assert data["groups_total"] == 8 and len(data["groups"]) == 3
    assert [g["id"] for g in data["groups"]] == [int(h.split()[1]) for h in heads]
    for group in data["groups"]:
        assert group["size"] > 1 and sum(m["least_similar"] for m in group["members"]) == 1


def test_review_cli_needs_a_file_or_an_index(tmp_path: Path) -> None:
    assert fake_run("review").exit_code == 2
    assert fake_run("review", tmp_path / "x.txt", "--index", tmp_path / "idx").exit_code == 2
    (tmp_path / "x.txt").write_text("topic1 a\n", encoding="utf-8")
    assert fake_run("review", tmp_path / "x.txt", "--last", "24h").exit_code == 2


def indexed(tmp_path: Path) -> Path:
    path = tmp_path / "idx"
    rows = [
        {"id": f"h{k}-{r}", "text": text, "published_at": T0 + timedelta(hours=k, minutes=r)}
        for k, text in enumerate(topic_headlines())
        for r in [0]
    ]
    with open_index(path) as index:
        index.add(rows)
    return path


def test_review_of_an_index_window(tmp_path: Path) -> None:
    from cluster.store import HeadlineIndex

    path = indexed(tmp_path)
    with HeadlineIndex.open(path, embedder=FakeEmbedder()) as index:
        stories = {s.id: s for s in index.stories() if s.size > 1}
        # The groups are events (the level the index's judgement groups), under their event ids.
        events = {e: (s, members) for s in stories.values() for e, members in s.events.items() if len(members) > 1}
        review = review_index(index, n=50)
        assert {g.id for g in review.groups} == set(events) and len(events) == 8
        for group in review.groups:
            story, members = events[group.id]
            assert group.id.startswith("e") and {m.id for m in group.members} == {m.headline.id for m in members}
            if any(m.headline.row == story.representative.row for m in members):
                stored = {m.headline.id: m.score for m in members}
                assert {m.id: round(m.score, 5) for m in group.members} == {k: round(v, 5) for k, v in stored.items()}
            assert sum(m.least_similar for m in group.members) == 1
            assert sum(m.representative for m in group.members) == 1
        # A window that holds only the first topics' headlines draws only their stories.
        early = review_index(index, T0, T0 + timedelta(hours=4), n=50)
        assert 0 < len(early.groups) < len(review.groups)
        assert review_index(index, n=3, seed=5) == review_index(index, n=3, seed=5)


def test_review_cli_of_an_index(tmp_path: Path) -> None:
    path = indexed(tmp_path)
    window = ["--since", "2024-05-01", "--until", "2024-05-03"]
    result = fake_run("review", "--index", path, *window, "--format", "json", "--n", "50")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["groups_total"] == 8 and all(g["size"] > 1 for g in data["groups"])
    assert all(m["index"] is None and m["id"].startswith("h") for g in data["groups"] for m in g["members"])
    text = fake_run("review", "--index", path, *window, "--n", "2")
    assert text.exit_code == 0 and text.stdout.count("  < ") == 2 and text.stdout.startswith("event e")
    empty = fake_run("review", "--index", path, "--since", "2030-01-01", "--until", "2030-01-02")
    assert empty.exit_code == 0 and "0 groups of 0 multi-headline groups" in empty.stderr


def test_index_query_explain_takes_the_best_hit_apart(tmp_path: Path) -> None:
    path = indexed(tmp_path)
    found = fake_run("index", "query", "topic3 report 9", "--index", path, "-k", "2", "--explain", "--format", "json")
    assert found.exit_code == 0, found.output
    best, second = json.loads(found.stdout)
    # The fake model's judgement is plain cosine: the breakdown is the query's cosine to the best hit.
    assert best["breakdown"]["kind"] == "cosine" and "breakdown" not in second
    assert best["breakdown"]["score"] == pytest.approx(best["score"], abs=1e-3)
    text = fake_run("index", "query", "topic3 report 9", "--index", path, "-k", "2", "--explain").stdout
    assert text.count("signal by signal") == 1 and "the threshold 0.800" in text
    plain = fake_run("index", "query", "topic3 report 9", "--index", path, "-k", "2", "--format", "json").stdout
    assert all("breakdown" not in hit for hit in json.loads(plain))


# --- the nightly report: the largest stories' least similar member ------------------------------------------


def test_nightly_report_names_the_least_similar_member_of_its_largest_stories(tmp_path: Path) -> None:
    from cluster.nightly import run_nightly

    vectors = {"a one": unit(1.0), "b two": unit(0.99, 0.14), "c <three>": unit(0.9, 0.1, 0.42)}
    path = tmp_path / "idx"
    with open_index(path, FakeEmbedder(vectors)) as index:
        index.add(
            [
                {"id": text, "text": text, "published_at": T0 + timedelta(hours=k)}
                for k, text in enumerate(["a one", "b two", "c <three>", "lone headline"])
            ]
        )
        run_nightly(index, T0, T0 + timedelta(days=1), tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    (least,) = [line for line in page.split("<p class='muted least'>")[1:]]
    assert "<span dir=auto>c &lt;three&gt;</span>" in least  # the weakest of the three, escaped
    assert page.count("least similar member (mean score") == 1  # the headline alone has none
