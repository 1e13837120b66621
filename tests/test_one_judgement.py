"""One judgement everywhere: collapse and eval group a file the same, explain agrees with them, and the
index gives the same events and stories through add + nightly as through index build.

Each entry point is run as a user runs it (the CLI, in-process, with the real default model injected so
that its vectors are computed once), on the README's English example and on 300 consecutive headlines of
the OG2021 dev file, whose times the judgement weighs. (An index's nightly run starts from the ids online
assignment gave and changes them only where the judgement of their own pairs says so, for stable ids:
issue 20; so add + nightly is compared with index build, which replays that path, not with collapse.)
"""

from __future__ import annotations

import csv
import itertools
import json
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from cluster.cli import main
from cluster.records import read_records
from cluster.store import HeadlineIndex

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(embedder, *args: object) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args], obj={"embedder": embedder}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def partition(labels: list[str]) -> set[frozenset[int]]:
    groups: dict[str, set[int]] = {}
    for position, label in enumerate(labels):
        groups.setdefault(label, set()).add(position)
    return {frozenset(g) for g in groups.values()}


def collapse_labels(embedder, path: Path) -> list[str]:
    result = json.loads(run(embedder, "collapse", path, "--level", "event", "--format", "json", "--quiet"))
    labels = [""] * sum(len(s["members"]) for s in result["stories"])
    for story in result["stories"]:
        for member in story["members"]:
            labels[member["index"]] = str(story["id"])
    return labels


def nightly_labels(embedder, path: Path, tmp_path: Path) -> list[tuple[str, str]]:
    """(story id, event id) of each headline after add + nightly over each day, as the cron lines do."""
    records = read_records(str(path)).records
    index = tmp_path / "idx"
    days = sorted({r.published_at.astimezone(timezone.utc).date() for r in records})
    for day in days:
        part = tmp_path / f"{day}.jsonl"
        part.write_text(
            "".join(
                json.dumps({"id": r.id, "text": r.text, "published_at": r.published_at.isoformat()}) + "\n"
                for r in sorted(records, key=lambda r: r.published_at)
                if r.published_at.astimezone(timezone.utc).date() == day
            ),
            encoding="utf-8",
        )
        run(embedder, "index", "add", part, "--index", index, "--quiet")
        until = (day + timedelta(days=1)).isoformat()
        run(embedder, "nightly", "--index", index, "--until", until, "--last", "48h", "--out", tmp_path / "out", "-q")
    with (tmp_path / "out" / "headlines.csv").open(encoding="utf-8", newline="") as handle:
        last = {row["id"]: (row["story_id"], row["event_id"]) for row in csv.DictReader(handle)}
    with HeadlineIndex.open(index, embedder=embedder) as opened:
        ids = {h.id: (h.story_id, h.event_id) for h in opened.headlines()}
    assert all(ids[i] == pair for i, pair in last.items())  # headlines.csv carries both ids
    return [ids[r.id] for r in records]


def build_labels(embedder, path: Path, tmp_path: Path) -> list[tuple[str, str]]:
    run(embedder, "index", "build", path, "--index", tmp_path / "built", "--quiet")
    with HeadlineIndex.open(tmp_path / "built", embedder=embedder) as opened:
        ids = {h.id: (h.story_id, h.event_id) for h in opened.headlines()}
    return [ids[r.id] for r in read_records(str(path)).records]


def eval_agrees(embedder, path: Path, labels: list[str], tmp_path: Path) -> dict:
    """``eval clusters`` of the file labelled with ``labels``: a perfect score means the same partition."""
    records = read_records(str(path)).records
    labelled = tmp_path / "labelled.tsv"
    with labelled.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "published_at", "text", "story"])
        for record, label in zip(records, labels, strict=True):
            writer.writerow([record.id, record.published_at.isoformat(), record.text, label])
    return json.loads(run(embedder, "eval", "clusters", labelled, "--format", "json"))


@pytest.fixture(scope="module")
def og_slice(tmp_path_factory, shared_data: Path) -> Path:
    with (shared_data / "clusters" / "og2021_events_dev.tsv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows.sort(key=lambda r: (r["published_at"], r["id"]))
    path = tmp_path_factory.mktemp("og") / "og2021_slice.tsv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\")
        writer.writerow(["id", "published_at", "text"])
        for row in rows[2000:2300]:
            writer.writerow([row["id"], row["published_at"], row["text"].replace("\t", " ")])
    return path


@pytest.mark.parametrize("which", ["related_en", "og2021"])
def test_collapse_and_eval_give_one_partition_and_build_is_add_plus_nightly(
    which, embedder, og_slice, tmp_path: Path
) -> None:
    path = REPO / "examples" / "related_en.csv" if which == "related_en" else og_slice
    collapsed = collapse_labels(embedder, path)
    cron = nightly_labels(embedder, path, tmp_path)
    built = build_labels(embedder, path, tmp_path)
    assert built == cron  # the same ids, so the same partition at both levels
    story_of_event = {event: story for story, event in cron}
    assert all(story_of_event[event] == story for story, event in cron)  # events inside one story
    figures = eval_agrees(embedder, path, collapsed, tmp_path)
    assert figures["bcubed_f1"] == 1.0 and figures["pred_stories"] == figures["true_stories"]
    if which == "related_en":
        # The README's example: several stories, and the storm reports together.
        assert len(set(collapsed)) >= 2 and collapsed[2] == collapsed[3] == collapsed[5]
    else:
        assert 5 < len(set(collapsed)) < 290  # neither one story nor nothing merged: the check has teeth


def test_explain_agrees_with_collapse_on_every_pair_of_the_example(embedder) -> None:
    path = REPO / "examples" / "related_en.csv"
    labels = collapse_labels(embedder, path)
    for i, j in itertools.combinations(range(len(labels)), 2):
        reason = run(embedder, "explain", path, i, j).strip().splitlines()[-1]
        assert reason.startswith("same story") == (labels[i] == labels[j]), (i, j, reason)


def test_explain_agrees_with_collapse_on_the_og2021_slice(embedder, og_slice) -> None:
    labels = collapse_labels(embedder, og_slice)
    same = [(i, j) for i, j in itertools.combinations(range(len(labels)), 2) if labels[i] == labels[j]]
    apart = [(i, j) for i, j in itertools.combinations(range(len(labels)), 2) if labels[i] != labels[j]]
    # Every pair through the library's explain (what the CLI prints), and a sample through the CLI itself.
    from cluster import collapse

    records = read_records(str(og_slice)).records
    result = collapse([{"text": r.text, "published_at": r.published_at} for r in records], embedder=embedder)
    assert [str(result.story_of(i).id) for i in range(len(records))] == labels
    for i, j in same + apart:
        assert result.explain(i, j).same_story == (labels[i] == labels[j])
    for i, j in same[:: max(1, len(same) // 15)] + apart[:: max(1, len(apart) // 15)]:
        reason = run(embedder, "explain", og_slice, i, j).strip().splitlines()[-1]
        assert reason.startswith("same story") == (labels[i] == labels[j]), (i, j, reason)


def test_story_ids_do_not_depend_on_commit_every_or_the_cache(og_slice, tmp_path: Path) -> None:
    # The real default model, embedding in commits of 7 against one commit of all 300 with fresh caches:
    # a headline's vector does not depend on what it was embedded with, so the ids are the same.
    from cluster.embed import Embedder, EmbeddingCache

    ids = []
    for commit_every in (7, 1000):
        index = tmp_path / f"idx{commit_every}"
        run(
            Embedder(cache=EmbeddingCache()),
            "index",
            "add",
            og_slice,
            "--index",
            index,
            "--quiet",
            "--commit-every",
            commit_every,
        )
        with HeadlineIndex.open(index) as opened:
            ids.append({h.id: h.story_id for h in opened.headlines()})
    assert ids[0] == ids[1] and len(set(ids[0].values())) > 5
