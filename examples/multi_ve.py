"""One job split over several VEs (procs), with the speed-up printed.

    python examples/multi_ve.py [--limit 3000000] [--procs 4]

Counting the primes below a limit splits into independent ranges.  The ranges
are spread over a pool of procs (one VE process each, here on nodes 0..3):
``pool.call`` sends each call to the least-loaded context.  On a machine with
4 VEs expect close to 4x; on the emulator each "VE" is a host process, so the
speed-up is bounded by the host's cores.
"""
import argparse
import asyncio
import os
import time

import aioveo
from _kernels import kernel_library

PROTO = "long count_primes(long lo, long hi)"


def ranges(limit: int, pieces: int) -> list[tuple[int, int]]:
    # More pieces than procs: later ranges cost more (bigger numbers), and
    # small pieces let the least-loaded choice even the load out.
    edges = [limit * i // pieces for i in range(pieces + 1)]
    return list(zip(edges[:-1], edges[1:]))


async def run(nodes: list[int], path: str, work: list[tuple[int, int]]) -> tuple[int, float]:
    async with aioveo.open_pool(nodes) as pool:
        count_primes = await pool.function(path, PROTO)   # loaded in every proc
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(pool.call(count_primes, lo, hi) for lo, hi in work))
        return sum(counts), time.perf_counter() - t0


async def main(args) -> None:
    path = kernel_library("primes")
    work = ranges(args.limit, pieces=8 * args.procs)

    total_1, t_1 = await run([0], path, work)
    total_n, t_n = await run(list(range(args.procs)), path, work)

    assert total_1 == total_n
    print(f"primes below {args.limit}: {total_n} ({len(work)} ranges)")
    print(f"1 proc:  {t_1 * 1e3:8.1f} ms")
    print(f"{args.procs} procs: {t_n * 1e3:8.1f} ms")
    print(f"speed-up: {t_1 / t_n:.2f}x with {args.procs} procs "
          f"(this host has {os.cpu_count()} cores)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=3_000_000, help="count primes below this")
    p.add_argument("--procs", type=int, default=4, help="number of procs (VE nodes 0..N-1)")
    asyncio.run(main(p.parse_args()))
