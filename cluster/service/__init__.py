"""The HTTP service: collapse and index endpoints over one headline index, for an aggregator's web tier.

``create_app(index_path)`` returns a FastAPI app; ``headline-cluster serve`` runs it with uvicorn. The
model loads once, in ``create_app``, and every request shares its embedder (and so its embedding cache).

Modules, each importing only those above it:

* ``derive``: response schemas derived from the library's result dataclasses.
* ``models``: request bodies and the derived response models.
* ``errors``: the error JSON ``{"error", "message", "field"}`` and pydantic errors turned into it.
* ``limits``: per-request limits and their checks.
* ``metrics``: the Prometheus text and the ASGI layer that measures every answer.
* ``protocol``: uvicorn's HTTP protocol, answering an unparsable request in the error JSON, counted.
* ``guard``: the ASGI layer for the API key and the body size limit.
* ``app``: routes, handlers, the writer and the reader pool (``create_app``).
"""

from __future__ import annotations

from .app import create_app
from .limits import Limits

__all__ = ["Limits", "create_app"]
