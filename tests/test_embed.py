"""Embedding layer: unit vectors, the cache, model resolution and load errors."""

from __future__ import annotations

import numpy as np
import pytest

from cluster.embed import Embedder, EmbeddingCache, resolve_model_name, resolve_quantize, text_key
from cluster.errors import ModelLoadError


def test_vectors_are_unit_float32(embedder) -> None:
    vectors = embedder.encode(["البيت الابيض يعلق على عدم فوز ترامب", "apple unveils a new phone"])
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, embedder.dimension)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_list_gives_empty_matrix(embedder) -> None:
    assert embedder.encode([]).shape == (0, embedder.dimension)


def test_same_text_is_embedded_once(embedder, monkeypatch) -> None:
    calls: list[list[str]] = []
    original = embedder._model.encode

    def counting(texts, **kwargs):
        calls.append(list(texts))
        return original(texts, **kwargs)

    monkeypatch.setattr(embedder._model, "encode", counting)
    fresh = "a headline seen for the first time 8c1f"
    first = embedder.encode([fresh, fresh, "another new one 8c1f"])
    again = embedder.encode([fresh])
    assert calls == [[fresh, "another new one 8c1f"]]
    assert np.array_equal(first[0], again[0])
    assert np.array_equal(first[0], first[1])


def test_cache_persists_across_processes_in_sqlite(tmp_path, embedder, monkeypatch) -> None:
    path = tmp_path / "cache.sqlite"
    writer = Embedder(cache=EmbeddingCache(path))
    vectors = writer.encode(["persisted headline 41d"])
    writer.cache.close()

    reader = Embedder(cache=EmbeddingCache(path))

    def fail(*args, **kwargs):
        raise AssertionError("the model should not run for a cached text")

    monkeypatch.setattr(reader._model, "encode", fail)
    assert np.array_equal(reader.encode(["persisted headline 41d"]), vectors)
    assert reader.cache.hits == 1


def test_cache_keys_separate_models(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    key = text_key("x")
    cache.put_many("model-a", {key: np.ones(3, np.float32)})
    assert cache.get_many("model-b", [key]) == {}
    assert np.array_equal(cache.get_many("model-a", [key])[key], np.ones(3, np.float32))


def test_model_name_resolution(monkeypatch) -> None:
    monkeypatch.delenv("HEADLINE_CLUSTER_MODEL", raising=False)
    assert resolve_model_name(None) == "multilingual-e5-small"
    monkeypatch.setenv("HEADLINE_CLUSTER_MODEL", "/models/mine")
    assert resolve_model_name(None) == "/models/mine"
    assert resolve_model_name("explicit") == "explicit"


def test_missing_local_folder_names_the_default(tmp_path) -> None:
    with pytest.raises(ModelLoadError) as info:
        Embedder(str(tmp_path / "no-such-model"))
    message = str(info.value)
    assert "does not exist" in message and "multilingual-e5-small" in message and "--model" in message


def test_unreachable_hub_name_fails_fast_with_advice(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        Embedder("someone/not-a-cached-model")
    assert "multilingual-e5-small" in str(info.value)
    assert "local" in str(info.value)


def test_local_folder_model_loads(tmp_path) -> None:
    # Any sentence-transformers folder works as --model: use a copy of the converted default.
    import shutil

    from cluster.default_model import default_model_dir

    folder = tmp_path / "my-model"
    shutil.copytree(default_model_dir(), folder)
    local = Embedder(str(folder), cache=EmbeddingCache())
    assert local.model_id.startswith(str(folder.resolve()))
    assert local.encode(["hello"]).shape == (1, 384)


def test_cached_texts_never_load_the_default_model(tmp_path, embedder) -> None:
    # A process whose texts are all cached must not pay for loading the model.
    path = tmp_path / "cache.sqlite"
    writer = Embedder(cache=EmbeddingCache(path))
    vectors = writer.encode(["cached before 77a"])
    writer.cache.close()
    reader = Embedder(cache=EmbeddingCache(path))
    assert reader._loaded is None and reader.dimension == 384
    assert np.array_equal(reader.encode(["cached before 77a"]), vectors)
    assert reader.encode([]).shape == (0, 384)
    assert reader._loaded is None


def test_quantization_name_resolution(monkeypatch) -> None:
    monkeypatch.delenv("HEADLINE_CLUSTER_QUANTIZE", raising=False)
    assert resolve_quantize(None) == "none"
    monkeypatch.setenv("HEADLINE_CLUSTER_QUANTIZE", "INT8")
    assert resolve_quantize(None) == "int8"
    assert resolve_quantize("fp32") == "none"
    with pytest.raises(ValueError, match="unknown quantization"):
        resolve_quantize("int4")


@pytest.mark.slow
def test_int8_variant_agrees_with_fp32_and_is_cached_apart(shared_data, embedder) -> None:
    import csv

    from cluster.normalize import normalize

    with open(shared_data / "pairs" / "semeval2022_ar_slugs_train.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    texts = list(dict.fromkeys(normalize(row[k]) for row in rows for k in ("text_a", "text_b")))
    int8 = Embedder(cache=embedder.cache, quantize="int8")
    assert int8.model_id != embedder.model_id and int8.model_id.endswith("+int8")
    assert int8.name == embedder.name  # thresholds are looked up by name: the same for both
    agreement = np.sum(int8.encode(texts) * embedder.encode(texts), axis=1)
    # Measured 0.995 mean on real headlines (docs/performance.md); 0.99 is the quality bar.
    assert agreement.mean() >= 0.99
    assert agreement.min() >= 0.97
