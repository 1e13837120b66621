"""What ``index story`` and ``index export`` print (kept apart from cli_index.py, which holds the commands)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import click

from .cli_common import shown
from .store import Headline, StoryInfo
from .wording import plural


def print_story(story: StoryInfo, asked: str) -> None:
    """``index story``'s text: the story, then its members under their events (the representative starred)."""
    if story.id != asked:
        click.echo(shown(f"{asked} was merged into {story.id}"))
    events = story.events
    click.echo(
        f"{story.id}: {plural(story.size, 'headline')} in {plural(len(events), 'event')}, "
        f"{story.first_seen} .. {story.last_seen}"
    )
    for event, members in events.items():
        click.echo(shown(f"  event {event}: {plural(len(members), 'headline')}"))
        for member in members:
            mark = "*" if member.headline.row == story.representative.row else " "
            click.echo(shown(f"   {mark} {member.score:.3f}  {member.headline.text}  [{member.headline.id}]"))


EXPORT_FIELDS = ("id", "text", "published_at", "source", "url", "story_id", "event_id", "added_at")


def export_lines(headlines: Iterator[Headline], output_format: str) -> Iterator[str]:
    """``index export``'s lines, one headline each (csv after a header row, or jsonl)."""
    if output_format == "jsonl":
        for headline in headlines:
            yield json.dumps(headline.to_dict(), ensure_ascii=False) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_FIELDS)
    for headline in headlines:
        item = headline.to_dict()
        writer.writerow(["" if item[f] is None else item[f] for f in EXPORT_FIELDS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
