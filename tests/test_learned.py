"""The learned judgement: a pair's score depends on the pair alone, the interface grouping needs, the
cosine floor is a real bound, the fitter, and where settings take it from."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from cluster.group import group
from cluster.judge import Judgement
from cluster.learned import (
    FEATURES,
    HeadlineTable,
    LearnedParams,
    LearnedSimilarity,
    fit_logistic,
    headline_signals,
    load_params,
    pair_features,
    script_of,
    stem,
)
from cluster.normalize import normalize
from cluster.settings import GENERIC, LEVELS, judgement_for

TEXTS = [
    "oil prices rise on supply fears",
    "oil prices rise as supply fears grow",
    "stocks fall in tokyo",
    "tokyo stocks fall 3%",
    "tokyo stocks fall 5%",
    "football club signs new coach",
    "البيت الابيض يعلق على عدم فوز ترامب بالجائزة",
    "البيت الأبيض يعلق على عدم فوز ترمب بجائزة نوبل",
    "Le club signe un nouvel entraîneur",
]
T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
TIMES = [T0 + timedelta(hours=5 * k) if k % 3 else None for k in range(len(TEXTS))]


def random_unit(n: int, dim: int = 8, seed: int = 0, spread: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = np.ones((n, dim)) + spread * rng.standard_normal((n, dim)) * np.sqrt(dim)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def params(gate: float = 0.8, **overrides: float) -> LearnedParams:
    weights = dict.fromkeys(FEATURES, 0.0)
    weights.update(bias=-36.0, cos=40.0, stem_overlap=2.0, gram_cos=1.5, num_clash=-2.0, time_gap=-1.0)
    weights.update(overrides)
    return LearnedParams(tuple(weights[name] for name in FEATURES), gate)


def similarity(p: LearnedParams | None = None, times=TIMES) -> LearnedSimilarity:
    texts = [normalize(t) for t in TEXTS]
    return LearnedSimilarity(random_unit(len(texts)), texts, times=times, params=p or params())


def test_a_pair_scores_the_same_alone_as_inside_any_collection() -> None:
    whole = similarity()
    texts = [normalize(t) for t in TEXTS]
    vectors = random_unit(len(texts))
    for i, j in [(0, 1), (3, 4), (6, 7), (5, 8), (2, 6)]:
        alone = LearnedSimilarity(vectors[[i, j]], [texts[i], texts[j]], times=[TIMES[i], TIMES[j]], params=params())
        assert alone.pair(0, 1) == whole.pair(i, j)
        # ... and inside a collection with other headlines, in another order.
        others = [k for k in range(len(texts)) if k not in (i, j)][:3]
        order = [*others, j, i]
        mixed = LearnedSimilarity(
            vectors[order], [texts[k] for k in order], times=[TIMES[k] for k in order], params=params()
        )
        assert mixed.pair(len(order) - 1, len(order) - 2) == whole.pair(i, j)


def test_diagonal_is_one_and_every_other_score_below_one() -> None:
    sim = similarity(params(bias=0.0, cos=50.0))
    idx = np.arange(len(sim))
    block = sim.block(idx, idx)
    assert np.allclose(np.diag(block), 1.0)
    off = block[~np.eye(len(sim), dtype=bool)]
    assert (off < 1.0).all() and (off >= 0.0).all()
    assert np.allclose(block, block.T)


def test_block_pair_and_pairs_agree() -> None:
    sim = similarity()
    idx = np.arange(len(sim))
    block = sim.block(idx, idx)
    rows, cols = np.triu_indices(len(sim), k=1)
    assert np.allclose(sim.pairs(rows, cols), block[rows, cols])
    assert sim.pair(2, 5) == pytest.approx(block[2, 5])


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_candidates_are_exactly_the_pairs_that_reach_the_threshold(threshold: float) -> None:
    sim = similarity(params(gate=0.7, bias=-30.0, cos=36.0))
    idx = np.arange(len(sim))
    block = sim.block(idx, idx)
    expected = {(i, j) for i in idx for j in idx if i != j and block[i, j] >= threshold}
    found = sim.candidates(threshold)
    assert {(int(i), int(j)) for i, j in zip(*found.nonzero(), strict=True)} == expected


def test_cosine_floor_bounds_every_pair_that_reaches_the_threshold() -> None:
    rng = np.random.default_rng(3)
    p = params(gate=0.75, bias=-30.0, cos=34.0, ar=-2.0, cos_ar=1.0, cross=3.0, cos_cross=-2.0, num_agree=1.0)
    features = np.zeros((20_000, len(FEATURES)), dtype=np.float32)
    features[:, 0] = 1.0
    features[:, 1] = rng.uniform(0.5, 1.0, len(features))
    kind = rng.integers(0, 3, len(features))
    features[:, 2] = kind == 1
    features[:, 3] = features[:, 1] * (kind == 1)
    features[:, 4] = kind == 2
    features[:, 5] = features[:, 1] * (kind == 2)
    features[:, 6:] = rng.uniform(0, 1, (len(features), len(FEATURES) - 6))
    from cluster.learned import probability

    score = probability(features, p)
    for threshold in (0.3, 0.5, 0.7):
        floor = p.cosine_floor(threshold)
        assert floor >= p.gate
        assert not ((score >= threshold) & (features[:, 1] < floor)).any()


def test_cosine_floor_bounds_pairs_whose_time_terms_bend_the_cosine_slope() -> None:
    from cluster.learned import TIME_GAP, impute, probability

    rng = np.random.default_rng(5)
    weights = dict(bias=-30.0, cos=34.0, time_gap=-3.0, time_gap_sq=1.0, cos_time_gap=10.0, len_min=1.0)
    p = params(gate=0.75, **weights)
    n = 50_000
    features = np.zeros((n, len(FEATURES)), dtype=np.float32)
    features[:, 0] = 1.0
    features[:, 1] = rng.uniform(0.5, 1.0, n)
    gap = rng.uniform(0, 1, n).astype(np.float32)
    gap[::7] = np.nan  # unknown times: imputed, with the derived terms computed from the imputed gap
    col = {name: k for k, name in enumerate(FEATURES)}
    features[:, TIME_GAP] = gap
    features[:, col["time_gap_sq"]] = gap * gap
    features[:, col["cos_time_gap"]] = features[:, 1] * gap
    features[:, col["len_min"]] = rng.uniform(0, 1, n)
    filled = impute(features, 0.6)
    assert np.allclose(filled[::7, col["time_gap_sq"]], 0.36)
    assert np.allclose(filled[::7, col["cos_time_gap"]], features[::7, 1] * 0.6)
    score = probability(features, p)
    # A floor that took the cosine's slope as fixed would cut pairs that reach the threshold: the test bites.
    fixed_slope = params(gate=0.75, **{**weights, "cos_time_gap": 0.0})
    missed = 0
    for threshold in (0.2, 0.4, 0.7, 0.9):
        floor = p.cosine_floor(threshold)
        reached = score >= threshold
        assert reached.any() and floor >= p.gate
        assert not (reached & (features[:, 1] < floor)).any()
        missed += int((reached & (features[:, 1] < fixed_slope.cosine_floor(threshold))).any())
    assert missed


def test_weights_saved_before_a_feature_existed_give_it_no_weight() -> None:
    saved = {"weights": {"bias": -30.0, "cos": 36.0}, "gate": 0.8}
    loaded = LearnedParams.from_dict(saved)
    assert dict(zip(FEATURES, loaded.weights, strict=True))["cos_time_gap"] == 0.0 and not loaded.uses_time


def test_signals_need_only_the_headline() -> None:
    # Arabic clitics and the article come off; the stems of a word with and without them meet.
    assert stem("بالجائزة") == stem("الجائزة") == stem("جائزة")
    assert stem("وال") == "وال"  # too short to strip
    assert script_of("البيت الابيض") == 0 and script_of("tokyo stocks") == 1 and script_of("токио") == 2
    a, b = headline_signals(normalize("فوز ترامب بالجائزة")), headline_signals(normalize("الجائزة لترامب"))
    assert set(a[0]) & set(b[0])
    assert headline_signals("rain floods 3 villages")[2] != headline_signals("rain floods 5 villages")[2]


def test_numbers_time_and_lexical_features() -> None:
    texts = [normalize(t) for t in ["tokyo stocks fall 3%", "tokyo stocks fall 5%", "tokyo stocks fall 3%"]]
    times = [T0, T0 + timedelta(hours=48), None]
    table = HeadlineTable(random_unit(3), texts, times)
    f = pair_features(table, np.array([0, 0]), np.array([1, 2]))
    col = {name: k for k, name in enumerate(FEATURES)}
    assert f[0, col["num_clash"]] == 1 and f[1, col["num_agree"]] == 1
    assert 0 < f[0, col["time_gap"]] < 1
    assert np.isnan(f[1, col["time_gap"]])  # one time unknown: the model fills in its own value
    assert f[1, col["stem_overlap"]] == pytest.approx(1.0) and f[1, col["gram_cos"]] == pytest.approx(1.0)


def test_cross_script_pairs_have_their_own_terms_not_a_penalty_on_lexical_overlap() -> None:
    texts = [normalize("البيت الأبيض يعلق"), normalize("White House comments")]
    table = HeadlineTable(random_unit(2), texts)
    f = pair_features(table, np.array([0]), np.array([1]))
    col = {name: k for k, name in enumerate(FEATURES)}
    assert f[0, col["cross"]] == 1 and f[0, col["ar"]] == 0


def test_group_cuts_the_learned_score() -> None:
    sim = similarity(params(gate=0.0, bias=-30.0, cos=36.0))
    grouping = group(sim, 0.5)
    assert len(grouping.labels) == len(sim)


def test_fit_logistic_is_deterministic_and_recovers_the_direction() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(2000), rng.standard_normal(2000), rng.standard_normal(2000)])
    y = (rng.uniform(size=2000) < 1 / (1 + np.exp(-(0.5 + 2.0 * x[:, 1] - 1.0 * x[:, 2])))).astype(float)
    beta = fit_logistic(x, y, l2=1e-4)
    assert np.array_equal(beta, fit_logistic(x, y, l2=1e-4))
    assert beta[1] == pytest.approx(2.0, abs=0.3) and beta[2] == pytest.approx(-1.0, abs=0.3)
    # A strong pull toward a prior keeps the weights there.
    prior = np.array([0.0, 5.0, 5.0])
    assert fit_logistic(x, y, l2=100.0, prior=prior)[1:] == pytest.approx(prior[1:], abs=0.05)


def test_the_shipped_weights_cover_every_level() -> None:
    for level in LEVELS:
        p, threshold = load_params(level)
        assert 0.0 < threshold < 1.0 and -1.0 <= p.gate < 1.0
        assert p.cosine_floor(threshold) >= p.gate


def test_settings_give_the_learned_judgement_for_the_default_model_and_cosine_otherwise() -> None:
    for level in LEVELS:
        judgement = judgement_for("multilingual-e5-small", level)
        if level != "story":  # the story level keeps the hybrid (cluster/settings.py says why)
            assert judgement.kind == "learned" and judgement.learned is not None
            assert judgement.cosine_floor() == judgement.learned.cosine_floor(judgement.threshold)
        other = judgement_for("some/other-model", level)
        assert other.kind == "cosine" and other.threshold == GENERIC[level]
    assert judgement_for("multilingual-e5-small", "event").threshold == load_params("event")[1]


def test_calibrated_weights_in_the_config_replace_the_shipped_ones(tmp_path: Path, monkeypatch) -> None:
    refit = params(gate=0.81)
    config = tmp_path / "config.json"
    entry = {"threshold": 0.6, "source": "test", "learned": refit.to_dict()}
    config.write_text(json.dumps({"models": {"multilingual-e5-small": {"event": entry}}}), encoding="utf-8")
    monkeypatch.setenv("HEADLINE_CLUSTER_CONFIG", str(config))
    judgement = judgement_for("multilingual-e5-small", "event")
    assert judgement.threshold == 0.6 and judgement.learned == LearnedParams.from_dict(refit.to_dict())


def test_a_learned_judgement_needs_weights_and_other_kinds_cannot_borrow_them() -> None:
    with pytest.raises(ValueError):
        Judgement("m", "event", 0.5, "test", kind="learned")
    cosine = Judgement("m", "event", 0.8, "test")
    with pytest.raises(ValueError):
        cosine.with_kind("learned")
    learned = judgement_for("multilingual-e5-small", "event")
    assert replace(learned, kind="cosine").cosine_floor() == learned.threshold


@pytest.mark.parametrize("threshold", [0.05, 0.2, 0.5, 0.8])
@pytest.mark.parametrize("gate_ar", [0.75, 0.9, 0.97])
def test_an_arabic_gate_keeps_the_candidates_exactly_the_pairs_that_reach_the_threshold(
    threshold: float, gate_ar: float
) -> None:
    """Arabic pairs are searched from their own floor (a scaled cosine), others from theirs: nothing that
    reaches the threshold is missed, in a list of Arabic, Latin and mixed pairs, with the cell search too."""
    texts = [normalize(t) for t in TEXTS] * 3
    base = replace(params(gate=0.7, bias=-30.0, cos=36.0, ar=-3.0, cos_ar=3.0, cross=1.0), gate_ar=gate_ar)
    sim = LearnedSimilarity(random_unit(len(texts), spread=0.15, seed=11), texts, params=base)
    idx = np.arange(len(sim))
    block = sim.block(idx, idx)
    expected = {(i, j) for i in idx for j in idx if i != j and block[i, j] >= threshold}
    found = sim.candidates(threshold)
    assert {(int(i), int(j)) for i, j in zip(*found.nonzero(), strict=True)} == expected
    from cluster import candidates

    cells = candidates._candidates_from_cells(sim.vectors, *sim._search_bound(threshold))
    assert sim._search_bound(threshold)[1] is not None or gate_ar <= 0.7 or threshold < 0.1
    assert {(int(i), int(j)) for i, j in zip(*cells.nonzero(), strict=True)} >= expected
