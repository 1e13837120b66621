"""Grouping speed: the level's judgement against plain cosine on the same headlines, side by side.

    python scripts/quality_speed.py --n 100000                 # synthetic vectors, real texts (default)
    python scripts/quality_speed.py --n 10000 --real           # real SaudiNewsNet titles, embedded (cached)

Vectors: with ``--real`` the SaudiNewsNet titles are embedded with the default model (cached); otherwise
they are scripts/bench.py's synthetic news-stream vectors (its ``group`` benchmark data), paired with the
SaudiNewsNet titles (cycled) and their crawl times, since the judgement also reads texts and times. The CSV
is read in place, never copied. Cosine groups at its own threshold for the level (chosen on the shared dev
data, docs/quality.md), the judgement at its own; only grouping is timed (the judgement's per-headline
signals are built inside the timed call), best of ``--runs``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from cluster.group import group  # noqa: E402
from cluster.judge import CosineSimilarity  # noqa: E402
from cluster.normalize import normalize  # noqa: E402
from cluster.settings import judgement_for  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "corpora" / "saudinewsnet_titles.csv"
# Plain cosine's threshold per level, chosen by the same cross-validation as the judgement's
# (scripts/fit_judgement.py: OG2021 folds for event, UCI folds for story).
COSINE_THRESHOLD = {"event": 0.87, "story": 0.80}


def _time(stamp: str) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp.strip()).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def best_of(runs: int, make: Callable[[], object], threshold: float, linkage: str) -> tuple[float, int, int]:
    best, stories, edges = float("inf"), 0, 0
    for _ in range(runs):
        start = time.perf_counter()
        grouping = group(make(), threshold, linkage=linkage)
        best = min(best, time.perf_counter() - start)
        stories, edges = grouping.n_stories, grouping.edges.nnz // 2
    return best, stories, edges


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=CORPUS)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--level", choices=sorted(COSINE_THRESHOLD), default="event")
    parser.add_argument("--real", action="store_true", help="embed the real titles instead of synthetic vectors")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    with args.csv.open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("title", "").strip()]
    rows = [rows[k % len(rows)] for k in range(args.n)] if not args.real else rows[: args.n]
    texts = [normalize(row["title"]) for row in rows]
    times = [_time(row.get("date_extracted", "")) for row in rows]
    if args.real:
        from cluster.embed import get_embedder

        vectors = get_embedder("multilingual-e5-small").encode(texts)
    else:
        from bench import synthetic_stories

        vectors = synthetic_stories(len(texts))
    judgement = judgement_for("multilingual-e5-small", args.level)
    t_cos = COSINE_THRESHOLD[args.level]
    cosine, n_cosine, e_cosine = best_of(args.runs, lambda: CosineSimilarity(vectors), t_cos, judgement.linkage)
    learned, n_learned, e_learned = best_of(
        args.runs, lambda: judgement.similarity(vectors, texts, times), judgement.threshold, judgement.linkage
    )
    print(
        f"{len(texts)} headlines ({'real' if args.real else 'synthetic'} vectors), {args.level} level: "
        f"cosine >= {t_cos} {cosine:.2f} s ({n_cosine} groups, {e_cosine} edges), "
        f"{judgement.kind} p >= {judgement.threshold} (cosine floor {judgement.cosine_floor():.3f}) "
        f"{learned:.2f} s ({n_learned} groups, {e_learned} edges), ratio {learned / cosine:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
