"""Quick start: one VE process, one context, awaited calls.

    python examples/quickstart.py

The kernels are C functions in examples/kernels/quickstart.c, compiled on
first use (see _kernels.py).  On a machine without a Vector Engine aioveo
runs them on its host emulator; the code is the same on a real VE.
"""
import asyncio
import math
import time

import aioveo
from _kernels import kernel_library


async def main() -> None:
    # A proc is one VE process (node 0); `async with` destroys it at the end.
    async with aioveo.open_proc(0) as proc:
        lib = await proc.load_library(kernel_library("quickstart"))
        # A C prototype tells aioveo the argument and return types.
        add = lib.find_function("long add(long a, long b)")
        basel = lib.find_function("double basel(long n)")

        # A context is a worker thread on the VE with its own FIFO queue.
        async with proc.open_context() as ctx:
            print("add(40, 2) =", await ctx.call(add, 40, 2))

            t0 = time.perf_counter()
            s = await ctx.call(basel, 10_000_000)
            ms = (time.perf_counter() - t0) * 1e3
            print(f"basel(10**7) = {s:.9f} (pi^2/6 = {math.pi ** 2 / 6:.9f}) in {ms:.1f} ms")

            # Awaiting each call costs a round trip; submit many, then gather.
            t0 = time.perf_counter()
            futures = [await ctx.submit(add, i, i) for i in range(10_000)]
            results = await asyncio.gather(*futures)
            us = (time.perf_counter() - t0) * 1e6 / len(results)
            assert results == [2 * i for i in range(10_000)]
            print(f"10000 calls in flight: {us:.1f} us per call")

    print(f"backend: {aioveo.backend().kind} ({aioveo.backend().version})")


if __name__ == "__main__":
    asyncio.run(main())
