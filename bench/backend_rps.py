"""Measure the request rate and latency through NGINX on one path (default /health).

    python bench/backend_rps.py http://127.0.0.1:49153 --path /health --requests 20000 \
        --concurrency 64
    python bench/backend_rps.py http://127.0.0.1:49153 --path /api/conversations --token TOKEN

A closed loop of ``--concurrency`` aiohttp workers: httpx's async client managed only 150-500
req/s under concurrency on these machines, which would measure the client, not the servers.

Only 127.0.0.1 targets are accepted; the run is bounded by --requests and --max-seconds.
Prints requests/s, status counts, latency p50/p95/p99/max and which X-Backend-Id answered.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import time
from urllib.parse import urlsplit

import aiohttp


async def _worker(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                  budget: list[int], deadline: float, latencies: list[float],
                  statuses: collections.Counter, backends: collections.Counter) -> None:
    while budget[0] > 0 and time.monotonic() < deadline:
        budget[0] -= 1
        started = time.perf_counter()
        try:
            async with session.get(url, headers=headers) as response:
                await response.read()
                statuses[response.status] += 1
                backends[response.headers.get("x-backend-id", "-")] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            statuses[type(exc).__name__] += 1
        latencies.append(time.perf_counter() - started)


async def bench(base_url: str, path: str, requests: int, concurrency: int,
                max_seconds: float, token: str | None = None) -> dict:
    """Run the benchmark; a dict of figures."""
    latencies: list[float] = []
    statuses: collections.Counter = collections.Counter()
    backends: collections.Counter = collections.Counter()
    budget = [requests]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=5)) as session:
        started = time.monotonic()
        deadline = started + max_seconds
        await asyncio.gather(*(_worker(session, base_url.rstrip("/") + path, headers, budget,
                                       deadline, latencies, statuses, backends)
                               for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    return {
        "requests": len(latencies), "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(pct(0.50), 2), "p95_ms": round(pct(0.95), 2),
        "p99_ms": round(pct(0.99), 2), "max_ms": round(ordered[-1] * 1000, 2) if ordered else 0,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0,
        "statuses": dict(statuses), "backends": dict(backends),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, refuse non-loopback targets, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:49153 (NGINX or a backend)")
    parser.add_argument("--path", default="/health")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--token", help="a bearer token (POST /api/auth/login) for API paths")
    args = parser.parse_args(argv)
    if urlsplit(args.base_url).hostname not in ("127.0.0.1", "localhost"):
        print("error: only 127.0.0.1 targets are allowed", file=sys.stderr)
        return 2
    if not 1 <= args.requests <= 1_000_000 or not 1 <= args.concurrency <= 256:
        print("error: --requests in [1, 1e6], --concurrency in [1, 256]", file=sys.stderr)
        return 2
    result = asyncio.run(bench(args.base_url, args.path, args.requests, args.concurrency,
                               min(args.max_seconds, 600.0), args.token))
    for key, value in result.items():
        print(f"{key:>9}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
