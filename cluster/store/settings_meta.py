"""An index's own settings (model, level, threshold, linkage, window): written at creation, checked at open.

Stored vectors and story ids only mean something under the settings that produced them, so they are
fixed once the index holds headlines.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..embed import is_default_model
from ..errors import InputError
from ..settings import DEFAULT_LEVEL, judgement_for
from .schema import SCHEMA_VERSION, Database, migrate, utc_now
from .types import DEFAULT_WINDOW

if TYPE_CHECKING:
    from .headline_index import HeadlineIndex

GIVEN = "given when the index was created"


def create_settings(
    db: Database, model: str, level: str | None, threshold: float | None, window: timedelta | None
) -> None:
    """Create the schema and the ``meta`` rows of a new index (a racing creator that got there first wins)."""
    level = level or DEFAULT_LEVEL
    judgement = judgement_for(model, level, threshold, GIVEN)
    db.create_schema()
    with db.transaction():
        db.set_meta(
            {
                "schema_version": SCHEMA_VERSION,
                "model": model,
                "model_id": None,
                "dimension": None,
                "level": level,
                "threshold": judgement.threshold,
                "threshold_source": judgement.source,
                "linkage": judgement.linkage,
                "window_seconds": (window or DEFAULT_WINDOW).total_seconds(),
                "next_row": 1,
                "next_story": 1,
                "next_event": 1,
                "created_at": utc_now(),
                "faiss_rows": 0,
                "faiss_max_row": 0,
                "faiss_checksum": None,
                "faiss_kind": None,
            },
            only_new=True,
        )


def same_model(a: str, b: str) -> bool:
    return a == b or (is_default_model(a) and is_default_model(b))


def settings_changes(
    index: HeadlineIndex, model: str | None, threshold: float | None, level: str | None
) -> dict[str, Any]:
    """The ``meta`` changes that the asked-for settings make to an empty index; an error for a full one."""
    version = index.db.meta("schema_version")
    unwritable = index.db.read_only
    if version in (1, 2) and not unwritable:
        try:
            with index.lock():  # an older index keeps opening: its format is brought up to date once
                migrate(index.db)
        except InputError:
            if version != 2:
                raise
            unwritable = True  # a folder this process cannot write (a mounted backup): see below
        version = index.db.meta("schema_version")
    # Format 2 differs only by the corrections table, which an index that cannot be written cannot gain:
    # it reads as an index without corrections, and writing to it fails as for any read-only index.
    if version != SCHEMA_VERSION and not (version == 2 and unwritable):
        raise InputError(
            f"index format {version} is not the one this version reads ({SCHEMA_VERSION})",
            path=str(index.path),
            hint="use the headline-cluster version that created it",
        )
    changes: dict[str, Any] = {}
    what = ""
    if model is not None and not same_model(model, index.model):
        changes["model"] = model
        changes["model_id"] = changes["dimension"] = None
        what = f"the model {index.model!r}; you asked for {model!r} (--model or $HEADLINE_CLUSTER_MODEL)"
    if level is not None and level != index.level:
        changes["level"] = level
        what = f"level {index.level!r}; you asked for {level!r}"
    if threshold is not None and abs(threshold - index.threshold) > 1e-9:
        changes["threshold"] = threshold
        changes["threshold_source"] = GIVEN
        what = f"threshold {index.threshold:.3f}; you asked for {threshold:.3f}"
    if not changes:
        return changes
    if index.count() > 0:
        raise InputError(
            f"this index was built with {what}; its vectors and story ids only hold under the settings that made them",
            path=str(index.path),
            hint="leave the option out to use the index's own settings, or add into a new index",
        )
    if "threshold" not in changes:
        # The default threshold belongs to a model and a level: follow the new ones.
        judgement = judgement_for(changes.get("model", index.model), changes.get("level", index.level))
        changes["threshold"], changes["threshold_source"] = judgement.threshold, judgement.source
    return changes
