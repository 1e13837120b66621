"""The default model's q4 hot path: same tokens and vectors as sentence-transformers, batch-independent, no torch."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cluster.default_model import default_model_dir
from cluster.embed import Embedder, EmbeddingCache, variant_of_model_id
from cluster.errors import ModelLoadError
from cluster.normalize import normalize

REPO = Path(__file__).resolve().parents[1]

EDGE_CASES = [
    "",
    "word " * 700,  # truncated to 512 tokens
    "a  b\u3000c\u2028d\x1ce\u00a0f\tg\nh",  # Unicode and non-Unicode whitespace
    "literal <s> and </s> and <mask> and <pad><unk> tokens",
    "\u2581leading \u2581\u2581double a\u2581 trailing\u2581",
    "emoji \U0001f600\U0001f680 and \U0001d400 math and \ue000 private use",
    "\u0627\u0644\u0652\u0640\u0640\u0639\u0631\u0628\u064a\u0629 \u200b\u200e ZWSP",
]


def headlines(shared_data: Path) -> list[str]:
    texts: list[str] = []
    with open(shared_data / "seed_related.tsv", encoding="utf-8", newline="") as handle:
        texts += [row["text"] for row in csv.DictReader(handle, delimiter="\t")]
    for path in sorted((shared_data / "pairs").glob("*.tsv")):
        with open(path, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                texts += [row.get("text_a") or "", row.get("text_b") or ""]
    return [t for t in dict.fromkeys(texts) if t]


@pytest.fixture(scope="module")
def q4(embedder):
    assert embedder.quantize == "q4"  # the default variant of the default model
    return embedder._model


@pytest.fixture(scope="module")
def st_fp32(embedder):
    return Embedder(cache=EmbeddingCache(), quantize="none")._model


def test_tokens_equal_sentence_transformers_on_real_headlines(shared_data, q4, st_fp32) -> None:
    from tokenizers import Tokenizer

    from cluster.unigram import UnigramTokenizer

    assert isinstance(q4.tokenizer, UnigramTokenizer)  # the lean tokenizer, not the library's
    raw = headlines(shared_data)
    texts = ["query: " + t for t in raw + [normalize(t) for t in raw] + EDGE_CASES]
    assert len(texts) > 15_000
    theirs = st_fp32.tokenizer(texts, truncation=True, max_length=st_fp32.max_seq_length)["input_ids"]
    ours = q4.tokenize(raw + [normalize(t) for t in raw] + EDGE_CASES)
    library = Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))
    library.enable_truncation(st_fp32.max_seq_length)
    mismatched = [t for t, a, b in zip(texts, ours, theirs, strict=True) if a != b]
    assert mismatched == []
    assert [e.ids for e in library.encode_batch(texts[-len(EDGE_CASES) :])] == ours[-len(EDGE_CASES) :]
    assert len(ours[-len(EDGE_CASES) + 1]) == 512 == q4.max_seq_length


def test_q4_folder_uses_the_converted_models_tokenizer(q4, st_fp32, embedder) -> None:
    converted = default_model_dir() / "tokenizer.json"
    assert (embedder._q4_folder / "tokenizer.json").read_bytes() == converted.read_bytes()


def test_prompt_pooling_and_normalization_equal_sentence_transformers(shared_data, st_fp32) -> None:
    # The q4 graph with float32 compute has the float32 model's exact weights: any difference in
    # prompt, truncation, padding, pooling or normalization would show far above float rounding.
    from cluster.onnx_embed import OnnxTextEncoder, q4_model_dir

    exact = OnnxTextEncoder(q4_model_dir(accuracy="fp32"))
    texts = [normalize(t) for t in headlines(shared_data)[::40]] + EDGE_CASES
    ours = exact.encode(texts, batch_size=16)
    theirs = st_fp32.encode(texts, batch_size=16, normalize_embeddings=True)
    cosines = np.sum(ours * theirs, axis=1)
    assert len(texts) > 200
    assert cosines.min() >= 0.99999, f"lowest {cosines.min():.7f}"
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_q4_agrees_with_float32(shared_data, q4, st_fp32) -> None:
    texts = [normalize(t) for t in headlines(shared_data)[::10]]
    agreement = np.sum(q4.encode(texts) * st_fp32.encode(texts, normalize_embeddings=True), axis=1)
    # int8 activations per row block only (the weights are the float32 model's): measured 0.9995 mean.
    assert agreement.mean() >= 0.999, agreement.mean()
    assert agreement.min() >= 0.995, agreement.min()


def test_a_headlines_vector_does_not_depend_on_its_batch(shared_data) -> None:
    texts = [normalize(t) for t in headlines(shared_data)]
    by_length = sorted(texts, key=len)
    # Mixed lengths, shortest to longest, so that most rows are padded inside their batch.
    mixed = [by_length[i * (len(by_length) - 1) // 199] for i in range(200)]
    probes = [mixed[0], mixed[57], mixed[123], mixed[-1]]
    alone = np.concatenate([Embedder(cache=EmbeddingCache()).encode([p]) for p in probes])  # batches of 1
    for size in (7, 64, 200):
        others = [t for t in mixed if t not in probes][: size - len(probes)]
        batch = others[: len(others) // 2] + probes + others[len(others) // 2 :]
        assert len(batch) == size
        fresh = Embedder(cache=EmbeddingCache(), batch_size=64)  # nothing cached: the model runs
        vectors = fresh.encode(batch)[len(others) // 2 : len(others) // 2 + len(probes)]
        cosines = np.sum(vectors * alone, axis=1)
        assert cosines.min() >= 0.99999, (size, cosines)


def test_model_ids_keep_variants_apart(embedder) -> None:
    fp32_id = embedder.model_id.removesuffix("+q4-onnx")
    assert embedder.model_id.endswith("+q4-onnx") and fp32_id != embedder.model_id
    assert variant_of_model_id(embedder.model_id) == "q4"
    assert variant_of_model_id(fp32_id + "+int8-onnx") == "int8"  # indexes built before keep their variant
    assert variant_of_model_id(fp32_id) == "none"


def test_q4_is_the_default_models_only(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="default model only"):
        Embedder(str(tmp_path), quantize="q4")


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300)


def test_collapse_never_imports_torch(embedder) -> None:
    # The q4 folder exists (built by the session fixture); the three headlines are new to the cache.
    code = (
        "import sys, json\n"
        "from cluster import collapse\n"
        "result = collapse(['torch-free headline 1 e8', 'torch-free headline 2 e8', 'another story e8'])\n"
        "import cluster.nightly, cluster.service, cluster.store\n"
        "print(json.dumps([len(result.stories), sorted(m for m in ('torch', 'sentence_transformers', "
        "'transformers') if m in sys.modules)]))\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    stories, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    assert heavy == [] and stories >= 1
    assert done.stderr == ""  # nothing to build, nothing to say


@pytest.mark.slow
def test_first_run_says_what_it_builds_and_quiet_says_nothing(tmp_path, monkeypatch) -> None:
    from cluster.onnx_embed import q4_model_dir
    from cluster.progress import StderrReporter

    stream = io.StringIO()
    monkeypatch.setenv("HEADLINE_CLUSTER_CACHE", str(tmp_path))
    folder = q4_model_dir(StderrReporter(stream))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headline-cluster: building") and "once" in lines[0]
    assert "\r" not in stream.getvalue()  # not a terminal: no progress bar
    stream.truncate(0)
    assert q4_model_dir(StderrReporter(stream)) == folder and stream.getvalue() == ""  # built: silent
    assert [p.name for p in folder.parent.iterdir() if ".tmp" in p.name] == []
    done = _run("from cluster.embed import Embedder; Embedder(quiet=True)", HEADLINE_CLUSTER_CACHE=str(tmp_path / "q"))
    assert done.returncode == 0 and done.stderr == "", done.stderr  # a fresh build, quiet
    assert (tmp_path / "q" / "models" / folder.name / "model.onnx").is_file()


def test_progress_bar_on_a_terminal() -> None:
    from cluster.progress import StderrReporter

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with StderrReporter(stream).step("building things", 4) as step:
        for _ in range(4):
            step.advance()
    text = stream.getvalue()
    assert text.startswith("\rheadline-cluster: building things ...") and "4/4" in text
    assert text.endswith(" s\n") and "done in" in text


def test_a_pipeline_the_lean_tokenizer_does_not_implement_is_refused(embedder) -> None:
    from cluster import unigram

    parsed = json.loads((embedder._q4_folder / "tokenizer.json").read_text(encoding="utf-8"))
    assert unigram.supports(parsed)
    parsed["normalizer"] = {"type": "NFKC"}
    assert not unigram.supports(parsed)
