"""The asyncio API on the emulator (every test runs on asyncio's loop and uvloop)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import aioveo
from aioveo import OnStack, VEO_INTENT_OUT
from helpers import declare



class Kernels:
    def __init__(self, lib):
        self.lib = lib
        self.nop = declare(lib, "nop", [])
        self.add = declare(lib, "add", ["long", "long"])
        self.ident = declare(lib, "ident", ["long"])
        self.dsum = declare(lib, "dsum", ["double *", "long"], "double")
        self.scale = declare(lib, "scale", ["double *", "long", "double"])
        self.sleep_ms = declare(lib, "sleep_ms", ["long"])
        self.slow_fill = declare(lib, "slow_fill", ["long", "long *", "long"])
        self.crash = declare(lib, "crash", [])


async def open_kernels(proc, aio_lib) -> Kernels:
    return Kernels(await proc.load_library(aio_lib))


@pytest.mark.asyncio
async def test_call_and_context_managers(aio_lib):
    async with aioveo.open_proc(0) as proc:
        k = await open_kernels(proc, aio_lib)
        async with proc.open_context() as ctx:
            assert await ctx.call(k.add, 40, 2) == 42
            assert ctx.in_flight == 0
        assert ctx.closed
        with pytest.raises(aioveo.ClosedError):
            await ctx.call(k.add, 1, 2)
    assert proc.closed


@pytest.mark.asyncio
async def test_awaitable_open_forms(aio_lib):
    proc = await aioveo.open_proc(0)
    try:
        ctx = await proc.open_context()
        k = await open_kernels(proc, aio_lib)
        assert await ctx.call(k.ident, -5) == -5
        await ctx.close()
    finally:
        await proc.close()


@pytest.mark.asyncio
async def test_submit_form_10000_in_flight_each_task_gets_its_result(aio_lib):
    async with aioveo.open_proc(0) as proc, proc.open_context() as ctx:
        k = await open_kernels(proc, aio_lib)
        futures = [await ctx.submit(k.ident, i) for i in range(10_000)]
        assert await asyncio.gather(*futures) == list(range(10_000))

        async def worker(i):
            return i, await ctx.call(k.add, i, 1_000_000)

        results = await asyncio.gather(*(worker(i) for i in range(2_000)))
        assert all(r == i + 1_000_000 for i, r in results)


@pytest.mark.asyncio
async def test_map_keeps_order(aio_lib):
    async with aioveo.open_proc(0) as proc, proc.open_context(max_in_flight=64) as ctx:
        k = await open_kernels(proc, aio_lib)
        assert await ctx.map(k.add, [(i, i) for i in range(5_000)]) == [2 * i for i in range(5_000)]
        assert await ctx.map(k.add, []) == []


@pytest.mark.asyncio
async def test_transfers_numpy_and_fifo_order(aio_lib):
    async with aioveo.open_proc(0) as proc, proc.open_context() as ctx:
        k = await open_kernels(proc, aio_lib)
        x = np.arange(100_000, dtype=np.float64)
        ve = await ctx.to_ve(x)
        assert ve.shape == x.shape and ve.dtype == x.dtype
        # write, then a call, then a read: FIFO within the context
        w = asyncio.ensure_future(ctx.write_mem(ve.ptr, np.ones_like(x)))
        s = asyncio.ensure_future(ctx.call(k.scale, ve.ptr, x.size, 3.0))
        r = asyncio.ensure_future(ctx.from_ve(ve))
        await w
        assert await s == x.size
        np.testing.assert_array_equal(await r, np.full_like(x, 3.0))
        assert await ctx.call(k.dsum, ve.ptr, x.size) == pytest.approx(3.0 * x.size)
        await ve.free()


@pytest.mark.asyncio
async def test_queued_transfer_futures_and_vearray_arguments(aio_lib):
    async with aioveo.open_proc(0) as proc, proc.open_context() as ctx:
        k = await open_kernels(proc, aio_lib)
        x = np.arange(1000, dtype=np.float64)
        ve = await ctx.to_ve(np.zeros_like(x))
        out = np.zeros_like(x)
        # queued without awaiting each step: write, scale, read run in FIFO order
        w = await ctx.submit_write_mem(ve, x)
        s = await ctx.submit(k.scale, ve, x.size, 2.0)     # a VEArray passes as its address
        r = await ctx.submit_read_mem(out, ve)
        del x                                               # the write request keeps it alive
        await asyncio.gather(w, s, r)
        np.testing.assert_array_equal(out, np.arange(1000) * 2.0)
        await ve.free()


@pytest.mark.asyncio
async def test_pool_function_called_on_a_chosen_context(aio_lib):
    async with aioveo.open_pool([0, 1], contexts_per_proc=1) as pool:
        add = await pool.function(aio_lib, "long add(long, long)")
        for ctx in pool.contexts:
            assert await ctx.call(add, 2, 3) == 5
        assert await pool.map(add, [(i, i) for i in range(10)]) == [2 * i for i in range(10)]


@pytest.mark.asyncio
async def test_cancel_keeps_buffers_and_context(aio_lib):
    async with aioveo.open_proc(0) as proc, proc.open_context() as ctx:
        k = await open_kernels(proc, aio_lib)
        out = np.zeros(16, dtype=np.int64)
        task = asyncio.ensure_future(ctx.call(k.slow_fill, 200, OnStack(out, inout=VEO_INTENT_OUT), 16))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ctx.in_flight == 1  # the VE is still running it
        await ctx.synchronize()
        assert ctx.in_flight == 0
        # The OUT buffer stayed alive and was filled when the VE finished.
        np.testing.assert_array_equal(out, np.arange(16) * 3)
        assert await ctx.call(k.add, 2, 3) == 5


@pytest.mark.asyncio
async def test_timeout_leaves_context_usable(aio_lib):
    async with aioveo.open_proc(0) as proc, proc.open_context() as ctx:
        k = await open_kernels(proc, aio_lib)
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ctx.call(k.sleep_ms, 800), 0.05)
        assert time.monotonic() - t0 < 0.5
        assert await ctx.call(k.add, 1, 1) == 2  # queued behind the sleeper


@pytest.mark.asyncio
async def test_backpressure_bounds_in_flight(aio_lib):
    async with aioveo.open_proc(0) as proc, proc.open_context(max_in_flight=4) as ctx:
        k = await open_kernels(proc, aio_lib)
        seen = []

        async def one(i):
            fut = await ctx.submit(k.sleep_ms, 5)
            seen.append(ctx.in_flight)
            return await fut

        await asyncio.gather(*(one(i) for i in range(20)))
        assert max(seen) <= 4
        fut = [ctx.submit_nowait(k.sleep_ms, 20) for _ in range(4)]
        with pytest.raises(aioveo.InFlightLimitError):
            ctx.submit_nowait(k.nop)
        await asyncio.gather(*fut)


@pytest.mark.asyncio
async def test_a_batch_that_completes_wakes_as_many_slot_waiters_as_it_frees(aio_lib):
    async with aioveo.open_proc(0) as proc, proc.open_context(max_in_flight=4) as ctx:
        k = await open_kernels(proc, aio_lib)
        batch = asyncio.ensure_future(ctx.map(k.sleep_ms, [(50,), (50,)]))  # 2 slots
        await asyncio.sleep(0)
        fillers = [await ctx.submit(k.sleep_ms, 100) for _ in range(2)]    # 4 in flight
        waiters = [asyncio.ensure_future(ctx.submit(k.nop)) for _ in range(2)]
        await asyncio.sleep(0)
        assert ctx.in_flight == 4 and not any(w.done() for w in waiters)
        await batch                        # frees 2 slots at once: both waiters go
        for _ in range(3):
            await asyncio.sleep(0)
        assert all(w.done() for w in waiters) and ctx.in_flight == 4
        await asyncio.gather(*fillers, *[w.result() for w in waiters])


@pytest.mark.asyncio
async def test_kernel_fault_fails_pending_and_spares_other_procs(aio_lib):
    async with aioveo.open_proc(0) as good, aioveo.open_proc(1) as bad:
        kg = await open_kernels(good, aio_lib)
        kb = await open_kernels(bad, aio_lib)
        gctx = await good.open_context()
        c1 = await bad.open_context()
        c2 = await bad.open_context()
        pending = asyncio.ensure_future(c2.call(kb.sleep_ms, 2000))
        await asyncio.sleep(0.02)
        t0 = time.monotonic()
        with pytest.raises(aioveo.VeoException) as exc:
            await c1.call(kb.crash)
        assert isinstance(exc.value, ArithmeticError)  # PyVEO-compatible class
        with pytest.raises(aioveo.VeoError):
            await pending
        assert time.monotonic() - t0 < 1.0  # promptly, not after the 2 s sleep
        with pytest.raises(aioveo.VeoError):
            await c1.call(kb.nop)
        assert await gctx.call(kg.add, 20, 22) == 42


@pytest.mark.asyncio
async def test_close_waits_or_fails_outstanding(aio_lib):
    async with aioveo.open_proc(0) as proc:
        k = await open_kernels(proc, aio_lib)
        ctx = await proc.open_context()
        fut = await ctx.submit(k.sleep_ms, 50)
        await ctx.close()  # normal close waits
        assert fut.done() and fut.result() == 50

        ctx = await proc.open_context()
        fut = await ctx.submit(k.sleep_ms, 100)
        await ctx.close(cancel=True)
        with pytest.raises(aioveo.ClosedError):
            await fut

    async def failing_block():
        async with aioveo.open_proc(0) as p2, p2.open_context() as c:
            k2 = await open_kernels(p2, aio_lib)
            nonlocal f2
            f2 = await c.submit(k2.sleep_ms, 100)
            raise KeyError("boom")

    f2 = None
    with pytest.raises(KeyError):
        await failing_block()
    with pytest.raises(aioveo.VeoError):
        await f2


@pytest.mark.asyncio
async def test_pool_server_shaped(aio_lib):
    async with aioveo.open_pool([0, 1, 2, 3], contexts_per_proc=2) as pool:
        add = await pool.function(aio_lib, "add")
        for f in add.per_proc.values():
            f.args_type("long", "long")
            f.ret_type("long")
        assert len({id(f) for f in add.per_proc.values()}) == 4  # resolved per proc

        async def client(i):
            return [await pool.call(add, i, j) for j in range(20)]

        results = await asyncio.gather(*(client(i) for i in range(64)))
        assert results == [[i + j for j in range(20)] for i in range(64)]
        assert await pool.map(add, [(i, 1) for i in range(1000)]) == [i + 1 for i in range(1000)]
        assert sum(c.in_flight for c in pool.contexts) == 0


@pytest.mark.asyncio
async def test_two_loops_in_two_threads(aio_lib):
    async def job(base):
        async with aioveo.open_proc(0) as proc, proc.open_context() as ctx:
            k = await open_kernels(proc, aio_lib)
            return await asyncio.gather(*[ctx.call(k.add, base, i) for i in range(500)])

    results = {}

    def run(base):
        results[base] = asyncio.run(job(base))

    threads = [threading.Thread(target=run, args=(b,)) for b in (1000, 2000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[1000] == [1000 + i for i in range(500)]
    assert results[2000] == [2000 + i for i in range(500)]


def test_loop_closed_with_pending_requests_does_not_hang(aio_lib):
    code = f"""
import asyncio, aioveo
async def main():
    proc = await aioveo.open_proc(0)
    lib = await proc.load_library({aio_lib!r})
    f = lib.find_function("sleep_ms"); f.args_type("long"); f.ret_type("long")
    ctx = await proc.open_context()
    fut = await ctx.submit(f, 5000)
    print("submitted", flush=True)
asyncio.run(main())
print("loop closed", flush=True)
"""
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(aio_lib))
    assert r.returncode == 0, r.stderr
    assert "loop closed" in r.stdout
    assert time.monotonic() - t0 < 30


def test_requests_outside_the_cyclic_gc_leave_no_cycle_behind(aio_lib):
    """Requests are not tracked by the cyclic GC (a deep pipeline allocates
    hundreds of thousands a second): the links that could close a cycle
    through one (its future, whose awaiting task's frame may hold the
    request; its owner) are cut on every way a request ends.  A future that
    outlives its ending would show such a cycle."""
    import gc
    import weakref
    ends = {}

    async def main():
        async with aioveo.open_proc(0) as proc:
            k = await open_kernels(proc, aio_lib)
            async with proc.open_context() as ctx:
                fut = await ctx.submit(k.sleep_ms, 20)            # completes
                ends["completed"] = weakref.ref(fut)
                await fut
                req_ctx = await proc.open_context()
                pending = asyncio.ensure_future(req_ctx.call(k.sleep_ms, 30))
                await asyncio.sleep(0.005)
                pending.cancel()                                  # cancelled await
                with pytest.raises(asyncio.CancelledError):
                    await pending
                ends["cancelled"] = weakref.ref(pending)
                await req_ctx.close()
            try:
                async with proc.open_context() as ctx2:           # left by an exception
                    fut = await ctx2.submit(k.sleep_ms, 200)
                    ends["closed by an exception"] = weakref.ref(fut)
                    raise KeyError("leave")
            except KeyError:
                pass
            with pytest.raises(aioveo.ClosedError):
                await fut
            del fut

    asyncio.run(main())

    async def abandoned():                    # the loop closes with the request watched
        proc = await aioveo.open_proc(0)
        k = await open_kernels(proc, aio_lib)
        ctx = await proc.open_context()
        ends["abandoned with its loop"] = weakref.ref(await ctx.submit(k.sleep_ms, 100))
        return proc

    async def next_loop(proc):                # its hub closes the closed loop's hub
        k = await open_kernels(proc, aio_lib)
        await (await proc.open_context()).call(k.nop)

    loop = asyncio.new_event_loop()
    proc = loop.run_until_complete(abandoned())
    loop.close()
    asyncio.run(next_loop(proc))
    gc.collect()
    assert {name: ref() for name, ref in ends.items() if ref() is not None} == {}
    proc.sync.destroy()
