"""Load the HTTP service (service.py) and print throughput and latency.

    python examples/loadgen.py --url http://127.0.0.1:8080 [--requests 2000]
                               [--connections 32] [--bad 0.05]

Requests are a mix of POST /primes (a range of 20,000 numbers: about a
millisecond of VE work) and POST /stats (1,000 float64 values as raw bytes),
sent by --connections workers at once; every answer is checked against
numpy.  --bad mixes in that fraction of malformed requests (oversized
bodies, wrong types, truncated arrays, unknown endpoints, ...), each of which
must be answered with its 4xx.  The exit status is 0 when every answer was
the one expected.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import sys
import time
from typing import Any, Callable

import numpy as np
import aiohttp

PRIMES_SPAN = 20_000
STATS_SIZE = 1_000
LIMIT = 2_000_000


@dataclasses.dataclass
class Req:
    kind: str                       # "primes", "stats" or the name of a bad request
    method: str
    path: str
    body: bytes = b""
    content_type: str = "application/json"
    expect: int = 200               # the status it must get
    check: Any = None               # what a 200 answer must say


@dataclasses.dataclass
class Result:
    req: Req
    status: int                     # 0: no answer (connection error)
    latency: float
    answer: Any
    ok: bool                        # the expected status and a correct answer


def sieve(n: int) -> np.ndarray:
    """prefix[k] = number of primes below k."""
    is_p = np.ones(n + 1, dtype=bool)
    is_p[:2] = False
    for d in range(2, int(n ** 0.5) + 1):
        if is_p[d]:
            is_p[d * d::d] = False
    return np.concatenate(([0], np.cumsum(is_p)))


BAD: list[tuple[str, Callable[[random.Random], Req]]] = [
    ("oversized body", lambda r: Req("oversized body", "POST", "/stats", bytes(3 << 20),
                                     "application/octet-stream", 413)),
    ("wrong type", lambda r: Req("wrong type", "POST", "/primes",
                                 json.dumps({"lo": "zero", "hi": 10}).encode(), expect=400)),
    ("truncated array", lambda r: Req("truncated array", "POST", "/stats",
                                      np.ones(100).tobytes()[:-3],
                                      "application/octet-stream", 400)),
    ("unknown endpoint", lambda r: Req("unknown endpoint", "GET", "/etc/passwd", expect=404)),
    ("wrong method", lambda r: Req("wrong method", "GET", "/primes", expect=405)),
    ("not JSON", lambda r: Req("not JSON", "POST", "/primes", b'{"lo": 1, "hi":', expect=400)),
    ("range too big", lambda r: Req("range too big", "POST", "/primes",
                                    json.dumps({"lo": 0, "hi": 10 ** 12}).encode(), expect=400)),
    ("NaN", lambda r: Req("NaN", "POST", "/stats", np.array([1.0, np.nan]).tobytes(),
                          "application/octet-stream", 400)),
    ("empty array", lambda r: Req("empty array", "POST", "/stats", b"",
                                  "application/octet-stream", 400)),
    ("strings in data", lambda r: Req("strings in data", "POST", "/stats",
                                      json.dumps({"data": ["1", 2]}).encode(), expect=400)),
    ("deeply nested JSON", lambda r: Req("deeply nested JSON", "POST", "/primes",
                                         b"[" * 100_000, expect=400)),
    ("huge integer", lambda r: Req("huge integer", "POST", "/primes",
                                   b'{"lo": 0, "hi": 1' + b"0" * 5000 + b"}", expect=400)),
]


def make_requests(n: int, seed: int = 1, bad: float = 0.0, prefix: np.ndarray | None = None,
                  kinds: tuple[str, ...] = ("primes", "stats"),
                  span: int = PRIMES_SPAN) -> list[Req]:
    """`n` requests of `kinds` (/primes over `span` numbers, /stats),
    `bad` of them malformed."""
    rng = random.Random(seed)
    prefix = sieve(LIMIT) if prefix is None else prefix
    out: list[Req] = []
    for _ in range(n):
        if bad and rng.random() < bad:          # each kind in turn
            out.append(BAD[sum(1 for r in out if r.expect != 200) % len(BAD)][1](rng))
        elif rng.choice(kinds) == "primes":
            lo = rng.randrange(0, LIMIT - span)
            hi = lo + span
            out.append(Req("primes", "POST", "/primes", json.dumps({"lo": lo, "hi": hi}).encode(),
                           check=int(prefix[hi] - prefix[lo])))
        else:
            x = np.array([rng.gauss(0, 1) for _ in range(STATS_SIZE)])
            out.append(Req("stats", "POST", "/stats", x.tobytes(), "application/octet-stream",
                           check=[x.size, x.min(), x.max(), x.mean(), x.std()]))
    return out


def correct(req: Req, status: int, answer: Any) -> bool:
    if status != req.expect:
        return False
    if status != 200:
        return isinstance(answer, dict) and bool(answer.get("error"))
    if req.kind == "primes":
        return answer == {"count": req.check}
    got = [answer["n"], answer["min"], answer["max"], answer["mean"], answer["std"]]
    return bool(np.allclose(got, req.check))


async def one(session: aiohttp.ClientSession, url: str, req: Req) -> Result:
    t0 = time.perf_counter()
    try:
        async with session.request(req.method, url + req.path, data=req.body or None,
                                   headers={"Content-Type": req.content_type}) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        return Result(req, 0, time.perf_counter() - t0, repr(e), False)
    latency = time.perf_counter() - t0
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = raw[:200]
    return Result(req, status, latency, answer, correct(req, status, answer))


async def run_load(url: str, requests: list[Req], connections: int,
                   session: aiohttp.ClientSession | None = None,
                   on_result: Callable[[Result], Any] | None = None) -> list[Result]:
    """Send `requests` with `connections` workers; results in request order
    (`on_result` sees each as it comes)."""
    own = session is None
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                        timeout=aiohttp.ClientTimeout(total=60))
    results: list[Result | None] = [None] * len(requests)
    todo = iter(range(len(requests)))

    async def worker() -> None:
        for i in todo:
            results[i] = r = await one(session, url, requests[i])
            if on_result is not None:
                on_result(r)

    try:
        await asyncio.gather(*(worker() for _ in range(connections)))
    finally:
        if own:
            await session.close()
    return [r for r in results if r is not None]


def summary(results: list[Result], elapsed: float) -> dict[str, Any]:
    good = [r for r in results if r.req.expect == 200]
    ms = np.array([r.latency for r in good]) * 1e3 if good else np.zeros(1)
    statuses: dict[int, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return {"requests": len(results), "elapsed_s": elapsed,
            "requests_per_s": len(results) / elapsed if elapsed else 0.0,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "statuses": statuses, "wrong": sum(1 for r in results if not r.ok)}


async def main(args: argparse.Namespace) -> int:
    requests = make_requests(args.requests, bad=args.bad)
    t0 = time.perf_counter()
    results = await run_load(args.url.rstrip("/"), requests, args.connections)
    s = summary(results, time.perf_counter() - t0)
    print(f"{s['requests']} requests over {args.connections} connections in "
          f"{s['elapsed_s']:.2f} s: {s['requests_per_s']:.0f} requests/s")
    print(f"latency of the kernel requests: p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms")
    print("statuses: " + ", ".join(f"{k}: {v}" for k, v in sorted(s["statuses"].items())))
    for r in [r for r in results if not r.ok][:5]:
        print(f"unexpected: {r.req.kind} {r.req.method} {r.req.path} -> {r.status} "
              f"{str(r.answer)[:200]}")
    if s["wrong"]:
        print(f"FAILED: {s['wrong']} answers were not the expected ones")
        return 1
    print("OK: every answer checked")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the service's base URL")
    p.add_argument("--requests", type=int, default=2000, help="total requests (default 2000)")
    p.add_argument("--connections", type=int, default=32,
                   help="requests in flight at once (default 32)")
    p.add_argument("--bad", type=float, default=0.0,
                   help="fraction of malformed requests mixed in (default 0)")
    sys.exit(asyncio.run(main(p.parse_args())))
