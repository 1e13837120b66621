"""Field options and input stumbles of issue 21: every --*-field checked, --time-field everywhere, ids from
URLs, an empty file among several, advice that fits the options given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_store import FakeEmbedder

from cluster.cli import main
from cluster.records import read_records
from cluster.store import HeadlineIndex

CSV = (
    "id,title,published,link\n"
    "a1,Quake hits Turkey,2024-05-01T08:00:00Z,https://example.com/1\n"
    "a2,Earthquake strikes Turkey,2024-05-01T09:00:00Z,https://example.com/2\n"
)
JSONL = '{"id": "b1", "title": "Quake hits Turkey", "published": "2024-05-01T08:00:00Z"}\n'


def run(*args: object, input: str | None = None, embedder: object = "fake"):
    obj = {"embedder": FakeEmbedder() if embedder == "fake" else embedder}
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False, obj=obj)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"csv": tmp_path / "day.csv", "jsonl": tmp_path / "day.jsonl", "txt": tmp_path / "day.txt"}
    paths["csv"].write_text(CSV, encoding="utf-8")
    paths["jsonl"].write_text(JSONL, encoding="utf-8")
    paths["txt"].write_text("Quake hits Turkey\n", encoding="utf-8")
    return paths


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
@pytest.mark.parametrize("option", ["--id-field", "--time-field", "--source-field", "--url-field"])
def test_a_wrong_field_name_is_an_error_in_index_add(tmp_path, files, kind: str, option: str) -> None:
    result = run("index", "add", files[kind], "--index", tmp_path / "ix", "--model", "fake-64", option, "nosuch")
    assert result.exit_code == 2, result.output
    assert f"{option} 'nosuch'" in result.output and "Traceback" not in result.output
    # Nothing was created: the error comes before the index is opened.
    assert not (tmp_path / "ix").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["collapse", "{csv}", "--time-field", "published_at"],
        ["collapse", "{csv}", "--id-field", "ident"],
        ["explain", "{csv}", "0", "1", "--time-field", "when"],
        ["collapse", "{txt}", "--time-field", "published"],
        ["collapse", "{txt}", "--text-field", "headline"],
        ["index", "build", "{jsonl}", "--index", "{ix}", "--model", "fake-64", "--time-field", "published_at"],
        ["eval", "clusters", "{csv}", "--label-field", "id", "--time-field", "when"],
    ],
)
def test_a_wrong_field_name_is_an_error_in_every_command(tmp_path, files, args: list[str]) -> None:
    filled = [a.format(csv=files["csv"], jsonl=files["jsonl"], txt=files["txt"], ix=tmp_path / "ix") for a in args]
    result = run(*filled)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "-field" in result.output
    # A whole-file problem: skipping rows would not help, so that is not advised.
    assert "--skip-invalid" not in result.output


def test_default_field_names_may_be_absent(files) -> None:
    read = read_records(files["csv"])  # no published_at column: the default name, so no error
    assert [r.published_at for r in read.records] == [None, None]


def test_collapse_and_explain_read_times_from_time_field(files) -> None:
    # The second row is published first: --representative earliest picks it only when times are read.
    rows = (
        "title,published\n"
        "Storm Ada forces evacuations along the coast,2024-05-01T10:00:00Z\n"
        "Storm Ada forces evacuations along the coast today,2024-05-01T08:00:00Z\n"
    )
    path = files["csv"].with_name("times.csv")
    path.write_text(rows, encoding="utf-8")
    args = ["collapse", path, "--time-field", "published", "--representative", "earliest", "--format", "json", "-q"]
    data = json.loads(run(*args, "-t", "0.5", embedder=None).stdout)
    assert [s["representative"]["index"] for s in data["stories"]] == [1]
    result = run("explain", path, "0", "1", "--time-field", "published", embedder=None)
    assert result.exit_code == 0, result.output


def test_ids_come_from_the_url_when_there_is_no_id_column(tmp_path) -> None:
    path = tmp_path / "day.csv"
    path.write_text(
        "title,url,published_at\n"
        "Quake hits Turkey,https://a.example/1,2024-05-01T08:00:00Z\n"
        "Quake hits Turkey,https://b.example/2,2024-05-01T09:00:00Z\n"
        "Rates rise again,,2024-05-01T09:00:00Z\n"
        "Rates rise again,,2024-05-01T10:00:00Z\n",
        encoding="utf-8",
    )
    result = run("index", "add", path, "--index", tmp_path / "ix", "--model", "fake-64")
    assert result.exit_code == 0, result.output
    with HeadlineIndex.open(tmp_path / "ix") as index:
        assert index.count() == 3  # both URLs kept; the two rows with neither id nor URL are one headline
    # What was merged is said, not counted as "already present" in a new index.
    assert "already present 0" in result.output
    assert "1 row repeating an earlier row's text" in result.output


def test_an_empty_file_among_several_does_not_stop_the_add(tmp_path, files) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    index = tmp_path / "ix"
    assert run("index", "add", files["csv"], "--index", index, "--model", "fake-64").exit_code == 0
    result = run("index", "add", empty, files["jsonl"], "--index", index, "--skip-invalid", "--quiet", "--no-create")
    assert result.exit_code == 0, result.output
    with HeadlineIndex.open(index) as opened:
        assert opened.count() == 3
    # Without --skip-invalid, or when every file is empty, it is still an error.
    assert run("index", "add", empty, files["jsonl"], "--index", index, "--no-create").exit_code == 2
    assert run("index", "add", empty, empty, "--index", index, "--skip-invalid", "--no-create").exit_code == 2


def test_no_advice_to_pass_skip_invalid_when_it_was_passed(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('title\n"unterminated\n', encoding="utf-8")
    without = run("collapse", path)
    assert without.exit_code == 2 and "pass --skip-invalid" in without.output
    header = run("collapse", path, "--text-field", "headline", "--skip-invalid")
    assert header.exit_code == 2
    assert "--skip-invalid" not in header.output


def test_a_headline_stored_under_its_text_id_before_is_not_added_again(tmp_path) -> None:
    """Indexes filled before ids came from URLs hold such headlines under content_id(text): a cron line
    that adds the same files again must find them present, not store a second copy under the URL."""
    from cluster.records import content_id

    index = tmp_path / "ix"
    text, url = "Quake hits Turkey", "https://a.example/1"
    with HeadlineIndex.open(index, create=True, embedder=FakeEmbedder(), threshold=0.8) as opened:
        opened.add([{"id": content_id(text), "text": text, "url": url}])
    path = tmp_path / "again.csv"
    path.write_text(f"title,url\n{text},{url}\nQuake hits Turkey,https://b.example/2\n", encoding="utf-8")
    result = run("index", "add", path, "--index", index, "--model", "fake-64")
    assert result.exit_code == 0, result.output
    assert "added 1, already present 1" in result.output
    with HeadlineIndex.open(index) as opened:
        assert opened.count() == 2
