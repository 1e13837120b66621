"""The nightly job: re-group a time window with the batch algorithm, then reconcile story ids.

Online assignment (``HeadlineIndex.add``) sees headlines one at a time; the batch grouping
(:func:`cluster.group.group`, average linkage) sees the whole window at once and so groups better. The
nightly job runs the batch grouping over the window and maps its clusters back onto the stored story
ids so that ids stay stable (:func:`reconcile`):

* An old story *persists into* the cluster that holds the most of its headlines in the window, when that
  is at least half of them (ties: the cluster whose first headline is oldest).
* A cluster that old stories persist into keeps the id of the one contributing the most headlines (ties:
  the older story); the others are **merged** into it: all their headlines, in the window or not, take
  the surviving id.
* A cluster no old story persists into gets a new id. Headlines that leave their old story for a
  cluster with another id are recorded as a **split** of the old story.
* Every merge and split goes into the ``story_history`` table: old id, new id, when, and why.

So an unchanged story keeps its id and its headlines keep theirs; an id changes only when the grouping
evidence changed. Running the same window again changes nothing, and the outputs (``stories.jsonl``,
``headlines.csv``, ``report.html``) are written from the database in a fixed order, so they come out
byte-identical. The database changes are one transaction and the outputs are written to temporary
files renamed into place, so a killed run, run again, finishes the job.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from .errors import InputError
from .group import CosineSimilarity, Grouping, group
from .report import ReportData, render_report
from .store import Headline, HeadlineIndex, StoryInfo, _story_order, _utc_now, atomic_write_text, iso

OUTPUT_FILES = ("stories.jsonl", "headlines.csv", "report.html")
_PAIRS_PER_STORY = 300  # members of a story whose pairs go into the report's similarity histogram


@dataclass(frozen=True)
class Change:
    old_id: str
    new_id: str
    kind: str  # merge | split
    reason: str


@dataclass
class Reconciliation:
    labels: list[str]  # the story id of each headline of the window, in input order
    merged: dict[str, str]  # old id -> the id it was merged into
    changes: list[Change]
    new_ids: list[str]
    next_story: int


def reconcile(old: Sequence[str], clusters: Sequence[Sequence[int]], next_story: int) -> Reconciliation:
    """Story ids for the batch ``clusters`` (positions into ``old``, ordered by first position).

    ``old[p]`` is the stored story id of position p; new ids are numbered from ``next_story``. The
    rules are in the module docstring; every tie is broken by position or id, so the result is a
    function of the inputs alone.
    """
    cluster_of = np.empty(len(old), dtype=np.int64)
    for k, members in enumerate(clusters):
        cluster_of[list(members)] = k
    in_window = Counter(old)
    counts: dict[str, Counter] = defaultdict(Counter)
    for position, story in enumerate(old):
        counts[story][int(cluster_of[position])] += 1
    persisting: dict[int, list[str]] = defaultdict(list)
    for story, per_cluster in counts.items():
        home, held = min(per_cluster.items(), key=lambda item: (-item[1], item[0]))
        if 2 * held >= in_window[story]:
            persisting[home].append(story)
    cluster_id: list[str] = []
    merged: dict[str, str] = {}
    changes: list[Change] = []
    new_ids: list[str] = []
    for k in range(len(clusters)):
        claimants = persisting.get(k)
        if not claimants:
            new_id = f"s{next_story:06d}"
            next_story += 1
            new_ids.append(new_id)
            cluster_id.append(new_id)
            continue
        winner = min(claimants, key=lambda s: (-counts[s][k], _story_order(s)))
        cluster_id.append(winner)
        for story in sorted(claimants, key=_story_order):
            if story != winner:
                merged[story] = winner
                changes.append(
                    Change(
                        story,
                        winner,
                        "merge",
                        f"{counts[story][k]} of its {in_window[story]} headline(s) in the window were grouped "
                        f"with {counts[winner][k]} of {winner}",
                    )
                )
    for story in sorted(counts, key=_story_order):
        final = merged.get(story, story if story in cluster_id else None)
        moved: Counter = Counter()
        for k, held in counts[story].items():
            if cluster_id[k] != final:
                moved[cluster_id[k]] += held
        for target in sorted(moved, key=_story_order):
            changes.append(
                Change(
                    story,
                    target,
                    "split",
                    f"{moved[target]} of its {in_window[story]} headline(s) in the window were grouped apart, "
                    f"into {target}",
                )
            )
    labels = [cluster_id[int(k)] for k in cluster_of]
    return Reconciliation(labels, merged, changes, new_ids, next_story)


@dataclass
class NightlyResult:
    since: str
    until: str
    run: int
    resumed: bool
    headlines: int  # in the window
    stories: int  # with headlines in the window
    changes: list[Change]
    new_stories: int
    changed: int  # headlines whose story id changed (in the window, or merged from outside it)
    outputs: dict[str, Path] = field(default_factory=dict)

    @property
    def merges(self) -> int:
        return sum(c.kind == "merge" for c in self.changes)

    @property
    def splits(self) -> int:
        return sum(c.kind == "split" for c in self.changes)

    def summary(self) -> dict:
        return {
            "headlines": self.headlines,
            "stories": self.stories,
            "merges": self.merges,
            "splits": self.splits,
            "new_stories": self.new_stories,
            "changed": self.changed,
        }


def run_nightly(index: HeadlineIndex, since: datetime, until: datetime, out: Path | None = None) -> NightlyResult:
    """Re-group headlines with time in [since, until), reconcile ids, and write the outputs to ``out``."""
    if until <= since:
        raise InputError(
            f"the window {iso(since.timestamp())} .. {iso(until.timestamp())} is empty: until must be after since"
        )
    low, high = since.timestamp(), until.timestamp()
    window = f"{iso(low)}/{iso(high)}"
    with index.lock():
        run, resumed = _start_run(index, low, high)
        window_rows = index.db.execute(
            "SELECT row, story_id FROM headlines WHERE t >= ? AND t < ? ORDER BY row", (low, high)
        ).fetchall()
        rows = [r for r, _ in window_rows]
        old = [s for _, s in window_rows]
        vectors = index._vectors_of_rows(rows)
        similarity = CosineSimilarity(vectors)
        grouping = group(similarity, index.threshold, linkage=index.linkage)
        plan = reconcile(old, grouping.groups(), index._meta("next_story"))
        moved = [(label, row) for row, before, label in zip(rows, old, plan.labels, strict=True) if label != before]
        at = _utc_now()
        with index._transaction():
            index.db.executemany("UPDATE headlines SET story_id = ? WHERE row = ?", moved)
            merged_outside = 0
            for story, winner in sorted(plan.merged.items()):
                merged_outside += index.db.execute(
                    "UPDATE headlines SET story_id = ? WHERE story_id = ?", (winner, story)
                ).rowcount
            index._refresh_stories(set(old) | set(plan.labels), created_at=at)
            index.db.executemany(
                "INSERT INTO story_history (old_id, new_id, at, kind, reason, run) VALUES (?, ?, ?, ?, ?, ?)",
                [(c.old_id, c.new_id, at, c.kind, f"nightly {window}: {c.reason}", run) for c in plan.changes],
            )
            index._set_meta({"next_story": plan.next_story})
            result = NightlyResult(
                iso(low),
                iso(high),
                run,
                resumed,
                len(rows),
                len(set(plan.labels)),
                plan.changes,
                len(plan.new_ids),
                len(moved) + merged_outside,
            )
            _set_run(index, run, "committed", result.summary())
        # The nightly window is also the maintenance window: a large exact index becomes HNSW here.
        index._search_index(announce_lag=True, convert=True)
        if out is not None:
            stories = index.stories(since, until)
            headlines = list(index.headlines(since, until))
            report = _report_data(index, result, stories, grouping, similarity, plan.labels)
            result.outputs = write_outputs(Path(out), stories, headlines, render_report(report))
        _set_run(index, run, "done", result.summary())
    return result


def _start_run(index: HeadlineIndex, low: float, high: float) -> tuple[int, bool]:
    """The run record: an unfinished one for the same window is resumed, else a new one starts."""
    with index._transaction():
        unfinished = index.db.execute(
            "SELECT id FROM runs WHERE kind = 'nightly' AND since = ? AND until = ? AND state != 'done' "
            "ORDER BY id DESC LIMIT 1",
            (low, high),
        ).fetchone()
        if unfinished is not None:
            return unfinished[0], True
        cursor = index.db.execute(
            "INSERT INTO runs (kind, since, until, started_at, state) VALUES ('nightly', ?, ?, ?, 'running')",
            (low, high, _utc_now()),
        )
        return int(cursor.lastrowid), False


def _set_run(index: HeadlineIndex, run: int, state: str, summary: dict) -> None:
    finished = _utc_now() if state == "done" else None
    statement = "UPDATE runs SET state = ?, summary = ?, finished_at = ? WHERE id = ?"
    if index.db.in_transaction:
        index.db.execute(statement, (state, json.dumps(summary), finished, run))
    else:
        with index._transaction():
            index.db.execute(statement, (state, json.dumps(summary), finished, run))


def stories_jsonl(stories: Sequence[StoryInfo]) -> str:
    return "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in stories)


def headlines_csv(headlines: Sequence[Headline]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "story_id", "published_at"])
    for headline in headlines:
        writer.writerow([headline.id, headline.story_id, headline.published_at or ""])
    return buffer.getvalue()


def write_outputs(
    out: Path, stories: Sequence[StoryInfo], headlines: Sequence[Headline], report_html: str
) -> dict[str, Path]:
    """Write the three output files into ``out``, each atomically."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder: {exc.strerror or exc}", path=str(out)) from None
    texts = dict(zip(OUTPUT_FILES, (stories_jsonl(stories), headlines_csv(headlines), report_html), strict=True))
    paths = {}
    for name, text in texts.items():
        paths[name] = out / name
        atomic_write_text(paths[name], text)
    return paths


def _report_data(
    index: HeadlineIndex,
    result: NightlyResult,
    stories: Sequence[StoryInfo],
    grouping: Grouping,
    similarity: CosineSimilarity,
    labels: Sequence[str],
) -> ReportData:
    by_label: dict[str, list[int]] = defaultdict(list)
    for position, label in enumerate(labels):
        by_label[label].append(position)
    within: list[np.ndarray] = []
    for members in by_label.values():
        if len(members) > 1:
            kept = np.array(members[:_PAIRS_PER_STORY])
            block = similarity.block(kept, kept)
            within.append(block[np.triu_indices(len(kept), k=1)])
    edges = grouping.edges.tocoo()
    upper = edges.row < edges.col
    label_array = np.array(labels, dtype=object)
    apart = upper & (label_array[edges.row] != label_array[edges.col]) if len(labels) else upper
    return ReportData(
        title=f"{index.path.name}: nightly {result.since} .. {result.until}",
        since=result.since,
        until=result.until,
        model=index.model,
        threshold=index.threshold,
        linkage=index.linkage,
        headlines=result.headlines,
        sizes=[s.size for s in stories],
        within_pairs=np.concatenate(within) if within else np.zeros(0),
        apart_pairs=edges.data[apart],
        largest=sorted(stories, key=lambda s: (-s.size, _story_order(s.id)))[:10],
        changes=[(c.kind, c.old_id, c.new_id, c.reason) for c in result.changes],
        new_stories=result.new_stories,
        changed=result.changed,
    )
