"""Parquet input: one headline per row, checked by the same collector as the text formats.

A row's "line" in messages is its 1-based row number in the file. Columns are found as in a CSV header
(``--text-field``, else ``text`` then ``title``; ``id``, ``published_at``, ``source``, ``url`` by name, any
case). A time column may hold Parquet timestamps (naive ones are taken as UTC), ISO 8601 text or Unix
seconds. Reading Parquet needs pyarrow (``pip install 'headline-cluster[ray]'`` brings it).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from .errors import InputError
from .readers import Fields, RowError, RowSink, _find, _parse_time, _resolve_text, missing_field_error, to_utc

_INSTALL_HINT = "pip install pyarrow, or pip install 'headline-cluster[ray]'"


def parse_parquet(data: bytes, fields: Fields, collector: RowSink) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet needs pyarrow", path=collector.name, hint=_INSTALL_HINT) from None
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and more for a damaged file
        first_line = (str(exc).splitlines() or [""])[0][:200]
        raise InputError(f"cannot read the Parquet file: {first_line}", path=collector.name) from None
    names = table.column_names
    text_index = _resolve_text(names, fields.text)
    if text_index is None:
        wanted = f"column {fields.text!r}" if fields.text else "'text' or 'title' column"
        found = ", ".join(repr(n) for n in names) or "none"
        raise InputError(
            f"no {wanted} (columns found: {found})",
            path=collector.name,
            hint="pass --text-field COLUMN to pick the headline column",
        )
    roles: dict[str, str] = {}
    missing = fields.missing(names)
    if missing:
        raise missing_field_error(missing, names, "the header", path=collector.name)
    used = {names[text_index]}
    for role, wanted_column in (
        ("id", fields.id),
        ("time", fields.time),
        ("source", fields.source),
        ("url", fields.url),
    ):
        index = _find(names, wanted_column)
        if index is not None and names[index] not in used:
            used.add(names[index])
            roles[role] = names[index]
    text_column = names[text_index]
    for number, row in enumerate(table.to_pylist(), start=1):
        try:
            value = row[text_column]
            if not isinstance(value, str):
                kind = "null" if value is None else type(value).__name__
                raise RowError(f"{text_column!r} must be text, got {kind}", "give every row a headline string")
            collector.add(
                number,
                value,
                id=_text(row, roles.get("id")),
                published_at=_time(row, roles.get("time")),
                source=_text(row, roles.get("source")),
                url=_text(row, roles.get("url")),
                extra={k: str(v) for k, v in row.items() if k not in used and v is not None},
            )
        except RowError as error:
            collector.reject(number, error)


def _text(row: dict[str, Any], column: str | None) -> str | None:
    if column is None or row[column] is None:
        return None
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowError(f"{column!r} must be text or a number, got {type(value).__name__}")
    return str(value).strip() or None


def _time(row: dict[str, Any], column: str | None) -> datetime | None:
    if column is None or row[column] is None:
        return None
    value = row[column]
    if isinstance(value, datetime):
        try:
            return to_utc(value)
        except ValueError as exc:
            raise RowError(f"timestamp in {column!r}: {exc}") from None
    if isinstance(value, date):
        return to_utc(datetime(value.year, value.month, value.day))
    return _parse_time(value, column)
