"""The int8 embedding variant: the model's transformer run by ONNX Runtime with int8 weights.

Every model but the default one gets this variant by default; the default model's default is the
batch-independent ``q4`` variant (cluster.onnx_embed). Here activations are quantized with one scale
per tensor per call, so a text's vector moves slightly with the other texts of its batch (cosine
0.995 between alone and in a batch of 200): indexes built with it keep it (``+int8-onnx``).

The transformer module of a sentence-transformers model is exported to ONNX once, its matrix
products are quantized dynamically (int8 weights per output channel, activations quantized per call)
and the file is cached beside the converted default model. The model object stays a
``SentenceTransformer``: only its transformer's forward pass is swapped for an ONNX Runtime session,
so prompts, length-sorted batching, pooling and normalization are the library's own.

Why ONNX Runtime rather than PyTorch's dynamic quantization: on the 2-core AVX-512/VNNI machine of
the benchmarks, the same int8 scheme ran 2.4x faster than fp32 torch in ONNX Runtime against 1.5x in
torch, with the same agreement (scripts/bench.py embed; docs/performance.md). Why our own few lines
rather than the library's ``backend="onnx"``: its extra (``sentence-transformers[onnx]``) cannot be
installed beside the sentence-transformers and transformers versions this product pins.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from .default_model import cache_root
from .errors import ModelLoadError
from .fsutil import file_lock, staged_folder
from .progress import Reporter, StderrReporter


class Int8Unavailable(ModelLoadError):
    """The model cannot run as the int8 variant (not a transformer, or the ONNX export failed)."""


_FORMAT_VERSION = 1  # bump when the export or quantization recipe changes, to force a rebuild
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def int8_model_path(model_id: str) -> Path:
    """Where the int8 ONNX file of the model cached as ``model_id`` lives (built by ``quantize_int8``)."""
    digest = hashlib.sha256(f"{model_id}|v{_FORMAT_VERSION}".encode()).hexdigest()[:16]
    return cache_root() / "onnx" / digest / "model_int8.onnx"


def quantize_int8(model, model_id: str, reporter: Reporter | None = None):  # -> SentenceTransformer
    """Swap ``model``'s transformer for an int8 ONNX Runtime session, exporting it on first use.

    ``model`` is changed in place and returned; its float32 transformer weights are released.
    ``reporter`` hears of the export and quantization steps when they run (default: lines on stderr).
    """
    transformer = model[0]
    network = getattr(transformer, "model", None) or getattr(transformer, "auto_model", None)
    tokenizer = getattr(transformer, "tokenizer", None) or getattr(transformer, "processor", None)
    if network is None or tokenizer is None:
        raise Int8Unavailable(
            f"the int8 variant needs a model whose first module is a transformer; {model_id!r} is not. "
            "Use the fp32 variant (HEADLINE_CLUSTER_QUANTIZE=none)"
        )
    path = int8_model_path(model_id)
    if not path.is_file():
        sample = tokenizer(["int8 export sample"], return_tensors="pt")
        sample = {name: sample[name] for name in _MODEL_INPUTS if name in sample}
        _build(network, sample, path, model_id, reporter if reporter is not None else StderrReporter())
    encoder = OnnxEncoder(path, network.config)
    if hasattr(transformer, "model"):
        transformer.model = encoder
    else:
        transformer.auto_model = encoder
    return model


def _build(network, sample: dict, path: Path, model_id: str, reporter: Reporter | None = None) -> None:
    """Export and quantize into a staging folder, then rename it into place (atomic, locked)."""
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent.parent / (path.parent.name + ".lock")):
        if path.is_file():  # another process built it while we waited
            return
        # A half-built folder from a killed run has no model file; this replaces it.
        reporter = reporter if reporter is not None else StderrReporter()
        with staged_folder(path.parent) as staging:
            float_file = staging / "model_fp32.onnx"
            with reporter.step(f"exporting {model_id} to ONNX (once)"):
                _export(network, sample, float_file, model_id)
            with reporter.step(f"quantizing {model_id} to int8 weights (once)"):
                _quantize_file(float_file, staging / path.name)
            float_file.unlink()
            (staging / "source.txt").write_text(model_id + "\n", encoding="utf-8")


def _export(network, sample: dict, dest: Path, model_id: str) -> None:
    names = list(sample)

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, *tensors):
            return self.network(**dict(zip(names, tensors, strict=True))).last_hidden_state

    dynamic = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow: shapes are dynamic
            torch.onnx.export(
                LastHiddenState().eval(),
                tuple(sample[name] for name in names),
                str(dest),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=dynamic,
                opset_version=17,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many types for unsupported architectures
        raise Int8Unavailable(
            f"could not export {model_id!r} to ONNX for the int8 variant ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). Use the fp32 variant "
            "(HEADLINE_CLUSTER_QUANTIZE=none)"
        ) from exc


def _quantize_file(source: Path, dest: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Every matrix product, int8 weights with one scale per output channel. Measured on 1,000 real
    # headlines against fp32 (mean / min cosine, speed-up, STS17 ar-ar Spearman; fp32 0.7408): per
    # channel 0.9967 / 0.9912, 2.4x, 0.7432; one scale per tensor 0.9896 / 0.9768, 2.3x, 0.7347;
    # feed-forward outputs kept fp32 0.9988 / 0.9974, 1.4x, 0.7448.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a pre-processing suggestion that does not apply
    try:
        quantize_dynamic(source, dest, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


class OnnxEncoder(torch.nn.Module):
    """Stands in for a transformers encoder inside a sentence-transformers model; runs ONNX Runtime."""

    def __init__(self, path: Path, config):
        super().__init__()
        import onnxruntime

        self.config = config
        options = onnxruntime.SessionOptions()
        # As many threads as torch may use, so --threads and torch.set_num_threads govern both variants.
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: tokenization and pooling run between calls, on the same
        # cores (spinning measured 5-15% slower end to end on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = tuple(node.name for node in self.session.get_inputs())  # as exported

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **_ignored):
        from transformers.modeling_outputs import BaseModelOutput

        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed = {}
        for name in self.input_names:
            value = given[name]
            if value is None:  # e.g. no token types from the tokenizer: all zeros, as the encoder assumes
                value = torch.zeros_like(input_ids)
            feed[name] = value.detach().cpu().numpy().astype(np.int64, copy=False)
        (hidden,) = self.session.run(None, feed)
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))
