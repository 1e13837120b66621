"""Tests for cluster.normalize: one group per folding rule, then prefix stripping and configuration."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from cluster.errors import InputError
from cluster.normalize import DEFAULT_PREFIXES, PREFIXES_ENV, is_blank, load_prefixes, normalize


@pytest.fixture(autouse=True)
def _no_env_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    # A prefix file set in the developer's shell would silently change what the defaults tests see.
    monkeypatch.delenv(PREFIXES_ENV, raising=False)


def fold(text: str) -> str:
    return normalize(text, strip_prefixes=False)


# --- Unicode NFKC -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ＡＢＣ１２３", "abc123"),  # full-width Latin and digits
        ("\ufefb", "لا"),  # lam-alef ligature presentation form
        ("\ufef7", "لا"),  # lam-alef-with-hamza ligature: NFKC, then alef folding
        ("\ufe8d\ufedf", "ال"),  # isolated/initial presentation forms
        ("ﬁnal", "final"),
        ("x\u00a0y", "x y"),  # no-break space
    ],
)
def test_nfkc(text: str, expected: str) -> None:
    assert fold(text) == expected


# --- invisible and control characters ---------------------------------------------------------------

INVISIBLE = [
    *(chr(cp) for cp in range(0x200B, 0x2010)),
    *(chr(cp) for cp in range(0x202A, 0x202F)),
    *(chr(cp) for cp in range(0x2066, 0x206A)),
    "\ufeff",
    "\u00ad",
    "\u061c",
]


@pytest.mark.parametrize("char", INVISIBLE, ids=lambda c: f"U+{ord(c):04X}")
def test_invisible_characters_are_dropped(char: str) -> None:
    assert fold(f"غ{char}زة") == "غزة"
    assert fold(f"Ga{char}za") == "gaza"


def test_invisible_character_does_not_block_accent_composition() -> None:
    # e + ZWSP + combining acute: once the ZWSP is gone the accent belongs to the e.
    assert fold("caf\u0065\u200b\u0301") == "caf\u00e9"


CONTROLS = ["\t", "\n", "\r", "\x0b", "\x0c", "\x00", "\x1b", "\x7f", "\x85", "\x9f"]


@pytest.mark.parametrize("char", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_controls_become_a_space(char: str) -> None:
    assert fold(f"غزة{char}اليوم") == "غزة اليوم"


# --- Arabic letters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("مُحَمَّدٌ", "محمد"),
        ("الْعَرَبِيَّةُ", "العربية"),
        ("كِتَابًا", "كتابا"),  # tanween fath
        ("هٰذا", "هذا"),  # superscript alef U+0670
        ("الرَّحِيمِ\u06d6", "الرحيم"),  # Quranic small high ligature
        ("قال\u06da\u06e2\u06ed", "قال"),
    ],
)
def test_tashkeel_removed(text: str, expected: str) -> None:
    assert fold(text) == expected


def test_tatweel_removed() -> None:
    assert fold("جـــمـيل") == "جميل"


@pytest.mark.parametrize("alef", ["أ", "إ", "آ", "ٱ", "\u0672", "\u0673", "ا\u0654", "ا\u0655", "ا\u0653"])
def test_alef_forms_unified(alef: str) -> None:
    assert fold(f"{alef}حمد") == "احمد"


def test_alef_maqsura_to_yeh() -> None:
    assert fold("مستشفى") == "مستشفي"
    assert fold("على") == "علي"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\u06cc", "ي"),  # Persian yeh
        ("\u06d0", "ي"),  # yeh with two dots below
        ("\u06d2", "ي"),  # Urdu yeh barree
        ("\u06a9", "ك"),  # keheh
        ("\u06d5", "ه"),  # ae
        ("\u06c1", "ه"),  # heh goal
        ("\u06c0", "ه"),  # heh with yeh above
        ("\u06be", "ه"),  # heh doachashmee
        ("\u06d4", "."),  # Urdu full stop
    ],
)
def test_persian_urdu_letters(text: str, expected: str) -> None:
    assert fold(f"ب{text}ب") == f"ب{expected}ب"


def test_persian_words_match_arabic_spelling() -> None:
    assert fold("ایران") == fold("ايران") == "ايران"
    assert fold("کتاب") == "كتاب"


def test_gaf_is_kept() -> None:
    assert fold("گزارش") == "گزارش"


# --- digits and number punctuation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("٠١٢٣٤٥٦٧٨٩", "0123456789"),
        ("۰۱۲۳۴۵۶۷۸۹", "0123456789"),
        ("٣٫٥", "3.5"),
        ("١٬٠٠٠", "1,000"),
        ("٥٠٪", "50%"),
        ("۱۴۰۲", "1402"),
    ],
)
def test_digits(text: str, expected: str) -> None:
    assert fold(text) == expected


# --- punctuation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("quote", ["«", "»", "„", "“", "”", "‟", "″", "＂"])
def test_double_quotes(quote: str) -> None:
    assert fold(f"قال {quote}لا{quote}") == 'قال "لا"'


@pytest.mark.parametrize("quote", ["'", "‘", "’", "‚", "‛", "′", "`"])
def test_single_quotes(quote: str) -> None:
    assert fold(f"it{quote}s") == "it's"


@pytest.mark.parametrize(("char", "expected"), [("،", ","), ("؛", ";"), ("؟", "?")])
def test_arabic_punctuation(char: str, expected: str) -> None:
    assert fold(f"لماذا{char} الان") == f"لماذا{expected} الان"


@pytest.mark.parametrize(
    "dash",
    [*(chr(cp) for cp in range(0x2010, 0x2016)), "\u2212", "\ufe58", "\ufe63", "\uff0d"],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_dashes(dash: str) -> None:
    assert fold(f"غزة {dash} رفح") == "غزة - رفح"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("انتظر…", "انتظر..."),
        ("a..b", "a...b"),
        ("a.....b", "a...b"),
        ("a……b", "a...b"),
        ("a\u2025b", "a...b"),  # two-dot leader
        ("3.5", "3.5"),
    ],
)
def test_ellipses(text: str, expected: str) -> None:
    assert fold(text) == expected


@pytest.mark.parametrize(
    "text", ["  غزة \t\n  اليوم  ", "غزة\u2003\u3000اليوم", "غزة\u2028اليوم", "غزة  اليوم"]
)
def test_whitespace_collapsed(text: str) -> None:
    assert fold(text) == "غزة اليوم"


# --- case -------------------------------------------------------------------------------------------


def test_casefold_latin_greek_cyrillic() -> None:
    assert fold("Hello WORLD Straße ΣΟΦΊΑ МОСКВА") == "hello world strasse σοφία москва"


def test_arabic_unchanged_by_casefold() -> None:
    text = "الاحتلال يبدا الانسحاب من غزة"
    assert fold(text) == text


# --- documented non-foldings ------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["مدرسة", "مسؤول", "رئيس", "سماء", "هيئة"])
def test_ta_marbuta_and_hamza_carriers_kept(word: str) -> None:
    assert fold(word) == word


def test_ta_marbuta_not_merged_with_heh() -> None:
    assert fold("مدرسة") != fold("مدرسه")


# --- prefix stripping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("بالفيديو والصور.. الاحتلال يبدأ الانسحاب من غزة", "الاحتلال يبدا الانسحاب من غزة"),
        ("عاجل: الرئيس يصل إلى القاهرة", "الرئيس يصل الي القاهرة"),
        ("Breaking: Earthquake hits Turkey", "earthquake hits turkey"),
        ("BREAKING NEWS - Earthquake hits Turkey", "earthquake hits turkey"),
        ("WATCH: Dog rescues owner", "dog rescues owner"),
        ("فيديو | لحظة انهيار البرج", "لحظة انهيار البرج"),
        ("شاهد… لحظة انهيار البرج", "لحظة انهيار البرج"),
        ("اقرأ أيضاً: الحكومة تستقيل", "الحكومة تستقيل"),
        ("إنفوجراف / أرقام الموازنة", "ارقام الموازنة"),
        ("بث مباشر >> مباراة القمة", "مباراة القمة"),
        ("عاجل » حماس ترد", "حماس ترد"),
        ("Vidéo : le président parle", "le président parle"),
        ("Opinion | Why it matters", "why it matters"),
        ("[فيديو] لحظة انهيار البرج", "لحظة انهيار البرج"),
    ],
)
def test_leading_prefix_stripped(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    "sep", [":", " :", " | ", "|", " - ", "- ", " -", "--", " – ", "..", "...", "…", " / ", ">>"]
)
def test_each_separator(sep: str) -> None:
    assert normalize(f"عاجل{sep} حماس ترد") == "حماس ترد"


@pytest.mark.parametrize("prefix", DEFAULT_PREFIXES)
def test_every_default_prefix_strips(prefix: str) -> None:
    assert normalize(f"{prefix}: خبر") == "خبر"


@pytest.mark.parametrize("prefix", DEFAULT_PREFIXES)
def test_default_prefixes_are_stored_normalized(prefix: str) -> None:
    assert fold(prefix) == prefix


def test_stacked_prefixes() -> None:
    assert normalize("عاجل: بالفيديو.. الرئيس يصل") == "الرئيس يصل"
    assert normalize("Breaking News - LIVE: Markets fall") == "markets fall"


@pytest.mark.parametrize(
    "text",
    [
        "مشهد مؤثر (فيديو)",
        "مشهد مؤثر [فيديو]",
        "مشهد مؤثر ( بالفيديو )",
        "مشهد مؤثر - فيديو",
        "مشهد مؤثر | فيديو",
        "مشهد مؤثر -- فيديو",
    ],
)
def test_trailing_marker_stripped(text: str) -> None:
    assert normalize(text) == "مشهد مؤثر"


def test_leading_and_trailing_markers_together() -> None:
    assert normalize("عاجل: مشهد مؤثر (فيديو)") == "مشهد مؤثر"
    assert normalize("Markets fall [Video] (Photos)") == "markets fall"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(CNN)-- The president spoke", "the president spoke"),
        ("(AP) - Storm hits coast", "storm hits coast"),
        ("(Reuters): Oil prices rise", "oil prices rise"),
        ("(CNN Business) — Stocks rally", "stocks rally"),
        ("(أ ف ب) - القصف مستمر", "القصف مستمر"),
    ],
)
def test_attribution_stripped(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "(CNN) The president spoke",  # no separator after the group
        "(1) - first point",  # no letter: a list number, not an agency
        "(one two three four) - content",  # more than three words
        "the president (CNN) - spoke",  # not at the start
    ],
)
def test_attribution_left_alone(text: str) -> None:
    assert normalize(text) == fold(text)


@pytest.mark.parametrize(
    "text",
    [
        "فيديوهات الحرب تنتشر",
        "فيديوهات: الحرب تنتشر",
        "Videos: the war spreads",
        "Breakingviews: markets",
        "Live-streamed concert draws millions",
        'عاجل "حماس" ترد',  # an opening quote is content, not the "»" separator
        "مشهد مؤثر - فيديوهات",
        "صورة: القمر",
        "الرئيس: عاجل - لا تراجع",  # a prefix word in the middle
        "watch the video",
    ],
)
def test_whole_words_only(text: str) -> None:
    assert normalize(text) == fold(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("عاجل", "عاجل"),
        ("عاجل:", "عاجل:"),
        ("عاجل: ...", "عاجل: ..."),
        ("(فيديو)", "(فيديو)"),
        ("Breaking", "breaking"),
        ("(CNN) -", "(cnn) -"),
    ],
)
def test_never_strips_to_empty(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_strip_prefixes_false() -> None:
    assert normalize("عاجل: الرئيس يصل", strip_prefixes=False) == "عاجل: الرئيس يصل"
    assert normalize("(CNN)-- Markets (video)", strip_prefixes=False) == "(cnn)-- markets (video)"


# --- prefix configuration ---------------------------------------------------------------------------


def test_prefixes_override_replaces_defaults() -> None:
    assert normalize("نبض: خبر", prefixes=["نبض"]) == "خبر"
    assert normalize("عاجل: خبر", prefixes=["نبض"]) == "عاجل: خبر"


def test_prefixes_override_is_normalized() -> None:
    # Hamza, case, tashkeel and a typed-in separator in the user's list must not stop a match.
    assert normalize("اخبار: خبر", prefixes=["أخبارٌ"]) == "خبر"
    assert normalize("live updates - Markets", prefixes=["LIVE UPDATES"]) == "markets"
    assert normalize("نبض | خبر", prefixes=["نبض:"]) == "خبر"


def test_empty_prefix_list_still_strips_attribution() -> None:
    assert normalize("عاجل: (AP) - خبر", prefixes=[]) == "عاجل: (ap) - خبر"
    assert normalize("(AP) - عاجل: خبر", prefixes=[]) == "عاجل: خبر"


def test_prefixes_as_bare_string_rejected() -> None:
    with pytest.raises(TypeError):
        normalize("عاجل: خبر", prefixes="عاجل")


def test_load_prefixes(tmp_path: Path) -> None:
    path = tmp_path / "prefixes.txt"
    path.write_text(
        "\ufeff# outlet-specific markers\n\nنبض\n  أخبار  \nLIVE UPDATES  # English\n"
        "نبض\nعاجل:\n  # indented comment\n",
        encoding="utf-8",
    )
    assert load_prefixes(path) == ("نبض", "اخبار", "live updates", "عاجل")
    assert load_prefixes(str(path)) == load_prefixes(path)


def test_load_prefixes_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read prefix file"):
        load_prefixes(tmp_path / "absent.txt")


def test_load_prefixes_bad_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "prefixes.txt"
    path.write_bytes("عاجل\nفيديو\n".encode() + b"\xff\xfe\n")
    with pytest.raises(InputError) as info:
        load_prefixes(path)
    assert info.value.line == 3


def test_env_prefix_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prefixes.txt"
    path.write_text("# mine\nنبض\n", encoding="utf-8")
    monkeypatch.setenv(PREFIXES_ENV, str(path))
    assert normalize("نبض: خبر") == "خبر"
    assert normalize("عاجل: خبر") == "عاجل: خبر"  # the file replaces the defaults
    # An explicit list still wins over the environment.
    assert normalize("عاجل: خبر", prefixes=["عاجل"]) == "خبر"


def test_env_prefix_file_reloaded_when_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prefixes.txt"
    path.write_text("نبض\n", encoding="utf-8")
    monkeypatch.setenv(PREFIXES_ENV, str(path))
    assert normalize("نبض: خبر") == "خبر"
    path.write_text("وسم\n", encoding="utf-8")
    # Force a different mtime even on filesystems with coarse timestamps.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert normalize("نبض: خبر") == "نبض: خبر"
    assert normalize("وسم: خبر") == "خبر"


def test_env_prefix_file_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PREFIXES_ENV, str(tmp_path / "absent.txt"))
    with pytest.raises(InputError, match=PREFIXES_ENV):
        normalize("عاجل: خبر")
    # Folding alone never needs the prefix file.
    assert normalize("عاجل: خبر", strip_prefixes=False) == "عاجل: خبر"


# --- whole-pipeline properties ----------------------------------------------------------------------

MIXED = [
    "بالفيديو والصور.. الاحتلال يبدأ الانسحاب من غزة",
    "عاجل: بالفيديو.. «حماس» تُعلن موافقتها على الهدنة (فيديو)",
    "(CNN)-- BREAKING: Quake hits Türkiye — ١٢٣ dead…",
    "\u202bإيران\u202c تُطلق ۳ صواريخ؛ ما الذي يحدث؟",
    "Straße ﬁnal\t\tＡＢＣ  ‘quoted’ “double” …",
    "مُحَمَّدٌ ــ الرئيــس ٱلجديد",
    "عاجل",
    "ǰ ΐ İstanbul",
]


@pytest.mark.parametrize("text", MIXED)
def test_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    folded = fold(text)
    assert fold(folded) == folded


def test_idempotent_on_random_text() -> None:
    pieces = [
        *"aZé\u0301\u0308ßİΣς",
        *"أإآٱىةؤئءیکۀ",
        *"\u064e\u0651\u0670\u06d6\u0640\u200b\u202b\u00ad",
        *" \t\n:|-–.…«»“”()[]",
        "عاجل",
        "فيديو",
        "video",
        "(cnn)",
        "live",
        "٣٫٥",
    ]
    rng = random.Random(20240601)
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        once = normalize(text)
        assert normalize(once) == once, ascii(text)


@pytest.mark.parametrize("text", ["", " ", "   \t\n  ", "\u200b\u200f\ufeff", "\u0640\u064e"])
def test_empty_input(text: str) -> None:
    assert normalize(text) == ""
    assert normalize(text, strip_prefixes=False) == ""


# --- every format character and default-ignorable code point is invisible (issue 13) ---------------------

# Unicode's Default_Ignorable_Code_Point ranges that are not format characters (Cf): the combining grapheme
# joiner, Hangul fillers, Khmer inherent vowels, Mongolian variation selectors, variation selectors.
IGNORABLE_NOT_CF = [
    0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, *range(0x180B, 0x180E), 0x180F, 0x3164,
    *range(0xFE00, 0xFE10), 0xFFA0, *range(0xE0100, 0xE01F0),
]  # fmt: skip


def _format_characters() -> list[int]:
    import sys
    import unicodedata

    return [cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Cf"]


@pytest.mark.parametrize("cp", [*_format_characters(), *IGNORABLE_NOT_CF], ids=lambda cp: f"U+{cp:04X}")
def test_format_and_ignorable_characters_are_dropped(cp: int) -> None:
    char = chr(cp)
    assert normalize(char) == ""
    assert fold(f"Ga{char}za") == "gaza"
    assert fold(f"غ{char}زة") == "غزة"


def test_emoji_sequences_keep_their_visible_parts() -> None:
    # ZWJ, variation selectors and tag characters go; the pictographs stay, so the text is not blank.
    assert fold("\U0001f469\u200d\U0001f4bb \u2764\ufe0f \U0001f3f4\U000e0067\U000e0062\U000e007f") == (
        "\U0001f469\U0001f4bb \u2764 \U0001f3f4"
    )


@pytest.mark.parametrize(
    ("text", "blank"),
    [
        ("", True),
        ("   ", True),
        ("\u200f\u200b\u0640", True),
        ("\u2066\u2069\u00ad\ufeff", True),
        ("\x07\x1b\t", True),
        ("\u064e\u0651", True),
        ("\u3164\u115f", True),
        ("\U000e0001\U000e0041", True),
        ("a", False),
        ("\u200fغزة", False),
        ("عاجل", False),
        ("...", False),
        ("\u2800", False),
    ],
)
def test_is_blank(text: str, blank: bool) -> None:
    assert is_blank(text) is blank
    assert is_blank(text) is (normalize(text) == "")


def test_is_blank_fast_path_only_trusts_characters_that_survive_normalization() -> None:
    from cluster.normalize import _SURELY_VISIBLE

    trusted = [chr(cp) for cp in range(0x10000) if _SURELY_VISIBLE.fullmatch(chr(cp))]
    assert len(trusted) == 94 + 26 + 10
    assert all(normalize(char, strip_prefixes=False) for char in trusted)
