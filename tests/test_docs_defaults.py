"""The defaults the README and docs/ state are the code's: each figure read from the text and compared with
the constant it documents (cluster.settings, cluster.embed, cluster.limits). A changed default fails here
until the docs say the new one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cluster.default_model import DEFAULT_MODEL
from cluster.embed import DEFAULT_QUANTIZE, OTHER_MODELS_QUANTIZE
from cluster.limits import MAX_HEADLINE_CHARS, MAX_ID_CHARS
from cluster.settings import BUILTIN, DEFAULT_LEVEL

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
DOCS = {path.name: path.read_text(encoding="utf-8") for path in (REPO / "docs").glob("*.md")}


def threshold(level: str) -> float:
    # The built-in value, not judgement_for's: a calibrated config on this machine is not the documented default.
    return BUILTIN[DEFAULT_MODEL][level].threshold


def found(pattern: str, text: str = README) -> str:
    match = re.search(pattern, text)
    assert match is not None, f"the docs no longer say {pattern!r}"
    return match[1]


def test_the_level_thresholds_in_the_readme_are_the_built_in_ones() -> None:
    assert float(found(r"a learned probability of the same event, threshold p ≥ ([\d.]+)")) == threshold("event")
    assert float(found(r"the same evidence cut lower, p ≥ ([\d.]+)")) == threshold("story")
    assert float(found(r"the same headline reworded: learned, p ≥ ([\d.]+)")) == threshold("duplicate")
    assert found(r"`(\w+)` \(the default for\s+`collapse`") == DEFAULT_LEVEL


def test_the_readme_examples_show_the_default_threshold() -> None:
    assert float(found(r'"threshold": ([\d.]+)')) == threshold(DEFAULT_LEVEL)
    assert float(found(r"7 headlines -> 4 events in 4 stories \(.*threshold ([\d.]+);")) == threshold(DEFAULT_LEVEL)


def test_the_default_embedding_variant_is_named_alike_everywhere() -> None:
    row = found(r"\| `HEADLINE_CLUSTER_QUANTIZE` \|([^\n]+)\|")
    assert found(r"`(\w+)` \(the default model's default", row) == DEFAULT_QUANTIZE
    assert found(r"`(\w+)` \([^)]*every other model's default\)", row) == OTHER_MODELS_QUANTIZE
    for name, text in {"README.md": README, **DOCS}.items():
        for stale in ("default int8 variant", "default (int8)", "int8 default", "now int8"):
            assert stale not in text, f"{name} calls int8 the default ({stale!r}); it is {DEFAULT_QUANTIZE}"


@pytest.mark.parametrize(
    ("stale", "why"),
    [
        ("about 15 s", "the first-run build takes about 5 s"),
        ("about 12 s", "the first-run build takes about 5 s"),
        ("switches the\nsearch index to HNSW", "nightly compacts segments; large ones become ivf"),
        ("similar?text=زلزال", "a raw non-ASCII URL is not valid HTTP: use curl -G --data-urlencode"),
    ],
)
def test_no_stale_statement_remains(stale: str, why: str) -> None:
    for name, text in {"README.md": README, **DOCS}.items():
        assert stale not in text, f"{name}: {stale!r} ({why})"


def test_the_input_limits_in_the_readme_are_the_code_s() -> None:
    assert int(found(r"an id over ([\d,]+)\s+characters").replace(",", "")) == MAX_ID_CHARS
    assert int(found(r"headline over ([\d,]+) characters").replace(",", "")) == MAX_HEADLINE_CHARS
