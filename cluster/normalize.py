"""Headline normalization for matching and embedding.

Callers keep the original headline for display; this module only produces the string that is compared
and embedded, so it may fold away anything that distinguishes spellings rather than meanings.

Pipeline (``normalize``), in order:

1. Invisible characters are dropped: every format character (category Cf: zero-width and bidi controls
   U+200B-U+200F, U+202A-U+202E, U+2060-U+206F, U+FEFF, the soft hyphen U+00AD, the Arabic letter mark
   U+061C, Arabic number signs, tag characters, ...) and the other default-ignorable code points (the
   combining grapheme joiner, Hangul fillers, variation selectors); see ``_INVISIBLE_RANGES``. This
   happens just before NFKC rather than after it, so that an invisible character sitting between a
   letter and its accent cannot block composition and leave a string that a second pass would change.
2. Unicode NFKC (full-width Latin, Arabic presentation forms such as U+FEFB -> "لا", "…" -> "...").
   The double primes ″ and ‶ are mapped to ``"`` first, because NFKC would split them into two single
   primes.
3. Other C0/C1 control characters, tabs and newlines become a space.
4. Arabic: tashkeel (U+064B-U+065F, superscript alef U+0670, Quranic marks U+06D6-U+06ED) and tatweel
   U+0640 are removed; alef forms أ إ آ ٱ ٲ ٳ -> ا; ى -> ي.
5. Persian/Urdu letters are written as their Arabic counterparts: ی ې ے -> ي, ۓ -> ئ, ک -> ك,
   ە ہ ۀ ۂ ھ -> ه, and the Urdu full stop ۔ -> ".". گ is kept: it is a letter of its own (/g/) with no
   Arabic equivalent, and folding it into ك or ج would merge different words.
6. Digits: Arabic-Indic U+0660-U+0669 and Extended (Persian) U+06F0-U+06F9 -> 0-9; ٫ -> ".", ٬ -> ",",
   ٪ -> "%".
7. Punctuation: double-quote-like characters (« » „ “ ” ‟ ″) -> ``"``; single-quote-like characters
   (‘ ’ ‚ ‛ ′ ‹ › `) -> ``'``; ، -> ","; ؛ -> ";"; ؟ -> "?"; dashes (U+2010-U+2015, U+2212, U+FE58,
   U+FE63, U+FF0D) -> "-"; every run of two or more dots (after "…" became "...") -> "...", so "..",
   "...." and "…" all read the same.
8. Whitespace runs collapse to one space and the ends are stripped; then ``str.casefold`` (only bicameral
   scripts change; Arabic is caseless).

Deliberately *not* folded:

- ة (ta marbuta) stays distinct from ه: folding merges different words (e.g. a feminine noun and a
  pronoun suffix), and the embedding model has seen both spellings as written.
- ؤ and ئ (hamza on waw/yeh) and the bare hamza ء are kept: they are real spelling differences the model
  knows. Only the alef-hamza forms are unified, because writers drop or swap them freely (احمد/أحمد).

Prefix stripping (``strip_prefixes=True``, the default) then removes format and attribution markers that
say nothing about the story, repeatedly, because headlines stack them ("عاجل: بالفيديو.. ..."):

- a known prefix at the start followed by a separator: ``:`` ``|`` ``...`` (also ".." and "…"), ``>>``,
  ``»`` (which is ``"`` after normalization, so it only counts when a space follows it), ``-`` or ``/``
  (a single one only with a space on at least one side, so "live-streamed" keeps its word; any run of
  two or more dashes always counts);
- a known prefix in brackets at the start: "(فيديو) ...", "[video] ...";
- a known prefix at the end, bracketed or after a dash or bar: "... (فيديو)", "... [video]",
  "... - فيديو", "... | فيديو";
- a leading news-agency attribution: a parenthesised group of at most three words that contains a letter,
  followed by ``-``, ``--`` or ``:``, e.g. "(CNN)-- ..." or "(أ ف ب): ...". Attribution stripping does
  not depend on the prefix list.

Prefixes match whole words only: the separator (or bracket, or end of text) must follow the prefix, so
"فيديوهات الحرب" keeps its first word. A strip that would leave nothing is skipped, so a headline that is
only "عاجل" stays "عاجل".

The prefix list is ``DEFAULT_PREFIXES`` unless ``prefixes=`` is given, or, when it is not, the environment
variable ``HEADLINE_CLUSTER_PREFIXES`` names a prefix file (see ``load_prefixes``); either one replaces
the default list rather than extending it, so a user can drop a default that misfires on their data.
Pure orthographic folding without any stripping is ``normalize(text, strip_prefixes=False)``.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from cluster.errors import InputError

__all__ = ["DEFAULT_PREFIXES", "PREFIXES_ENV", "is_blank", "is_valid_unicode", "load_prefixes", "normalize"]

PREFIXES_ENV = "HEADLINE_CLUSTER_PREFIXES"

# Stored already normalized (alef-hamza folded, casefolded) so they can be compared with normalized text
# directly; a test checks that normalizing each entry leaves it unchanged.
DEFAULT_PREFIXES: tuple[str, ...] = (
    # Arabic
    "بالفيديو والصور",
    "بالصور والفيديو",
    "بالفيديو",
    "فيديو",
    "بالصور",
    "صور",
    "عاجل",
    "خاص",
    "حصري",
    "انفوجراف",
    "انفوغراف",
    "انفوجرافيك",
    "شاهد",
    "اقرا ايضا",
    "تقرير",
    "بث مباشر",
    "مباشر",
    "لحظة بلحظة",
    "فيديوجراف",
    "فيديوغراف",
    # English
    "breaking news",
    "breaking",
    "watch",
    "video",
    "photos",
    "exclusive",
    "live",
    "update",
    "updated",
    "just in",
    "opinion",
    "analysis",
    # French
    "vidéo",
    "exclusif",
    "en direct",
    "direct",
)


def _chars(first: int, last: int) -> range:
    return range(first, last + 1)


# Code points with no visible form: every format character (Unicode category Cf: zero-width and bidi
# controls, the soft hyphen, Arabic number signs, tags, ...) and the other default-ignorable code points
# (combining grapheme joiner, Hangul fillers, variation selectors). They change how text renders or is
# shaped, never what it says, and a headline made only of them must normalize to "".
_INVISIBLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# The double primes would otherwise come out of NFKC as two single primes.
_PRIMES = {0x2033: '"', 0x2036: '"'}


def _build_pre_nfkc_table() -> dict[int, str | None]:
    # Invisible characters go before NFKC: left in place they could block an accent from composing.
    table: dict[int, str | None] = dict(_PRIMES)
    for first, last in _INVISIBLE_RANGES:
        for cp in _chars(first, last):
            table[cp] = None
    return table


_PRE_NFKC = str.maketrans(_build_pre_nfkc_table())
# str.translate costs a dict lookup per character, so skip it unless there is something to translate.
_PRE_NFKC_ANY = re.compile(
    "["
    + "".join(re.escape(chr(cp)) for cp in _PRIMES)
    + "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in _INVISIBLE_RANGES)
    + "]"
)


def _build_fold_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for cp in [*_chars(0x00, 0x1F), *_chars(0x7F, 0x9F)]:
        table[cp] = " "
    for cp in [*_chars(0x064B, 0x065F), 0x0670, *_chars(0x06D6, 0x06ED), 0x0640]:
        table[cp] = None
    for ch in "\u0623\u0625\u0622\u0671\u0672\u0673":
        table[ord(ch)] = "\u0627"
    table[0x0649] = "\u064a"  # ى
    for cp in (0x06CC, 0x06D0, 0x06D2):  # ی ې ے
        table[cp] = "\u064a"
    table[0x06D3] = "\u0626"  # ۓ is ے + hamza, the Urdu spelling of ئ
    table[0x06A9] = "\u0643"  # ک
    for cp in (0x06D5, 0x06C1, 0x06C0, 0x06C2, 0x06BE):  # ە ہ ۀ ۂ ھ
        table[cp] = "\u0647"
    table[0x06D4] = "."  # Urdu full stop
    for i in range(10):
        table[0x0660 + i] = str(i)
        table[0x06F0 + i] = str(i)
    table[0x066B] = "."
    table[0x066C] = ","
    table[0x066A] = "%"
    for ch in "\u00ab\u00bb\u201e\u201c\u201d\u201f":
        table[ord(ch)] = '"'
    for ch in "\u2018\u2019\u201a\u201b\u2032\u2035\u2039\u203a`":
        table[ord(ch)] = "'"
    table[0x060C] = ","
    table[0x061B] = ";"
    table[0x061F] = "?"
    for cp in [*_chars(0x2010, 0x2015), 0x2212, 0xFE58, 0xFE63, 0xFF0D]:
        table[cp] = "-"
    return table


_FOLD = str.maketrans(_build_fold_table())
_DOTS = re.compile(r"\.{2,}")
_SPACES = re.compile(r"\s+")


def _fold(text: str) -> str:
    if not text.isascii():
        if _PRE_NFKC_ANY.search(text):
            text = text.translate(_PRE_NFKC)
        text = unicodedata.normalize("NFKC", text)
    text = text.translate(_FOLD)
    if not text.isascii():
        # Removing tatweel or a Quranic mark can bring a letter next to an accent it now composes with;
        # recomposing here keeps normalize() idempotent.
        text = unicodedata.normalize("NFC", text)
    text = _DOTS.sub("...", text)
    text = _SPACES.sub(" ", text).strip()
    text = text.casefold()
    if not text.isascii():
        # casefold can decompose ("ǰ" -> "j" + caron); recompose so the output is NFC throughout.
        text = unicodedata.normalize("NFC", text)
    return text


# Separators after a leading prefix. A lone "-" or "/" needs a space on one side so hyphenated words
# ("live-streamed") survive; '"' is what "»" became and only counts before a space, because an opening
# quote ("عاجل "حماس" ...) is content.
_LEAD_SEP = r"""(?:[:|]|\.\.\.|>{2,}|"(?=\s)|-{2,}|(?<=\s)[-/]|[-/](?=\s))"""
_TRAIL_SEP = r"(?:\||-{2,}|(?<=\s)-|-(?=\s))"
_ATTRIBUTION = re.compile(r"^\(\s*(?=[^()]*[^\W\d_])[^\s()\[\]]+(?:\s+[^\s()\[\]]+){0,2}\s*\)\s*(?:-+|:)\s*")


class _PrefixMatcher:
    __slots__ = ("lead", "lead_bracket", "trail")

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        self.lead: re.Pattern[str] | None = None
        self.lead_bracket: re.Pattern[str] | None = None
        self.trail: re.Pattern[str] | None = None
        if not prefixes:
            return
        # Longest first, so "breaking news" wins over "breaking" in the alternation.
        alt = "|".join(re.escape(p) for p in sorted(prefixes, key=lambda p: (-len(p), p)))
        bracketed = rf"(?:\(\s*(?:{alt})\s*\)|\[\s*(?:{alt})\s*\])"
        self.lead = re.compile(rf"^(?:{alt})\s*(?:{_LEAD_SEP}\s*)+")
        self.lead_bracket = re.compile(rf"^{bracketed}\s*(?:{_LEAD_SEP}\s*)*")
        self.trail = re.compile(rf"\s*(?:{bracketed}|{_TRAIL_SEP}\s*(?:{alt}))\s*$")

    def strip(self, text: str) -> str:
        changed = True
        while changed:
            changed = False
            for pattern in (_ATTRIBUTION, self.lead_bracket, self.lead):
                if pattern is None:
                    continue
                m = pattern.match(text)
                if m and m.end() < len(text):
                    text = text[m.end() :]
                    changed = True
            if self.trail is not None:
                m = self.trail.search(text)
                if m and m.start() > 0:
                    text = text[: m.start()]
                    changed = True
        return text


# Strip characters that users tend to type after a prefix in their file ("عاجل:"), since the separator
# is matched separately.
_PREFIX_TAIL = re.compile(r"[\s:|./>\"-]+$")
_INLINE_COMMENT = re.compile(r"\s#.*$")


def _clean_prefix(prefix: str) -> str:
    return _PREFIX_TAIL.sub("", _fold(prefix))


@functools.lru_cache(maxsize=64)
def _matcher(prefixes: tuple[str, ...]) -> _PrefixMatcher:
    cleaned = {p for p in (_clean_prefix(p) for p in prefixes) if p}
    return _PrefixMatcher(tuple(cleaned))


def load_prefixes(path: str | Path) -> tuple[str, ...]:
    """Read a prefix file: UTF-8, one prefix per line; blank lines and '#' comments are ignored.

    A comment is a line whose first non-blank character is '#', or the rest of a line from a '#' that
    follows whitespace ("عاجل  # urgent"). Separators typed after a prefix ("عاجل:") are dropped, since
    the separator is matched separately. Returns the prefixes normalized (as in ``DEFAULT_PREFIXES``), in
    file order, without duplicates.
    """
    path = Path(path)
    hint = "give a UTF-8 text file with one prefix per line"
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = f"cannot read prefix file: {exc.strerror or exc}"
        raise InputError(reason, path=str(path), hint=hint) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError("prefix file is not valid UTF-8", path=str(path), line=line, hint=hint) from exc
    result: dict[str, None] = {}
    for raw in text.splitlines():
        stripped = _INLINE_COMMENT.sub("", raw).strip()
        if not stripped or stripped.startswith("#"):
            continue
        cleaned = _clean_prefix(stripped)
        if cleaned:
            result[cleaned] = None
    return tuple(result)


_env_cache: dict[str, tuple[int, int, tuple[str, ...]]] = {}


def _env_prefixes() -> tuple[str, ...] | None:
    path = os.environ.get(PREFIXES_ENV)
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(
            f"cannot read prefix file named by {PREFIXES_ENV}: {exc.strerror or exc}",
            path=path,
            hint=f"fix or unset {PREFIXES_ENV}",
        ) from exc
    cached = _env_cache.get(path)
    if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
        return cached[2]
    prefixes = load_prefixes(path)
    _env_cache[path] = (st.st_mtime_ns, st.st_size, prefixes)
    return prefixes


def normalize(text: str, *, prefixes: Sequence[str] | None = None, strip_prefixes: bool = True) -> str:
    """Return the normalized form of ``text`` used for matching and embedding (see the module docstring).

    ``prefixes`` replaces the prefix list (entries are normalized the same way before matching); when it is
    None, the file named by ``HEADLINE_CLUSTER_PREFIXES`` is used if set, else ``DEFAULT_PREFIXES``.
    ``strip_prefixes=False`` returns the orthographic folding alone.
    """
    if isinstance(prefixes, str):
        # A bare string would silently be treated as a list of one-letter prefixes.
        raise TypeError("prefixes must be a sequence of strings, not a single string")
    folded = _fold(text)
    if not strip_prefixes or not folded:
        return folded
    if prefixes is None:
        prefixes = _env_prefixes()
        if prefixes is None:
            prefixes = DEFAULT_PREFIXES
    return _matcher(tuple(prefixes)).strip(folded)


# Printable ASCII other than the space, and the Arabic letters (hamza to ghain, feh to yeh; not tatweel),
# survive normalization (at most folded to another such character), so one of them proves a headline is
# not blank without normalizing it: the readers call is_blank on every row.
_SURELY_VISIBLE = re.compile(r"[!-~\u0621-\u063a\u0641-\u064a]")


def is_blank(text: str) -> bool:
    """True when ``text`` has nothing to match on: its normalized form is "".

    That is text made only of whitespace, controls, invisible format characters (RLM, ZWSP, BOM, ...),
    tashkeel and tatweel. Every layer that accepts headlines (the readers, ``collapse``, the index, the
    HTTP service) uses this one test, so they agree on what an empty headline is. Prefix stripping is left
    out because it never strips a headline down to nothing, and so the prefix file named by
    ``HEADLINE_CLUSTER_PREFIXES`` is not read here.
    """
    if _SURELY_VISIBLE.search(text):
        return False
    return not normalize(text, strip_prefixes=False)


def is_valid_unicode(text: str) -> bool:
    """False when ``text`` holds a lone surrogate (U+D800..U+DFFF): a JSON escape such as ``\\ud800``
    without its pair, or a byte that was not UTF-8 in a command-line argument. Such text cannot be written
    as UTF-8, so it can be neither embedded, stored nor printed; every entry point refuses it by this test.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
