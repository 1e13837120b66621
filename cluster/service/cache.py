"""The service's embedding cache: in memory, least recently used first out, bounded.

A long-running service sees an unbounded stream of new headlines; the per-user cache on disk that the
CLI uses would grow with every ``/v1/collapse`` call. This one keeps at most ``max_items`` vectors
(about 1.5 KB each for the default model) and writes nothing to disk: headlines added to the index keep
their vectors in the index itself.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

DEFAULT_MAX_ITEMS = 20_000  # about 31 MB of 384-dimensional float32 vectors


class BoundedEmbeddingCache:
    """The interface of :class:`cluster.embed.EmbeddingCache` (``get_many``, ``put_many``, ``hits``,
    ``misses``), bounded to ``max_items`` vectors, in memory only. Safe to share between threads."""

    def __init__(self, max_items: int = DEFAULT_MAX_ITEMS):
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.max_items = max_items
        self._items: OrderedDict[tuple[str, bytes], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def get_many(self, model_id: str, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for key in keys:
                vector = self._items.get((model_id, key))
                if vector is not None:
                    self._items.move_to_end((model_id, key))
                    found[key] = vector
            self.hits += len(found)
            self.misses += len(keys) - len(found)
        return found

    def put_many(self, model_id: str, items: dict[bytes, np.ndarray]) -> None:
        with self._lock:
            for key, vector in items.items():
                self._items[(model_id, key)] = np.asarray(vector, dtype=np.float32)
                self._items.move_to_end((model_id, key))
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
                self.evictions += 1

    def close(self) -> None:
        with self._lock:
            self._items.clear()
