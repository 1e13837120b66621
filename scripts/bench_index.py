"""Benchmark of the persistent index: add throughput, segments at 1M, query latency, memory. Figures, not tests.

    python scripts/bench_index.py                    # 100k adds, then the 1M segments part (~20 minutes on 2 cores)
    python scripts/bench_index.py --parts segments   # only the 1M segments part (~10 minutes)
    python scripts/bench_index.py --quick            # 10k adds, 100k vectors (a few minutes)

Parts (``--parts``, comma-separated; default ``adds,segments``):

1. ``adds``: **adds with cached embeddings.** N synthetic headlines (stories of about 5 headlines spread
   over a day, 30 days in all, time-ordered as a feed arrives) whose vectors sit in an on-disk embedding
   cache, as after an earlier run: ``HeadlineIndex.add`` with the real default-model ``Embedder`` reads
   them from the cache instead of running the model. Timed: the whole ``add`` (normalize, cache lookups,
   online story assignment, SQLite commits, the segment write). Then 1,000 more into the full index, as
   a cron run would add them, then ``repair``, which compacts the index into one ``ivf`` segment at
   this size, and 1,000 more into that index. ``HeadlineIndex.query`` on it (query text already
   stored, so search + SQLite, without the model), and the model's own time to embed one new query.
2. ``segments``: **a 1M-headline index folder**, then measurements in fresh processes. The fixture is
   built by a fast path and is synthetic: texts, times (a year), stories and 384-dimensional clustered
   unit vectors, stored by ``cluster.store.fixtures.insert_grouped`` (the tables ``add`` writes, in 50,000-row
   transactions, without online assignment), its segment files by ``HeadlineIndex.maintain()`` (the
   nightly maintenance, which builds one ``ivf`` segment from SQLite). Then, each in a new process:
   *add* 1,000 cached headlines (open + add, as a cron run), with the inode, modification time and
   CRC32 of every older segment file compared before and after; *query*: open the index and answer
   1,000 ``HeadlineIndex.query`` calls (stored texts), plus 200 perturbed probe vectors through the
   segments, reporting the process's own peak memory (VmHWM), p50/p99, and recall@10 against exact
   search computed by brute force over all vectors.
3. ``vectors``: ``VectorIndex`` at 1M synthetic vectors in memory (quick: 100k): HNSW build time,
   single-query p50/p99, recall@10 against exact search, and exact (flat) search p50 by size. This is
   the in-memory comparison of before segments (an HNSW build at 1M takes over 20 minutes on one core).

Threads: numpy (OpenBLAS) and FAISS (OpenMP) use every core by default. On a machine whose cores are
busy with other work, their threads wait on each other and one thread is faster; compare with
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python scripts/bench_index.py``. The header line prints
the settings and the load average, since both move the figures. Single-query searches always run on
one FAISS thread.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
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
from cluster.store.fixtures import insert_grouped  # noqa: E402
from cluster.store.segments import SEGMENTS_DIR  # noqa: E402
from cluster.store.vectors import file_checksum  # noqa: E402

TARGET_ADD_S = 60.0
TARGET_QUERY_P50_MS = 5.0
TARGET_SEGMENT_ADD_S = 2.0
TARGET_RSS_GB = 2.5
FIXTURE_DAYS = 365
"""The 1M fixture spans a year (about 8,200 headlines in a 72-hour story window): an add compares each new
headline with the stored ones of its window (cluster.store.assign), so its cost follows the window's
headlines, not the index's size."""
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


def synthetic_feed(n: int, rng: np.random.Generator, days: int = 30) -> tuple[list[Record], np.ndarray]:
    """Headlines in time order: each story's five headlines fall within a day, over ``days`` days."""
    vectors = clustered_vectors(n, rng)
    stories = np.arange(n) // 5
    story_start = rng.uniform(0, (days - 1) * 86400, stories.max() + 1)
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
    print(f"repair (checks and compacts the segment files into {kind}): {seconds_repair:.1f} s", flush=True)
    _, seconds_later = timed(index.add, later_records)
    results["add_1000_into_repaired"] = {"seconds": seconds_later, "kind": kind}
    print(f"add 1,000 more into the repaired ({kind}) index: {seconds_later:.2f} s", flush=True)
    return index, embedder


def bench_index_queries(
    index: HeadlineIndex, embedder: Embedder, rng: np.random.Generator, queries: int, results: dict
) -> None:
    texts = [h.text for h in index.headlines()]
    picks = rng.choice(len(texts), size=min(queries, len(texts)), replace=False)
    index.query(texts[0], 10)  # reads the segment files once, as a long-running service would
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


# -- segments at 1M: a fixture, then an add and queries in fresh processes ----------------------------------


def vm_hwm_gb() -> float:
    """This process's peak resident memory. VmHWM belongs to the process's own address space, whereas
    ru_maxrss would carry the parent's peak across fork and exec (the parent built the fixture)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return peak_rss_gb()


def fingerprints(folder: Path) -> dict[str, list]:
    """Inode, modification time and CRC32 of every segment file: what 'not rewritten' is checked on."""
    found = {}
    for path in sorted((folder / SEGMENTS_DIR).glob("*.faiss")):
        status = os.stat(path)
        found[path.name] = [status.st_ino, status.st_mtime_ns, file_checksum(path)]
    return found


def build_fixture(n: int, folder: Path, rng: np.random.Generator, results: dict) -> dict:
    """A real index folder of ``n`` synthetic headlines, built by the fast path, plus 1,000 more whose
    embeddings are in the on-disk cache, and query probes with their exact neighbours."""
    records, vectors = synthetic_feed(n + 1000, rng, days=FIXTURE_DAYS)
    texts = [r.text for r in records]
    times = np.array([r.published_at.timestamp() for r in records])
    groups_raw = np.array([int(t.split()[2]) for t in texts])  # "Synthetic story S report i: ..."
    _, groups = np.unique(groups_raw[:n], return_inverse=True)  # numbered from 0 (order is not needed)
    embedder = Embedder()
    started = time.perf_counter()
    index = HeadlineIndex.open(folder / "idx", create=True, embedder=embedder, notify=lambda m: None)
    with index.lock():
        insert_grouped(index.db, embedder.model_id, texts[:n], times[:n], vectors[:n], groups)
    seconds_insert = time.perf_counter() - started
    print(f"fixture: {n:,} synthetic headlines into SQLite (fast path) in {seconds_insert:.0f} s", flush=True)
    _, seconds_segments = timed(index.maintain)  # the segment files, caught up from SQLite as one ivf segment
    info = index.stats()["faiss"]
    index.close()
    print(
        f"fixture: segment files ({', '.join(s['kind'] for s in info['segments'])}, "
        f"{info['bytes'] / 1e9:.2f} GB) built by maintain() in {seconds_segments:.0f} s; in step: {info['in_step']}",
        flush=True,
    )
    cache_path = folder / "embeddings.sqlite"
    filling = EmbeddingCache(cache_path)
    filling.put_many(
        embedder.model_id, {text_key(normalize(t)): v for t, v in zip(texts[n:], vectors[n:], strict=True)}
    )
    filling.close()
    (folder / "extra.jsonl").write_text(
        "".join(
            json.dumps({"id": f"x{i}", "text": r.text, "published_at": r.published_at.isoformat()}) + "\n"
            for i, r in enumerate(records[n:])
        )
    )
    picks = rng.choice(n + 1000, size=1000, replace=False)
    probes = unit_rows(vectors[picks[:200]] + unit_rows(rng.standard_normal((200, DIMENSION))) * 0.3)
    probes = probes.astype(np.float32)
    exact_text = exact_top(vectors, vectors[picks[:200]])
    exact_probe = exact_top(vectors, probes)
    np.save(folder / "probes.npy", probes)
    (folder / "queries.json").write_text(
        json.dumps(
            {
                "texts": [texts[i] for i in picks],
                "exact_text": [[f"g{r + 1}" if r < n else f"x{r - n}" for r in row] for row in exact_text[0]],
                "exact_probe_rows": exact_probe[0].tolist(),
                "exact_probe_scores": exact_probe[1].tolist(),
                "n": n,
            }
        )
    )
    results["fixture"] = {
        "headlines": n,
        "synthetic": "texts, times, stories and 384-d clustered unit vectors; stored by store.fixtures.insert_grouped "
        "(no online assignment), segment files by HeadlineIndex.maintain()",
        "insert_seconds": seconds_insert,
        "segments_seconds": seconds_segments,
        "segments": info["segments"],
        "bytes": info["bytes"],
    }
    return results["fixture"]


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Rows (0-based into ``vectors``) and scores of each query's exact top ``k``."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(vectors), 100_000):
        scores = queries @ vectors[start : start + 100_000].T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        best_scores = np.hstack([best_scores, np.take_along_axis(scores, top, axis=1)])
        best_rows = np.hstack([best_rows, top + start])
        keep = np.argsort(-best_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(best_scores, keep, axis=1)
        best_rows = np.take_along_axis(best_rows, keep, axis=1)
    return best_rows, best_scores


def child_add(folder: Path) -> dict:
    """A cron run: a fresh process adds 1,000 headlines whose embeddings are cached."""
    embedder = Embedder()  # loading the model is not part of the timing
    embedder.cache = EmbeddingCache(folder / "embeddings.sqlite")
    records = [
        Record(row["text"], row["id"], datetime.fromisoformat(row["published_at"]))
        for row in map(json.loads, (folder / "extra.jsonl").read_text().splitlines())
    ]
    before = fingerprints(folder / "idx")
    started = time.perf_counter()
    with HeadlineIndex.open(folder / "idx", embedder=embedder) as index:
        result = index.add(records)
    seconds = time.perf_counter() - started
    after = fingerprints(folder / "idx")
    assert result.added == len(records) and result.embedded == len(records), result
    return {
        "seconds": seconds,
        "open_and_add_seconds": seconds,
        "added": result.added,
        "older_files": len(before),
        "older_files_rewritten": sorted(name for name in before if after.get(name) != before[name]),
        "new_files": sorted(set(after) - set(before)),
        "new_bytes": sum((folder / "idx" / SEGMENTS_DIR / name).stat().st_size for name in set(after) - set(before)),
        "older_bytes": sum((folder / "idx" / SEGMENTS_DIR / name).stat().st_size for name in before),
        "peak_rss_gb": vm_hwm_gb(),
    }


def child_query(folder: Path) -> dict:
    """A reader (a service): a fresh process opens the index and answers queries; its own peak memory."""
    wanted = json.loads((folder / "queries.json").read_text())
    probes = np.load(folder / "probes.npy")
    baseline = vm_hwm_gb()
    with HeadlineIndex.open(folder / "idx", notify=lambda m: None) as index:
        _, seconds_open = timed(index.query, wanted["texts"][0], 10)  # reads and checks every segment
        samples, text_hits = [], []
        for text in wanted["texts"]:
            hits, seconds = timed(index.query, text, 10)
            samples.append(seconds)
            text_hits.append([h.headline.id for h in hits])
        vi = index._vectors.current(write=False)  # the searchable segments, as the query above uses them
        raw_samples, raw_found = [], []
        with one_search_thread():
            for probe in probes:
                hits, seconds = timed(vi.search, probe, 10)
                raw_samples.append(seconds)
                raw_found.append([h.id for h in hits[0]])
        reranked = [[h.id for h in rerank(index, vi, probe)] for probe in probes]
        segments = len(vi.parts)
    n = wanted["n"]
    exact_rows = [[r + 1 for r in row if r < n] for row in wanted["exact_probe_rows"]]  # the fixture's rows
    close = [
        [r + 1 for r, s in zip(row, scores, strict=True) if r < n and s >= 0.5]
        for row, scores in zip(wanted["exact_probe_rows"], wanted["exact_probe_scores"], strict=True)
    ]
    p50, p99 = percentiles_ms(samples)
    raw_p50, raw_p99 = percentiles_ms(raw_samples)
    return {
        "first_query_seconds": seconds_open,
        "query_p50_ms": p50,
        "query_p99_ms": p99,
        "search_p50_ms": raw_p50,
        "search_p99_ms": raw_p99,
        "segments_searched": segments,
        "recall_at_10_text_queries": overlap(text_hits[:200], wanted["exact_text"]),
        "recall_at_10_probes_index_scores": overlap(raw_found, exact_rows),
        "recall_at_10_probes_reranked": overlap(reranked, exact_rows),
        "recall_close_neighbours_reranked": overlap(reranked, close),
        "peak_rss_gb": vm_hwm_gb(),
        "rss_before_open_gb": baseline,
    }


def rerank(index: HeadlineIndex, vi, probe: np.ndarray) -> list:
    """What HeadlineIndex.query does with a vector: 20 candidates from the segments, exact scores from
    SQLite, the best 10 (cluster.store.reading)."""
    from cluster.store.reading import exact_scores

    with one_search_thread():
        candidates = vi.search(probe, 20)[0]
    exact = exact_scores(index.db, [c.id for c in candidates], probe)
    return sorted((c for c in candidates if c.id in exact), key=lambda c: -exact[c.id])[:10]


def overlap(found: list[list], exact: list[list]) -> float:
    """Share of the exact neighbours found (rows with none are left out)."""
    pairs = [(set(f), set(e)) for f, e in zip(found, exact, strict=False) if e]
    return float(np.mean([len(f & e) / len(e) for f, e in pairs])) if pairs else float("nan")


def in_child(part: str, folder: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", part, str(folder)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"child {part} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_segments(n: int, folder: Path, rng: np.random.Generator, results: dict) -> None:
    build_fixture(n, folder, rng, results)
    add = in_child("add", folder)
    results["segments_add_1000"] = add
    rewritten = "yes: " + ", ".join(add["older_files_rewritten"]) if add["older_files_rewritten"] else "no"
    print(
        f"add 1,000 cached headlines to the {n:,} index (fresh process, open + add): {add['seconds']:.2f} s "
        f"for a target of {TARGET_SEGMENT_ADD_S:.0f} s -> ratio {add['seconds'] / TARGET_SEGMENT_ADD_S:.2f}; older "
        f"files ({add['older_files']}) rewritten: {rewritten}; wrote {add['new_bytes'] / 1e6:.1f} MB new "
        f"({add['new_bytes'] / max(add['older_bytes'], 1):.4f} of the {add['older_bytes'] / 1e9:.2f} GB a whole "
        f"rewrite would write); peak RSS {add['peak_rss_gb']:.2f} GB",
        flush=True,
    )
    query = in_child("query", folder)
    results["segments_query"] = query
    print(
        f"{n + 1000:,} headlines open, answering queries (fresh process, {query['segments_searched']} segments): "
        f"peak RSS {query['peak_rss_gb']:.2f} GB for a target of {TARGET_RSS_GB} GB -> ratio "
        f"{query['peak_rss_gb'] / TARGET_RSS_GB:.2f} ({query['rss_before_open_gb']:.2f} GB before opening); "
        f"first query (reads the files) {query['first_query_seconds']:.1f} s",
        flush=True,
    )
    print(
        f"HeadlineIndex.query (stored text: search + exact rerank + SQLite): p50 {query['query_p50_ms']:.2f} ms "
        f"for a target of {TARGET_QUERY_P50_MS:.0f} ms -> ratio {query['query_p50_ms'] / TARGET_QUERY_P50_MS:.2f}, "
        f"p99 {query['query_p99_ms']:.2f} ms; segment search alone p50 {query['search_p50_ms']:.3f} ms, "
        f"p99 {query['search_p99_ms']:.3f} ms",
        flush=True,
    )
    print(
        f"recall@10 against exact search: stored-text queries {query['recall_at_10_text_queries']:.3f}; perturbed "
        f"probes {query['recall_at_10_probes_reranked']:.3f} as queries rank them (exact rerank of 20), "
        f"{query['recall_at_10_probes_index_scores']:.3f} by the index's 8-bit scores alone, close neighbours "
        f"(similarity >= 0.5) {query['recall_close_neighbours_reranked']:.3f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k adds and 100k vectors instead of 100k and 1M")
    parser.add_argument(
        "--parts", default="adds,segments", help="comma-separated: adds, segments, vectors (default adds,segments)"
    )
    parser.add_argument("--adds", type=int, help="headlines to add (default 100,000; quick 10,000)")
    parser.add_argument("--vectors", type=int, help="vectors for the 1M parts (default 1,000,000; quick 100,000)")
    parser.add_argument("--queries", type=int, default=1000, help="queries per latency measurement")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=2, metavar=("PART", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one measurement in a fresh process: see in_child
        part, folder = args.child
        print(json.dumps((child_add if part == "add" else child_query)(Path(folder))))
        return
    parts = set(args.parts.split(","))
    adds = args.adds or (10_000 if args.quick else 100_000)
    n_vectors = args.vectors or (100_000 if args.quick else 1_000_000)
    rng = np.random.default_rng(args.seed)
    threads = {var: os.environ.get(var, "default") for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    results: dict = {
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg()[0],
        "threads": threads,
        "python": sys.version.split()[0],
        "parts": sorted(parts),
    }
    print(
        f"bench_index: parts {','.join(sorted(parts))}, {adds:,} adds, {n_vectors:,} vectors, {results['cpus']} CPUs, "
        f"load average {results['load_average_at_start']:.1f}, " + ", ".join(f"{k}={v}" for k, v in threads.items()),
        flush=True,
    )
    if "adds" in parts:
        with tempfile.TemporaryDirectory(prefix="bench-index-") as folder:
            index, embedder = bench_adds(adds, Path(folder), rng, results)
            bench_index_queries(index, embedder, rng, args.queries, results)
            index.close()
        results["peak_rss_after_adds_gb"] = peak_rss_gb()
    if "segments" in parts:
        with tempfile.TemporaryDirectory(prefix="bench-segments-") as folder:
            bench_segments(n_vectors, Path(folder), rng, results)
    if "vectors" in parts:
        bench_vectors(n_vectors, rng, args.queries, results)
    results["peak_rss_gb"] = peak_rss_gb()
    print("\nsummary (ratio = measured / target; below 1 meets the target)")
    if "adds" in parts:
        add = results["add"]
        print(
            f"  {adds:,} cached adds: {add['seconds']:.1f} s for a target of {add['target_seconds']:.0f} s "
            f"-> ratio {add['seconds'] / add['target_seconds']:.2f} ({add['per_second']:,.0f} headlines/s)"
        )
    if "segments" in parts:
        add, query = results["segments_add_1000"], results["segments_query"]
        print(
            f"  1,000 cached adds into {n_vectors:,}: {add['seconds']:.2f} s / {TARGET_SEGMENT_ADD_S:.0f} s -> ratio "
            f"{add['seconds'] / TARGET_SEGMENT_ADD_S:.2f}; older segment files rewritten: "
            f"{'yes' if add['older_files_rewritten'] else 'no'}"
        )
        print(
            f"  open at {n_vectors + 1000:,}, answering queries: peak RSS {query['peak_rss_gb']:.2f} GB / "
            f"{TARGET_RSS_GB} GB -> ratio {query['peak_rss_gb'] / TARGET_RSS_GB:.2f}; HeadlineIndex.query p50 "
            f"{query['query_p50_ms']:.2f} ms / {TARGET_QUERY_P50_MS:.0f} ms -> ratio "
            f"{query['query_p50_ms'] / TARGET_QUERY_P50_MS:.2f}, p99 {query['query_p99_ms']:.2f} ms; recall@10 "
            f"{query['recall_at_10_probes_reranked']:.3f} (perturbed probes), {query['recall_at_10_text_queries']:.3f} "
            "(stored texts)"
        )
        print(f"  synthetic: {results['fixture']['synthetic']}")
    if "vectors" in parts:
        query = results["vector_query"]
        print(
            f"  VectorIndex query p50 at {n_vectors:,} vectors: {query['hnsw_p50_ms']:.3f} ms for a target of "
            f"{TARGET_QUERY_P50_MS:.0f} ms -> ratio {query['hnsw_p50_ms'] / TARGET_QUERY_P50_MS:.3f}; "
            f"p99 {query['hnsw_p99_ms']:.3f} ms; exact search would be "
            f"{query['flat_p50_ms'] / query['hnsw_p50_ms']:.0f}x slower"
        )
    print(f"  peak RSS of this process {results['peak_rss_gb']:.2f} GB (it builds the fixtures)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
