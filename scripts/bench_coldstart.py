"""Cold start: wall time and peak memory of a fresh process that collapses 3 new headlines.

    python scripts/bench_coldstart.py                  # q4 (default) against int8 and fp32, 5 runs each
    python scripts/bench_coldstart.py --runs 9 --variants q4,int8 --json

Each run is a new Python process doing ``from cluster import collapse; collapse([...])`` with 3
headlines never embedded before (real Arabic titles, a fresh slice per run), the model files already
built: the cost a cron job or a shell user pays on every call. Variants alternate run by run so that
machine noise hits all of them; the table shows the median and worst wall time and the worst peak RSS
(``os.wait4``'s resource usage of that child, i.e. getrusage of the child process), plus whether torch
was imported. Compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench import saudi_titles  # noqa: E402  (the same real titles as bench.py collapse)

CHILD = """
import json, sys
from cluster import collapse
result = collapse(json.loads(sys.argv[1]))
print(json.dumps({"stories": len(result.stories), "torch": "torch" in sys.modules,
                  "sentence_transformers": "sentence_transformers" in sys.modules}))
"""


def run_child(texts: list[str], env: dict[str, str]) -> dict:
    """One fresh process: its wall time (spawn to exit) and its own peak RSS."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(texts, ensure_ascii=False)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    out = child.stdout.read().decode() if child.stdout else ""
    err = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0:
        raise SystemExit(f"child failed ({child.returncode}): {err.strip()[-500:]}")
    info = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": wall, "rss_mb": usage.ru_maxrss / 1024.0, **info}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--variants", default="q4,int8,none", help="HEADLINE_CLUSTER_QUANTIZE values")
    parser.add_argument("--cache", help="model cache folder (default: a fresh one, built before timing)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    pool = saudi_titles(3 * (args.runs + 1) * len(variants))
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as scratch:
        cache = args.cache or scratch
        base = dict(os.environ, HEADLINE_CLUSTER_CACHE=cache, PYTHONPATH=str(REPO))
        envs = {v: dict(base, HEADLINE_CLUSTER_QUANTIZE=v) for v in variants}
        for variant, env in envs.items():  # builds the model files (and warms the OS file cache)
            run_child([f"warm-up {variant} {time.time()}"], env)
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        used = 0
        for _ in range(args.runs):
            for variant, env in envs.items():
                runs[variant].append(run_child(pool[used : used + 3], env))
                used += 3
    rows = []
    for variant, results in runs.items():
        walls = sorted(r["wall_s"] for r in results)
        rows.append(
            {
                "bench": "coldstart",
                "variant": {"none": "fp32"}.get(variant, variant),
                "wall_s_median": round(walls[len(walls) // 2], 3),
                "wall_s_max": round(walls[-1], 3),
                "rss_mb_max": round(max(r["rss_mb"] for r in results), 1),
                "torch_imported": any(r["torch"] for r in results),
                "runs": len(results),
            }
        )
    first = rows[0]["wall_s_median"]
    for row in rows:
        row["wall_vs_first"] = round(row["wall_s_median"] / first, 2)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"{'variant':8} {'wall median s':>14} {'wall max s':>11} {'vs first':>9} {'peak RSS MB':>12}  torch")
    for row in rows:
        print(
            f"{row['variant']:8} {row['wall_s_median']:>14.3f} {row['wall_s_max']:>11.3f} "
            f"{row['wall_vs_first']:>8.2f}x {row['rss_mb_max']:>12.1f}  {row['torch_imported']}"
        )
    print(f"load average {os.getloadavg()[0]:.2f}, {args.runs} runs per variant, 3 new headlines per run")


if __name__ == "__main__":
    main()
