"""Per-model judgements: each level's score, threshold and linkage, and where they come from.

Similarity scales differ between models (multilingual-e5 puts unrelated headlines near 0.75, other
models near 0.1), so a threshold only means something together with its model and the score it was
fitted for. :func:`judgement_for` is the one place every entry point gets its judgement from.
Thresholds that a user fits with ``headline-cluster calibrate`` are stored in a JSON config and take
precedence; they keep the built-in score they were fitted with.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from .default_model import DEFAULT_MODEL, cache_root
from .embed import is_default_model
from .errors import InputError
from .fsutil import atomic_write_text
from .judge import HybridParams, Judgement

LEVELS = ("story", "duplicate")
CONFIG_ENV = "HEADLINE_CLUSTER_CONFIG"


# Default-model values, fitted on the dev splits of the shared data (scripts/split_data.py; the figures and
# commands are in docs/quality.md). Thresholds are stated for Arabic headlines; ``other_script_scale``
# moves pairs in other scripts onto that scale (e5 puts unrelated English headlines lower), as
# (1 - Arabic threshold) / (1 - threshold fitted for the other script).
# story: one news event as an aggregator groups it. Arabic: best-F1 threshold of the SemEval-2022 Arabic
#   dev pairs (0.897); other scripts: best B-cubed threshold on the UCI dev stories with the time
#   penalty (0.80), hence the scale 0.1 / 0.2 = 0.5. Time: -0.05 at a day apart or more (-0.1 on the
#   English cosine scale); on float32 scores it took UCI dev B-cubed F1 from 0.877 to 0.952.
# duplicate: the same headline reworded (STS >= 4 against the rest). Arabic: STS17 ar-ar dev best-F1
#   threshold (0.967); English: STS headlines dev (0.946), hence the scale 0.03 / 0.054 = 0.56.
# All values are fitted on the default int8 variant's scores; refitting on float32 scores gives the same
# story values and duplicate 0.973 / 0.954 (scale 0.65).
_E5 = "built-in default for multilingual-e5-small, fitted on dev splits (docs/quality.md)"
BUILTIN: dict[str, dict[str, Judgement]] = {
    DEFAULT_MODEL: {
        "story": Judgement(
            DEFAULT_MODEL,
            "story",
            0.90,
            _E5,
            kind="hybrid",
            params=HybridParams(time_penalty=0.05, time_scale_hours=24.0, other_script_scale=0.5),
        ),
        "duplicate": Judgement(
            DEFAULT_MODEL, "duplicate", 0.97, _E5, kind="hybrid", params=HybridParams(other_script_scale=0.56)
        ),
    },
}
# Models we know nothing about: values typical of cosine models trained for paraphrase detection.
_GENERIC_SOURCE = "generic default for an uncalibrated model: run headline-cluster calibrate"
GENERIC = {"story": 0.75, "duplicate": 0.85}


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or cache_root() / "config.json")


def load_config(path: Path | None = None) -> dict:
    """The settings file as a dict ({} when there is none); re-read only when the file changes."""
    path = path or config_path()
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InputError(f"cannot read the settings: {exc}", path=str(path), hint="fix or delete the file") from exc
    return copy.deepcopy(_read_config(path, stat.st_mtime_ns, stat.st_size))  # callers may change theirs


@lru_cache(maxsize=8)
def _read_config(path: Path, mtime_ns: int, size: int) -> dict:
    # Keyed by modification time and size: a service asks for every request, and the file rarely changes.
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the settings: {exc}", path=str(path), hint="fix or delete the file") from exc
    if not isinstance(data, dict):
        raise InputError("the settings file must hold a JSON object", path=str(path))
    return data


def judgement_for(model: str, level: str = "story", threshold: float | None = None, source: str = "") -> Judgement:
    """The judgement for ``model`` at ``level``: built in (or generic), with the calibrated threshold when
    one is stored, or ``threshold`` when given (``source`` then says where it came from)."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")
    key = DEFAULT_MODEL if is_default_model(model) else model
    if key in BUILTIN:
        judgement = replace(BUILTIN[key][level], model=model)
    else:
        judgement = Judgement(model, level, GENERIC[level], _GENERIC_SOURCE)
    if threshold is not None:
        return judgement.with_threshold(threshold, source or "given")
    calibrated = load_config().get("models", {}).get(model, {}).get(level)
    if isinstance(calibrated, dict) and "threshold" in calibrated:
        try:
            value = float(calibrated["threshold"])
        except (TypeError, ValueError):
            raise InputError(f"models.{model}.{level}.threshold is not a number", path=str(config_path())) from None
        return judgement.with_threshold(value, str(calibrated.get("source", f"calibrated ({config_path()})")))
    return judgement


def save_threshold(model: str, level: str, threshold: float, source: str, path: Path | None = None) -> Path:
    """Store a calibrated threshold for ``model`` at ``level`` in the config; other entries are kept."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")
    path = path or config_path()
    config = load_config(path)
    models = config.setdefault("models", {})
    if not isinstance(models, dict):
        raise InputError("'models' in the settings file must be a JSON object", path=str(path))
    entry = models.setdefault(model, {})
    entry[level] = {"threshold": round(float(threshold), 4), "source": source}
    atomic_write_text(path, json.dumps(config, ensure_ascii=False, indent=2) + "\n")
    return path
