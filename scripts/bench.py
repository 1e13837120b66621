"""Speed benchmarks, measured side by side in one run: embedding variants, grouping at scale, collapse latency.

    python scripts/bench.py                       # all three, full sizes, table on stdout
    python scripts/bench.py group --sizes 10000,100000
    python scripts/bench.py --quick --json        # a small version of all three, one JSON object per line

Sub-benchmarks:

* ``embed``: headlines/s of each embedding variant (fp32, int8, q4 the default, and the q4 graph with
  float32 compute) on ~2,000 real headlines from ``shared/data/pairs``, alternating variants so that
  machine noise hits all; cosine agreement of each variant's vectors with fp32 on those headlines,
  Spearman of cosine vs gold on STS17 ar-ar, and batch independence: the lowest cosine between a
  headline embedded alone and inside a batch of 200 mixed-length headlines (and the share identical).
* ``group``: synthetic clustered unit vectors (384-d, heavy-tailed story sizes, pair similarities
  straddling the 0.9 threshold, sibling stories just below it). Each system runs in its own process (so
  its peak RSS is its own): our ``group()``, sentence-transformers ``util.community_detection`` and
  semhash ``self_deduplicate`` on the same vectors. Edge recall is measured against the exact
  thresholded graph on a random sample of rows (all rows up to 10,000 items).
* ``collapse``: latency of ``collapse()`` on 10-headline lists: uncached (10 new headlines each call) and
  with all 10 cached (p50, p99).

A peer that is not installed (``pip install -e '.[bench]'``) or that runs past its time limit is skipped
with a note in the table. Timings on a shared machine are noisy: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
THRESHOLD = 0.9  # the default model's story-level threshold
DIMENSION = 384
RECALL_SAMPLE = 2000  # rows whose exact neighbours are computed when n is too large for all of them
PEER_LIMITS = {"community_detection": 100_000, "semhash": 1_000_000}


# ---------------------------------------------------------------------------------------------- embed


def real_headlines(limit: int) -> list[str]:
    """Distinct real headlines from the pairs files: the Arabic ones first, then English."""
    texts: list[str] = []
    for name in ("semeval2022_ar_slugs_train.tsv", "sts_headlines_en_2013_2015.tsv"):
        with open(DATA / "pairs" / name, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                texts += [row["text_a"], row["text_b"]]
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))[:limit]


def sts17() -> tuple[list[str], list[str], np.ndarray]:
    with open(DATA / "pairs" / "sts17_ar_ar.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [r["text_a"] for r in rows], [r["text_b"] for r in rows], np.array([float(r["score"]) for r in rows])


def embed_variants() -> dict[str, object]:
    """Name -> a model object with ``encode(texts, batch_size=..., ...)``; fp32 first (the reference).

    ``q4-fp32`` is the q4 graph with float32 compute (MatMulNBits accuracy level 1), a candidate only.
    """
    from cluster.embed import Embedder, EmbeddingCache
    from cluster.onnx_embed import OnnxTextEncoder, q4_model_dir

    models: dict[str, object] = {}
    for variant in ("none", "int8", "q4"):
        models["fp32" if variant == "none" else variant] = Embedder(cache=EmbeddingCache(), quantize=variant)._model
    models["q4-fp32"] = OnnxTextEncoder(q4_model_dir(accuracy="fp32"))
    return models


def batch_independence(model, texts: list[str], alone: int = 20) -> tuple[float, float]:
    """Lowest cosine between a text embedded alone and inside one batch of all ``texts``; share identical."""
    together = model.encode(texts, batch_size=len(texts), normalize_embeddings=True)
    single = np.concatenate([model.encode([t], normalize_embeddings=True) for t in texts[:alone]])
    cosines = np.sum(single * together[:alone], axis=1)
    identical = float(np.mean([np.array_equal(a, b) for a, b in zip(single, together[:alone], strict=True)]))
    return float(cosines.min()), identical


def bench_embed(quick: bool) -> list[dict]:
    from scipy.stats import spearmanr

    from cluster.normalize import normalize

    texts = [normalize(t) for t in real_headlines(300 if quick else 2000)]
    variants = embed_variants()
    for model in variants.values():  # load (and build) outside the timed part
        model.encode(["warm-up headline"])
    rounds = 1 if quick else 2
    rates: dict[str, list[float]] = {v: [] for v in variants}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for name, model in variants.items():  # alternate, so that load spikes hit every variant
            start = time.perf_counter()
            vectors[name] = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
            rates[name].append(len(texts) / (time.perf_counter() - start))
    left, right, gold = sts17()
    # Mixed lengths: every 10th headline of the sample, 200 of them (100 in a quick run).
    mixed = texts[:: max(1, len(texts) // (100 if quick else 200))][: 100 if quick else 200]
    fp32_rate = float(np.median(rates["fp32"]))
    results = []
    for name, model in variants.items():
        a = model.encode([normalize(t) for t in left], normalize_embeddings=True)
        b = model.encode([normalize(t) for t in right], normalize_embeddings=True)
        spearman = float(spearmanr(np.sum(a * b, axis=1), gold).statistic)
        agreement = np.sum(vectors[name] * vectors["fp32"], axis=1)
        lowest, identical = batch_independence(model, mixed)
        rate = float(np.median(rates[name]))
        results.append(
            {
                "bench": "embed",
                "variant": name,
                "per_s": round(rate, 1),
                "vs_fp32": round(rate / fp32_rate, 2),
                "cos_agreement": round(float(agreement.mean()), 5),
                "cos_agreement_min": round(float(agreement.min()), 5),
                "sts17_spearman": round(spearman, 4),
                "alone_vs_batch_min_cos": round(lowest, 6),
                "alone_vs_batch_identical": round(identical, 2),
                "texts": len(texts),
                "rounds": rounds,
            }
        )
    return results


# ---------------------------------------------------------------------------------------------- group


def synthetic_stories(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors shaped like headline embeddings of a news stream (see the module docstring).

    Unrelated items score ~0.72 (sentence embeddings share a large common component), members of one
    story 0.86-0.975 on average depending on the story (so some stories straddle the 0.9 threshold),
    and a fifth of the stories have a sibling story whose members score ~0.85-0.88 with theirs.
    Story sizes: 1 + Pareto(1.6), capped at 500 (two thirds of stories are single headlines).
    """
    rng = np.random.default_rng(seed)
    sizes = np.minimum(1 + np.floor(rng.pareto(1.6, n)).astype(np.int64), 500)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    sizes[-1] -= int(sizes.sum()) - n
    n_stories = len(sizes)

    def units(k: int) -> np.ndarray:
        x = rng.standard_normal((k, DIMENSION), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    common = units(1)[0]
    topics = units(max(1, n_stories // 20))[rng.integers(0, max(1, n_stories // 20), n_stories)]
    own = units(n_stories)
    sibling = rng.random(n_stories) < 0.2
    previous = np.maximum(np.arange(n_stories) - 1, 0)
    own[sibling] = 0.5 * own[previous[sibling]] + np.sqrt(0.75) * units(int(sibling.sum()))
    centers = np.sqrt(0.78) * common + np.sqrt(0.10) * topics + np.sqrt(0.12) * own
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    pair_similarity = rng.uniform(0.86, 0.975, n_stories)
    spread = np.sqrt(1 / pair_similarity - 1).astype(np.float32)
    story = np.repeat(np.arange(n_stories), sizes)[rng.permutation(n)]
    out = np.empty((n, DIMENSION), dtype=np.float32)
    for start in range(0, n, 100_000):
        s = story[start : start + 100_000]
        x = centers[s] + spread[s, None] * units(len(s))
        out[start : start + len(s)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_reference(vectors: np.ndarray, sample: int, seed: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (all, or a random sample) and every exact edge (row, j) >= THRESHOLD from them."""
    n = len(vectors)
    rows = np.arange(n) if n <= 10_000 else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    edge_rows, edge_cols = [], []
    for start in range(0, len(rows), 512):
        block = rows[start : start + 512]
        scores = vectors[block] @ vectors.T
        scores[np.arange(len(block)), block] = -1.0
        r, c = np.nonzero(scores >= THRESHOLD)
        edge_rows.append(block[r])
        edge_cols.append(c)
    return rows, np.concatenate(edge_rows), np.concatenate(edge_cols)


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the process's own address space; ru_maxrss
    would also carry the parent's peak across fork and exec (the parent held the vectors and reference)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def labels_from_groups(n: int, groups: list[list[int]]) -> np.ndarray:
    labels = np.arange(n, dtype=np.int64) + n  # items in no group are groups of their own
    for label, members in enumerate(groups):
        labels[np.asarray(members, dtype=np.int64)] = label
    return labels


def group_worker(system: str, vectors_path: str, reference_path: str) -> dict:
    """Runs in its own process: time one system, then score it against the exact reference."""
    vectors = np.load(vectors_path)
    n = len(vectors)
    found = None  # the system's own similarity graph, where it exposes one
    if system == "ours":
        from cluster.group import group
        from cluster.judge import CosineSimilarity

        start = time.perf_counter()
        grouping = group(CosineSimilarity(vectors), THRESHOLD)
        seconds = time.perf_counter() - start
        labels, found = grouping.labels, grouping.edges
    elif system == "community_detection":
        import torch
        from sentence_transformers.util import community_detection

        embeddings = torch.from_numpy(vectors)
        start = time.perf_counter()
        communities = community_detection(embeddings, threshold=THRESHOLD, min_community_size=1, batch_size=1024)
        seconds = time.perf_counter() - start
        labels = labels_from_groups(n, communities)
    elif system == "semhash":
        from scipy import sparse
        from semhash import SemHash
        from semhash.index import Index

        captured: list = []
        original = Index.query_threshold

        def capturing(self, queries, threshold):  # records the neighbour lists semhash computes
            result = original(self, queries, threshold)
            captured.append(result)
            return result

        Index.query_threshold = capturing

        class Precomputed:  # the same vectors as every other system; semhash never re-encodes them
            def encode(self, inputs, **kwargs):
                raise AssertionError("semhash should not encode precomputed records")

        records = [str(i) for i in range(n)]
        start = time.perf_counter()
        semhash = SemHash.from_embeddings(vectors, records, model=Precomputed())
        result = semhash.self_deduplicate(threshold=THRESHOLD)
        seconds = time.perf_counter() - start
        labels = np.arange(n, dtype=np.int64)
        for duplicate in result.filtered:
            labels[int(duplicate.record)] = int(duplicate.duplicate_of)
        lengths = np.array([len(ids) for ids, _ in captured[0]])
        found = sparse.csr_matrix(
            (
                np.ones(int(lengths.sum()), dtype=np.float32),
                (
                    np.repeat(np.arange(n), lengths),
                    np.concatenate([np.asarray(ids, np.int64) for ids, _ in captured[0]]),
                ),
            ),
            shape=(n, n),
        )
        found = found + found.T  # an edge counts as found from either end
    else:
        raise ValueError(system)
    rss = peak_rss_mb()
    reference = np.load(reference_path)
    edge_rows, edge_cols = reference["edge_rows"], reference["edge_cols"]
    edge_recall = None
    if found is not None and len(edge_rows):
        edge_recall = float(np.mean(np.asarray(found[edge_rows, edge_cols]).ravel() != 0))
    together = float(np.mean(labels[edge_rows] == labels[edge_cols])) if len(edge_rows) else None
    return {
        "bench": "group",
        "system": system,
        "n": n,
        "seconds": round(seconds, 2),
        "rss_mb": round(rss, 1),
        "edge_recall": None if edge_recall is None else round(edge_recall, 5),
        "same_group": None if together is None else round(together, 5),
        "n_groups": int(len(np.unique(labels))),
        "reference_rows": int(len(reference["rows"])),
        "reference_edges": int(len(edge_rows)),
    }


def peer_available(system: str) -> bool:
    module = {"community_detection": "sentence_transformers", "semhash": "semhash"}.get(system)
    if module is None:
        return True
    import importlib.util

    return importlib.util.find_spec(module) is not None


def bench_group(sizes: list[int], systems: list[str], timeout: float) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-group-") as folder:
        for n in sizes:
            vectors_path, reference_path = f"{folder}/vectors-{n}.npy", f"{folder}/reference-{n}.npz"
            vectors = synthetic_stories(n)
            np.save(vectors_path, vectors)
            rows, edge_rows, edge_cols = exact_reference(vectors, RECALL_SAMPLE)
            np.savez(reference_path, rows=rows, edge_rows=edge_rows, edge_cols=edge_cols)
            del vectors
            for system in systems:
                row = {"bench": "group", "system": system, "n": n}
                if n > PEER_LIMITS.get(system, n):
                    continue
                if not peer_available(system):
                    results.append({**row, "skipped": "not installed: pip install -e '.[bench]'"})
                    continue
                command = [sys.executable, __file__, "--worker", system, vectors_path, reference_path]
                try:
                    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
                except subprocess.TimeoutExpired:
                    results.append({**row, "skipped": f"ran past the {timeout:.0f} s limit"})
                    continue
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                if done.returncode != 0 or not lines:
                    last = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
                    results.append({**row, "skipped": f"failed (exit {done.returncode}): {last}"})
                    continue
                results.append(json.loads(lines[-1]))
    return results


# ------------------------------------------------------------------------------------------- collapse


def saudi_titles(count: int) -> list[str]:
    """Distinct real Arabic titles (SaudiNewsNet: research use, for speed tests only, never shipped)."""
    titles: list[str] = []
    with open(DATA / "corpora" / "saudinewsnet_titles.csv", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        field = next(f for f in reader.fieldnames or [] if "title" in f.lower())
        for row in reader:
            titles.append(row[field].strip())
    return [t for t in dict.fromkeys(titles) if t][:count]


def bench_collapse(calls: int, quantize: str | None) -> list[dict]:
    from cluster.embed import Embedder, EmbeddingCache
    from cluster.stories import collapse

    with tempfile.TemporaryDirectory(prefix="bench-collapse-") as folder:
        # A private SQLite cache: the production layering (memory over SQLite), none of the user's vectors.
        embedder = Embedder(cache=EmbeddingCache(Path(folder) / "cache.sqlite"), quantize=quantize)
        titles = saudi_titles(10 * (calls + 1))
        collapse(titles[:10], embedder=embedder)  # loads the model outside the timed calls
        results = []
        for cached in (False, True):
            times = []
            for call in range(calls):
                texts = titles[:10] if cached else titles[10 * (call + 1) : 10 * (call + 2)]
                start = time.perf_counter()
                collapse(texts, embedder=embedder)
                times.append((time.perf_counter() - start) * 1000)
            results.append(
                {
                    "bench": "collapse",
                    "cached": cached,
                    "variant": embedder.quantize if embedder.quantize != "none" else "fp32",
                    "p50_ms": round(float(np.percentile(times, 50)), 2),
                    "p99_ms": round(float(np.percentile(times, 99)), 2),
                    "calls": calls,
                }
            )
        embedder.cache.close()
    return results


# ------------------------------------------------------------------------------------------------ output


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def print_table(rows: list[dict]) -> None:
    def cell(value) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) and value < 1.5 and value != 0 else str(value)

    for bench in ("embed", "group", "collapse"):
        part = [r for r in rows if r["bench"] == bench]
        if not part:
            continue
        keys = [k for k in dict.fromkeys(k for r in part for k in r) if k != "bench"]
        print(f"\n{bench}")
        print("| " + " | ".join(keys) + " |")
        print("|" + "---|" * len(keys))
        for r in part:
            print("| " + " | ".join(cell(r.get(k)) for k in keys) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benches", nargs="*", help="embed, group, collapse (default: all three)")
    parser.add_argument("--quick", action="store_true", help="a small version of every benchmark (minutes)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    parser.add_argument("--sizes", help="group: comma-separated item counts (default 10000,100000,1000000)")
    parser.add_argument("--systems", default="ours,community_detection,semhash", help="group: systems to run")
    parser.add_argument("--timeout", type=float, default=3600, help="group: seconds allowed to one system run")
    parser.add_argument("--calls", type=int, help="collapse: calls per case (default 200)")
    parser.add_argument("--quantize", default=None, help="collapse: embedding variant (default: as configured)")
    args = parser.parse_args()
    benches = args.benches or ["embed", "group", "collapse"]
    unknown = set(benches) - {"embed", "group", "collapse"}
    if unknown:
        parser.error(f"unknown benchmark {', '.join(sorted(unknown))}: use embed, group or collapse")
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [5_000, 30_000] if args.quick else [10_000, 100_000, 1_000_000]
    emit = (lambda rows: [print(json.dumps(r), flush=True) for r in rows]) if args.json else (lambda rows: None)
    started = time.time()
    if not args.json:
        print(f"# {machine()}, {time.strftime('%Y-%m-%d')}; {' '.join(sys.argv)}", flush=True)
    collected: list[dict] = []
    for bench in benches:
        if bench == "embed":
            part = bench_embed(args.quick)
        elif bench == "group":
            part = bench_group(sizes, args.systems.split(","), args.timeout)
        else:
            part = bench_collapse(args.calls or (50 if args.quick else 200), args.quantize)
        emit(part)
        collected += part
    if not args.json:
        print_table(collected)
        print(f"\n# {time.time() - started:.0f} s in all")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        print(json.dumps(group_worker(sys.argv[2], sys.argv[3], sys.argv[4])), flush=True)
    else:
        main()
