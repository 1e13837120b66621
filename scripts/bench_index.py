"""Benchmark of the persistent index: add throughput, query latency, memory. Figures, not tests.

    python scripts/bench_index.py            # 100k adds, 1M vectors (about 15-25 minutes on 2 cores)
    python scripts/bench_index.py --quick    # 10k adds, 100k vectors (a few minutes)

1. **Adds with cached embeddings.** N synthetic headlines (stories of about 5 headlines spread over a
   day, 30 days in all, time-ordered as a feed arrives) whose vectors sit in an on-disk embedding cache,
   as after an earlier run: ``HeadlineIndex.add`` with the real default-model ``Embedder`` reads them
   from the cache instead of running the model. Timed: the whole ``add`` (normalize, cache lookups,
   online story assignment, SQLite commits, the FAISS file write). Then 1,000 more into the full index,
   as a cron run would add them, then ``repair``, which turns the index into HNSW at this size, and
   1,000 more into that HNSW index.
2. **Queries.** ``HeadlineIndex.query`` on the index of part 1 (query text already stored, so this is
   search + SQLite, without the model), and the model's own time to embed one new query. Then
   ``VectorIndex`` at 1M synthetic unit vectors (quick: 100k): HNSW build time, single-query p50/p99,
   recall@10 against exact search, and exact (flat) search p50 for comparison.
3. **Memory.** Peak resident set size after each part.

Vectors are synthetic (clustered unit vectors in the default model's 384 dimensions); the model is
loaded only for the Embedder object and one timed query embedding.

Threads: numpy (OpenBLAS) and FAISS (OpenMP) use every core by default. On a machine whose cores are
busy with other work, their threads wait on each other and one thread is faster; compare with
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python scripts/bench_index.py``. The header line prints
the settings and the load average, since both move the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster.embed import Embedder, EmbeddingCache, text_key  # noqa: E402
from cluster.normalize import normalize  # noqa: E402
from cluster.records import Record  # noqa: E402
from cluster.store import HeadlineIndex, one_search_thread  # noqa: E402
from cluster.store.ann import VectorIndex  # noqa: E402

TARGET_ADD_S = 60.0
TARGET_QUERY_P50_MS = 5.0
DIMENSION = 384
STORY_SPREAD = 0.27  # noise length around a story's centre: members about 0.93 similar, above 0.90
_T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def clustered_vectors(n: int, rng: np.random.Generator, per_story: int = 5) -> np.ndarray:
    """``n`` unit vectors in stories of ``per_story``: row i belongs to story i // per_story."""
    out = np.empty((n, DIMENSION), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks, to keep the float64 temporaries small
        stop = min(start + 100_000, n)
        stories = np.arange(start, stop) // per_story
        centres = unit_rows(rng.standard_normal((stories[-1] - stories[0] + 1, DIMENSION)))
        noise = unit_rows(rng.standard_normal((stop - start, DIMENSION))) * STORY_SPREAD
        out[start:stop] = unit_rows(centres[stories - stories[0]] + noise)
    return out


def synthetic_feed(n: int, rng: np.random.Generator) -> tuple[list[Record], np.ndarray]:
    """Headlines in time order: each story's five headlines fall within a day, over 30 days."""
    vectors = clustered_vectors(n, rng)
    stories = np.arange(n) // 5
    story_start = rng.uniform(0, 29 * 86400, stories.max() + 1)
    seconds = story_start[stories] + rng.uniform(0, 86400, n)
    order = np.argsort(seconds, kind="stable")
    records = [
        Record(
            f"Synthetic story {stories[i]} report {i}: officials comment on developments",
            f"b{i}",
            _T0 + timedelta(seconds=float(seconds[i])),
        )
        for i in order
    ]
    return records, vectors[order]


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def percentiles_ms(samples: list[float]) -> tuple[float, float]:
    values = np.array(samples) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def bench_adds(n: int, folder: Path, rng: np.random.Generator, results: dict) -> tuple[HeadlineIndex, Embedder]:
    records, vectors = synthetic_feed(n + 2000, rng)
    extra_records, later_records, records = records[n : n + 1000], records[n + 1000 :], records[:n]
    cache_path = folder / "embeddings.sqlite"
    embedder = Embedder()  # the default model: loading it is not part of the timing
    filling = EmbeddingCache(cache_path)
    filling.put_many(
        embedder.model_id,
        {text_key(normalize(r.text)): v for r, v in zip(records + extra_records + later_records, vectors, strict=True)},
    )
    filling.close()
    # A fresh cache object: lookups go to the file, as in a later process, not to the filler's memory.
    embedder.cache = EmbeddingCache(cache_path)
    index = HeadlineIndex.open(folder / "idx", create=True, embedder=embedder)
    result, seconds = timed(index.add, records)
    assert result.added == n and result.embedded == n, result
    results["add"] = {
        "headlines": n,
        "seconds": seconds,
        "per_second": n / seconds,
        "stories": result.stories,
        "joined": result.joined,
        "target_seconds": TARGET_ADD_S * n / 100_000,
    }
    print(
        f"add {n:,} headlines, embeddings cached: {seconds:.1f} s ({n / seconds:,.0f}/s), "
        f"{result.stories:,} stories; peak RSS {peak_rss_gb():.2f} GB",
        flush=True,
    )
    again, seconds_again = timed(index.add, records)
    assert again.present == n
    results["add_again"] = {"headlines": n, "seconds": seconds_again}
    print(f"add the same {n:,} again (all present): {seconds_again:.1f} s", flush=True)
    more, seconds_more = timed(index.add, extra_records)
    assert more.added == 1000
    results["add_1000_more"] = {"seconds": seconds_more, "index_size": n}
    print(f"add 1,000 more into the {n:,} index: {seconds_more:.2f} s", flush=True)
    _, seconds_repair = timed(index.repair)
    kind = index.stats()["faiss"]["kind"]
    results["repair"] = {"seconds": seconds_repair, "kind": kind}
    print(f"repair (rewrites vectors.faiss as {kind}): {seconds_repair:.1f} s", flush=True)
    _, seconds_later = timed(index.add, later_records)
    results["add_1000_into_repaired"] = {"seconds": seconds_later, "kind": kind}
    print(f"add 1,000 more into the repaired ({kind}) index: {seconds_later:.2f} s", flush=True)
    return index, embedder


def bench_index_queries(
    index: HeadlineIndex, embedder: Embedder, rng: np.random.Generator, queries: int, results: dict
) -> None:
    texts = [h.text for h in index.headlines()]
    picks = rng.choice(len(texts), size=min(queries, len(texts)), replace=False)
    index.query(texts[0], 10)  # loads vectors.faiss once, as a long-running service would
    samples = [timed(index.query, texts[i], 10)[1] for i in picks]
    p50, p99 = percentiles_ms(samples)
    embed_samples = [
        timed(embedder.encode, [normalize(f"unseen query {i} about markets and weather")])[1] for i in range(20)
    ]
    embed_p50, _ = percentiles_ms(embed_samples)
    results["index_query"] = {
        "vectors": index.count(),
        "kind": index.stats()["faiss"]["kind"],
        "p50_ms": p50,
        "p99_ms": p99,
        "model_embed_p50_ms": embed_p50,
    }
    print(
        f"HeadlineIndex.query at {index.count():,} headlines (stored text, no model): p50 {p50:.2f} ms, "
        f"p99 {p99:.2f} ms; embedding a new query with the model: p50 {embed_p50:.1f} ms",
        flush=True,
    )


def bench_vectors(n: int, rng: np.random.Generator, queries: int, results: dict) -> None:
    vectors, seconds_make = timed(clustered_vectors, n, rng)
    ids = np.arange(n, dtype=np.int64)
    print(f"{n:,} synthetic vectors in {seconds_make:.0f} s; building HNSW ...", flush=True)
    hnsw, seconds_build = timed(VectorIndex.build, ids, vectors, kind="hnsw")
    picks = rng.choice(n, size=queries, replace=False)
    probes = unit_rows(vectors[picks] + unit_rows(rng.standard_normal((queries, DIMENSION))) * 0.3).astype(np.float32)
    samples, found = [], []
    with one_search_thread():  # as HeadlineIndex.query searches
        hnsw.search(probes[0], 10)
        for probe in probes:
            hits, seconds = timed(hnsw.search, probe, 10)
            samples.append(seconds)
            found.append([h.id for h in hits[0]])
    p50, p99 = percentiles_ms(samples)
    print(f"HNSW at {n:,}: built in {seconds_build:.0f} s; query p50 {p50:.3f} ms, p99 {p99:.3f} ms", flush=True)
    flat = VectorIndex.build(ids, vectors, kind="flat")
    exact_count = min(queries, 100)
    flat_samples, recall = [], []
    close_found = close_total = 0
    with one_search_thread():
        for probe, approximate in zip(probes[:exact_count], found[:exact_count], strict=True):
            hits, seconds = timed(flat.search, probe, 10)
            flat_samples.append(seconds)
            exact = {h.id for h in hits[0]}
            recall.append(len(exact & set(approximate)) / len(exact))
            # Past a story's few members the exact top 10 is an arbitrary pick among near-zero
            # similarities; the neighbours that matter for grouping are the close ones.
            close = {h.id for h in hits[0] if h.score >= 0.5}
            close_found += len(close & set(approximate))
            close_total += len(close)
    flat_p50, flat_p99 = percentiles_ms(flat_samples)
    del flat
    sweep = {}
    with one_search_thread():
        for size in [s for s in (10_000, 50_000, 100_000, 250_000) if s < n]:
            part = VectorIndex.build(ids[:size], vectors[:size], kind="flat")
            sweep[size] = percentiles_ms([timed(part.search, p, 10)[1] for p in probes[:100]])[0]
    sweep[n] = flat_p50
    results["vector_query"] = {
        "vectors": n,
        "hnsw_build_seconds": seconds_build,
        "hnsw_p50_ms": p50,
        "hnsw_p99_ms": p99,
        "recall_at_10": float(np.mean(recall)),
        "recall_close_neighbours": close_found / max(close_total, 1),
        "flat_p50_ms": flat_p50,
        "flat_p99_ms": flat_p99,
        "flat_p50_ms_by_size": sweep,
        "target_p50_ms": TARGET_QUERY_P50_MS,
    }
    print(
        f"exact (flat) at {n:,}: query p50 {flat_p50:.2f} ms, p99 {flat_p99:.2f} ms; "
        f"HNSW recall@10 {np.mean(recall):.3f}, of close neighbours (similarity >= 0.5) "
        f"{close_found / max(close_total, 1):.3f}; peak RSS {peak_rss_gb():.2f} GB",
        flush=True,
    )
    print("exact search p50 by size: " + ", ".join(f"{k:,}: {v:.2f} ms" for k, v in sweep.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k adds and 100k vectors instead of 100k and 1M")
    parser.add_argument("--adds", type=int, help="headlines to add (default 100,000; quick 10,000)")
    parser.add_argument("--vectors", type=int, help="vectors for the query part (default 1,000,000; quick 100,000)")
    parser.add_argument("--queries", type=int, default=1000, help="queries per latency measurement")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    adds = args.adds or (10_000 if args.quick else 100_000)
    n_vectors = args.vectors or (100_000 if args.quick else 1_000_000)
    rng = np.random.default_rng(args.seed)
    threads = {var: os.environ.get(var, "default") for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    results: dict = {
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg()[0],
        "threads": threads,
        "python": sys.version.split()[0],
    }
    print(
        f"bench_index: {adds:,} adds, {n_vectors:,} vectors, {results['cpus']} CPUs, load average "
        f"{results['load_average_at_start']:.1f}, " + ", ".join(f"{k}={v}" for k, v in threads.items()),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-index-") as folder:
        index, embedder = bench_adds(adds, Path(folder), rng, results)
        bench_index_queries(index, embedder, rng, args.queries, results)
        index.close()
    results["peak_rss_after_adds_gb"] = peak_rss_gb()
    bench_vectors(n_vectors, rng, args.queries, results)
    results["peak_rss_gb"] = peak_rss_gb()
    add, query = results["add"], results["vector_query"]
    print("\nsummary (ratio = measured / target; below 1 meets the target)")
    print(
        f"  {adds:,} cached adds: {add['seconds']:.1f} s for a target of {add['target_seconds']:.0f} s "
        f"-> ratio {add['seconds'] / add['target_seconds']:.2f} ({add['per_second']:,.0f} headlines/s)"
    )
    print(
        f"  query p50 at {n_vectors:,} vectors: {query['hnsw_p50_ms']:.3f} ms for a target of "
        f"{TARGET_QUERY_P50_MS:.0f} ms -> ratio {query['hnsw_p50_ms'] / TARGET_QUERY_P50_MS:.3f}; "
        f"p99 {query['hnsw_p99_ms']:.3f} ms; exact search would be {query['flat_p50_ms'] / query['hnsw_p50_ms']:.0f}x "
        "slower"
    )
    print(f"  peak RSS {results['peak_rss_gb']:.2f} GB ({results['peak_rss_after_adds_gb']:.2f} GB after the adds)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
