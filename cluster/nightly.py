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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from .errors import InputError
from .fsutil import atomic_write_text
from .group import Grouping, group
from .judge import PairwiseSimilarity
from .pipeline import score
from .report import ReportData, render_report
from .review import least_similar
from .store import Headline, HeadlineIndex, Run, StoryInfo, iso, mint_story_id, story_order

OUTPUT_FILES = ("stories.jsonl", "headlines.csv", "report.html")
DEFAULT_LAST = timedelta(hours=48)
"""The window of a nightly run given neither --since nor --last."""
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


def reconcile(old: Sequence[str | None], clusters: Sequence[Sequence[int]], next_story: int) -> Reconciliation:
    """Story ids for the batch ``clusters`` (positions into ``old``, ordered by first position).

    ``old[p]`` is the stored story id of position p, or None for a headline that has no story yet (a
    bulk build's headlines the first time a window holds them: :mod:`cluster.build`); such a headline
    takes its cluster's id and weighs in no old story's rules. New ids are numbered from ``next_story``.
    The rules are in the module docstring; every tie is broken by position or id, so the result is a
    function of the inputs alone.
    """
    cluster_of = np.empty(len(old), dtype=np.int64)
    for k, members in enumerate(clusters):
        cluster_of[list(members)] = k
    in_window = Counter(story for story in old if story is not None)
    counts: dict[str, Counter] = defaultdict(Counter)
    for position, story in enumerate(old):
        if story is not None:
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
            new_id = mint_story_id(next_story)
            next_story += 1
            new_ids.append(new_id)
            cluster_id.append(new_id)
            continue
        winner = min(claimants, key=lambda s: (-counts[s][k], story_order(s)))
        cluster_id.append(winner)
        for story in sorted(claimants, key=story_order):
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
    for story in sorted(counts, key=story_order):
        final = merged.get(story, story if story in cluster_id else None)
        moved: Counter = Counter()
        for k, held in counts[story].items():
            if cluster_id[k] != final:
                moved[cluster_id[k]] += held
        for target in sorted(moved, key=story_order):
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
    reported_run: int | None = None  # the earlier run whose recorded changes the report shows, if not this one

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


def run_nightly(
    index: HeadlineIndex,
    since: datetime | None = None,
    until: datetime | None = None,
    out: str | Path | None = None,
    *,
    last: timedelta | None = None,
    progress: Callable[[str], None] | None = None,
) -> NightlyResult:
    """Re-group headlines with time in [since, until), reconcile ids, and write the outputs to ``out``.

    ``until`` defaults to now and ``since`` to ``until - last`` (``last``: 48 hours). The window is
    grouped with the index's judgement (:attr:`HeadlineIndex.judgement`), exactly as ``collapse`` groups
    the same headlines with their times. A run killed after its commit, run again, writes the outputs
    of the committed regrouping and reports its figures. ``progress(step)`` is told each step as it
    starts (the CLI shows them on a terminal: a large window takes tens of seconds).
    """
    say = progress or (lambda step: None)
    until = until or datetime.now(tz=timezone.utc)
    since = since or until - (last or DEFAULT_LAST)
    if until <= since:
        raise InputError(
            f"the window {iso(since.timestamp())} .. {iso(until.timestamp())} is empty: until must be after since"
        )
    span = f"{iso(since.timestamp())}/{iso(until.timestamp())}"
    judgement = index.judgement
    with index.lock():
        run = index.start_run(since, until)
        say(f"reading the window {span}")
        window = index.window_headlines(since, until)
        say(f"judging and grouping {len(window.rows):,} headlines")
        similarity = score(window.normalized, window.vectors, judgement, window.times)
        grouping = group(similarity, judgement.threshold, linkage=judgement.linkage)
        if run.state == "committed":
            # Killed after the regrouping was stored: the window already carries its ids; report them.
            labels = window.story_ids
            changes = _run_changes(index, run.id, span)
            figures = run.summary
        else:
            plan = reconcile(window.story_ids, grouping.groups(), index.next_story_number())
            labels = plan.labels
            changes = plan.changes
            figures = {
                "headlines": len(window.rows),
                "stories": len(set(labels)),
                "new_stories": len(plan.new_ids),
            }
            figures["changed"] = index.apply_regrouping(
                window,
                labels,
                plan.merged,
                [(c.kind, c.old_id, c.new_id, f"nightly {span}: {c.reason}") for c in changes],
                plan.next_story,
                run.id,
                {**figures, "merges": _count(changes, "merge"), "splits": _count(changes, "split")},
            )
        result = NightlyResult(
            iso(since.timestamp()),
            iso(until.timestamp()),
            run.id,
            run.resumed,
            int(figures.get("headlines", len(window.rows))),
            int(figures.get("stories", len(set(labels)))),
            changes,
            int(figures.get("new_stories", 0)),
            int(figures.get("changed", 0)),
        )
        reported, carried = _recorded_changes(index, run, result, span)
        result.reported_run = carried.get("reported_run")
        # The nightly window is also the maintenance window: a large exact index becomes HNSW here.
        say("maintaining the vector files")
        index.maintain()
        if out is not None:
            say(f"writing the outputs to {out}")
            stories = index.stories(since, until)
            headlines = list(index.headlines(since, until))
            report = _report_data(index, reported, stories, grouping, similarity, labels, window.rows)
            result.outputs = write_outputs(Path(out), stories, headlines, render_report(report))
        index.set_run(run.id, "done", {**result.summary(), **carried})
    return result


def _run_changes(index: HeadlineIndex, run: int, span: str) -> list[Change]:
    """The changes ``run`` recorded, with the reasons as the run reported them (the history adds the window)."""
    prefix = f"nightly {span}: "
    return [Change(old, new, kind, reason.removeprefix(prefix)) for kind, old, new, reason in index.run_changes(run)]


def _recorded_changes(
    index: HeadlineIndex, run: Run, result: NightlyResult, span: str
) -> tuple[NightlyResult, dict]:
    """What the report shows: this run's changes, or, when it changed nothing in a window an earlier run
    regrouped, the changes recorded for the window by that run. So the same window run again writes the
    same report.html, which still says what changed, rather than "0 / 0 / 0" and no changes table. Also
    what to add to this run's summary so that a third run finds the same (the run the report is of)."""
    if run.previous is None or result.changes or result.new_stories or result.changed:
        return result, {}
    previous_id, previous = run.previous
    source = int(previous.get("reported_run", previous_id))
    figures = previous.get("reported", previous)
    changes = _run_changes(index, source, span)
    reported = replace(
        result,
        changes=changes,
        new_stories=int(figures.get("new_stories", 0)),
        changed=int(figures.get("changed", 0)),
    )
    return reported, {
        "reported_run": source,
        "reported": {"new_stories": reported.new_stories, "changed": reported.changed},
    }


def _count(changes: Sequence[Change], kind: str) -> int:
    return sum(c.kind == kind for c in changes)


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
    for name in OUTPUT_FILES:  # temporaries of a run killed while writing (atomic_file names them so)
        for stale in out.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
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
    similarity: PairwiseSimilarity,
    labels: Sequence[str],
    rows: Sequence[int],
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
    largest = sorted(stories, key=lambda s: (-s.size, story_order(s.id)))[:10]
    least: dict[str, tuple[str, float]] = {}
    for story in largest:
        # Its members in the window (the window's scores cover them), capped as the histogram's pairs are.
        members = by_label.get(story.id, [])[:_PAIRS_PER_STORY]
        if len(members) > 1:
            member_rows = [rows[k] for k in members]
            rep = member_rows.index(story.representative.row) if story.representative.row in member_rows else -1
            weakest, to_rest = least_similar(similarity.block(np.array(members), np.array(members)), rep)
            text = {m.headline.row: m.headline.text for m in story.members}.get(member_rows[weakest])
            if text is not None:  # the stored story and the window's labels agree (they are one regrouping)
                least[story.id] = (text, float(to_rest[weakest]))
    return ReportData(
        title=f"{index.path.name}: nightly {result.since} .. {result.until}",
        since=result.since,
        until=result.until,
        model=index.model,
        threshold=index.judgement.threshold,
        linkage=index.judgement.linkage,
        headlines=result.headlines,
        sizes=[s.size for s in stories],
        within_pairs=np.concatenate(within) if within else np.zeros(0),
        apart_pairs=edges.data[apart],
        largest=largest,
        changes=[(c.kind, c.old_id, c.new_id, c.reason) for c in result.changes],
        new_stories=result.new_stories,
        changed=result.changed,
        least_similar=least,
        scale=index.judgement.scale,
    )
