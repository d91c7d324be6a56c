"""Load the example server with many concurrent requests; print throughput and latency.

    python examples/client.py --port 8765 [--requests 2000] [--connections 32]

Each connection sends its share of requests one after the other (a mix of
"primes" and "stats"), so up to --connections requests are in flight at once.
Every answer is checked against numpy.
"""
import argparse
import asyncio
import json
import random
import sys
import time

import numpy as np

PRIMES_SPAN = 20_000      # numbers per "primes" request: about a millisecond of VE work
STATS_SIZE = 1_000        # numbers per "stats" request


def sieve(n: int) -> np.ndarray:
    """prefix[k] = number of primes below k, for checking "primes" answers."""
    is_p = np.ones(n + 1, dtype=bool)
    is_p[:2] = False
    for d in range(2, int(n ** 0.5) + 1):
        if is_p[d]:
            is_p[d * d::d] = False
    return np.concatenate(([0], np.cumsum(is_p)))


def make_request(rng: random.Random, limit: int) -> dict:
    if rng.random() < 0.5:
        lo = rng.randrange(0, limit - PRIMES_SPAN)
        return {"op": "primes", "lo": lo, "hi": lo + PRIMES_SPAN}
    return {"op": "stats", "data": [rng.gauss(0, 1) for _ in range(STATS_SIZE)]}


def check(req: dict, ans: dict, prefix: np.ndarray) -> None:
    if not ans.get("ok"):
        raise AssertionError(f"server error: {ans}")
    if req["op"] == "primes":
        count = int(prefix[req["hi"]] - prefix[req["lo"]])
        assert ans["count"] == count, (req, ans, count)
    else:
        x = np.array(req["data"])
        want = [x.min(), x.max(), x.mean(), x.std()]
        assert np.allclose([ans["min"], ans["max"], ans["mean"], ans["std"]], want), (ans, want)


async def connection(host, port, requests, prefix, latencies):
    reader, writer = await asyncio.open_connection(host, port, limit=2 ** 21)
    try:
        for req in requests:
            t0 = time.perf_counter()
            writer.write(json.dumps(req).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
            latencies.append(time.perf_counter() - t0)
            if not line:
                raise ConnectionError("the server closed the connection")
            check(req, json.loads(line), prefix)
    finally:
        writer.close()
        await writer.wait_closed()


async def main(args) -> int:
    limit = 2_000_000
    prefix = sieve(limit)
    rng = random.Random(1)
    requests = [make_request(rng, limit) for _ in range(args.requests)]
    shares = [requests[i::args.connections] for i in range(args.connections)]
    latencies: list[float] = []

    t0 = time.perf_counter()
    await asyncio.gather(*(connection(args.host, args.port, share, prefix, latencies)
                           for share in shares if share))
    elapsed = time.perf_counter() - t0

    ms = np.array(latencies) * 1e3
    print(f"{len(latencies)} requests over {args.connections} connections "
          f"in {elapsed:.2f} s: {len(latencies) / elapsed:.0f} requests/s")
    print(f"latency: mean {ms.mean():.2f} ms, p50 {np.percentile(ms, 50):.2f} ms, "
          f"p99 {np.percentile(ms, 99):.2f} ms, max {np.max(ms):.2f} ms")
    print("OK: every answer checked against numpy")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="server port (default 8765)")
    p.add_argument("--requests", type=int, default=2000, help="total requests (default 2000)")
    p.add_argument("--connections", type=int, default=32,
                   help="concurrent connections (default 32)")
    sys.exit(asyncio.run(main(p.parse_args())))
