"""Shared fixtures. The default model is converted once per test session into a private cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Before any product module reads it: never touch the user's own cache or settings. A cache made here is
# removed when the session ends (the converted model and vectors take hundreds of MB); one given in the
# environment is the caller's, and stays.
OWN_CACHE = None if os.environ.get("HEADLINE_CLUSTER_CACHE") else tempfile.mkdtemp(prefix="headline-cluster-tests-")
if OWN_CACHE is not None:
    os.environ["HEADLINE_CLUSTER_CACHE"] = OWN_CACHE
os.environ.pop("HEADLINE_CLUSTER_MODEL", None)
os.environ.pop("HEADLINE_CLUSTER_CONFIG", None)
os.environ.pop("HEADLINE_CLUSTER_QUANTIZE", None)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if OWN_CACHE is not None:
        shutil.rmtree(OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def embedder():
    """The default model with an in-memory cache, loaded once per session."""
    from cluster.embed import Embedder, EmbeddingCache

    return Embedder(cache=EmbeddingCache())


@pytest.fixture(scope="session")
def seed_rows(shared_data: Path) -> list[dict[str, str]]:
    import csv

    with open(shared_data / "seed_related.tsv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
