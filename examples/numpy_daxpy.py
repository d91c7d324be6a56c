"""daxpy and reductions on VE memory, checked against numpy.

    python examples/numpy_daxpy.py [N]

Arrays go to the VE once (``ctx.to_ve``), kernels work on them in place, and
only the result comes back (``ctx.from_ve``): on a real VE the PCIe transfers
are the expensive part, so keep data on the VE between calls.
"""
import asyncio
import sys
import time

import numpy as np

import aioveo
from _kernels import kernel_library


async def main(n: int) -> None:
    rng = np.random.default_rng(42)
    x = rng.standard_normal(n)
    y = rng.standard_normal(n)
    a = 2.5

    async with aioveo.open_proc(0) as proc:
        lib = await proc.load_library(kernel_library("blas"))
        daxpy = lib.find_function("void daxpy(long n, double a, const double *x, double *y)")
        ddot = lib.find_function("double ddot(long n, const double *x, const double *y)")
        dsum = lib.find_function("double dsum(long n, const double *x)")

        async with proc.open_context() as ctx:
            t0 = time.perf_counter()
            ve_x = await ctx.to_ve(x)          # allocate VE memory + copy
            ve_y = await ctx.to_ve(y)
            t_in = time.perf_counter() - t0

            # Kernels take VE addresses (ve.ptr), never host pointers.
            t0 = time.perf_counter()
            await ctx.call(daxpy, n, a, ve_x.ptr, ve_y.ptr)
            dot = await ctx.call(ddot, n, ve_x.ptr, ve_y.ptr)
            total = await ctx.call(dsum, n, ve_y.ptr)
            t_run = time.perf_counter() - t0

            t0 = time.perf_counter()
            y_ve = await ctx.from_ve(ve_y)     # a new numpy array with the VE's y
            t_out = time.perf_counter() - t0

            await ve_x.free()
            await ve_y.free()

    # The same computation on the host.
    y_np = a * x + y
    dot_np = float(np.dot(x, y_np))
    total_np = float(y_np.sum())

    mb = x.nbytes / 1e6
    print(f"n = {n} ({mb:.1f} MB per vector)")
    print(f"to_ve x2:  {t_in * 1e3:7.2f} ms ({2 * mb / t_in / 1e3:.2f} GB/s)")
    print(f"kernels:   {t_run * 1e3:7.2f} ms (daxpy, ddot, dsum)")
    print(f"from_ve:   {t_out * 1e3:7.2f} ms ({mb / t_out / 1e3:.2f} GB/s)")
    print(f"daxpy max |error| = {np.max(np.abs(y_ve - y_np)):.3g}")
    print(f"ddot = {dot:.10g} (numpy {dot_np:.10g})")
    print(f"dsum = {total:.10g} (numpy {total_np:.10g})")

    # Same operations, different summation order: equal up to rounding.
    assert np.allclose(y_ve, y_np, rtol=0, atol=1e-12)
    assert np.isclose(dot, dot_np, rtol=1e-9)
    assert np.isclose(total, total_np, rtol=1e-9, atol=1e-9 * np.abs(y_np).sum())
    print("OK: the VE agrees with numpy")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 4_000_000))
