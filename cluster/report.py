"""The nightly HTML report: one self-contained page, pictures as inline SVG, nothing fetched.

What it shows, in order: the counts of the window; a histogram of story sizes; the similarity of pairs
inside stories next to pairs that reached the threshold but were kept in different stories (the
picture to look at when tuning the threshold); the largest stories with their members; and the merges
and splits recorded for the window (by this run, or by the run that made them when
the same window is run again). The page is a function of its data alone (no clock, no random ids).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .regroup import WindowChange
from .store.types import StoryInfo
from .wording import plural

_WIDTH = 720
_HEIGHT = 236
_MARGIN = (56, 30, 16, 50)  # left, right, top, bottom: room for the axis titles
_BLUE = "#3b6ea8"
_ORANGE = "#d9822b"
_SIZE_BINS = ((1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 10), (11, 20), (21, 50), (51, None))
_MEMBERS_SHOWN = 12
_SCORE_BAR = 80  # width of a member's score bar, in pixels
# Fixed column widths: every story's table lines up with the others, whatever its headlines.
_STORY_COLUMNS = (
    f'<colgroup><col style="width:4em"><col style="width:{_SCORE_BAR + 12}px"><col>'
    '<col style="width:12.5em"><col style="width:8em"></colgroup>'
)


@dataclass
class ReportData:
    title: str
    since: str
    until: str
    model: str
    threshold: float
    linkage: str
    headlines: int
    sizes: Sequence[int]
    within_pairs: np.ndarray  # similarities of headline pairs inside one story
    apart_pairs: np.ndarray  # pairs at or above the threshold that ended in different stories
    largest: Sequence[StoryInfo]
    changes: Sequence[tuple[str, str, str, str]]  # (kind, old id, new id, reason)
    new_stories: int
    changed: int
    # Each change with the window headlines it moved and those it joined ((id, text) pairs): a reader
    # judges a merge or split by the headlines, not by bare ids.
    moved: Sequence[WindowChange] = field(default_factory=list)
    story_threshold: float | None = None
    events: int | None = None
    changed_events: int = 0
    # Story id -> (text, mean score to the rest) of its least similar member, for the largest stories: where
    # a wrong merge shows first (as `review` marks it).
    least_similar: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    # What the judgement's scores are (cluster.judge.Judgement.scale): a learned level's are probabilities.
    scale: str = "similarity"


def render_report(data: ReportData) -> str:
    sizes = list(data.sizes)
    stories = len(sizes)
    singletons = sum(size == 1 for size in sizes)
    merges = sum(kind == "merge" for kind, *_ in data.changes)
    splits = sum(kind == "split" for kind, *_ in data.changes)
    counts = [
        ("headlines in the window", f"{data.headlines:,}"),
        ("stories", f"{stories:,}"),
        ("headlines per story", f"{data.headlines / stories:.2f}" if stories else "-"),
        ("stories of one headline", f"{singletons:,}"),
        ("largest story", f"{max(sizes):,}" if sizes else "-"),
        ("merges / splits / new ids (recorded for this window)", f"{merges:,} / {splits:,} / {data.new_stories:,}"),
        ("headlines whose story id changed (recorded for this window)", f"{data.changed:,}"),
    ]
    if data.events is not None:
        counts[2:2] = [("events (nested in the stories)", f"{data.events:,}")]
        counts.append(("headlines whose event id changed (recorded for this window)", f"{data.changed_events:,}"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(data.title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_e(data.title)}</h1>",
        f"<p class=muted>window {_e(data.since)} to {_e(data.until)} (end excluded) · model {_e(data.model)} · "
        f"threshold {data.threshold:.3f} · {_e(data.linkage)} linkage</p>",
        "<table class=counts>",
        *(f"<tr><th>{_e(name)}</th><td>{value}</td></tr>" for name, value in counts),
        "</table>",
        "<h2>Story sizes</h2>",
        "<p class=muted>How many stories have each number of headlines (all their headlines, also those "
        "outside the window). The height is on a log scale, so a few large stories stay visible next to "
        "many single-headline ones; each bar is labelled with its count.</p>",
        _size_histogram(sizes),
        "<h2>Scores of grouped pairs</h2>",
        f"<p class=muted>Each pair's score is the judgement's {_e(data.scale)}. "
        f"<span style='color:{_BLUE}'>■</span> pairs of headlines in the same story; "
        f"<span style='color:{_ORANGE}'>■</span> pairs at or above the threshold that average linkage kept in "
        "different stories (they would have chained). The line is the threshold.</p>",
        _similarity_histogram(data.within_pairs, data.apart_pairs, data.threshold, data.scale),
        "<h2>Largest stories</h2>",
        f"<p class=muted>Each heading names the story's representative, listed first (bold). score: "
        f"{_e(data.scale)} with the representative; the bar spans "
        f"{_bar_floor(data.largest, data.threshold):.2f} to 1.00, the tick marks the threshold.</p>",
        *(
            _story_block(story, floor, data.threshold, data.least_similar.get(story.id))
            for floor in [_bar_floor(data.largest, data.threshold)]
            for story in data.largest
        ),
        "<h2>Merges and splits recorded for this window</h2>",
        _moves_table(data.moved) if data.moved else _changes_table(data.changes),
        "</body></html>",
        "",
    ]
    return "\n".join(parts)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _size_histogram(sizes: Sequence[int]) -> str:
    labels, values = [], []
    for low, high in _SIZE_BINS:
        labels.append(str(low) if low == high else (f"{low}-{high}" if high else f"{low}+"))
        values.append(sum(1 for s in sizes if s >= low and (high is None or s <= high)))
    titles = ("headlines in the story", "stories (log scale)")
    return _bars(labels, [values], [_BLUE], "stories", log=True, chart="sizes", titles=titles)


def _similarity_histogram(within: np.ndarray, apart: np.ndarray, threshold: float, scale: str = "similarity") -> str:
    both = np.concatenate([within, apart])
    if not len(both):
        return "<p class=muted>No pairs in this window.</p>"
    low = float(np.floor(min(both.min(), threshold) * 50) / 50)
    edges = np.linspace(low, 1.0, int(round((1.0 - low) * 100)) + 1)
    if len(edges) < 2:
        edges = np.array([low, 1.0])
    inside, _ = np.histogram(np.clip(within, low, 1.0), bins=edges)
    outside, _ = np.histogram(np.clip(apart, low, 1.0), bins=edges)
    labels = [f"{edge:.2f}" for edge in edges[:-1]]
    marker = (threshold - low) / (1.0 - low) if low < 1.0 else None
    series = [inside.tolist(), outside.tolist()]
    titles = (f"{scale} of the pair", "pairs")
    return _bars(labels, series, [_BLUE, _ORANGE], "pairs", marker=marker, chart="similarity", titles=titles)


def _bars(
    labels: Sequence[str],
    series: Sequence[Sequence[int]],
    colours: Sequence[str],
    unit: str,
    marker: float | None = None,
    log: bool = False,
    chart: str = "",
    titles: tuple[str, str] = ("", ""),
) -> str:
    """A bar chart as SVG: series side by side in each slot; ``marker`` draws a line at that fraction;
    ``titles`` name the x and y axes (a chart whose axes say nothing cannot be read alone).

    ``log``: heights on log(1 + count), and every non-empty bar labelled with its count, for data where
    one slot dwarfs the others (hundreds of one-headline stories next to a handful of large ones).
    """
    left, right, top, bottom = _MARGIN
    plot_w = _WIDTH - left - right
    plot_h = _HEIGHT - top - bottom
    peak = max((max(values) for values in series if len(values)), default=0) or 1

    def scaled(value: int) -> float:
        return float(np.log1p(value) / np.log1p(peak)) if log else value / peak

    slot = plot_w / max(len(labels), 1)
    bar = slot * 0.8 / len(series)
    shapes = [
        f'<svg width="{_WIDTH}" height="{_HEIGHT}" data-chart="{_e(chart)}" data-scale="{"log" if log else "linear"}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="bar chart of {_e(unit)}">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" class=axis>{peak:,}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" class=axis>0</text>',
    ]
    if log:
        for tick in (10, 100, 1000, 10000):
            if scaled(tick) < 0.85:  # a gridline close under the peak's label would overprint it
                y = top + plot_h - plot_h * scaled(tick)
                shapes.append(
                    f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>'
                    f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class=axis>{tick:,}</text>'
                )
    every = max(1, len(labels) // 12)  # label at most about a dozen slots so the text does not collide
    for i, label in enumerate(labels):
        x0 = left + i * slot + slot * 0.1
        for j, values in enumerate(series):
            height = plot_h * scaled(values[i])
            shapes.append(
                f'<rect x="{x0 + j * bar:.1f}" y="{top + plot_h - height:.1f}" width="{bar:.1f}" '
                f'height="{height:.1f}" fill="{colours[j]}"><title>{_e(label)}: {values[i]:,} {_e(unit)}</title></rect>'
            )
            if log and values[i]:
                shapes.append(
                    f'<text x="{x0 + (j + 0.5) * bar:.1f}" y="{top + plot_h - height - 3:.1f}" text-anchor="middle" '
                    f"class=axis>{values[i]:,}</text>"
                )
        if i % every == 0:
            shapes.append(
                f'<text x="{left + (i + 0.5) * slot:.1f}" y="{_HEIGHT - bottom + 14}" text-anchor="middle" '
                f"class=axis>{_e(label)}</text>"
            )
    x_title, y_title = titles
    if x_title:
        shapes.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{_HEIGHT - 6}" text-anchor="middle" class="axis axis-title" '
            f'data-axis="x">{_e(x_title)}</text>'
        )
    if y_title:
        shapes.append(
            f'<text transform="translate(12 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" '
            f'class="axis axis-title" data-axis="y">{_e(y_title)}</text>'
        )
    if marker is not None:
        x = left + marker * plot_w
        shapes.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#c0392b" stroke-dasharray="4 3"/>'
        )
    shapes.append("</svg>")
    return "".join(shapes)


def _bar_floor(stories: Sequence[StoryInfo], threshold: float) -> float:
    """Where the score bars start: at the threshold or the lowest score shown, whichever is lower, rounded
    down to 0.05. Members' scores crowd just under 1.0; a bar from 0 would draw 0.907 and 1.000 alike."""
    shown = [m.score for story in stories for m in story.members[:_MEMBERS_SHOWN]]
    low = min([threshold, *shown])
    return max(-1.0, min(0.95, float(np.floor(low * 20) / 20)))


def _story_block(
    story: StoryInfo, floor: float = 0.0, threshold: float | None = None, least: tuple[str, float] | None = None
) -> str:
    rows = []
    span = 1.0 - floor
    tick = ""
    if threshold is not None and floor <= threshold <= 1.0:
        x = (threshold - floor) / span * _SCORE_BAR
        tick = f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="10" stroke="#c0392b"/>'
    # The representative first: in row order it may fall past the members shown, under "... and N more".
    reps = [m for m in story.members if m.headline.row == story.representative.row]
    ordered = reps[:1] + [m for m in story.members if m.headline.row != story.representative.row]
    # Members grouped by event (the representative's first, then in order of their first headline), each
    # event under a header row.
    first_of: dict[str, int] = {}
    for position, member in enumerate(ordered):
        first_of.setdefault(member.headline.event_id, position)
    members = sorted(ordered, key=lambda m: first_of[m.headline.event_id])
    sizes: dict[str, int] = {}
    for member in members:
        sizes[member.headline.event_id] = sizes.get(member.headline.event_id, 0) + 1
    current = None
    for member in members[:_MEMBERS_SHOWN]:
        headline = member.headline
        if headline.event_id and headline.event_id != current:
            current = headline.event_id
            rows.append(
                f"<tr class=event><td colspan=5>event {_e(current)} · {plural(sizes[current], 'headline')}</td></tr>"
            )
        rep = " class=rep" if headline.row == story.representative.row else ""
        width = max(0.0, min(1.0, (member.score - floor) / span)) * _SCORE_BAR
        rows.append(
            f"<tr{rep}><td class=num>{member.score:.3f}</td>"
            f'<td><svg class=score width="{_SCORE_BAR}" height="10" data-score="{member.score:.4f}">'
            f'<rect y="1" width="{width:.1f}" height="8" fill="{_BLUE}"/>{tick}'
            f"<title>{member.score:.3f} (bar from {floor:.2f} to 1.00)</title></svg></td>"
            f"<td dir=auto class=headline>{_e(headline.text)}</td>"
            f"<td class='muted time'>{_e(headline.published_at or '')}</td>"
            f"<td class=muted>{_e(headline.source or '')}</td></tr>"
        )
    more = story.size - min(story.size, _MEMBERS_SHOWN)
    if more:
        rows.append(f"<tr><td></td><td></td><td class=muted>... and {more:,} more</td><td></td><td></td></tr>")
    events = f" · {plural(len(sizes), 'event')}" if any(sizes) else ""
    return (
        f"<h3>{_e(story.id)} · {plural(story.size, 'headline')}{events} · "
        f"<span class=time>{_e(story.first_seen)}</span> to <span class=time>{_e(story.last_seen)}</span>"
        f"<br><span dir=auto class=rep-title>{_e(story.representative.text)}</span></h3>"
        + (
            ""
            if least is None
            else f"<p class='muted least'>least similar member (mean score {least[1]:.3f} to the rest): "
            f"<span dir=auto>{_e(least[0])}</span></p>"
        )
        + f"<table class='story members'>{_STORY_COLUMNS}<tr><th>score</th><th></th><th>headline</th><th>published</th>"
        "<th>source</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _changes_table(changes: Sequence[tuple[str, str, str, str]]) -> str:
    if not changes:
        return "<p class=muted>None: every story kept its id.</p>"
    rows = "".join(
        f"<tr><td>{_e(kind)}</td><td>{_e(old)}</td><td>{_e(new)}</td><td>{_e(reason)}</td></tr>"
        for kind, old, new, reason in changes[:200]
    )
    more = f"<p class=muted>... and {len(changes) - 200:,} more.</p>" if len(changes) > 200 else ""
    return f"<table class=story><tr><th>kind</th><th>old id</th><th>new id</th><th>why</th></tr>{rows}</table>{more}"


def _moves_table(moves: Sequence[WindowChange]) -> str:
    def listed(items: Sequence[tuple[str, str]]) -> str:
        return "".join(f"<li dir=auto>{_e(text)} <span class=muted>[{_e(i)}]</span></li>" for i, text in items)

    rows = []
    for move in moves[:200]:
        joined = f"<p class=muted>joining:</p><ul>{listed(move.joined)}</ul>" if move.joined else ""
        rows.append(
            f"<tr><td>{_e(move.kind)}</td><td>{_e(move.old_id)}</td><td>{_e(move.new_id)}</td>"
            f"<td><ul>{listed(move.moved)}</ul>{joined}<p class=muted>{_e(move.reason)}</p></td></tr>"
        )
    more = f"<p class=muted>... and {len(moves) - 200:,} more.</p>" if len(moves) > 200 else ""
    return (
        "<p class=muted>Event ids start with e, story ids with s. Each row lists the window's headlines that "
        "moved (up to five) and, for a merge, those they joined.</p>"
        f"<table class=story><tr><th>kind</th><th>old id</th><th>new id</th><th>headlines</th></tr>{''.join(rows)}"
        f"</table>{more}"
    )


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}"
    "h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}h3{font-size:1em;margin:1.2em 0 .3em}"
    ".muted{color:#777}.counts th{text-align:left;font-weight:normal;padding-right:2em}"
    ".counts td{text-align:right;font-variant-numeric:tabular-nums}"
    # text-align:start, not left: a cell's dir=auto makes an Arabic headline right-to-left, and "start" is
    # then its right edge; "left" would pin it to the wrong side.
    "table.story{border-collapse:collapse;width:100%}table.members{table-layout:fixed}"
    "table.story td,table.story th{padding:2px 6px;"
    "border-bottom:1px solid #eee;text-align:start;vertical-align:top}"
    ".time{white-space:nowrap}"
    "tr.event td{color:#555;font-size:.9em;padding-top:6px}"
    "tr.rep td{font-weight:600}.num{font-variant-numeric:tabular-nums}.axis{font-size:10px;fill:#555}"
)
