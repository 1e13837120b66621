"""How fast can the default model embed on this machine? The arithmetic behind docs/performance.md.

    HEADLINE_CLUSTER_CACHE=/tmp/hc-cache python scripts/bench_embed_ceiling.py [--texts 1000] [--rounds 2]

For real headlines (SaudiNewsNet titles, as ``bench.py embed``), it counts the tokens the model sees
(prompt and special tokens included), works out the floating-point operations of one headline from the
model's shape (every matrix product of the 12 layers: 4 h*h attention projections and 2 h*ff feed-forward
products per token, plus attention over the headline's own tokens), and times three ONNX Runtime graphs
side by side, alternating rounds:

- ``q4``: the default (4-bit weights, MatMulNBits with int8 activations per row block);
- ``q4-fp32``: the same weights with float32 compute;
- ``dense-fp32``: the 4-bit weights expanded to float32 matrices, plain MatMul (MLAS's SGEMM).

It prints headlines/s and the achieved GFLOP/s of each, the share of ONNX Runtime's time in each
operator (one profiled pass of q4-fp32), and the throughput a given GFLOP/s would allow.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import real_headlines  # noqa: E402

from cluster.normalize import normalize  # noqa: E402
from cluster.onnx_embed import MODEL_FILE, OnnxTextEncoder, q4_model_dir  # noqa: E402


def dense_copy(source: Path, target: Path) -> Path:
    """``source``'s q4 folder with every MatMulNBits replaced by a float32 MatMul of the same weights."""
    import onnx
    from onnx import helper, numpy_helper

    shutil.copytree(source, target)
    model = onnx.load(str(target / MODEL_FILE))
    initializers = {i.name: i for i in model.graph.initializer}
    nodes, dropped, added = [], set(), []
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        k, n, block = attrs["K"], attrs["N"], attrs["block_size"]
        codes = numpy_helper.to_array(initializers[node.input[1]])
        scales = numpy_helper.to_array(initializers[node.input[2]]).reshape(n, k // block)
        values = np.empty(codes.shape[:2] + (block,), np.float32)
        values[..., 0::2], values[..., 1::2] = codes & 0x0F, codes >> 4
        weight = ((values - 8) * scales[:, :, None]).reshape(n, k).T  # MatMulNBits' zero point is 8
        name = node.output[0] + ".dense"
        added.append(numpy_helper.from_array(np.ascontiguousarray(weight, dtype=np.float32), name))
        dropped.update(node.input[1:])
        nodes.append(helper.make_node("MatMul", [node.input[0], name], list(node.output), name=node.name))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    kept = [i for i in model.graph.initializer if i.name not in dropped]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + added)
    onnx.save(model, str(target / MODEL_FILE))
    return target


def flops_per_headline(tokens: np.ndarray, hidden: int = 384, ff: int = 1536, layers: int = 12) -> np.ndarray:
    """Multiply-adds x 2 of one headline of ``tokens`` tokens: projections, feed-forward and attention."""
    per_token = 4 * hidden * hidden + 2 * hidden * ff
    attention = 2 * tokens * hidden  # scores and weighted sum, per token, over the headline's tokens
    return 2.0 * layers * tokens * (per_token + attention)


def operator_shares(folder: Path, texts: list[str]) -> list[tuple[str, float]]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "hc-ceiling-profile")
    encoder = OnnxTextEncoder(folder)
    encoder.session = onnxruntime.InferenceSession(
        str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
    )
    encoder.encode(texts)
    profile = Path(encoder.session.end_profiling())
    totals: collections.Counter[str] = collections.Counter()
    for event in json.loads(profile.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    profile.unlink()
    whole = sum(totals.values())
    return [(op, share / whole) for op, share in totals.most_common(6)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    texts = [normalize(t) for t in real_headlines(max(args.texts, 300))][: args.texts]
    with tempfile.TemporaryDirectory() as scratch:
        folders = {
            "q4": q4_model_dir(),
            "q4-fp32": q4_model_dir(accuracy="fp32"),
        }
        folders["dense-fp32"] = dense_copy(folders["q4-fp32"], Path(scratch) / "dense")
        encoders = {name: OnnxTextEncoder(folder) for name, folder in folders.items()}
        tokens = np.array([len(ids) for ids in encoders["q4"].tokenize(texts)])
        work = float(flops_per_headline(tokens).sum())
        for encoder in encoders.values():
            encoder.encode(texts[:64])  # warm-up outside the timed part
        rates: dict[str, list[float]] = {name: [] for name in encoders}
        for _ in range(args.rounds):
            for name, encoder in encoders.items():
                start = time.perf_counter()
                encoder.encode(texts)
                rates[name].append(len(texts) / (time.perf_counter() - start))
        shares = operator_shares(folders["q4-fp32"], texts[:300])
    print(
        f"{len(texts)} headlines, {tokens.mean():.1f} tokens each on average (max {tokens.max()}), "
        f"{work / len(texts) / 1e9:.3f} GFLOP per headline; load average {os.getloadavg()[0]:.1f}, "
        f"{os.cpu_count()} cores"
    )
    for name, values in rates.items():
        rate = float(np.median(values))
        print(
            f"{name:>10}: {rate:7.1f} headlines/s  {rate * work / len(texts) / 1e9:6.1f} GFLOP/s  "
            f"rounds {[round(v, 1) for v in values]}"
        )
    print("operator shares (q4-fp32): " + ", ".join(f"{op} {share:.1%}" for op, share in shares))
    per_headline = work / len(texts)
    print(f"500 headlines/s needs {500 * per_headline / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
