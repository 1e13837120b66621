"""A bounded load test against a local ``headline-cluster serve`` (loopback only).

Open loop: requests are sent on a fixed schedule (``--rate`` per second for ``--duration`` seconds)
whether or not earlier ones have answered, so a slow server shows up as latency instead of silently
lowering the load. Latency is measured from each request's *scheduled* send time (so time a request
waited in the client counts too); the time from the actual send is reported next to it.

Scenarios:

* ``collapse``: first indexes ``--pool`` headlines through POST /v1/headlines (so they are already
  indexed and embedded), then each request is POST /v1/collapse of ``--batch`` of them, drawn at random.
* ``add``: each request is POST /v1/headlines of ``--batch`` new headlines. Corpus titles get a
  run-unique suffix, so none was embedded before: every request pays for embedding ``--batch`` texts.

Example (server started with ``headline-cluster serve --index /tmp/load-idx --create --no-access-log``)::

    python scripts/load.py --url http://127.0.0.1:8080 --scenario collapse --rate 50 --duration 60
    python scripts/load.py --url http://127.0.0.1:8080 --scenario add --rate 5 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import ipaddress
import json
import os
import random
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "corpora" / "saudinewsnet_titles.csv"
FALLBACK = REPO / "examples" / "related_ar.txt"
MAX_DURATION_S = 600
MAX_RATE = 1000


def fail(message: str) -> None:
    print(f"load.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def loopback_url(url: str) -> str:
    """The URL without a trailing slash, if its host is a loopback address; exits otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"--url {url!r} is not an http(s) URL such as http://127.0.0.1:8080")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 80)}
    except socket.gaierror as exc:
        fail(f"cannot resolve {parts.hostname!r}: {exc.strerror}")
    # A load test is for a local server only: every address the name resolves to must be loopback.
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        fail(f"{parts.hostname} is not a loopback address: this script only loads a local server")
    return url.rstrip("/")


def read_titles(path: Path, limit: int) -> list[str]:
    """Up to ``limit`` distinct headlines: a CSV with a 'title' or 'text' column, else one per line."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            if path.suffix == ".csv":
                reader = csv.DictReader(handle)
                column = next((c for c in ("title", "text") if c in (reader.fieldnames or [])), None)
                if column is None:
                    fail(f"{path} has no 'title' or 'text' column")
                lines = (row[column] for row in reader)
            else:
                lines = iter(handle)
            titles: dict[str, None] = {}
            for line in lines:
                text = (line or "").strip()
                if 10 <= len(text) <= 300:
                    titles[text] = None
                if len(titles) >= limit:
                    break
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        fail(f"cannot read {path}: {exc}")
    if not titles:
        fail(f"{path} holds no usable headlines")
    return list(titles)


@dataclass
class Tally:
    latency: list[float] = field(default_factory=list)  # from the scheduled send, seconds
    service: list[float] = field(default_factory=list)  # from the actual send, seconds
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str = ""
    last_done: float = 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation): a value that was actually measured."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


async def run(args: argparse.Namespace) -> dict:
    url = loopback_url(args.url)
    headers = {"content-type": "application/json"}
    if args.api_key_env:
        key = os.environ.get(args.api_key_env, "")
        if not key:
            fail(f"the environment variable {args.api_key_env} is not set or empty")
        headers["x-api-key"] = key
    corpus = Path(args.headlines) if args.headlines else (DEFAULT_CORPUS if DEFAULT_CORPUS.is_file() else FALLBACK)
    needed = args.pool if args.scenario == "collapse" else int(args.rate * args.duration * args.batch) + 1
    titles = read_titles(corpus, max(needed, args.batch))
    rng = random.Random(args.seed)
    run_id = uuid.uuid4().hex[:8]
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=args.timeout, limits=limits) as client:
        try:
            health = await client.get("/healthz")
        except httpx.TransportError as exc:
            fail(f"no server at {url}: {exc}")
        if health.status_code != 200:
            fail(f"{url}/healthz answered {health.status_code}")

        if args.scenario == "collapse":
            pool = titles[: args.pool]
            for start in range(0, len(pool), 100):  # index the pool first: "already-indexed headlines"
                chunk = [{"id": f"load-pool-{start + n}", "text": t} for n, t in enumerate(pool[start : start + 100])]
                response = await client.post("/v1/headlines", content=json.dumps({"headlines": chunk}))
                if response.status_code != 200:
                    fail(f"indexing the pool failed: {response.status_code} {response.text[:300]}")

            def body(i: int) -> bytes:
                return json.dumps({"headlines": rng.sample(pool, min(args.batch, len(pool)))}).encode()

            path = "/v1/collapse"
        else:
            fresh = iter(range(len(titles) * 1000))

            def body(i: int) -> bytes:
                items = []
                for _ in range(args.batch):
                    n = next(fresh)
                    text = f"{titles[n % len(titles)]} ({run_id}-{n})"  # never embedded before
                    items.append({"id": f"load-{run_id}-{n}", "text": text})
                return json.dumps({"headlines": items}).encode()

            path = "/v1/headlines"

        for i in range(args.warmup):  # not measured: the first calls of a fresh process are slower
            await client.post(path, content=body(-1 - i))

        tally = Tally()
        total = int(args.rate * args.duration)
        started = time.perf_counter()

        async def one(i: int, scheduled: float) -> None:
            payload = body(i)
            sent = time.perf_counter()
            try:
                response = await client.post(path, content=payload)
                status = response.status_code
                if status >= 400 and not tally.first_error:
                    tally.first_error = f"{status} {response.text[:300]}"
            except httpx.HTTPError as exc:
                name = type(exc).__name__
                tally.errors[name] = tally.errors.get(name, 0) + 1
                return
            done = time.perf_counter()
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            tally.latency.append(done - scheduled)
            tally.service.append(done - sent)
            tally.last_done = max(tally.last_done, done)

        tasks = []
        for i in range(total):
            scheduled = started + i / args.rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)  # each request is bounded by --timeout

    answered = sum(tally.statuses.values())
    elapsed = (tally.last_done or time.perf_counter()) - started
    return {
        "url": url,
        "scenario": args.scenario,
        "endpoint": f"POST {path}",
        "batch": args.batch,
        "rate": args.rate,
        "duration_s": args.duration,
        "sent": total,
        "answered": answered,
        "throughput_rps": answered / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(tally.latency, 50) * 1000,
        "p99_ms": percentile(tally.latency, 99) * 1000,
        "max_ms": max(tally.latency, default=float("nan")) * 1000,
        "service_p50_ms": percentile(tally.service, 50) * 1000,
        "service_p99_ms": percentile(tally.service, 99) * 1000,
        "status_2xx": sum(n for s, n in tally.statuses.items() if 200 <= s < 300),
        "status_4xx": sum(n for s, n in tally.statuses.items() if 400 <= s < 500),
        "status_5xx": sum(n for s, n in tally.statuses.items() if s >= 500),
        "transport_errors": tally.errors,
        "first_error": tally.first_error,
        "corpus": str(corpus),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the server (loopback only)")
    parser.add_argument("--scenario", choices=("collapse", "add"), default="collapse")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (open loop)")
    parser.add_argument("--duration", type=float, default=60.0, help=f"seconds of load (at most {MAX_DURATION_S})")
    parser.add_argument("--batch", type=int, default=10, help="headlines per request")
    parser.add_argument("--pool", type=int, default=200, help="collapse: headlines indexed first and drawn from")
    parser.add_argument("--headlines", help="csv (title or text column) or txt file of headlines")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured requests before the run")
    parser.add_argument("--connections", type=int, default=64, help="most open connections")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as failed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key")
    parser.add_argument("--target-p99-ms", type=float, help="exit 1 when p99 is above this, or any 5xx/failure")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be in (0, {MAX_DURATION_S}]")
    if not 0 < args.rate <= MAX_RATE:
        parser.error(f"--rate must be in (0, {MAX_RATE}]")
    if args.batch < 1 or args.pool < args.batch or args.connections < 1 or args.warmup < 0:
        parser.error("--batch and --connections must be at least 1, --pool at least --batch, --warmup >= 0")
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['endpoint']} x{result['batch']} headlines at {result['rate']:g}/s "
            f"for {result['duration_s']:g} s: "
            f"{result['answered']}/{result['sent']} answered, {result['throughput_rps']:.1f} req/s; "
            f"latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms "
            f"(from the actual send: p50 {result['service_p50_ms']:.1f}, p99 {result['service_p99_ms']:.1f}); "
            f"5xx {result['status_5xx']}, 4xx {result['status_4xx']}, failed {sum(result['transport_errors'].values())}"
        )
        if result["first_error"]:
            print(f"first error: {result['first_error']}")
    failed = result["status_5xx"] or result["transport_errors"] or result["answered"] < result["sent"]
    if args.target_p99_ms is not None and (failed or result["p99_ms"] > args.target_p99_ms):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
