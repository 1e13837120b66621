"""The shipped defaults, end to end through ``collapse``, beside plain cosine, on the shared cluster sets.

    HEADLINE_CLUSTER_CACHE=/tmp/hc-cache python scripts/quality_defaults.py [--data ../shared/data]

For OG2021 events and the UCI stories, fold by fold (the folds of scripts/fit_judgement.py: whole
clusters), each fold is collapsed at the event and the story level with the product's defaults, once with
its ``published_at`` times and once without, and scored by B-cubed F1 against the gold clusters. Plain
cosine (average linkage) is scored at the threshold that is best on the other four folds. The shipped
event weights were fitted on all the shared data, so its figures here are in-sample; the cross-validated
ones are scripts/fit_judgement.py's. The story level's hybrid has only its fixed threshold and time
penalty, so its figures here are as good as held out, except that 0.90 was chosen on earlier dev splits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import fit_judgement as fj  # noqa: E402

from cluster import collapse  # noqa: E402
from cluster.embed import get_embedder  # noqa: E402
from cluster.evaluate import cluster_metrics  # noqa: E402


def labels_of(result, n: int) -> list[int]:
    labels = np.empty(n, dtype=int)
    for number, story in enumerate(result.stories):
        for member in story.members:
            labels[member.index] = number
    return labels.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    embedder = get_embedder(None)
    print("| set | plain cosine (threshold from the other folds) | level | with times | without times |")
    print("|---|---|---|---|---|")
    for file, name in (("og2021_events_dev.tsv", "og2021"), ("uci_news_stories_dev.tsv", "uci")):
        rows = fj.read_tsv(args.data / "clusters" / file)
        cs = fj.load_clusters(args.data, file, name)
        cosine, figures = [], {}
        for fold in range(fj.FOLDS):
            members = np.flatnonzero(cs.fold == fold)
            vectors = cs.table.vectors[members]
            cosine.append(fj.grouping_f1(cs, members, vectors @ vectors.T, fj.COS_GRID))
            gold = cs.labels[members].tolist()
            timed = [{"text": rows[i]["text"].strip(), "published_at": rows[i].get("published_at")} for i in members]
            timed = [{k: v for k, v in item.items() if v} for item in timed]  # a blank time is no time
            for level in ("event", "story"):
                for with_times in (True, False):
                    items = timed if with_times else [item["text"] for item in timed]
                    result = collapse(items, level=level, embedder=embedder)
                    f1 = cluster_metrics(gold, labels_of(result, len(members)))["bcubed_f1"]
                    figures.setdefault((level, with_times), []).append(f1)
        chosen, best = fj.cv_choice(np.array(cosine))
        baseline = f"{fj.summary(chosen)} at cos >= {fj.COS_GRID[best]:.2f}"
        for level in ("event", "story"):
            print(
                f"| {name} | {baseline} | {level} | {fj.summary(figures[(level, True)])} "
                f"| {fj.summary(figures[(level, False)])} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
