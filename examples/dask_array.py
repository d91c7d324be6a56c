"""A dask.array computed on VEs: each chunk goes to VE memory, a kernel runs
on it, the result comes back (Dask distributed, one worker per VE).

    pip install ".[dask]"
    python examples/dask_array.py [--nodes 0,1] [--size 2000000] [--chunk 250000]

Each chunk is an `async def` task on a VE worker's event loop: it takes a
context of the worker's pool, copies the chunks to the VE, runs daxpy there
(examples/kernels/blas.c) and reads the result back.  The result is checked
against NumPy.
"""
from __future__ import annotations

import argparse
import asyncio
import time

import dask.array as da
import numpy as np
from distributed import Client

from _kernels import kernel_library
from aioveo.dask import LocalVECluster, current_pool, function

DAXPY = "void daxpy(long n, double a, const double *x, double *y)"


async def daxpy_block(x: np.ndarray, y: np.ndarray, a: float, library: str) -> np.ndarray:
    """``a * x + y`` of one chunk, on this worker's VE."""
    fn = await function(library, DAXPY)
    pool = current_pool()
    ctx = pool.least_loaded()
    vx = await ctx.to_ve(x)
    vy = await ctx.to_ve(y)
    try:
        await ctx.call(fn.for_proc(ctx.proc), x.size, a, vx, vy)
        return await ctx.from_ve(vy)
    finally:
        await vx.free()
        await vy.free()


async def main(nodes: list[int], size: int, chunk: int) -> None:
    library = kernel_library("blas")
    t0 = time.perf_counter()
    async with LocalVECluster(nodes=nodes, threads_per_worker=4, asynchronous=True) as cluster, \
            Client(cluster, asynchronous=True) as client:
        print(f"{len(nodes)} VE workers up in {time.perf_counter() - t0:.1f} s")
        x = da.random.default_rng(1).random(size, chunks=chunk)
        y = da.ones(size, chunks=chunk)
        z = da.map_blocks(daxpy_block, x, y, 2.0, library, meta=np.array((), np.float64))
        t0 = time.perf_counter()
        got, want = await client.gather(client.compute([z, 2.0 * x + y]))
        print(f"{size:,} doubles in {z.npartitions} chunks on VEs {nodes}: "
              f"{time.perf_counter() - t0:.2f} s")
        assert np.allclose(got, want), "VE result differs from NumPy"
        print(f"checked against NumPy: max |error| = {np.max(np.abs(got - want)):.3g}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="0,1", help="VE nodes, one worker each (default 0,1)")
    ap.add_argument("--size", type=int, default=2_000_000)
    ap.add_argument("--chunk", type=int, default=250_000)
    a = ap.parse_args()
    asyncio.run(main([int(n) for n in a.nodes.split(",")], a.size, a.chunk))
