"""Per-model grouping settings: the default threshold of each level, and where they come from.

Similarity scales differ between models (multilingual-e5 puts unrelated headlines near 0.75, other
models near 0.1), so a threshold only means something together with its model. Settings that a user
fits with ``headline-cluster calibrate`` are stored in a JSON config and take precedence.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .default_model import DEFAULT_MODEL, cache_root
from .errors import InputError

LEVELS = ("story", "duplicate")
CONFIG_ENV = "HEADLINE_CLUSTER_CONFIG"


@dataclass(frozen=True)
class LevelSettings:
    threshold: float
    source: str  # how the value was obtained, shown to users next to it


# Default-model values. story: the level an aggregator groups at (one news event, reworded).
# duplicate: the same headline reworded (STS score >= 4).
BUILTIN: dict[str, dict[str, LevelSettings]] = {
    DEFAULT_MODEL: {
        "story": LevelSettings(0.90, "built-in default for multilingual-e5-small"),
        "duplicate": LevelSettings(0.94, "built-in default for multilingual-e5-small"),
    },
}
# Models we know nothing about: values typical of cosine models trained for paraphrase detection.
GENERIC = {
    "story": LevelSettings(0.75, "generic default for an uncalibrated model: run headline-cluster calibrate"),
    "duplicate": LevelSettings(
        0.85, "generic default for an uncalibrated model: run headline-cluster calibrate"
    ),
}


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or cache_root() / "config.json")


def load_config(path: Path | None = None) -> dict:
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"cannot read the settings: {exc}", path=str(path), hint="fix or delete the file"
        ) from exc
    if not isinstance(data, dict):
        raise InputError("the settings file must hold a JSON object", path=str(path))
    return data


def level_settings(model: str, level: str = "story") -> LevelSettings:
    """The threshold to use for ``model`` at ``level``: calibrated, else built in, else generic."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")
    calibrated = load_config().get("models", {}).get(model, {}).get(level)
    if isinstance(calibrated, dict) and "threshold" in calibrated:
        return LevelSettings(
            float(calibrated["threshold"]), calibrated.get("source", f"calibrated ({config_path()})")
        )
    from .embed import is_default_model

    key = DEFAULT_MODEL if is_default_model(model) else model
    return BUILTIN.get(key, GENERIC)[level]
