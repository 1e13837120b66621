"""`index build` side by side: --engine local against --engine ray on the same real headlines, in one run.

    python scripts/bench_build.py                       # 20,000 SaudiNewsNet titles, ray with 2 local workers
    python scripts/bench_build.py --count 2000 --json bench-build.json

Each engine builds a fresh index from the same JSONL file through the real CLI in a child process
(``headline-cluster index build FILE --index DIR --engine E --quiet``), so each figure is the whole build
as a user runs it: reading, normalizing, embedding with the default model (for real: builds keep no
embedding cache), grouping, storing, and for Ray its start-up too. The model files are built once before
the first timed run. Reported: wall time and throughput of each engine, the ratio ray/local, whether both
indexes hold identical headlines, story ids, stories and vectors, and per-actor throughput (headlines
over the seconds each actor spent in its embedding calls, from the Parquet folder's manifest). The load
average is printed at the start and the end: the machine may be shared.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def saudi_headlines(count: int) -> list[dict[str, str]]:
    """Distinct real Arabic titles with their crawl time (SaudiNewsNet: research use, speed tests only)."""
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    with open(DATA / "corpora" / "saudinewsnet_titles.csv", encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle)):
            title = row["title"].strip()
            if title and title not in seen:
                seen.add(title)
                rows.append({"id": f"sn{number}", "text": title, "published_at": row["date_extracted"] + "Z"})
            if len(rows) == count:
                break
    return rows


def snapshot(index: Path) -> dict[str, list]:
    with sqlite3.connect(index / "headlines.sqlite") as db:
        return {
            "headlines": db.execute("SELECT row, id, published_at, t, story_id FROM headlines ORDER BY row").fetchall(),
            "vectors": db.execute("SELECT text_key, vector FROM embeddings ORDER BY text_key").fetchall(),
            "stories": db.execute(
                "SELECT id, representative, size FROM stories WHERE active = 1 ORDER BY id"
            ).fetchall(),
        }


def run_build(source: Path, folder: Path, engine: str, workers: int) -> dict:
    index = folder / f"idx-{engine}"
    command = [sys.executable, "-m", "cluster", "index", "build", str(source), "--index", str(index), "--quiet"]
    if engine == "ray":
        command += ["--engine", "ray", "--workers", str(workers), "--work-dir", str(folder / "work")]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{engine} build failed ({done.returncode}):\n{done.stderr[-3000:]}")
    figures = {"engine": engine, "seconds": round(seconds, 1), "index": index}
    with sqlite3.connect(index / "headlines.sqlite") as db:
        (summary,) = db.execute("SELECT summary FROM runs WHERE kind = 'build'").fetchone()
    recorded = json.loads(summary)
    figures["stages"] = {**recorded["seconds"], "store": recorded["store_seconds"]}
    figures["stories"], figures["windows"] = recorded["stories"], recorded["windows"]
    manifest = folder / "work" / "vectors" / "manifest.json"
    if engine == "ray" and manifest.is_file():
        saved = json.loads(manifest.read_text(encoding="utf-8"))
        figures["actors"] = {
            name: {
                "headlines": w["headlines"],
                "per_second": round(w["headlines"] / w["seconds"], 1),
                "peak_mb": round(w["peak_mb"]),
            }
            for name, w in sorted(saved["workers"].items())
        }
        parquet = sum(p.stat().st_size for p in (folder / "work" / "vectors").rglob("*.parquet"))
        figures["parquet_bytes"] = parquet
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="headlines (default 20,000)")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (embedding actors), default 2")
    parser.add_argument("--order", default="local,ray", help="engines in the order they run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    rows = saudi_headlines(args.count)
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        folder = Path(tmp)
        source = folder / "headlines.jsonl"
        source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        # The model files once, outside the timed runs (a first run on a machine builds them).
        subprocess.run([sys.executable, "-c", "from cluster.embed import Embedder; Embedder()"], check=True, cwd=REPO)
        results = {engine: run_build(source, folder, engine, args.workers) for engine in args.order.split(",")}
        local, distributed = results["local"], results["ray"]
        identical = snapshot(local.pop("index")) == snapshot(distributed.pop("index"))
    ended = os.getloadavg()
    for figures in (local, distributed):
        figures["per_second"] = round(len(rows) / figures["seconds"], 1)
    ratio = distributed["per_second"] / local["per_second"]
    print(f"{len(rows):,} headlines (SaudiNewsNet titles), ray with {args.workers} local workers")
    print(f"{'engine':<8}{'seconds':>10}{'headlines/s':>14}")
    for figures in (local, distributed):
        print(f"{figures['engine']:<8}{figures['seconds']:>10.1f}{figures['per_second']:>14.1f}")
    print(f"ratio ray/local: {ratio:.2f} (target >= 0.80: {'met' if ratio >= 0.8 else 'not met'})")
    print(f"identical headlines, story ids, stories and vectors: {'yes' if identical else 'NO'}")
    for name, actor in distributed.get("actors", {}).items():
        print(
            f"  actor {name}: {actor['headlines']:,} headlines, {actor['per_second']:.1f} headlines/s, "
            f"peak memory {actor['peak_mb']:,} MB"
        )
    for figures in (local, distributed):
        print(f"  {figures['engine']} stages (s; the rest is start-up and vectors.faiss): {figures['stages']}")
    print(f"  {local['stories']:,} stories over {local['windows']} window(s)")
    if "parquet_bytes" in distributed:
        size = distributed["parquet_bytes"]
        print(f"  Parquet: {size / 1e6:.1f} MB ({size / len(rows):,.0f} B/headline)")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in ended)}")
    if args.json:
        report = {"count": len(rows), "workers": args.workers, "local": local, "ray": distributed, "ratio": ratio}
        report["identical"], report["load_end"] = identical, ended
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
