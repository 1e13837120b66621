"""Similarity experiments on the dev/test splits (see docs/quality.md for the results and the choice).

    python scripts/split_data.py                     # once: build/splits/
    python scripts/quality_experiments.py pairs      # pair sets: variants of the score, dev and test
    python scripts/quality_experiments.py clusters   # UCI stories: threshold fitted on dev, applied to test
    python scripts/quality_experiments.py prompts    # e5 prompt and normalization choices

Every figure is computed by cluster.evaluate on the product's own scoring code (cluster.judge);
thresholds and weights are chosen on dev only, then reported on test.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from datetime import datetime
from pathlib import Path

import numpy as np

from cluster.embed import get_embedder
from cluster.evaluate import Cuts, cluster_metrics, pair_metrics
from cluster.group import group
from cluster.judge import HybridParams, HybridSimilarity
from cluster.normalize import normalize

ROOT = Path(__file__).resolve().parent.parent
SPLITS = ROOT / "build" / "splits"
PAIR_SETS = {
    "sts_en": ("sts_headlines_en_2013_2015", False),
    "sts17_ar": ("sts17_ar_ar", False),
    "semeval_ar": ("semeval2022_ar_slugs_train", True),
}
PAIR_HEADER = (
    "| variant | sts_en dev ρ | sts_en test ρ | sts17_ar dev ρ | sts17_ar test ρ "
    "| semeval dev AUC | semeval test AUC |\n"
    "|---|---|---|---|---|---|---|"
)


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def embed(texts: list[str], prompt: str | None = None) -> np.ndarray:
    embedder = get_embedder("multilingual-e5-small")
    if prompt is None:
        return embedder.encode(texts)
    # Another prompt than the model's default: straight through the model, not the product's cache.
    return embedder._model.encode(texts, prompt=prompt, normalize_embeddings=True, batch_size=64)


def pair_scores(rows: list[dict[str, str]], params: HybridParams | None, **opts) -> np.ndarray:
    strip = opts.get("strip", True)
    texts = [normalize(r["text_a"], strip_prefixes=strip) for r in rows] + [
        normalize(r["text_b"], strip_prefixes=strip) for r in rows
    ]
    if opts.get("raw"):
        texts = [r["text_a"] for r in rows] + [r["text_b"] for r in rows]
    vectors = embed(texts, opts.get("prompt"))
    n = len(rows)
    sim = HybridSimilarity(vectors, texts, params=params or HybridParams())
    return sim.pairs(np.arange(n), np.arange(n, 2 * n))


def pair_row(name: str, params: HybridParams | None, **opts) -> str:
    cells = []
    for key, (stem, lower) in PAIR_SETS.items():
        for part in ("dev", "test"):
            rows = read_tsv(SPLITS / f"{stem}.{part}.tsv")
            gold = np.array([float(r["score"]) for r in rows])
            m = pair_metrics(pair_scores(rows, params, **opts), gold, Cuts.default(lower))
            figure = m["auc"] if key == "semeval_ar" else m["spearman"]
            cells.append(f"{figure:.3f}")
    return f"| {name} | " + " | ".join(cells) + " |"


def cmd_pairs() -> None:
    print(PAIR_HEADER)
    print(pair_row("cosine", None))
    for w, ngram, idf in itertools.product((0.1, 0.2, 0.3, 0.5), ((3,), (3, 4), (2, 3, 4)), (True, False)):
        params = HybridParams(lexical_weight=w, ngram=ngram, idf=idf)
        print(pair_row(f"lexical w={w} n={ngram} idf={idf}", params), flush=True)
    for pen in (0.02, 0.05):
        params = HybridParams(lexical_weight=0.3, ngram=(3, 4), number_penalty=pen)
        print(pair_row(f"lexical w=0.3 n=(3,4) idf + numbers {pen}", params), flush=True)


def cmd_prompts() -> None:
    print(PAIR_HEADER)
    print(pair_row("query: + normalize + strip (product)", None))
    print(pair_row("query: + normalize, no prefix strip", None, strip=False))
    print(pair_row("passage: + normalize + strip", None, prompt="passage: "))
    print(pair_row("no prompt + normalize + strip", None, prompt=""))


def uci(part: str) -> tuple[list[str], list[str], list[datetime]]:
    rows = read_tsv(SPLITS / f"uci_news_stories_dev.{part}.tsv")
    texts = [normalize(r["text"]) for r in rows]
    times = [datetime.fromisoformat(r["published_at"].replace("Z", "+00:00")) for r in rows]
    return texts, [r["story"] for r in rows], times


def cluster_eval(part: str, params: HybridParams, threshold: float, linkage: str) -> dict:
    texts, labels, times = uci(part)
    sim = HybridSimilarity(embed(texts), texts, times=times, params=params)
    return cluster_metrics(labels, group(sim, threshold, linkage=linkage).labels)


def fit_threshold(params: HybridParams, linkage: str, grid: np.ndarray) -> tuple[float, float]:
    texts, labels, times = uci("dev")
    sim = HybridSimilarity(embed(texts), texts, times=times, params=params)
    best = (-1.0, 0.0)
    for t in grid:
        f1 = cluster_metrics(labels, group(sim, float(t), linkage=linkage).labels)["bcubed_f1"]
        best = max(best, (f1, float(t)))
    return best[1], best[0]


CLUSTER_VARIANTS: dict[str, tuple[HybridParams, str]] = {
    "cosine average": (HybridParams(), "average"),
    "cosine single": (HybridParams(), "single"),
    "cosine complete": (HybridParams(), "complete"),
    "lexical 0.05 average": (HybridParams(lexical_weight=0.05, lexical_center=0.2), "average"),
    "lexical 0.1 average": (HybridParams(lexical_weight=0.1, lexical_center=0.2), "average"),
    "numbers 0.03 average": (HybridParams(number_penalty=0.03), "average"),
    "time 0.02/24h average": (HybridParams(time_penalty=0.02), "average"),
    "time 0.05/24h average": (HybridParams(time_penalty=0.05), "average"),
    "time 0.1/24h average": (HybridParams(time_penalty=0.1), "average"),
    "time 0.05/12h average": (HybridParams(time_penalty=0.05, time_scale_hours=12), "average"),
    "time 0.05/48h average": (HybridParams(time_penalty=0.05, time_scale_hours=48), "average"),
    "time 0.05/24h complete": (HybridParams(time_penalty=0.05), "complete"),
    "time 0.05/24h + lexical 0.05": (
        HybridParams(time_penalty=0.05, lexical_weight=0.05, lexical_center=0.2),
        "average",
    ),
}


def cmd_clusters(names: list[str] | None = None) -> None:
    grid = np.round(np.arange(0.70, 0.93, 0.01), 3)
    print("| variant | threshold (fitted on dev) | dev B3 F1 | test B3 F1 | test ARI | test pred/true stories |")
    print("|---|---|---|---|---|---|")
    for name in names or list(CLUSTER_VARIANTS):
        params, linkage = CLUSTER_VARIANTS[name]
        t, dev_f1 = fit_threshold(params, linkage, grid)
        m = cluster_eval("test", params, t, linkage)
        print(
            f"| {name} | {t:.2f} | {dev_f1:.3f} | {m['bcubed_f1']:.3f} | {m['ari']:.3f} | "
            f"{m['pred_stories']}/{m['true_stories']} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["pairs", "prompts", "clusters"])
    parser.add_argument("variants", nargs="*", help="clusters: only these variants (names as printed)")
    args = parser.parse_args(argv)
    if not SPLITS.is_dir():
        print("error: build/splits missing: run python scripts/split_data.py first", file=sys.stderr)
        return 2
    if args.what == "clusters":
        cmd_clusters(args.variants or None)
    else:
        {"pairs": cmd_pairs, "prompts": cmd_prompts}[args.what]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
