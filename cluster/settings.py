"""Per-model grouping settings: the default threshold of each level, and where they come from.

Similarity scales differ between models (multilingual-e5 puts unrelated headlines near 0.75, other
models near 0.1), so a threshold only means something together with its model. Settings that a user
fits with ``headline-cluster calibrate`` are stored in a JSON config and take precedence.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .default_model import DEFAULT_MODEL, cache_root
from .errors import InputError
from .fsutil import atomic_write_text
from .similarity import HybridParams

LEVELS = ("story", "duplicate")
CONFIG_ENV = "HEADLINE_CLUSTER_CONFIG"


@dataclass(frozen=True)
class LevelSettings:
    threshold: float
    source: str  # how the value was obtained, shown to users next to it
    # The pairwise score the threshold belongs to (see cluster.similarity): a threshold fitted for the
    # hybrid score is meaningless for plain cosine and the other way round.
    similarity: str = "cosine"
    params: HybridParams = field(default_factory=HybridParams)
    linkage: str = "average"


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
BUILTIN: dict[str, dict[str, LevelSettings]] = {
    DEFAULT_MODEL: {
        "story": LevelSettings(
            0.90,
            _E5,
            similarity="hybrid",
            params=HybridParams(time_penalty=0.05, time_scale_hours=24.0, other_script_scale=0.5),
        ),
        "duplicate": LevelSettings(0.97, _E5, similarity="hybrid", params=HybridParams(other_script_scale=0.56)),
    },
}
# Models we know nothing about: values typical of cosine models trained for paraphrase detection.
GENERIC = {
    "story": LevelSettings(0.75, "generic default for an uncalibrated model: run headline-cluster calibrate"),
    "duplicate": LevelSettings(0.85, "generic default for an uncalibrated model: run headline-cluster calibrate"),
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
        raise InputError(f"cannot read the settings: {exc}", path=str(path), hint="fix or delete the file") from exc
    if not isinstance(data, dict):
        raise InputError("the settings file must hold a JSON object", path=str(path))
    return data


def level_settings(model: str, level: str = "story") -> LevelSettings:
    """The threshold to use for ``model`` at ``level``: calibrated, else built in, else generic."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")
    calibrated = load_config().get("models", {}).get(model, {}).get(level)
    from .embed import is_default_model

    key = DEFAULT_MODEL if is_default_model(model) else model
    builtin = BUILTIN.get(key, GENERIC)[level]
    if isinstance(calibrated, dict) and "threshold" in calibrated:
        # A calibrated threshold keeps the built-in score it was fitted with (calibrate records which).
        try:
            threshold = float(calibrated["threshold"])
        except (TypeError, ValueError):
            raise InputError(f"models.{model}.{level}.threshold is not a number", path=str(config_path())) from None
        return replace(
            builtin,
            threshold=threshold,
            source=str(calibrated.get("source", f"calibrated ({config_path()})")),
        )
    return builtin


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
