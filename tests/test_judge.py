"""HybridSimilarity: same interface and consistency as CosineSimilarity, and each correction's effect."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from cluster.group import group
from cluster.judge import (
    CosineSimilarity,
    HybridParams,
    HybridSimilarity,
    Judgement,
    char_ngrams,
    is_arabic_script,
    lexical_matrix,
    number_set,
)
from cluster.normalize import normalize

TEXTS = [
    "oil prices rise on supply fears",
    "oil prices rise as supply fears grow",
    "stocks fall in tokyo",
    "tokyo stocks fall",
    "football club signs new coach",
    "rain floods 3 villages",
    "rain floods 5 villages",
    "البيت الابيض يعلق على القرار",
]


def random_unit(n: int, dim: int = 8, seed: int = 0, spread: float = 0.35) -> np.ndarray:
    """Vectors around one direction, so cosines spread over roughly 0.6-1 like a real model's."""
    rng = np.random.default_rng(seed)
    vectors = np.ones((n, dim)) + spread * rng.standard_normal((n, dim)) * np.sqrt(dim)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


FULL = HybridParams(
    lexical_weight=0.2, lexical_center=0.3, number_penalty=0.05, time_penalty=0.04, other_script_scale=0.7
)
TIMES = [datetime(2024, 5, 1, tzinfo=timezone.utc) + timedelta(hours=7 * k) for k in range(len(TEXTS))]


def test_candidates_match_brute_force_from_block() -> None:
    sim = HybridSimilarity(random_unit(len(TEXTS)), TEXTS, times=TIMES, params=FULL)
    everything = np.arange(len(TEXTS))
    full = sim.block(everything, everything)
    for threshold in (0.6, 0.75, 0.9):
        expected = {(i, j) for i in everything for j in everything if i != j and full[i, j] >= threshold}
        found = sim.candidates(threshold).tocoo()
        assert set(zip(found.row.tolist(), found.col.tolist(), strict=True)) == expected
        assert np.allclose(found.data, full[found.row, found.col], atol=1e-5)


def test_block_pair_and_pairs_agree_and_are_symmetric() -> None:
    sim = HybridSimilarity(random_unit(len(TEXTS), seed=3), TEXTS, times=TIMES, params=FULL)
    everything = np.arange(len(TEXTS))
    full = sim.block(everything, everything)
    assert np.allclose(full, full.T, atol=1e-6)
    assert np.allclose(np.diag(full), 1.0, atol=1e-5)
    assert sim.pair(0, 3) == pytest.approx(float(full[0, 3]), abs=1e-6)
    rows, cols = np.array([0, 2, 5]), np.array([1, 3, 6])
    assert np.allclose(sim.pairs(rows, cols), full[rows, cols], atol=1e-6)


def test_without_corrections_it_is_plain_cosine() -> None:
    vectors = random_unit(len(TEXTS), seed=1)
    hybrid = HybridSimilarity(vectors, TEXTS, params=HybridParams())
    cosine = CosineSimilarity(vectors)
    everything = np.arange(len(TEXTS))
    assert np.allclose(hybrid.block(everything, everything), cosine.block(everything, everything), atol=1e-6)
    found, expected = hybrid.candidates(0.8).tocoo(), cosine.candidates(0.8).tocoo()
    assert sorted(zip(found.row, found.col, strict=True)) == sorted(zip(expected.row, expected.col, strict=True))
    assert np.allclose(found.toarray(), expected.toarray(), atol=1e-6)


def test_lexical_overlap_raises_the_score_of_reworded_headlines() -> None:
    vectors = np.tile(random_unit(1), (len(TEXTS), 1))  # identical vectors: only the text differs
    sim = HybridSimilarity(vectors, TEXTS, params=HybridParams(lexical_weight=0.2))
    assert sim.pair(0, 1) > sim.pair(0, 4)  # shared words beat none
    assert sim.pair(2, 3) > sim.pair(2, 5)


def test_arabic_clitics_still_share_ngrams() -> None:
    # "بجائزة" (with the prefix ب) and "الجائزة" (with the article) are the same noun.
    a, b, other = (normalize(t) for t in ("بجائزة", "الجائزة", "مدينة"))
    matrix = lexical_matrix([a, b, other], idf=False)
    overlap = (matrix @ matrix.T).toarray()
    assert overlap[0, 1] > 0.3
    assert overlap[0, 2] < overlap[0, 1]


def test_char_ngrams_mark_word_ends_and_keep_short_words() -> None:
    assert char_ngrams("a bcd") == ["<a>", "<bc", "bcd", "cd>"]
    assert char_ngrams("5 ab", (4,)) == ["<5>", "<ab>"]


def test_number_clash_lowers_the_score() -> None:
    vectors = np.tile(random_unit(1), (3, 1))
    texts = ["rain floods 3 villages", "rain floods 5 villages", "rain floods villages"]
    sim = HybridSimilarity(vectors, texts, params=HybridParams(number_penalty=0.05))
    assert sim.pair(0, 1) == pytest.approx(1.0 - 0.05, abs=1e-6)  # both state numbers, none shared
    assert sim.pair(0, 2) == pytest.approx(1.0, abs=1e-6)  # one states none: no evidence either way
    assert number_set("won 2,500 votes and 3.5%") == {"2500", "3.5"}


def test_time_penalty_grows_with_the_gap_and_ignores_unknown_times() -> None:
    vectors = np.tile(random_unit(1), (4, 1))
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    times = [start, start + timedelta(hours=6), start + timedelta(hours=48), None]
    params = HybridParams(time_penalty=0.1, time_scale_hours=24)
    sim = HybridSimilarity(vectors, ["a"] * 4, times=times, params=params)
    assert sim.pair(0, 1) == pytest.approx(1.0 - 0.1 * 6 / 24, abs=1e-6)
    assert sim.pair(0, 2) == pytest.approx(0.9, abs=1e-6)  # capped at one time scale
    assert sim.pair(0, 3) == pytest.approx(1.0, abs=1e-6)


def test_scores_stay_at_most_one_and_above_the_floor_only_from_candidates() -> None:
    vectors = random_unit(len(TEXTS), seed=5)
    sim = HybridSimilarity(vectors, TEXTS, params=FULL)
    everything = np.arange(len(TEXTS))
    scores = sim.block(everything, everything)
    assert (scores <= 1.0 + 1e-6).all()
    cosine = CosineSimilarity(vectors).block(everything, everything)
    for threshold in (0.7, 0.8, 0.9):
        reaching = scores >= threshold
        np.fill_diagonal(reaching, False)
        assert (cosine[reaching] >= FULL.cosine_floor(threshold) - 1e-6).all()


def test_group_accepts_the_hybrid() -> None:
    vectors = np.tile(random_unit(1), (len(TEXTS), 1))
    judgement = Judgement("m", "story", 0.5, "test", kind="hybrid", params=HybridParams(lexical_weight=1.0))
    sim = judgement.similarity(vectors, TEXTS)
    assert isinstance(sim, HybridSimilarity) and sim.params.lexical_center == 0.5
    sim = replace(judgement, params=HybridParams(lexical_weight=1.0, lexical_center=1.0)).similarity(vectors, TEXTS)
    # Identical vectors, so only words decide: score = 1 + (lexical - 1) = lexical.
    labels = group(sim, 0.5).labels
    assert labels[0] == labels[1]
    assert labels[0] != labels[4]


def test_a_judgement_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown similarity"):
        Judgement("m", "story", 0.9, "test", kind="magic")
    cosine = Judgement("m", "story", 0.9, "test", kind="cosine")
    assert isinstance(cosine.similarity(random_unit(2), ["a", "b"]), CosineSimilarity)


def test_texts_and_vectors_must_match() -> None:
    with pytest.raises(ValueError, match="texts for"):
        HybridSimilarity(random_unit(3), ["a", "b"])


def test_script_scale_moves_non_arabic_pairs_only() -> None:
    unit = random_unit(1)[0]
    other = random_unit(1, seed=9)[0]
    mixed = 0.8 * unit + 0.6 * other
    pair = np.stack([unit, mixed / np.linalg.norm(mixed)]).astype(np.float32)
    cos = float(pair[0] @ pair[1])
    vectors = np.concatenate([pair, pair])
    texts = ["البيت الابيض يعلق", "الرئيس يعلق اليوم", "the white house reacts", "president reacts"]
    sim = HybridSimilarity(vectors, texts, params=HybridParams(other_script_scale=0.5))
    assert sim.pair(0, 1) == pytest.approx(cos, abs=1e-5)  # Arabic pair: as calibrated
    assert sim.pair(2, 3) == pytest.approx(1 - 0.5 * (1 - cos), abs=1e-5)  # Latin pair: half the distance
    assert sim.pair(0, 3) == pytest.approx(1 - 0.75 * (1 - cos), abs=1e-5)  # mixed: the mean factor
    assert is_arabic_script("عاجل الان: apple") and not is_arabic_script("apple iphone عاجل")


def test_all_arabic_lists_need_no_wider_candidate_search() -> None:
    params = HybridParams(other_script_scale=0.5)
    assert params.cosine_floor(0.9, scripts_present=1) == pytest.approx(0.9)
    assert params.cosine_floor(0.9) == pytest.approx(0.8)
