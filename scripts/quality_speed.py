"""Grouping speed: the level's hybrid similarity against plain cosine on the same 10,000 headlines.

    python scripts/quality_speed.py [CSV] [--n 10000] [--level story]

CSV defaults to ../shared/data/corpora/saudinewsnet_titles.csv (column ``title``; read in place, never
copied). Vectors are embedded first (cached), so only grouping is timed: best of 3 runs each.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from cluster.embed import get_embedder
from cluster.group import group
from cluster.judge import CosineSimilarity, HybridSimilarity
from cluster.normalize import normalize
from cluster.settings import LEVELS, judgement_for

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "corpora" / "saudinewsnet_titles.csv"


def _time(stamp: str) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp.strip()).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def best_of(runs: int, make: Callable[[], object], threshold: float, linkage: str) -> tuple[float, int]:
    best, stories = float("inf"), 0
    for _ in range(runs):
        start = time.perf_counter()
        stories = group(make(), threshold, linkage=linkage).n_stories
        best = min(best, time.perf_counter() - start)
    return best, stories


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="?", type=Path, default=CORPUS)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--level", choices=LEVELS, default="story")
    args = parser.parse_args(argv)
    with args.csv.open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("title", "").strip()][: args.n]
    texts = [normalize(row["title"]) for row in rows]
    times = [_time(row.get("date_extracted", "")) for row in rows]
    vectors = get_embedder("multilingual-e5-small").encode(texts)
    settings = judgement_for("multilingual-e5-small", args.level)
    t = settings.threshold
    cosine, n_cosine = best_of(3, lambda: CosineSimilarity(vectors), t, settings.linkage)
    # The hybrid is built inside the timed call: its n-gram matrix is part of its cost.
    hybrid, n_hybrid = best_of(
        3, lambda: HybridSimilarity(vectors, texts, times=times, params=settings.params), t, settings.linkage
    )
    print(
        f"{len(texts)} headlines, {args.level} threshold {t}: cosine {cosine:.2f} s ({n_cosine} stories), "
        f"hybrid {hybrid:.2f} s ({n_hybrid} stories), ratio {hybrid / cosine:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
