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
from .judge import Judgement
from .learned import LearnedParams, load_params

LEVELS = ("event", "story", "duplicate")
# What collapse, the index, nightly and the service group by unless told: one news event per group.
DEFAULT_LEVEL = "event"
CONFIG_ENV = "HEADLINE_CLUSTER_CONFIG"


# Default-model judgements: the learned same-event probability (cluster/learned.py), weights and thresholds in
# cluster/data/judgement.json, rebuilt from ../shared/data by scripts/fit_judgement.py with cross-validation
# that holds out whole data sets, whole events and whole stories (figures and commands: docs/quality.md).
# Precision first: the fit sees realistic negatives (unrelated news published at the same time, in the same
# and in other scripts), and time only separates: a known gap lowers a pair's score, never raises it, and a
# pair without both times is scored as if published together, so it is judged by its content alone.
# event: the same news event. Threshold: the best OG2021 F1 with times among those that keep the mixed
#   stream's contamination under 0.5% and beat plain cosine on OG2021 without times.
# story: an aggregator's coarser coverage of one topic: the event level's content weights without the time
#   penalty, cut lower (threshold by UCI F1 without times). Stories are grouped over whole events
#   (cluster.group.group_nested), so an event never spans two stories.
# duplicate: the same headline reworded: a regression on STS score / 5, cut at the best-F1 threshold of
#   STS >= 4 over out-of-fold scores.
_E5 = "built-in default for multilingual-e5-small, fitted by scripts/fit_judgement.py (docs/quality.md)"


def _learned(level: str) -> Judgement:
    params, threshold = load_params(level)
    return Judgement(DEFAULT_MODEL, level, threshold, _E5, kind="learned", params=params)


BUILTIN: dict[str, dict[str, Judgement]] = {
    DEFAULT_MODEL: {level: _learned(level) for level in ("event", "story", "duplicate")}
}
# Models we know nothing about: values typical of cosine models trained for paraphrase detection.
_GENERIC_SOURCE = "generic default for an uncalibrated model: run headline-cluster calibrate"
GENERIC = {"event": 0.80, "story": 0.75, "duplicate": 0.85}


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


def judgement_for(
    model: str, level: str = DEFAULT_LEVEL, threshold: float | None = None, source: str = ""
) -> Judgement:
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
        source = str(calibrated.get("source", f"calibrated ({config_path()})"))
        weights = calibrated.get("learned")
        if isinstance(weights, dict) and judgement.kind == "learned":
            try:
                learned = LearnedParams.from_dict(weights)
            except (KeyError, TypeError, ValueError):
                raise InputError(
                    f"models.{model}.{level}.learned is not a valid weight set", path=str(config_path())
                ) from None
            judgement = replace(judgement, params=learned)
        return judgement.with_threshold(value, source)
    return judgement


def save_threshold(
    model: str,
    level: str,
    threshold: float,
    source: str,
    path: Path | None = None,
    learned: LearnedParams | None = None,
) -> Path:
    """Store a calibrated threshold (and refitted learned weights, when given) for ``model`` at ``level``
    in the config; other entries are kept."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")
    path = path or config_path()
    config = load_config(path)
    models = config.setdefault("models", {})
    if not isinstance(models, dict):
        raise InputError("'models' in the settings file must be a JSON object", path=str(path))
    entry = models.setdefault(model, {})
    entry[level] = {"threshold": round(float(threshold), 4), "source": source}
    if learned is not None:
        entry[level]["learned"] = learned.to_dict()
    atomic_write_text(path, json.dumps(config, ensure_ascii=False, indent=2) + "\n")
    return path
