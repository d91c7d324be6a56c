"""Overlap transfers and compute: several contexts, two VE buffers each.

    python examples/pipeline.py [--chunks 32] [--contexts 2] [--trace out.json]

A stream of chunks goes through write -> kernel -> read.  Done one step at a
time, the VE waits for every transfer and the host waits for every kernel.
Here each context ("lane") owns two VE buffers and keeps two chunks queued:
a context runs its queue in order, so write, call and read of one chunk need
no awaiting in between, and while one lane computes, another one transfers.

With ``--trace out.json`` the overlapped run is recorded (aioveo.trace) and
written as a Chrome trace: open it in https://ui.perfetto.dev (or
chrome://tracing) to see each context's writes, kernels and reads side by
side.  A per-function summary is printed too.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Sequence

import numpy as np

# AVEO opens a second context of a proc only with VE_OMP_NUM_THREADS=1 in the
# environment (each kernel then runs one OpenMP thread): this program uses
# several contexts per proc.  (A value you set yourself is kept.)
os.environ.setdefault("VE_OMP_NUM_THREADS", "1")

import aioveo
import aioveo.trace
from _kernels import kernel_library

PROTO = "void smooth(double *x, double *tmp, long n, long sweeps)"


class Lane:
    """A context with two chunk buffers (double buffering) and a scratch buffer."""

    def __init__(self, ctx: aioveo.AsyncContext, n: int, bufs: list[aioveo.VEMemPtr],
                 tmp: aioveo.VEMemPtr) -> None:
        self.ctx, self.n, self.bufs, self.tmp = ctx, n, bufs, tmp

    @classmethod
    async def open(cls, proc: aioveo.AsyncProc, n: int) -> Lane:
        ctx = await proc.open_context()
        # Allocated once, outside the timed runs: reusing VE memory is the rule.
        bufs = [await ctx.alloc_mem(n * 8) for _ in range(2)]
        return cls(ctx, n, bufs, await ctx.alloc_mem(n * 8))

    async def run_serial(self, smooth: aioveo.VeoFunction, data: np.ndarray, out: np.ndarray,
                         chunks: Sequence[int], sweeps: int) -> None:
        """Baseline: one buffer, each step awaited before the next is sent."""
        buf = self.bufs[0]
        for i in chunks:
            await self.ctx.write_mem(buf, data[i])
            await self.ctx.call(smooth, buf, self.tmp, self.n, sweeps)
            await self.ctx.read_mem(out[i], buf)

    async def run(self, smooth: aioveo.VeoFunction, data: np.ndarray, out: np.ndarray,
                  chunks: Sequence[int], sweeps: int) -> None:
        """Double buffering: chunk k uses buffer k % 2; two chunks queued at a time."""
        steps: list[asyncio.Task[object]] = []   # every step, to collect errors at the end
        pending: list[asyncio.Task[object] | None] = [None, None]  # the read freeing each buffer
        for k, i in enumerate(chunks):
            slot = k % 2
            wait = pending[slot]
            if wait is not None:
                await wait                  # buffer free again: its chunk is back
            # Queue the three steps without waiting: tasks start in creation
            # order and the context runs them in that (FIFO) order.
            buf = self.bufs[slot]
            steps.append(asyncio.create_task(self.ctx.write_mem(buf, data[i])))
            steps.append(asyncio.create_task(
                self.ctx.call(smooth, buf, self.tmp, self.n, sweeps)))
            read: asyncio.Task[object] = asyncio.create_task(self.ctx.read_mem(out[i], buf))
            steps.append(read)
            pending[slot] = read
        await asyncio.gather(*steps)

    async def close(self) -> None:
        for b in (*self.bufs, self.tmp):
            await self.ctx.free_mem(b)
        await self.ctx.close()


async def overlapped(lanes: list[Lane], smooth: aioveo.VeoFunction, data: np.ndarray,
                     out: np.ndarray, sweeps: int) -> None:
    # Round-robin the chunks over the lanes; they share the proc's memory.
    k = len(lanes)
    await asyncio.gather(*(lane.run(smooth, data, out, range(j, len(data), k), sweeps)
                           for j, lane in enumerate(lanes)))


def reference(x: np.ndarray, sweeps: int) -> np.ndarray:
    """The kernel in numpy, to check one chunk."""
    x = x.copy()
    for _ in range(sweeps):
        x[1:-1] = 0.25 * x[:-2] + 0.5 * x[1:-1] + 0.25 * x[2:]
    return x


async def main(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.chunks, args.chunk_size))
    out_serial = np.empty_like(data)
    out_overlap = np.empty_like(data)

    async with aioveo.open_proc(0) as proc:
        lib = await proc.load_library(kernel_library("stencil"))
        smooth = lib.find_function(PROTO)
        lanes = [await Lane.open(proc, args.chunk_size) for _ in range(args.contexts)]
        # Warm-up: the first touch of fresh VE memory costs page faults.
        warm = min(len(data), 2 * len(lanes))
        await overlapped(lanes, smooth, data[:warm], out_overlap[:warm], 1)

        t0 = time.perf_counter()
        await lanes[0].run_serial(smooth, data, out_serial, range(len(data)), args.sweeps)
        t_serial = time.perf_counter() - t0

        rec = aioveo.trace.start() if args.trace else None
        t0 = time.perf_counter()
        await overlapped(lanes, smooth, data, out_overlap, args.sweeps)
        t_overlap = time.perf_counter() - t0
        if rec is not None:
            rec.stop()

        for lane in lanes:
            await lane.close()

    assert np.array_equal(out_serial, out_overlap), "lanes disagree with the serial run"
    assert np.allclose(out_serial[-1], reference(data[-1], args.sweeps))
    mb = data.nbytes / 1e6
    print(f"{args.chunks} chunks of {args.chunk_size} doubles ({mb:.0f} MB), "
          f"{args.sweeps} sweeps per chunk")
    print(f"serial (1 context, each step awaited): {t_serial * 1e3:8.1f} ms "
          f"({t_serial / args.chunks * 1e3:.2f} ms per chunk)")
    print(f"overlapped ({args.contexts} contexts x 2 buffers): {t_overlap * 1e3:8.1f} ms "
          f"({t_overlap / args.chunks * 1e3:.2f} ms per chunk)")
    print(f"speed-up: {t_serial / t_overlap:.2f}x")
    print("OK: results identical, and they match numpy")
    if rec is not None:
        rec.to_chrome_trace(args.trace)
        print(rec.summary())
        print(f"trace of the overlapped run: {args.trace} "
              "(open it in https://ui.perfetto.dev or chrome://tracing)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=32, help="number of chunks (default 32)")
    p.add_argument("--chunk-size", type=int, default=256 * 1024,
                   help="doubles per chunk (default 262144, 2 MB)")
    p.add_argument("--sweeps", type=int, default=16, help="stencil passes per chunk (default 16)")
    p.add_argument("--contexts", type=int, default=2, help="contexts (lanes) (default 2)")
    p.add_argument("--trace", metavar="OUT.json",
                   help="record the overlapped run and write it as a Chrome trace")
    asyncio.run(main(p.parse_args()))
