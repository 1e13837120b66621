"""Reading headline input files (txt, csv, tsv, jsonl, parquet) into Records for the CLI and the library.

Every problem is reported as an InputError that names the file and, for row problems, the line, so a
user can fix the input without reading a traceback. With ``skip_invalid`` row problems are collected
instead, while problems with the file as a whole still raise. What is read but maybe not as meant (text cut
to ``max_chars``, a CSV row over several lines, stdin whose format is in doubt) is named in
``ReadResult.warnings``. The per-format parsers live in ``cluster.readers``.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from cluster.errors import InputError
from cluster.limits import MAX_HEADLINE_CHARS, MAX_ID_CHARS
from cluster.normalize import is_blank, is_valid_unicode
from cluster.readers import (
    EXPECTED,
    RESAVE_HINT,
    EmptyInput,
    Fields,
    RowError,
    parse_delimited,
    parse_jsonl,
    parse_txt,
    to_utc,
)
from cluster.sniff import sniff

__all__ = [
    "INPUT_FORMATS",
    "InvalidRow",
    "ReadResult",
    "ReadWarning",
    "Record",
    "content_id",
    "derived_id",
    "detect_format",
    "is_blank",
    "read_many",
    "read_records",
    "sniff_format",
    "to_utc",
]

INPUT_FORMATS = ("txt", "csv", "tsv", "jsonl", "parquet")

_EXTENSIONS = {
    ".txt": "txt",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json-lines": "jsonl",
    ".parquet": "parquet",
}
# Names people commonly type for --input-format; accepting them costs nothing and avoids a round trip.
_FORMAT_ALIASES = {"text": "txt", "tab": "tsv", "ndjson": "jsonl", "json-lines": "jsonl"}

_UTF8_BOM = b"\xef\xbb\xbf"
_FORMAT_HINT = "pass --input-format txt, csv, tsv, jsonl or parquet"


@dataclass(frozen=True)
class Record:
    """One headline. ``line`` is 1-based; for CSV/TSV it is the physical line where the row starts."""

    text: str
    id: str | None = None
    published_at: datetime | None = None
    source: str | None = None
    url: str | None = None
    line: int = 0
    # Left out of the hash so Records stay hashable even though the mapping is a dict.
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)


def _describe(path: str | None, line: int | None, reason: str, hint: str) -> str:
    where = "" if path is None else (f"{path}:{line}: " if line is not None else f"{path}: ")
    return f"{where}{reason}" + (f" ({hint})" if hint else "")


@dataclass(frozen=True)
class InvalidRow:
    """A row skipped because of ``skip_invalid``; ``path`` is the display name of its file.

    ``str()`` gives the full message, ``file:line: what is wrong (what to do)``.
    """

    line: int
    reason: str
    path: str | None = None
    # Not compared: two skips of the same row for the same reason are the same skip.
    hint: str = field(default="", compare=False)

    def __str__(self) -> str:
        return _describe(self.path, self.line, self.reason, self.hint)


@dataclass(frozen=True)
class ReadWarning:
    """Input that was read, but maybe not as meant: text cut to ``max_chars``, a row that runs over several
    lines, standard input that half looks like another format. ``str()`` is ``file:line: what (what to do)``.
    """

    line: int | None
    reason: str
    path: str | None = None
    hint: str = ""

    def __str__(self) -> str:
        return _describe(self.path, self.line, self.reason, self.hint)


@dataclass
class ReadResult:
    records: list[Record]
    invalid: list[InvalidRow]
    truncated: int
    name: str
    input_format: str
    # For the caller to show (the CLI on stderr); reading never stops for a warning.
    warnings: list[ReadWarning] = field(default_factory=list)


def content_id(text: str) -> str:
    """A stable id derived from the headline, for inputs that carry no ids of their own."""
    digest = hashlib.sha256(text.strip().encode("utf-8")).hexdigest()
    return "h" + digest[:16]


def derived_id(text: str, url: str | None) -> str:
    """The id of a headline that has none: its URL when it has one (two articles with one title stay two
    headlines), else ``content_id`` of its text (the same title without a URL is one headline)."""
    url = (url or "").strip()
    if not url:
        return content_id(text)
    # An id has a length limit; a longer URL is named by its hash, still one id per article.
    return url if len(url) <= MAX_ID_CHARS else "u" + hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def detect_format(path: str, explicit: str | None) -> str:
    """The input format: ``explicit`` when given, else from the file extension.

    '-' (stdin) gives 'txt' here; ``read_records`` instead tells stdin's format from its content (see
    ``sniff_format``).
    """
    if explicit is not None:
        wanted = explicit.strip().lower()
        wanted = _FORMAT_ALIASES.get(wanted, wanted)
        if wanted not in INPUT_FORMATS:
            raise InputError(f"unknown input format {explicit!r}", hint=f"choose one of: {', '.join(INPUT_FORMATS)}")
        return wanted
    if path == "-":
        return "txt"
    suffix = Path(path).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    what = f"extension {suffix!r}" if suffix else "a file without an extension"
    hint = _FORMAT_HINT
    if suffix == ".json":
        hint += " (a file with one JSON object per line is jsonl)"
    raise InputError(f"cannot tell the input format from {what}", path=path, hint=hint)


def sniff_format(text: str, *, text_field: str | None = None) -> str:
    """The format ``read_records`` reads unnamed input (stdin, a stream without a path) as, from its text.

    jsonl when the first non-blank line is a JSON object and every non-blank line starts with ``{``; csv or
    tsv when the first non-blank line is a header (two or more name-like cells, one of them ``text_field``
    or else ``text``/``title``) and the next row has as many cells; otherwise txt, so a plain headline list
    is never read as anything else. Full rule: :func:`cluster.readers.sniff`.
    """
    return sniff(text, text_field)[0]


def read_records(
    source: str | Path | TextIO | BinaryIO,
    *,
    input_format: str | None = None,
    text_field: str | None = None,
    id_field: str = "id",
    time_field: str = "published_at",
    source_field: str = "source",
    url_field: str = "url",
    skip_invalid: bool = False,
    max_chars: int = MAX_HEADLINE_CHARS,
    reject_long: bool = False,
    name: str | None = None,
    required_fields: Collection[str] = (),
) -> ReadResult:
    """Read headlines from a path, '-' (standard input) or an open stream.

    Raises InputError for any problem; with ``skip_invalid`` per-row problems are returned in
    ``ReadResult.invalid`` instead. A headline that is empty once normalized (only whitespace, controls or
    invisible characters: ``is_blank``) is an invalid row. Text longer than ``max_chars`` is cut, counted in
    ``truncated`` and named in ``warnings``; with ``reject_long`` such a row is invalid instead (for callers
    that must store text as given). Input without a path to tell its format by (stdin) and no
    ``input_format`` is sniffed (``sniff_format``); doubtful cases are named in ``warnings``.
    ``required_fields`` names the roles (``id``, ``time``, ``source``, ``url``) whose field names the user
    gave: one missing from the header or the first record is an InputError, not an empty field.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    data, display, detect_path = _load(source, name)
    sniffing = detect_path == "-" and input_format is None
    fmt = "txt" if sniffing else detect_format(detect_path, input_format)
    fields = Fields(text_field, id_field, time_field, source_field, url_field, frozenset(required_fields))
    if fmt == "parquet":  # binary: no text to decode; rows go through the same collector
        from cluster.parquet_rows import parse_parquet

        collector = _Collector(display, skip_invalid, max_chars, set(), reject_long)
        parse_parquet(data, fields, collector)
        if not collector.records and not collector.invalid:
            raise EmptyInput(f"no headlines in {display}", path=display, hint="expected rows with a 'text' column")
        return ReadResult(collector.records, collector.invalid, collector.truncated, display, fmt, collector.warnings)
    text, bad_lines = _decode(data, display, skip_invalid)
    collector = _Collector(display, skip_invalid, max_chars, bad_lines, reject_long)
    if sniffing:
        fmt, notes = sniff(text, text_field)
        for line, reason, hint in notes:
            collector.warn(line, reason, hint)
    if fmt == "txt":
        _no_fields_in_txt(fields, text_field, display)
        parse_txt(text, collector)
    elif fmt == "jsonl":
        parse_jsonl(text, fields, collector)
    else:
        parse_delimited(text, "," if fmt == "csv" else "\t", fields, collector)
    # Rows that were there but all invalid are not "empty": the caller gets them in `invalid` to report.
    if not collector.records and not collector.invalid:
        raise EmptyInput(f"no headlines in {display}", path=display, hint=EXPECTED[fmt])
    return ReadResult(collector.records, collector.invalid, collector.truncated, display, fmt, collector.warnings)


def _no_fields_in_txt(fields: Fields, text_field: str | None, display: str) -> None:
    """A field option given for plain lines would be silently ignored: say so instead."""
    named = [f"--{role}-field" for role in ("id", "time", "source", "url") if role in fields.required]
    if text_field is not None:
        named.insert(0, "--text-field")
    if named:
        raise InputError(
            f"{', '.join(named)} given, but this is plain text (one headline per line, no fields)",
            path=display,
            hint="give csv, tsv or jsonl input (or --input-format), or leave the field options out",
            whole_file=True,
        )


def read_many(paths: Sequence[str], **kwargs: Any) -> ReadResult:
    """Read several inputs as one; ids must be unique across all of them.

    Takes the keyword options of ``read_records`` except ``name``. With ``skip_invalid`` an empty file among
    others is skipped with a warning. Record lines stay relative to their own file; ``input_format`` of the
    result is 'mixed' when the files differ.
    """
    if not paths:
        raise InputError("no input files given", hint="name at least one file, or - for standard input")
    if "name" in kwargs:
        raise TypeError("read_many() does not take name; each file is named by its path")
    skip_invalid = bool(kwargs.get("skip_invalid", False))
    records: list[Record] = []
    invalid: list[InvalidRow] = []
    warnings: list[ReadWarning] = []
    truncated = 0
    names: list[str] = []
    formats: list[str] = []
    first_seen: dict[str, str] = {}
    empty: EmptyInput | None = None
    for path in paths:
        try:
            part = read_records(path, **kwargs)
        except EmptyInput as exc:
            # One empty file among several (an empty drop in a feed folder) must not stop the rest.
            if not skip_invalid or len(paths) == 1:
                raise
            empty = empty or exc
            warnings.append(ReadWarning(None, "no headlines in the file; skipped", exc.path))
            continue
        names.append(part.name)
        formats.append(part.input_format)
        invalid.extend(part.invalid)
        warnings.extend(part.warnings)
        truncated += part.truncated
        for record in part.records:
            if record.id is not None:
                where = f"{part.name}:{record.line}"
                if record.id in first_seen:
                    reason = f"duplicate id {record.id!r} (first seen at {first_seen[record.id]})"
                    if not skip_invalid:
                        raise InputError(reason, path=part.name, line=record.line, hint=_DUPLICATE_HINT)
                    invalid.append(InvalidRow(record.line, reason, part.name, _DUPLICATE_HINT))
                    continue
                first_seen[record.id] = where
            records.append(record)
    if empty is not None and not records and not invalid:
        raise empty  # every file was empty: nothing to do is still an error
    fmt = formats[0] if len(set(formats)) == 1 else "mixed"
    return ReadResult(records, invalid, truncated, ", ".join(names), fmt, warnings)


# --- loading and decoding -------------------------------------------------------------------------------


def _load(source: str | Path | TextIO | BinaryIO, name: str | None) -> tuple[bytes, str, str]:
    """Returns (bytes, display name, path used for format detection)."""
    if isinstance(source, str) and source == "-":
        return _read_stream(sys.stdin.buffer), name or "<stdin>", "-"
    if isinstance(source, (str, Path)):
        display = name or str(source)
        try:
            return Path(source).read_bytes(), display, str(source)
        except FileNotFoundError:
            raise InputError("file not found", path=display, hint="check the path, or use - for stdin") from None
        except IsADirectoryError:
            raise InputError("is a directory, not a file", path=display) from None
        except PermissionError:
            raise InputError("permission denied", path=display, hint="check the file's permissions") from None
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror or exc}", path=display) from None
    # An open file still carries its path, the best guide to its format; other streams are stdin-like.
    stream_name = getattr(source, "name", None)
    has_path = isinstance(stream_name, str) and not stream_name.startswith("<")
    display = name or (stream_name if has_path else "<stdin>")
    return _read_stream(source), display, stream_name if has_path else "-"


def _read_stream(stream: TextIO | BinaryIO) -> bytes:
    data = stream.read()
    if isinstance(data, str):
        # Lone surrogates (e.g. from a surrogateescape text stream) survive as bytes the strict decoder
        # rejects, so bad input in a text stream is reported the same way as in a file.
        return data.encode("utf-8", "surrogatepass")
    return data


def _decode(data: bytes, name: str, skip_invalid: bool) -> tuple[str, set[int]]:
    """Strict UTF-8 text, plus the line numbers that could not be decoded (only with skip_invalid)."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        # Every line would fail to decode; one file-level message is clearer than an error per line.
        raise InputError("file is UTF-16 encoded, not UTF-8", path=name, hint=RESAVE_HINT)
    try:
        return data.decode("utf-8"), set()
    except UnicodeDecodeError as exc:
        if not skip_invalid:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            raise InputError(
                f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte {column} of the line",
                path=name,
                line=line,
                hint=RESAVE_HINT,
            ) from None
    # Decode line by line so one bad line costs one row, not the file. '\n' never occurs inside a
    # multi-byte UTF-8 sequence, so splitting the bytes there is safe.
    pieces: list[str] = []
    bad_lines: set[int] = set()
    for number, chunk in enumerate(data.split(b"\n"), start=1):
        try:
            pieces.append(chunk.decode("utf-8"))
        except UnicodeDecodeError:
            bad_lines.add(number)
            pieces.append(chunk.decode("utf-8", "replace"))
    return "\n".join(pieces), bad_lines


# --- collecting rows ------------------------------------------------------------------------------------

_DUPLICATE_HINT = "ids must be unique; remove the repeated row or give it its own id"


_EMPTY_HINT = "remove the row or give it a headline"
_UNICODE_HINT = "it holds half of a character pair, a lone surrogate such as \\ud800: export the row again"
_LONG_HINT = "this is usually an article body or several lines run together; fix or remove the line"


class _Collector:
    """Receives rows from the parsers in cluster.readers: the one place a headline is checked and kept."""

    def __init__(self, name: str, skip_invalid: bool, max_chars: int, bad_lines: set[int], reject_long: bool):
        self.name = name
        self.skip_invalid = skip_invalid
        self.max_chars = max_chars
        self.reject_long = reject_long
        self.bad_lines = bad_lines
        self.records: list[Record] = []
        self.invalid: list[InvalidRow] = []
        self.warnings: list[ReadWarning] = []
        self.truncated = 0
        self._id_lines: dict[str, int] = {}

    def check_decoded(self, first: int, last: int) -> None:
        if any(number in self.bad_lines for number in range(first, last + 1)):
            raise RowError("not valid UTF-8", RESAVE_HINT)

    def reject(self, line: int, error: RowError) -> None:
        if not self.skip_invalid:
            raise InputError(error.reason, path=self.name, line=line, hint=error.hint)
        self.invalid.append(InvalidRow(line, error.reason, self.name, error.hint))

    def warn(self, line: int, reason: str, hint: str = "") -> None:
        self.warnings.append(ReadWarning(line, reason, self.name, hint))

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
    ) -> None:
        # Text that cannot be written as UTF-8 could be neither embedded, stored nor printed.
        for name, value in (("text", text), ("id", id), ("source", source), ("url", url), *(extra or {}).items()):
            if value is not None and not is_valid_unicode(value):
                raise RowError(f"{name if is_valid_unicode(name) else 'a field'} is not valid Unicode", _UNICODE_HINT)
        text = text.strip()
        if not text:
            raise RowError("empty headline", _EMPTY_HINT)
        if is_blank(text):
            raise RowError(f"headline has no visible characters (only {_code_points(text)})", _EMPTY_HINT)
        length = len(text)
        if length > self.max_chars:
            if self.reject_long:
                reason = f"headline is {length:,} characters long, over the limit of {self.max_chars:,}"
                raise RowError(reason, _LONG_HINT)
            # rstrip: a Record's text never ends in whitespace, wherever the cut falls.
            text = text[: self.max_chars].rstrip()
            if is_blank(text):
                reason = f"headline has no visible characters in its first {self.max_chars:,} (of {length:,})"
                raise RowError(reason, _EMPTY_HINT)
        if id is not None:
            if len(id) > MAX_ID_CHARS:
                reason = f"the id is {len(id):,} characters long, over the limit of {MAX_ID_CHARS:,}"
                raise RowError(reason, "shorten it: ids are keys, such as a URL hash or a feed's article id")
            if id in self._id_lines:
                raise RowError(f"duplicate id {id!r} (first seen on line {self._id_lines[id]})", _DUPLICATE_HINT)
            self._id_lines[id] = line
        if length > self.max_chars:
            self.truncated += 1
            self.warn(
                line,
                f"headline is {length:,} characters long; cut to the first {self.max_chars:,}",
                f"only the cut text is matched and shown; {_LONG_HINT}",
            )
        self.records.append(Record(text, id, published_at, source, url, line, dict(extra or {})))


def _code_points(text: str, shown: int = 3) -> str:
    """The distinct non-space code points of ``text`` as U+XXXX, for a message about invisible text."""
    points = list(dict.fromkeys(f"U+{ord(char):04X}" for char in text if not char.isspace()))
    return ", ".join(points[:shown]) + (", ..." if len(points) > shown else "")
