"""The seed list check: how the level's similarity groups ../shared/data/seed_related.tsv.

    python scripts/quality_seed.py                 # the story level's built-in settings
    python scripts/quality_seed.py --similarity cosine --threshold 0.90

Prints the stories found, whether the six A rows are together and row B apart, and the similarity of B
to each A row next to the A rows' own similarities (the hard case: same topic, different event).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from cluster.embed import get_embedder
from cluster.group import group
from cluster.judge import SIMILARITIES
from cluster.normalize import normalize
from cluster.settings import LEVELS, judgement_for

SEED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "seed_related.tsv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", choices=LEVELS, default="story")
    parser.add_argument("--similarity", choices=SIMILARITIES)
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--seed", type=Path, default=SEED)
    args = parser.parse_args(argv)
    with args.seed.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    settings = judgement_for("multilingual-e5-small", args.level)
    kind = args.similarity or settings.kind
    threshold = settings.threshold if args.threshold is None else args.threshold
    texts = [normalize(r["text"]) for r in rows]
    vectors = get_embedder("multilingual-e5-small").encode(texts)
    similarity = settings.with_kind(kind).similarity(vectors, texts)
    labels = group(similarity, threshold, linkage=settings.linkage).labels
    gold = [r["story"] for r in rows]
    a_rows = [k for k, g in enumerate(gold) if g == "A"]
    b_rows = [k for k, g in enumerate(gold) if g == "B"]
    everything = np.arange(len(rows))
    scores = similarity.block(everything, everything)
    for k, row in enumerate(rows):
        print(f"story {labels[k]}  gold {row['story']}{'/' + row['also_ok'] if row['also_ok'] else ''}  {row['text']}")
    a_pairs = [scores[i, j] for i in a_rows for j in a_rows if i < j]
    b_to_a = [scores[b, a] for b in b_rows for a in a_rows]
    a_together = len({labels[k] for k in a_rows}) == 1
    b_apart = all(labels[b] not in {labels[a] for a in a_rows} for b in b_rows)
    print(
        f"{kind} threshold {threshold:.3f}: {len(set(labels.tolist()))} stories; A rows together: {a_together}; "
        f"B apart: {b_apart}; A-A {min(a_pairs):.3f}-{max(a_pairs):.3f}; B-A {min(b_to_a):.3f}-{max(b_to_a):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
