"""The shared labelled data, read and embedded for fitting and scoring the judgement (scripts/fit_judgement.py).

Everything here reads ``../shared/data`` (never shipped): the labelled pair sets, the OG2021 events and UCI
stories, the mixed stream (OG2021 events interleaved with SaudiNewsNet titles, its README entry) and a
*training* stream built the same way from the SaudiNewsNet titles the dev stream does not hold, so that the
realistic negatives a judgement is fitted on never include a title it is scored on.

Folds hold out whole clusters (OG2021 events, UCI stories), whole days (SaudiNewsNet titles) or single
pairs (the pair sets), by a salted hash, so every script that imports this module cuts the same folds.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cluster.embed import get_embedder  # noqa: E402
from cluster.learned import HeadlineTable  # noqa: E402
from cluster.normalize import normalize  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
FOLDS = 5
SALT = "headline-cluster-judgement-v1"
# The dev stream's construction (streams/build_mixed_stream.py): OG2021 times shifted by a constant, Saudi
# titles kept where sha256("dev:url") % 100 < 30, events wholly inside the crawl range.
STREAM_SHIFT = datetime(2015, 7, 21) - datetime(2021, 7, 15)
STREAM_RANGE = (datetime(2015, 7, 21, tzinfo=timezone.utc), datetime(2015, 8, 12, tzinfo=timezone.utc))
DEV_SALT, DEV_KEEP = "dev", 30


def fold_of(key: str) -> int:
    digest = hashlib.sha256(f"{SALT}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % FOLDS


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def parse_time(text: str) -> datetime | None:
    text = (text or "").strip()
    if not text:
        return None
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def embed_all(texts: list[str]) -> tuple[list[str], np.ndarray]:
    normalized = [normalize(t) for t in texts]
    return normalized, get_embedder("multilingual-e5-small").encode(normalized)


@dataclass
class Collection:
    """Headlines with their signals, gold cluster ('' where unlabelled), source and fold per headline."""

    name: str
    texts: list[str]
    table: HeadlineTable
    labels: np.ndarray
    sources: np.ndarray
    fold: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labelled(self) -> np.ndarray:
        return self.labels != ""


def _collection(name: str, texts, times, labels, sources, folds) -> Collection:
    normalized, vectors = embed_all(texts)
    return Collection(
        name,
        list(texts),
        HeadlineTable(vectors, normalized, times),
        np.array(labels, dtype=object),
        np.array(sources, dtype=object),
        np.array(folds, dtype=np.int64),
    )


def load_clusters(file: str, name: str) -> Collection:
    rows = read_tsv(DATA / "clusters" / file)
    return _collection(
        name,
        [r["text"].strip() for r in rows],
        [parse_time(r.get("published_at", "")) for r in rows],
        [r["story"] for r in rows],
        [name] * len(rows),
        [fold_of(r["story"]) for r in rows],
    )


def _saudi_fold(stamp: datetime) -> int:
    return fold_of("saudi-day:" + stamp.date().isoformat())


def load_stream(path: Path | None = None, name: str = "mixed_stream_dev") -> Collection:
    """A stream TSV (id story source published_at text): OG2021 rows fold by event, others by day."""
    rows = read_tsv(path or DATA / "streams" / "mixed_stream_dev.tsv")
    times = [parse_time(r["published_at"]) for r in rows]
    labels = ["" if r["story"] == "-" else r["story"] for r in rows]
    folds = [fold_of(lab) if lab else _saudi_fold(t) for lab, t in zip(labels, times, strict=True)]
    return _collection(name, [r["text"] for r in rows], times, labels, [r["source"] for r in rows], folds)


def _dev_sample(url: str) -> bool:
    return int(hashlib.sha256(f"{DEV_SALT}:{url}".encode()).hexdigest(), 16) % 100 < DEV_KEEP


def saudi_titles(*, dev: bool) -> list[tuple[datetime, str, str]]:
    """(crawl time, source, title) of the SaudiNewsNet titles in (``dev``) or outside the dev stream's sample."""
    out = []
    with (DATA / "corpora" / "saudinewsnet_titles.csv").open(encoding="utf-8", newline="") as handle:
        for r in csv.DictReader(handle):
            title = " ".join(r["title"].replace("\t", " ").split())
            if title and _dev_sample(r["url"]) == dev:
                stamp = datetime.fromisoformat(r["date_extracted"]).replace(tzinfo=timezone.utc)
                out.append((stamp, r["source"], title))
    return out


def training_stream() -> Collection:
    """OG2021 dev events (times shifted as in the dev stream) with the SaudiNewsNet titles the dev stream
    does not hold: the realistic negatives of the fit, disjoint from the dev stream's Saudi titles."""
    lo, hi = STREAM_RANGE
    events: dict[str, list[tuple[datetime, str]]] = {}
    for r in read_tsv(DATA / "clusters" / "og2021_events_dev.tsv"):
        stamp = parse_time(r["published_at"])
        assert stamp is not None
        events.setdefault(r["story"], []).append((stamp + STREAM_SHIFT, r["text"].strip()))
    texts, times, labels, sources = [], [], [], []
    for story, items in events.items():
        if all(lo <= t < hi for t, _ in items):
            for t, text in items:
                texts.append(text)
                times.append(t)
                labels.append(story)
                sources.append("og2021")
    for t, source, title in saudi_titles(dev=False):
        texts.append(title)
        times.append(t)
        labels.append("")
        sources.append(source)
    folds = [fold_of(lab) if lab else _saudi_fold(t) for lab, t in zip(labels, times, strict=True)]
    return _collection("training_stream", texts, times, labels, sources, folds)


def subset_table(table: HeadlineTable, members: np.ndarray) -> HeadlineTable:
    sub = HeadlineTable.__new__(HeadlineTable)
    for name in ("vectors", "n_stems", "n_numbers", "n_words", "script", "hours", "stems", "grams", "numbers"):
        setattr(sub, name, getattr(table, name)[members])
    return sub


__all__ = [
    "DATA",
    "FOLDS",
    "Collection",
    "embed_all",
    "fold_of",
    "load_clusters",
    "load_stream",
    "parse_time",
    "read_tsv",
    "saudi_titles",
    "subset_table",
    "training_stream",
]
