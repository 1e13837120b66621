"""The per-format row parsers behind :func:`cluster.records.read_records` (txt, csv, tsv, jsonl).

Internal to the reader: each parser turns decoded text into calls on a :class:`RowSink` (the collector in
``cluster.records``), and raises :class:`RowError` for a problem confined to one row so the sink can
either stop with an InputError or record the row as skipped.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from cluster.errors import InputError

_UTC = timezone.utc
RESAVE_HINT = "re-save the file as UTF-8"
_TIME_FORMS = (
    "accepted: ISO 8601 such as 2024-05-01T14:30:00Z or 2024-05-01T14:30:00+03:00, "
    "a date 2024-05-01, 2024-05-01 14:30[:00] (taken as UTC), or Unix epoch seconds such as 1714573800"
)
EXPECTED = {
    "txt": "expected one headline per line",
    "csv": "expected a header row with a 'text' or 'title' column, then one headline per row",
    "tsv": "expected a tab-separated header row with a 'text' or 'title' column, then one headline per row",
    "jsonl": 'expected one JSON object per line, such as {"text": "..."}',
}
_EPOCH = re.compile(r"[+-]?\d+(\.\d*)?")


class RowError(Exception):
    """A problem confined to one row: raised, or recorded when skip_invalid is set."""

    def __init__(self, reason: str, hint: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


@dataclass(frozen=True)
class Fields:
    text: str | None
    id: str
    time: str
    source: str
    url: str



class RowSink(Protocol):
    """Where parsers send rows: ``cluster.records._Collector``."""

    name: str

    def check_decoded(self, first: int, last: int) -> None: ...

    def reject(self, line: int, error: RowError) -> None: ...

    def add(
        self,
        line: int,
        text: str,
        *,
        id: str | None = None,
        published_at: datetime | None = None,
        source: str | None = None,
        url: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None: ...


# --- formats --------------------------------------------------------------------------------------------


def parse_txt(text: str, collector: RowSink) -> None:
    for number, raw in enumerate(text.split("\n"), start=1):
        # Checked before blankness: an undecodable line is not blank, it only looks like replacement text.
        try:
            collector.check_decoded(number, number)
            if not raw.strip():
                continue
            collector.add(number, raw)
        except RowError as error:
            collector.reject(number, error)


def parse_jsonl(text: str, fields: Fields, collector: RowSink) -> None:
    for number, raw in enumerate(text.split("\n"), start=1):
        try:
            collector.check_decoded(number, number)
            if not raw.strip():
                continue
            _add_json_line(raw, number, fields, collector)
        except RowError as error:
            collector.reject(number, error)


def _add_json_line(raw: str, number: int, fields: Fields, collector: RowSink) -> None:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        hint = "each line must be one complete JSON object"
        if number == 1 and raw.strip() == "[":
            hint = "this looks like a JSON array; JSON Lines needs one object per line, without [ ]"
        raise RowError(f"malformed JSON: {exc.msg} at column {exc.colno}", hint) from None
    if not isinstance(obj, dict):
        raise RowError(
            f"expected a JSON object, got {_json_type(obj)}", 'write each line as {"text": "..."}'
        )
    keys = list(obj)
    text_index = _resolve_text(keys, fields.text)
    if text_index is None:
        wanted = repr(fields.text) if fields.text else "'text' or 'title'"
        found = ", ".join(repr(key) for key in keys) or "none"
        raise RowError(
            f"no {wanted} field (keys found: {found})", "pass --text-field NAME to choose the field"
        )
    text_key = keys[text_index]
    value = obj[text_key]
    if value is None:
        raise RowError(f"{text_key!r} is null", "give every object a headline string")
    if not isinstance(value, str):
        raise RowError(f"{text_key!r} must be a string, got {_json_type(value)}")
    used = {text_key}
    found_keys: dict[str, str] = {}
    for role, wanted_key in (
        ("id", fields.id),
        ("time", fields.time),
        ("source", fields.source),
        ("url", fields.url),
    ):
        index = _find(keys, wanted_key)
        if index is not None and keys[index] not in used:
            used.add(keys[index])
            found_keys[role] = keys[index]
    time_key = found_keys.get("time")
    collector.add(
        number,
        value,
        id=_optional_str(obj, found_keys.get("id")),
        published_at=_parse_time(obj[time_key], time_key) if time_key else None,
        source=_optional_str(obj, found_keys.get("source")),
        url=_optional_str(obj, found_keys.get("url")),
        extra={key: _extra_str(obj[key]) for key in keys if key not in used and obj[key] is not None},
    )


def parse_delimited(text: str, delimiter: str, fields: Fields, collector: RowSink) -> None:
    rows = _csv_rows(text, delimiter)
    header_line, header_row = _header(rows, "csv" if delimiter == "," else "tsv", collector)
    header = [column.strip() for column in header_row]
    text_index = _resolve_text(header, fields.text)
    if text_index is None:
        wanted = f"column {fields.text!r}" if fields.text else "'text' or 'title' column"
        found = ", ".join(repr(column) for column in header)
        raise InputError(
            f"no {wanted} in the header (columns found: {found})",
            path=collector.name,
            line=header_line,
            hint="the first row must name the columns; pass --text-field COLUMN to pick the headline column",
        )
    used = {text_index}
    roles: dict[str, int] = {}
    for role, wanted_column in (
        ("id", fields.id),
        ("time", fields.time),
        ("source", fields.source),
        ("url", fields.url),
    ):
        index = _find(header, wanted_column)
        if index is not None and index not in used:
            used.add(index)
            roles[role] = index
    for first, last, row in rows:
        try:
            collector.check_decoded(first, last)
            if isinstance(row, RowError):
                raise row
            if len(row) != len(header):
                raise RowError(
                    f"row has {len(row)} fields but the header has {len(header)}",
                    _field_count_hint(delimiter, first, last),
                )
            raw_time = _cell(row, roles, "time")
            collector.add(
                first,
                row[text_index],
                id=_cell(row, roles, "id"),
                published_at=_parse_time(raw_time, header[roles["time"]]) if raw_time else None,
                source=_cell(row, roles, "source"),
                url=_cell(row, roles, "url"),
                extra={header[i]: value for i, value in enumerate(row) if i not in used},
            )
        except RowError as error:
            collector.reject(first, error)


def _cell(row: list[str], roles: Mapping[str, int], role: str) -> str | None:
    """A known column's value, or None when the column is absent or the cell is blank."""
    index = roles.get(role)
    return None if index is None else (row[index].strip() or None)


def _csv_rows(text: str, delimiter: str) -> Iterator[tuple[int, int, list[str] | RowError]]:
    """(first line, last line, fields or a parse error) for each non-blank row."""
    parts = text.split("\n")
    # Feed the reader '\n'-terminated physical lines so its line_num counts lines as the other formats do.
    lines = [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    reader = csv.reader(lines, delimiter=delimiter)
    last = 0
    while True:
        first = last + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader recovers on the next line, so one unparseable row does not end the file.
            last = reader.line_num
            yield first, last, RowError(f"cannot parse row: {exc}")
            continue
        last = reader.line_num
        if len(row) <= 1 and not "".join(row).strip():
            continue
        yield first, last, row


def _header(
    rows: Iterator[tuple[int, int, list[str] | RowError]], fmt: str, collector: RowSink
) -> tuple[int, list[str]]:
    for first, last, row in rows:
        # The header decides how every row is read, so a problem with it is a problem with the file.
        try:
            collector.check_decoded(first, last)
        except RowError as error:
            raise InputError(
                f"header {error.reason}", path=collector.name, line=first, hint=error.hint
            ) from None
        if isinstance(row, RowError):
            raise InputError(f"cannot read the header: {row.reason}", path=collector.name, line=first)
        return first, row
    raise InputError(f"no headlines in {collector.name}", path=collector.name, hint=EXPECTED[fmt])


def _field_count_hint(delimiter: str, first: int, last: int) -> str:
    if last > first:
        return f"the row runs from line {first} to {last}; a quote may be unbalanced"
    if delimiter == "\t":
        return "a field may contain a stray tab"
    return 'quote fields that contain commas, like "Rates rise, markets fall"'


# --- field values ---------------------------------------------------------------------------------------


def _find(names: Sequence[str], wanted: str) -> int | None:
    """Index of the exact name if present, else of the first case-insensitive match."""
    if wanted in names:
        return list(names).index(wanted)
    folded = wanted.casefold()
    for index, candidate in enumerate(names):
        if candidate.casefold() == folded:
            return index
    return None


def _resolve_text(names: Sequence[str], text_field: str | None) -> int | None:
    if text_field is not None:
        return _find(names, text_field)
    for default in ("text", "title"):
        index = _find(names, default)
        if index is not None:
            return index
    return None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _optional_str(obj: Mapping[str, Any], key: str | None) -> str | None:
    """A JSON id/source/url value as text; numbers are accepted because ids are often numeric."""
    if key is None:
        return None
    value = obj[key]
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RowError(f"{key!r} must be a string or a number, got {_json_type(value)}")


def _extra_str(value: Any) -> str:
    # Extra columns are typed Mapping[str, str]; JSON text keeps nested values readable and reversible.
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _parse_time(value: Any, field_name: str | None) -> datetime | None:
    """An aware UTC datetime from ISO 8601, a date, 'YYYY-MM-DD HH:MM[:SS]' or epoch seconds."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, tz=_UTC)
        if not isinstance(value, str):
            raise ValueError
        stripped = value.strip()
        if not stripped:
            return None
        if _EPOCH.fullmatch(stripped):
            # int() where possible: float() would lose sub-second precision on large values.
            seconds = float(stripped) if "." in stripped else int(stripped)
            return datetime.fromtimestamp(seconds, tz=_UTC)
        # datetime.fromisoformat before Python 3.11 does not accept the 'Z' suffix.
        if stripped[-1] in "Zz":
            stripped = stripped[:-1] + "+00:00"
        parsed = datetime.fromisoformat(stripped)
    except (ValueError, OverflowError, OSError):
        shown = value if isinstance(value, str) else json.dumps(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise RowError(f"cannot read timestamp {shown!r} in {field_name!r}", _TIME_FORMS) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=_UTC)
    return parsed.astimezone(_UTC)
