"""Editorial corrections stored in the index (issue 23): adding, listing, removing, refusing unknown
headlines and contradictions, the migration of an index of format 2, and surviving a repair."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from test_store import headlines, open_index

from cluster.errors import InputError
from cluster.store import DB_FILE
from cluster.store.schema import SCHEMA_VERSION


@pytest.fixture
def index(tmp_path: Path):
    with open_index(tmp_path / "idx") as opened:
        opened.add(headlines(10, topics=2))
        yield opened


def test_a_correction_is_stored_listed_and_removed(index) -> None:
    made = index.add_correction("apart", "h4", "h2", level="event", author="desk", reason="different votes")
    assert (made.kind, made.level, made.a, made.b, made.author, made.reason) == (
        "apart",
        "event",
        "h2",
        "h4",
        "desk",
        "different votes",
    )
    together = index.add_correction("together", "h1", "h3", level="story", author="ana")
    assert [c.id for c in index.corrections()] == [made.id, together.id]
    assert index.corrections("story") == [together]
    assert index.add_correction("apart", "h2", "h4", author="someone else") == made  # the same one: kept once
    assert index.remove_correction(made.id) is True
    assert index.remove_correction(made.id) is False
    assert index.corrections() == [together]


def test_unknown_headlines_and_bad_values_are_refused(index) -> None:
    with pytest.raises(InputError, match="'nope'"):
        index.add_correction("apart", "h1", "nope", author="desk")
    with pytest.raises(InputError, match="kind"):
        index.add_correction("split", "h1", "h2", author="desk")
    with pytest.raises(InputError, match="level"):
        index.add_correction("apart", "h1", "h2", level="duplicate", author="desk")
    with pytest.raises(InputError, match="two different"):
        index.add_correction("apart", "h1", "h1", author="desk")
    with pytest.raises(InputError, match="author"):
        index.add_correction("apart", "h1", "h2", author=" ")
    assert index.corrections() == []


def test_apart_and_together_on_the_same_pair_contradict(index) -> None:
    first = index.add_correction("apart", "h1", "h2", author="desk")
    with pytest.raises(InputError, match=f"#{first.id} "):
        index.add_correction("together", "h2", "h1", author="desk")
    assert index.corrections() == [first]


def test_a_together_chain_that_would_join_an_apart_pair_is_refused_naming_both(index) -> None:
    apart = index.add_correction("apart", "h1", "h5", author="desk")
    link = index.add_correction("together", "h1", "h3", author="desk")
    with pytest.raises(InputError) as refused:
        index.add_correction("together", "h3", "h5", author="desk")
    assert f"#{apart.id} " in str(refused.value) and f"#{link.id} " in str(refused.value)
    # and the other way round: an apart pair that together-chains already join
    with pytest.raises(InputError, match=f"#{link.id} "):
        index.add_correction("apart", "h3", "h1", author="desk")
    assert index.corrections() == [apart, link]


def test_levels_imply_each_other_as_events_nest_in_stories(index) -> None:
    # Together as one event means one story: a story-level apart on that pair contradicts it.
    index.add_correction("together", "h1", "h3", level="event", author="desk")
    with pytest.raises(InputError, match="contradicts"):
        index.add_correction("apart", "h1", "h3", level="story", author="desk")
    # Apart as events but together as a story is consistent: two events of one story.
    index.add_correction("apart", "h2", "h4", level="event", author="desk")
    index.add_correction("together", "h2", "h4", level="story", author="desk")
    assert len(index.corrections()) == 3


def test_an_index_of_format_2_gains_the_corrections_table(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(6, topics=2))
    with sqlite3.connect(tmp_path / "idx" / DB_FILE) as db:  # what format 2 stored
        db.execute("DROP TABLE corrections")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with open_index(tmp_path / "idx") as index:
        assert index.db.meta("schema_version") == SCHEMA_VERSION == 3
        assert index.corrections() == []
        index.add_correction("apart", "h0", "h2", author="desk")
    with open_index(tmp_path / "idx") as index:
        assert [(c.a, c.b) for c in index.corrections()] == [("h0", "h2")]


def test_corrections_survive_a_rebuild_of_a_damaged_database(tmp_path: Path) -> None:
    from cluster.store.integrity import salvage

    with open_index(tmp_path / "idx") as index:
        index.add(headlines(6, topics=2))
        made = index.add_correction("together", "h0", "h1", level="story", author="desk", reason="same strike")
    salvage(tmp_path / "idx")  # what repair does with a damaged database: copy what can be read
    with open_index(tmp_path / "idx") as index:
        assert index.corrections() == [made]


# --- the CLI: headline-cluster correct add|list|remove ------------------------------------------------------


def run_cli(*args: object):
    from click.testing import CliRunner
    from test_store import FakeEmbedder

    from cluster.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, obj={"embedder": FakeEmbedder()})


def test_the_cli_adds_lists_and_removes_corrections(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(6, topics=2))
    where = ("--index", tmp_path / "idx")
    added = run_cli("correct", "add", "apart", "h0", "h2", *where, "--author", "desk", "--reason", "two votes")
    assert added.exit_code == 0, added.output
    assert "#1" in added.stdout
    made = run_cli(
        "correct", "add", "together", "h1", "h3", *where, "--level", "story", "--author", "ana", "--format", "json"
    )
    assert json.loads(made.stdout)["level"] == "story"
    listed = json.loads(run_cli("correct", "list", *where, "--format", "json").stdout)["corrections"]
    assert [(c["id"], c["kind"], c["a"], c["b"], c["reason"]) for c in listed] == [
        (1, "apart", "h0", "h2", "two votes"),
        (2, "together", "h1", "h3", None),
    ]
    text = run_cli("correct", "list", *where, "--level", "event").stdout
    assert text.startswith("#1\tapart\tevent\th0\th2\tdesk") and "h3" not in text
    assert run_cli("correct", "remove", "#1", *where).exit_code == 0
    assert [
        c["id"] for c in json.loads(run_cli("correct", "list", *where, "--format", "json").stdout)["corrections"]
    ] == [2]


def test_the_cli_refuses_with_a_message_and_exit_code_2(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(6, topics=2))
    where = ("--index", tmp_path / "idx")
    run_cli("correct", "add", "apart", "h0", "h2", *where, "--author", "desk")
    unknown = run_cli("correct", "add", "apart", "h0", "zz", *where, "--author", "desk")
    assert unknown.exit_code == 2 and "'zz'" in unknown.stderr
    contradicting = run_cli("correct", "add", "together", "h2", "h0", *where, "--author", "desk")
    assert contradicting.exit_code == 2 and "#1 " in contradicting.stderr
    assert run_cli("correct", "add", "apart", "h0", "h1", *where).exit_code == 2  # --author is required
    missing = run_cli("correct", "remove", "7", *where)
    assert missing.exit_code == 2 and "#7" in missing.stderr
    assert run_cli("correct", "remove", "x", *where).exit_code == 2
    nowhere = run_cli("correct", "list", "--index", tmp_path / "none")
    assert nowhere.exit_code == 2 and "no headline index" in nowhere.stderr


def test_corrections_go_out_with_index_export_and_into_a_new_index(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(6, topics=2))
        index.add_correction("apart", "h0", "h2", author="desk", reason="two votes")
        index.add_correction("together", "h1", "h3", level="story", author="ana")
        before = [c.as_dict() for c in index.corrections()]
    out, saved = tmp_path / "headlines.jsonl", tmp_path / "corrections.jsonl"
    exported = run_cli("index", "export", "--index", tmp_path / "idx", "-o", out, "--corrections", saved)
    assert exported.exit_code == 0, exported.output
    assert [json.loads(line) for line in saved.read_text(encoding="utf-8").splitlines()] == before
    open_index(tmp_path / "new").close()  # the same settings as the first
    assert run_cli("index", "add", out, "--index", tmp_path / "new").exit_code == 0
    imported = run_cli("correct", "import", saved, "--index", tmp_path / "new")
    assert imported.exit_code == 0 and "imported 2 correction(s)" in imported.stderr
    with open_index(tmp_path / "new") as index:
        assert [c.as_dict() for c in index.corrections()] == before  # authors, reasons and times kept


def test_an_import_with_a_refused_line_adds_nothing(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(6, topics=2))
    saved = tmp_path / "corrections.jsonl"
    rows = [
        {"kind": "apart", "a": "h0", "b": "h2", "author": "desk"},
        {"kind": "together", "a": "h2", "b": "h0", "author": "desk"},  # contradicts the first line
    ]
    saved.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    refused = run_cli("correct", "import", saved, "--index", tmp_path / "idx")
    assert refused.exit_code == 2 and f"{saved}:2:" in refused.stderr and "contradicts" in refused.stderr
    saved.write_text('{"kind": "apart", "a": "h0"}\n', encoding="utf-8")
    broken = run_cli("correct", "import", saved, "--index", tmp_path / "idx")
    assert broken.exit_code == 2 and f"{saved}:1:" in broken.stderr
    with open_index(tmp_path / "idx") as index:
        assert index.corrections() == []


def test_a_read_only_index_of_format_2_still_reads_with_no_corrections(tmp_path: Path) -> None:
    from test_corruption import read_only_view

    with open_index(tmp_path / "idx") as index:
        index.add(headlines(6, topics=2))
    with sqlite3.connect(tmp_path / "idx" / DB_FILE) as db:  # what format 2 stored
        db.execute("DROP TABLE corrections")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with read_only_view(tmp_path / "idx", tmp_path) as view:
        listed = run_cli("correct", "list", "--index", view, "--format", "json")
        assert listed.exit_code == 0, listed.output
        assert json.loads(listed.stdout) == {"corrections": []}
        assert run_cli("index", "stats", "--index", view).exit_code == 0
        refused = run_cli("correct", "add", "apart", "h0", "h2", "--index", view, "--author", "desk")
        assert refused.exit_code == 2 and "not writable" in refused.stderr
