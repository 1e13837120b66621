"""One limit for every entry point: ids, headline length, blank headlines and times the index can hold."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from test_store import open_index

from cluster.errors import InputError
from cluster.limits import MAX_ID_CHARS
from cluster.records import read_records


def test_an_overlong_id_is_an_invalid_row_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(f"id,text\nok,fine headline\n{'x' * (MAX_ID_CHARS + 1)},another headline\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"in.csv:3: the id is 257 characters long"):
        read_records(str(path))
    read = read_records(str(path), skip_invalid=True)
    assert [r.id for r in read.records] == ["ok"] and [row.line for row in read.invalid] == [3]


def test_the_library_refuses_what_the_readers_refuse(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        with pytest.raises(InputError, match="the id is 257 characters long"):
            index.add([{"id": "y" * (MAX_ID_CHARS + 1), "text": "topic1 a headline"}])
        with pytest.raises(InputError, match="no visible characters"):
            index.add([{"id": "blank", "text": "\u200f\u200b\u0640"}])
        far = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
        with pytest.raises(InputError, match="out of range"):
            index.add([{"id": "old", "text": "topic1 a headline", "published_at": far}])
        assert index.count() == 0
