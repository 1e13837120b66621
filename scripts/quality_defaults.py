"""The shipped defaults, end to end through ``collapse``, beside plain cosine, on the shared sets.

    HEADLINE_CLUSTER_CACHE=/tmp/hc-cache python scripts/quality_defaults.py

For OG2021 events and the UCI stories, fold by fold (the folds of scripts/fit_judgement.py: whole
clusters), each fold is collapsed at the event and the story level with the product's defaults, once with
its ``published_at`` times and once without, and scored by B-cubed F1 against the gold clusters. The mixed
stream (streams/mixed_stream_dev.tsv) is collapsed whole at the event level, with and without times: the
share of OG2021 headlines grouped with a SaudiNewsNet title, and the OG2021 rows' B-cubed F1. Plain cosine
(average linkage) is scored at the threshold that is best on the other four folds (on the stream: the
event level's cross-validated cosine threshold). The shipped weights were fitted on all the shared data
(OG2021 included, the stream's SaudiNewsNet titles not), so these figures are in-sample for OG2021; the
cross-validated ones are scripts/fit_judgement.py's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from judgement_data import DATA, FOLDS, load_clusters, read_tsv  # noqa: E402

from cluster import collapse  # noqa: E402
from cluster.embed import get_embedder  # noqa: E402
from cluster.evaluate import cluster_metrics  # noqa: E402
from cluster.group import group  # noqa: E402
from cluster.judge import CosineSimilarity  # noqa: E402

COSINE_GRID = np.round(np.arange(0.78, 0.921, 0.01), 2)
STREAM_COSINE = 0.87  # the event level's cosine threshold chosen by scripts/fit_judgement.py


def labels_of(result, n: int) -> np.ndarray:
    labels = np.empty(n, dtype=int)
    for number, story in enumerate(result.stories):
        for member in story.members:
            labels[member.index] = number
    return labels


def summary(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} (worst {values.min():.3f})"


def stream_figures(gold: np.ndarray, labels: np.ndarray) -> str:
    labelled = gold != "-"
    polluted = np.zeros(int(labels.max()) + 1, dtype=bool)
    polluted[labels[~labelled]] = True
    contaminated = float(polluted[labels[labelled]].mean())
    f1 = cluster_metrics(gold[labelled].tolist(), labels[labelled].tolist())["bcubed_f1"]
    return f"contaminated {100 * contaminated:.2f}%, OG2021 F1 {f1:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    embedder = get_embedder(None)
    print("| set | plain cosine (threshold from the other folds) | level | with times | without times |")
    print("|---|---|---|---|---|")
    for file, name in (("og2021_events_dev.tsv", "og2021"), ("uci_news_stories_dev.tsv", "uci")):
        rows = read_tsv(DATA / "clusters" / file)
        cs = load_clusters(file, name)
        cosine, figures = [], {}
        for fold in range(FOLDS):
            members = np.flatnonzero(cs.fold == fold)
            gold = cs.labels[members].tolist()
            similarity = CosineSimilarity(cs.table.vectors[members])
            grouped = [group(similarity, t).labels.tolist() for t in COSINE_GRID]
            cosine.append([cluster_metrics(gold, labels)["bcubed_f1"] for labels in grouped])
            timed = [{"text": rows[i]["text"].strip(), "published_at": rows[i].get("published_at")} for i in members]
            timed = [{k: v for k, v in item.items() if v} for item in timed]  # a blank time is no time
            for level in ("event", "story"):
                for with_times in (True, False):
                    items = timed if with_times else [item["text"] for item in timed]
                    result = collapse(items, level=level, embedder=embedder)
                    f1 = cluster_metrics(gold, labels_of(result, len(members)).tolist())["bcubed_f1"]
                    figures.setdefault((level, with_times), []).append(f1)
        per_fold = np.array(cosine)
        chosen = [per_fold[f, int(np.argmax(np.delete(per_fold, f, 0).mean(0)))] for f in range(FOLDS)]
        baseline = f"{summary(chosen)} at cos >= {COSINE_GRID[int(np.argmax(per_fold.mean(0)))]:.2f}"
        for level in ("event", "story"):
            print(
                f"| {name} | {baseline} | {level} | {summary(figures[(level, True)])} "
                f"| {summary(figures[(level, False)])} |",
                flush=True,
            )
    rows = read_tsv(DATA / "streams" / "mixed_stream_dev.tsv")
    gold = np.array([r["story"] for r in rows], dtype=object)
    timed = [{"text": r["text"], "published_at": r["published_at"]} for r in rows]
    cells = []
    for with_times in (True, False):
        items = timed if with_times else [r["text"] for r in rows]
        cells.append(stream_figures(gold, labels_of(collapse(items, level="event", embedder=embedder), len(rows))))
    vectors = embedder.encode([item["text"] for item in timed])
    cosine_labels = group(CosineSimilarity(np.asarray(vectors)), STREAM_COSINE).labels
    baseline = f"{stream_figures(gold, cosine_labels)} at cos >= {STREAM_COSINE}"
    print(f"| mixed stream (whole) | {baseline} | event | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
