"""Overlap transfers and compute: several contexts, two VE buffers each.

    python examples/pipeline.py [--chunks 32] [--contexts 2]

A stream of chunks goes through write -> kernel -> read.  Done one step at a
time, the VE waits for every transfer and the host waits for every kernel.
Here each context ("lane") owns two VE buffers and keeps two chunks queued:
a context runs its queue in order, so write, call and read of one chunk need
no awaiting in between, and while one lane computes, another one transfers.
"""
import argparse
import asyncio
import time

import numpy as np

import aioveo
from _kernels import kernel_library

PROTO = "void smooth(double *x, double *tmp, long n, long sweeps)"


async def serial(proc, smooth, data, out, sweeps):
    """Baseline: one context, and each step awaited before the next starts."""
    n = data.shape[1]
    async with proc.open_context() as ctx:
        buf, tmp = await ctx.alloc_mem(n * 8), await ctx.alloc_mem(n * 8)
        for i in range(len(data)):
            await ctx.write_mem(buf, data[i])
            await ctx.call(smooth, buf, tmp, n, sweeps)
            await ctx.read_mem(out[i], buf)
        await ctx.free_mem(buf)
        await ctx.free_mem(tmp)


async def lane(proc, smooth, data, out, chunks, sweeps):
    """One context with double buffering: chunk k uses buffer k % 2."""
    n = data.shape[1]
    async with proc.open_context() as ctx:
        bufs = [await ctx.alloc_mem(n * 8) for _ in range(2)]
        tmp = await ctx.alloc_mem(n * 8)            # scratch, used by one kernel at a time
        pending = [None, None]                      # the read that frees each buffer
        for k, i in enumerate(chunks):
            slot = k % 2
            if pending[slot] is not None:
                await pending[slot]                 # buffer free again: its chunk is back
            # Queue the three steps without waiting: tasks start in creation
            # order and the context runs them in that (FIFO) order.
            buf = bufs[slot]
            asyncio.create_task(ctx.write_mem(buf, data[i]))
            asyncio.create_task(ctx.call(smooth, buf, tmp, n, sweeps))
            pending[slot] = asyncio.create_task(ctx.read_mem(out[i], buf))
        await asyncio.gather(*(p for p in pending if p is not None))
        await ctx.synchronize()
        for b in (*bufs, tmp):
            await ctx.free_mem(b)


async def overlapped(proc, smooth, data, out, sweeps, contexts):
    # Round-robin the chunks over the lanes; they share the proc's memory.
    await asyncio.gather(*(lane(proc, smooth, data, out, range(j, len(data), contexts), sweeps)
                           for j in range(contexts)))


def reference(x, sweeps):
    """The kernel in numpy, to check one chunk."""
    x = x.copy()
    for _ in range(sweeps):
        x[1:-1] = 0.25 * x[:-2] + 0.5 * x[1:-1] + 0.25 * x[2:]
    return x


async def main(args) -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.chunks, args.chunk_size))
    out_serial = np.empty_like(data)
    out_overlap = np.empty_like(data)

    async with aioveo.open_proc(0) as proc:
        lib = await proc.load_library(kernel_library("stencil"))
        smooth = lib.find_function(PROTO)

        await serial(proc, smooth, data[:2], out_serial[:2], args.sweeps)  # warm-up
        t0 = time.perf_counter()
        await serial(proc, smooth, data, out_serial, args.sweeps)
        t_serial = time.perf_counter() - t0

        t0 = time.perf_counter()
        await overlapped(proc, smooth, data, out_overlap, args.sweeps, args.contexts)
        t_overlap = time.perf_counter() - t0

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


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=32, help="number of chunks (default 32)")
    p.add_argument("--chunk-size", type=int, default=256 * 1024,
                   help="doubles per chunk (default 262144, 2 MB)")
    p.add_argument("--sweeps", type=int, default=16, help="stencil passes per chunk (default 16)")
    p.add_argument("--contexts", type=int, default=2, help="contexts (lanes) (default 2)")
    asyncio.run(main(p.parse_args()))
