"""Replay days of a real corpus through the README's cron path and print how stable the ids are.

Each UTC day's headlines (in time order) go through ``index add``; after each day, ``nightly`` runs over
the 48 hours up to that day's end, as the cron lines of the README do. Then ``index build`` runs over the
same day files into another folder. Printed (issue 20's targets in brackets):

* the share of headlines whose story id / event id changed after their first nightly (at any later
  nightly of the replay; headlines of the last day have no later nightly and are left out) [<= 3% / 5%];
* the share the first nightly kept in the story / event online assignment gave them [>= 90%], counted two
  ways: the same id, and still together with every headline online assignment grouped it with (a merge
  of its group into another keeps it there; a split does not);
* whether ``index build`` gives the same partition (and ids) at both levels [same];
* whether every stored headline has both ids and every event lies inside one story [yes].

    python scripts/replay_stability.py snn --first 2015-08-01 --days 4 --sample 0.4
    python scripts/replay_stability.py og2021

``snn``: corpora/saudinewsnet_titles.csv (crawl times as UTC; a deterministic sample of each day);
``og2021``: clusters/og2021_events_dev.tsv, every day. Vectors come from the embedding cache
(``HEADLINE_CLUSTER_CACHE``), so a second replay of the same headlines embeds nothing.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import sys
import time
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.build import EmbedderSpec, ReadOptions, build_local  # noqa: E402
from cluster.nightly import run_nightly  # noqa: E402
from cluster.store import HeadlineIndex, read_input  # noqa: E402

DATA = Path("/work/shared/data")
LAST = timedelta(hours=48)


def load(corpus: str, data: Path, first: str | None, days: int | None, sample: float) -> list[dict]:
    """Rows {id, text, published_at (aware datetime)} of the chosen days, in time then file order."""
    rows: list[dict] = []
    if corpus == "snn":
        with (data / "corpora" / "saudinewsnet_titles.csv").open(encoding="utf-8", newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                when = datetime.strptime(row["date_extracted"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
                rows.append({"id": f"snn-{line}", "text": row["title"], "published_at": when, "source": row["source"]})
    else:
        with (data / "clusters" / "og2021_events_dev.tsv").open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                when = datetime.strptime(row["published_at"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
                rows.append({"id": f"og-{row['id']}", "text": row["text"], "published_at": when})
    rows = [r for r in rows if r["text"].strip()]
    start = date.fromisoformat(first) if first else min(r["published_at"].date() for r in rows)
    end = start + timedelta(days=days) if days else date.max
    rows = [r for r in rows if start <= r["published_at"].date() < end and _kept(r["id"], sample)]
    return sorted(rows, key=lambda r: r["published_at"])  # stable: file order within one second


def _kept(key: str, sample: float) -> bool:
    """A deterministic sample: the same headlines every run."""
    return sample >= 1.0 or int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < sample


def write_days(rows: list[dict], folder: Path) -> list[tuple[date, Path]]:
    by_day: dict[date, list[dict]] = defaultdict(list)
    for row in rows:
        by_day[row["published_at"].date()].append(row)
    files = []
    for day in sorted(by_day):
        path = folder / f"{day}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for row in by_day[day]:
                handle.write(json.dumps({**row, "published_at": row["published_at"].isoformat()}, ensure_ascii=False))
                handle.write("\n")
        files.append((day, path))
    return files


def ids_of(index: HeadlineIndex) -> dict[str, tuple[str, str]]:
    return {h.id: (h.story_id, h.event_id) for h in index.headlines()}


def partition(ids: dict[str, tuple[str, str]], level: int) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = defaultdict(set)
    for headline, pair in ids.items():
        groups[pair[level]].add(headline)
    return {frozenset(g) for g in groups.values()}


def share(part: int, whole: int) -> str:
    return f"{part:,} of {whole:,} ({100 * part / whole:.1f}%)" if whole else "0 of 0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", choices=("snn", "og2021"))
    parser.add_argument("--first", help="first day (YYYY-MM-DD; default: the corpus's first)")
    parser.add_argument("--days", type=int, help="how many days (default: all from --first)")
    parser.add_argument("--sample", type=float, default=1.0, help="share of each day's headlines kept (default 1)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/replay-stability"))
    parser.add_argument("--no-build", action="store_true", help="skip the index build comparison")
    args = parser.parse_args()

    rows = load(args.corpus, args.data, args.first, args.days, args.sample)
    shutil.rmtree(args.work, ignore_errors=True)
    (args.work / "days").mkdir(parents=True)
    files = write_days(rows, args.work / "days")
    print(f"{args.corpus}: {len(rows):,} headlines over {len(files)} days ({files[0][0]} .. {files[-1][0]})")

    clock = time.monotonic()
    online: dict[str, tuple[str, str]] = {}  # ids right after the headline's add
    first: dict[str, tuple[str, str]] = {}  # ids right after its first nightly
    changed_after = [set(), set()]  # headlines whose story / event id changed at a later nightly
    together = [0, 0]  # headlines whose first nightly kept them with every headline online grouped them with
    with HeadlineIndex.open(args.work / "cron", create=True, notify=lambda _: None) as index:
        embedder = index.embedder_in_use()
        for day, path in files:
            day_ids = {r.id for r in read_input([str(path)]).records}
            index.add(read_input([str(path)]).records)
            now = ids_of(index)
            online.update({i: now[i] for i in day_ids})
            until = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
            result = run_nightly(index, until - LAST, until)
            after = ids_of(index)
            for headline, pair in after.items():
                if headline in first:
                    for level in (0, 1):
                        if pair[level] != first[headline][level]:
                            changed_after[level].add(headline)
            first.update({i: after[i] for i in day_ids})
            for level in (0, 1):
                mates: dict[str, list[str]] = defaultdict(list)
                for headline, pair in now.items():
                    mates[pair[level]].append(headline)
                together[level] += sum(
                    all(after[m][level] == after[i][level] for m in mates[now[i][level]]) for i in day_ids
                )
            print(
                f"  {day}: +{len(day_ids):,}; nightly {result.headlines:,} in the window, stories: "
                f"{result.merges} merges, {result.splits} splits, {result.changed} changed; events: "
                f"{result.event_merges} merges, {result.event_splits} splits, {result.changed_events} changed"
            )
        final = ids_of(index)
    cron_seconds = time.monotonic() - clock

    later = [i for i in first if i not in {r.id for r in read_input([str(files[-1][1])]).records}]
    print(f"cron path: {cron_seconds:.0f} s")
    for level, name, target in ((0, "story", "3%"), (1, "event", "5%")):
        moved = sum(i in changed_after[level] for i in later)
        print(f"  {name} id changed after the first nightly: {share(moved, len(later))} (target <= {target})")
    for level, name in ((0, "story"), (1, "event")):
        kept = sum(first[i][level] == online[i][level] for i in online)
        print(f"  first nightly kept the online {name} id: {share(kept, len(online))} (target >= 90%)")
        print(
            f"  first nightly kept with every headline of its online {name}: "
            f"{share(together[level], len(online))} (a merge into another {name} keeps them together)"
        )
    story_of_event: dict[str, set[str]] = defaultdict(set)
    for story, event in final.values():
        story_of_event[event].add(story)
    both = all(s and e for s, e in final.values())
    nested = all(len(s) == 1 for s in story_of_event.values())
    print(
        f"  {len(final):,} headlines, {len(set(s for s, _ in final.values())):,} stories, "
        f"{len(story_of_event):,} events; every headline has both ids: {'yes' if both else 'NO'}; "
        f"every event inside one story: {'yes' if nested else 'NO'}"
    )

    if not args.no_build:
        clock = time.monotonic()
        with HeadlineIndex.open(args.work / "built", create=True, notify=lambda _: None) as built_index:
            spec = EmbedderSpec(built_index.model, None, embedder)
            build_local(built_index, [str(p) for _, p in files], ReadOptions(), spec, quiet=True)
            built = ids_of(built_index)
        print(f"index build: {time.monotonic() - clock:.0f} s")
        for level, name in ((0, "story"), (1, "event")):
            same = partition(built, level) == partition(final, level)
            print(f"  same {name} partition as add + nightly: {'yes' if same else 'NO'}")
        print(f"  same ids: {'yes' if built == final else 'NO'}")


if __name__ == "__main__":
    main()
