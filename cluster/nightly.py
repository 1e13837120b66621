"""The nightly job: settle a time window's events and stories with the batch judgement, keeping ids stable.

Online assignment (``HeadlineIndex.add``) sees headlines one at a time; the nightly job sees the whole
window at once. It does not regroup from scratch: it starts from the stored events and stories and
changes a headline's ids only where the judgement of its own pairs says so, touching only the window's
headlines (:func:`cluster.regroup.regroup_window`, which ``index build`` runs too, and whose docstring
gives the rules). Every merge and split, at either level, goes into the ``story_history`` table (event
ids start with ``e``, story ids with ``s``): old id, new id, when, and why.

Running the same window again changes nothing, and the outputs (``stories.jsonl``, ``headlines.csv``,
``report.html``) are written from the database in a fixed order, so they come out byte-identical. The
database changes are one transaction and the outputs are written to temporary files renamed into place,
so a killed run, run again, finishes the job.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from .constraints import window_constraints
from .errors import InputError
from .fsutil import atomic_write_text
from .judge import PairwiseSimilarity
from .pipeline import score
from .regroup import Change, Reconciliation, WindowChange, describe_changes, reconcile, regroup_window
from .report import ReportData, render_report
from .review import least_similar
from .store import Headline, HeadlineIndex, Run, StoryInfo, iso, story_order
from .store.corrections import Correction

__all__ = ["Change", "NightlyResult", "Reconciliation", "reconcile", "run_nightly"]

OUTPUT_FILES = ("stories.jsonl", "headlines.csv", "report.html")
DEFAULT_LAST = timedelta(hours=48)
"""The window of a nightly run given neither --since nor --last."""
_PAIRS_PER_STORY = 300  # members of a story whose pairs go into the report's similarity histogram


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
    changed: int  # headlines of the window whose story id changed
    outputs: dict[str, Path] = field(default_factory=dict)
    events: int = 0  # with headlines in the window
    new_events: int = 0
    changed_events: int = 0  # headlines of the window whose event id changed
    moved: list[WindowChange] = field(default_factory=list)  # the changes with their headlines, for the report
    reported_run: int | None = None  # the earlier run whose recorded changes the report shows, if not this one
    corrected: int = 0  # editorial corrections that changed this run's grouping

    @property
    def merges(self) -> int:
        """Story merges (event merges: :attr:`event_merges`)."""
        return sum(c.kind == "merge" and _is_story(c) for c in self.changes)

    @property
    def splits(self) -> int:
        return sum(c.kind == "split" and _is_story(c) for c in self.changes)

    @property
    def event_merges(self) -> int:
        return sum(c.kind == "merge" and not _is_story(c) for c in self.changes)

    @property
    def event_splits(self) -> int:
        return sum(c.kind == "split" and not _is_story(c) for c in self.changes)

    def summary(self) -> dict:
        return {
            "headlines": self.headlines,
            "stories": self.stories,
            "merges": self.merges,
            "splits": self.splits,
            "new_stories": self.new_stories,
            "changed": self.changed,
            "events": self.events,
            "event_merges": self.event_merges,
            "event_splits": self.event_splits,
            "new_events": self.new_events,
            "changed_events": self.changed_events,
        }


def _is_story(change: Change) -> bool:
    return not change.old_id.startswith("e")


def run_nightly(
    index: HeadlineIndex,
    since: datetime | None = None,
    until: datetime | None = None,
    out: str | Path | None = None,
    *,
    last: timedelta | None = None,
    progress: Callable[[str], None] | None = None,
    corrections: Sequence[Correction] | None = None,
) -> NightlyResult:
    """Settle headlines with time in [since, until), and write the outputs to ``out``.

    ``until`` defaults to now and ``since`` to ``until - last`` (``last``: 48 hours). Events are judged
    with the index's judgement (:attr:`HeadlineIndex.judgement`) and stories with its story judgement
    (:attr:`HeadlineIndex.story_judgement`), starting from the stored ids (:mod:`cluster.regroup`). A
    run killed after its commit, run again, writes the outputs of the committed regrouping and reports
    its figures. ``progress(step)`` is told each step as it starts (the CLI shows them on a terminal: a
    large window takes tens of seconds). Editorial corrections (default: the index's own; ``index build``
    passes those of the index it builds) hold in the window's groups (:mod:`cluster.constraints`).
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
        if run.state == "committed":
            # Killed after the regrouping was stored: the window already carries its ids; report them.
            events, labels = window.event_ids, window.story_ids
            changes = _run_changes(index, run.id, span)
            figures = run.summary
            # As the run described them before it was killed (the window no longer tells moved from joined).
            moved = _moves_of(figures) if "moved" in figures else describe_changes(changes, window, None)
        else:
            story_similarity = score(window.normalized, window.vectors, index.story_judgement, window.times)
            plan = regroup_window(
                window.event_ids,
                window.story_ids,
                similarity,
                story_similarity,
                judgement,
                index.story_judgement,
                (index.next_event_number(), index.next_story_number()),
                index.outside_stories(set(window.event_ids), since, until),
                _fresh(index, run.id, window, since, until),
                window_constraints(window.ids, index.corrections() if corrections is None else corrections),
            )
            events, labels, changes = plan.events, plan.stories, plan.changes
            moved = describe_changes(changes, window, (plan.events, plan.stories))
            figures = {
                "headlines": len(window.rows),
                "stories": len(set(labels)),
                "new_stories": len(plan.new_stories),
                "events": len(set(events)),
                "new_events": len(plan.new_events),
                "corrected": plan.corrected,
            }
            figures.update(
                index.apply_regrouping(
                    window,
                    events,
                    labels,
                    [(c.kind, c.old_id, c.new_id, f"nightly {span}: {c.reason}") for c in changes],
                    (plan.next_event, plan.next_story),
                    run.id,
                    {**figures, **_change_counts(changes), "moved": _moves_json(moved)},
                )
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
            events=int(figures.get("events", len(set(events)))),
            new_events=int(figures.get("new_events", 0)),
            changed_events=int(figures.get("changed_events", 0)),
            moved=list(moved),
            corrected=int(figures.get("corrected", 0)),
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
            report = _report_data(index, reported, stories, similarity, (events, labels), window.rows)
            result.outputs = write_outputs(Path(out), stories, headlines, render_report(report))
        index.set_run(run.id, "done", {**result.summary(), "moved": _moves_json(result.moved), **carried})
    return result


def _fresh(index: HeadlineIndex, run: int, window, since: datetime, until: datetime) -> list[bool]:
    judged = index.judged_rows(run, since, until)
    return [row not in judged for row in window.rows]


def _change_counts(changes: Sequence[Change]) -> dict[str, int]:
    stories = [c for c in changes if _is_story(c)]
    events = [c for c in changes if not _is_story(c)]
    return {
        "merges": _count(stories, "merge"),
        "splits": _count(stories, "split"),
        "event_merges": _count(events, "merge"),
        "event_splits": _count(events, "split"),
    }


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
    changed = (result.changes, result.new_stories, result.changed, result.new_events, result.changed_events)
    if run.previous is None or any(changed):
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
        new_events=int(figures.get("new_events", 0)),
        changed_events=int(figures.get("changed_events", 0)),
        moved=_moves_of(figures),
    )
    return reported, {
        "reported_run": source,
        "reported": {
            "new_stories": reported.new_stories,
            "changed": reported.changed,
            "new_events": reported.new_events,
            "changed_events": reported.changed_events,
            "moved": _moves_json(reported.moved),
        },
    }


def _moves_json(moved: Sequence[WindowChange]) -> list:
    """The report's changes with their headlines, kept in the run's summary: a later run of the window
    (or a resumed one) shows them as this run saw them."""
    return [[m.kind, m.old_id, m.new_id, m.reason, m.moved, m.joined] for m in moved]


def _moves_of(summary: dict) -> list[WindowChange]:
    return [
        WindowChange(kind, old, new, reason, [tuple(x) for x in moved], [tuple(x) for x in joined])
        for kind, old, new, reason, moved, joined in summary.get("moved", [])
    ]


def _count(changes: Sequence[Change], kind: str) -> int:
    return sum(c.kind == kind for c in changes)


def stories_jsonl(stories: Sequence[StoryInfo]) -> str:
    return "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in stories)


def headlines_csv(headlines: Sequence[Headline]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "story_id", "event_id", "published_at"])
    for headline in headlines:
        writer.writerow([headline.id, headline.story_id, headline.event_id, headline.published_at or ""])
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
    similarity: PairwiseSimilarity,
    ids: tuple[Sequence[str], Sequence[str]],
    rows: Sequence[int],
) -> ReportData:
    """The report's figures; pair similarities are those of the index's judgement, grouped by event."""
    threshold = index.judgement.threshold
    events, labels = ids
    by_label: dict[str, list[int]] = defaultdict(list)
    for position, label in enumerate(events):
        by_label[label].append(position)
    within: list[np.ndarray] = []
    for members in by_label.values():
        if len(members) > 1:
            kept = np.array(members[:_PAIRS_PER_STORY])
            block = similarity.block(kept, kept)
            within.append(block[np.triu_indices(len(kept), k=1)])
    edges = similarity.candidates(threshold).tocoo()
    upper = edges.row < edges.col
    label_array = np.array(events, dtype=object)
    apart = upper & (label_array[edges.row] != label_array[edges.col]) if len(events) else upper
    largest = sorted(stories, key=lambda s: (-s.size, story_order(s.id)))[:10]
    in_story: dict[str, list[int]] = defaultdict(list)
    for position, label in enumerate(labels):
        in_story[label].append(position)
    least: dict[str, tuple[str, float]] = {}
    for story in largest:
        # Its members in the window (the window's scores cover them), capped as the histogram's pairs are.
        members = in_story.get(story.id, [])[:_PAIRS_PER_STORY]
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
        threshold=threshold,
        linkage=index.judgement.linkage,
        headlines=result.headlines,
        sizes=[s.size for s in stories],
        within_pairs=np.concatenate(within) if within else np.zeros(0),
        apart_pairs=edges.data[apart],
        largest=largest,
        changes=[(c.kind, c.old_id, c.new_id, c.reason) for c in result.changes],
        new_stories=result.new_stories,
        changed=result.changed,
        moved=list(result.moved),
        story_threshold=index.story_judgement.threshold,
        events=result.events,
        changed_events=result.changed_events,
        least_similar=least,
        scale=index.judgement.scale,
    )
