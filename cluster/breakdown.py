"""A pair's score taken apart: each signal's value as a person reads it and its signed share of the score.

``explain`` (the library's :meth:`cluster.stories.CollapseResult.explain` and the CLI) shows this beside
the threshold so that a judgement can be audited: which signal pushed a pair over or under it.

- the learned judgement: each signal's share of the pair's logit (:func:`cluster.learned.contributions`;
  they add up to it), the probability sigmoid(logit), scaled down below the cosine gate;
- the hybrid judgement: the cosine and each correction that applies (script scaling, word overlap, a
  number clash, the time gap); they add up to the score (capped at 1);
- plain cosine: the cosine alone.

The values shown (shared words, numbers, scripts, time gap) are computed from the two headlines alone,
as every score is, so the same pair reads the same wherever it comes from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .judge import HybridSimilarity, PairwiseSimilarity
from .learned import (
    _TIME_CAP_HOURS,
    BELOW_GATE,
    FEATURES,
    HeadlineTable,
    LearnedSimilarity,
    contributions,
    pair_features,
)

SCRIPTS = ("Arabic", "Latin", "other")  # cluster.learned.script_of's codes, in words
_COLUMN = {name: k for k, name in enumerate(FEATURES)}


@dataclass(frozen=True)
class Signal:
    """One signal of a pair: ``value`` as a person reads it, ``contribution`` its signed share of the
    score (of the logit for the learned judgement)."""

    name: str
    value: str
    contribution: float

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "contribution": round(self.contribution, 4)}


@dataclass(frozen=True)
class Breakdown:
    """A pair's score by signal. ``kind``: learned, hybrid or cosine. ``total``: the sum of the
    contributions (the logit for learned, the uncapped score otherwise). ``gate``: the learned
    judgement's cosine gate, ``below_gate`` whether the pair's cosine is under it (its probability is
    then scaled by :data:`cluster.learned.BELOW_GATE`)."""

    kind: str
    signals: tuple[Signal, ...]
    total: float
    score: float
    gate: float | None = None
    below_gate: bool = False

    def to_dict(self) -> dict:
        data = {
            "kind": self.kind,
            "signals": [s.to_dict() for s in self.signals],
            "total": round(self.total, 4),
            "score": round(self.score, 4),
        }
        if self.kind == "learned":
            data["logit"] = data["total"]
            data["gate"] = self.gate
            data["below_gate"] = self.below_gate
        return data

    def lines(self, threshold: float) -> list[str]:
        """The text form: one line per signal with its signed contribution, then the score against the
        threshold."""
        width = max((len(s.value) for s in self.signals), default=0)
        out = [f"  {s.name:<13} {s.value:<{width}}  {s.contribution:+.3f}" for s in self.signals]
        verdict = "reaches" if self.score >= threshold else "is below"
        if self.kind == "learned":
            out.append(f"  {'= logit':<13} {'':<{width}}  {self.total:+.3f}")
            gated = ""
            if self.below_gate:
                gated = f", times {BELOW_GATE} because the cosine is below the gate {self.gate:.3f}"
            out.append(
                f"probability {self.score:.3f} (sigmoid of the logit{gated}) {verdict} the threshold {threshold:.3f}"
            )
        else:
            name = "score" if self.kind == "hybrid" else "cosine"
            out.append(f"{name} {self.score:.3f} {verdict} the threshold {threshold:.3f}")
        return out


def breakdown(
    similarity: PairwiseSimilarity,
    normalized: Sequence[str],
    times: Sequence[object] | np.ndarray | None,
    i: int,
    j: int,
) -> Breakdown:
    """The pair (``i``, ``j``) of a collection scored by ``similarity`` (over ``normalized`` texts with
    their publication ``times``), signal by signal."""
    score = float(similarity.pair(i, j))
    if isinstance(similarity, LearnedSimilarity):
        table, a, b = similarity.table, i, j
    else:
        # The readable values only: a table of the two headlines (every signal is a function of the pair).
        vectors = np.asarray(similarity.vectors)[[i, j]]  # type: ignore[attr-defined]
        pair_times = None if times is None else [times[i], times[j]]
        table, a, b = HeadlineTable(vectors, [normalized[i], normalized[j]], pair_times), 0, 1
    row = pair_features(table, np.array([a]), np.array([b]))[0]
    values = _values(table, row, a, b)
    if isinstance(similarity, LearnedSimilarity):
        params = similarity.params
        if not math.isfinite(float(row[_COLUMN["time_gap"]])):
            values["time gap"] = f"unknown (taken as {_hours_of_gap(params.unknown_gap):.1f} h)"
        shares = contributions(row, params)
        signals = tuple(Signal(name, values.get(name, ""), share) for name, share in shares.items())
        cos = float(row[_COLUMN["cos"]])
        return Breakdown("learned", signals, sum(shares.values()), score, params.gate, cos < params.gate)
    if isinstance(similarity, HybridSimilarity):
        shares = similarity.contributions(i, j)
        signals = tuple(Signal(name, values[name], share) for name, share in shares.items())
        return Breakdown("hybrid", signals, sum(shares.values()), score)
    return Breakdown("cosine", (Signal("cosine", values["cosine"], score),), score, score)


def _values(table: HeadlineTable, row: np.ndarray, a: int, b: int) -> dict[str, str]:
    """Each signal's value in words, from the pair's feature row and the two headlines' signals."""
    shared = int(round(float(table.stems[a].multiply(table.stems[b]).sum())))
    share = float(row[_COLUMN["stem_overlap"]])
    if row[_COLUMN["num_agree"]]:
        numbers = "agree"
    elif row[_COLUMN["num_clash"]]:
        numbers = "clash"
    else:
        numbers = "not both stated"
    gap = abs(float(table.hours[a] - table.hours[b]))
    return {
        "base": "",
        "cosine": f"{float(row[_COLUMN['cos']]):.3f}",
        "script": f"{SCRIPTS[int(table.script[a])]} / {SCRIPTS[int(table.script[b])]}",
        "shared words": f"{shared} ({share:.0%} of the shorter)",
        "numbers": numbers,
        "length": f"{int(table.n_words[a])} and {int(table.n_words[b])} words",
        "time gap": f"{gap:.1f} h" if math.isfinite(gap) else "unknown",
    }


def _hours_of_gap(feature: float) -> float:
    """The gap in hours whose time-gap feature is ``feature`` (the inverse of pair_features' scaling)."""
    return math.expm1(feature * math.log1p(_TIME_CAP_HOURS))
