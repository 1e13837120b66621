"""Telling the format of standard input, which has no file name to tell it by (:func:`sniff`).

Internal to the reader, beside :mod:`cluster.readers`: :func:`cluster.records.sniff_format` is the public face.
"""

from __future__ import annotations

import csv
import json
import re

from cluster.readers import _resolve_text, json_too_deep

_SNIFF_HINT = "pass --input-format txt, csv, tsv or jsonl to choose"
# A header cell: a name such as id, title, published_at, "Published At", url.canonical (or empty, as in
# the unnamed index column pandas writes). A headline fragment has digits first, quotes, colons, ... .
_HEADER_CELL = re.compile(r"(?:[^\W\d][\w .\-]{0,63})?")


def sniff(text: str, text_field: str | None = None) -> tuple[str, list[tuple[int, str, str]]]:
    """The format of input that has no name to tell it by, and (line, reason, hint) notes on doubtful input.

    The rule (a plain list of headlines is always read as txt):

    - jsonl when the first non-blank line is a JSON object and every non-blank line starts with ``{``.
      Malformed lines among them are then reported by the jsonl reader with their line numbers, instead of
      turning into headlines of JSON text. A headline list cannot look like this: its first line would have
      to be a JSON object.
    - tsv (tab) or csv (comma) when the first non-blank line is a header: at least two cells, one of them
      the text column (``text_field``, else ``text`` or ``title``, any case), every cell a name (letters,
      then letters, digits, ``_ . -`` or spaces, at most 64 characters; or empty), and the next row has as
      many cells. A headline would need, besides a cell that is exactly "Title" or "Text", a next headline
      with the same number of commas (or tabs).
    - txt otherwise. A note (a warning for the user) says so when the input half looks like another
      format: a first line that is a JSON object while a later line is not, a lone ``[`` or ``{`` (a JSON
      document, not JSON Lines), or a first line that names the text column but fails the header test.
    """
    numbered = [(n, line.strip()) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not numbered:
        return "txt", []
    number, head = numbered[0]
    if head.startswith("{") and _json_object_line(head):
        for later, line in numbered:
            if not line.startswith("{"):
                reason = f"line {number} is a JSON object but line {later} is not, so the input is read as txt"
                return "txt", [(later, reason, f"pass --input-format jsonl to read it as JSON Lines; {_SNIFF_HINT}")]
        return "jsonl", []
    if head in ("[", "{") or (head.startswith("[") and _json_array_line(head)):
        reason = "this looks like JSON (an array or a multi-line object), which is read as txt"
        return "txt", [(number, reason, f"convert it to JSON Lines, one object per line; {_SNIFF_HINT}")]
    for delimiter, fmt in (("\t", "tsv"), (",", "csv")):
        if delimiter not in head:
            continue
        cells = _first_rows(text, delimiter)
        if not cells or _resolve_text(cells[0], text_field) is None:
            continue
        header = cells[0]
        if (
            len(header) >= 2
            and all(_HEADER_CELL.fullmatch(cell) for cell in header)
            and (len(cells) == 1 or len(cells[1]) == len(header))
        ):
            return fmt, []
        reason = f"line {number} names a headline column like a {fmt} header, but is read as a headline"
        return "txt", [(number, reason, f"pass --input-format {fmt} to read a table; {_SNIFF_HINT}")]
    if _resolve_text([head], text_field) is not None:
        reason = f"line {number} {head!r} looks like a one-column header, but is read as a headline"
        return "txt", [(number, reason, f"pass --input-format csv to read a one-column table; {_SNIFF_HINT}")]
    return "txt", []


def _json_object_line(line: str) -> bool:
    if not line.endswith("}"):
        return False
    if json_too_deep(line):
        return True  # JSON-shaped; the jsonl reader reports the depth with the line number
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


def _json_array_line(line: str) -> bool:
    if not line.endswith("]") or json_too_deep(line):
        return False
    try:
        return isinstance(json.loads(line), list)
    except (ValueError, RecursionError):
        return False


def _first_rows(text: str, delimiter: str) -> list[list[str]]:
    """The first two non-blank rows, cells stripped; [] when they cannot be parsed."""
    rows: list[list[str]] = []
    try:
        for row in csv.reader(text.split("\n", 10_000)[:10_000], delimiter=delimiter):
            cells = [cell.strip() for cell in row]
            if any(cells):
                rows.append(cells)
                if len(rows) == 2:
                    break
    except csv.Error:
        return []
    return rows
