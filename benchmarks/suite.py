"""The development benchmark suite: every layer side by side, against raw C and memcpy.

    python benchmarks/suite.py --quick                     # about a minute, prints the table
    python benchmarks/suite.py --out benchmarks/results    # full run: JSON, Markdown and a PNG

It imports aioveo as an installed package (``pip install ".[bench]"``); it is
not installed itself.  ``python -m aioveo bench`` is the small, installed
benchmark of a user's machine.

Every scenario measures its variants in one process tree, round by round,
interleaving the variants so drift on a noisy machine hits all of them alike;
results are medians over rounds with their spread (min-max).  The limits are
measured in the same run: a plain C program against the same libveo
(``benchmarks/raw.c``) and memcpy.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

# AVEO opens a second context of a proc only with VE_OMP_NUM_THREADS=1 in the
# environment (each kernel then runs one OpenMP thread): this program uses
# several contexts per proc.  (A value you set yourself is kept.)
os.environ.setdefault("VE_OMP_NUM_THREADS", "1")

from aioveo import (VeBuild, VeoException, VeoProc, _hub, _paths, backend, open_pool, open_proc,
                    settings)

HERE = Path(__file__).resolve().parent   # benchmarks/: kernels.c, raw.c
EXAMPLES = HERE.parent / "examples"      # the HTTP service and its load generator
MiB = 1 << 20


# ---- set-up ------------------------------------------------------------------------
class Setup:
    """Kernels and the raw C program, built once into a temporary directory."""

    def __init__(self, workdir: Path) -> None:
        bld = VeBuild()
        bld.set_build_dir(str(workdir))
        bld.set_c_src("bench_kernels", (HERE / "kernels.c").read_text())
        self.kernels = bld.build_so()
        lib = Path(backend().path)
        self.raw = str(workdir / "raw")
        subprocess.run(["cc", "-O2", str(HERE / "raw.c"), f"-I{_paths.EMU_INCLUDE}", str(lib),
                        f"-Wl,-rpath,{lib.parent}", "-o", self.raw], check=True)

    def raw_c(self, *args: Any) -> float:
        out = subprocess.run([self.raw, self.kernels, *map(str, args)], check=True,
                             capture_output=True, text=True)
        return float(out.stdout)


try:
    import uvloop  # noqa: F401 - the fast loop, when installed (pip install ".[bench]")
    FAST = "uvloop"
except ImportError:
    FAST = "asyncio"
LOOPS = ("asyncio", "uvloop") if FAST == "uvloop" else ("asyncio",)


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run_async(loop: str, coro_fn: Callable[[], Any], **changes: Any) -> Any:
    """Run `coro_fn()` on a fresh event loop of kind `loop`; `changes` are
    aioveo settings for that loop only (its hub is created on its first request)."""
    lp = _loop_factory(loop)()
    try:
        if changes:
            settings.configure(loop=lp, **changes)
        return lp.run_until_complete(coro_fn())
    finally:
        lp.close()


class SyncRig:
    """A proc with the benchmark kernels, driven through the PyVEO API."""

    def __init__(self, setup: Setup) -> None:
        self.proc = VeoProc(0)
        self.lib = self.proc.load_library(setup.kernels)
        self.ctx = self.proc.open_context()
        self.nop = self.lib.find_function("long nop(void)")
        self.sleep_ms = self.lib.find_function("long sleep_ms(long)")
        self.work_us = self.lib.find_function("long work_us(long)")

    def close(self) -> None:
        self.proc.destroy()


async def _async_rig(setup: Setup, contexts: int = 1, max_in_flight: int = 1024):
    proc = await open_proc(0)
    lib = await proc.load_library(setup.kernels)
    ctxs = [await proc.open_context(max_in_flight=max_in_flight) for _ in range(contexts)]
    return proc, lib, ctxs


# ---- scenarios ---------------------------------------------------------------------
def latency(setup: Setup, rig: SyncRig, n: int) -> dict[str, float]:
    """Null call, one at a time: seconds per call for each variant (one round)."""
    out = {"raw C": setup.raw_c("latency", n)}
    nop, ctx = rig.nop, rig.ctx
    for _ in range(200):
        nop(ctx).wait_result()
    t0 = time.perf_counter()
    for _ in range(n):
        nop(ctx).wait_result()
    out["sync API"] = (time.perf_counter() - t0) / n

    async def awaited() -> tuple[float, float]:
        """Seconds per awaited call, and per sync call on the same proc and
        context, in interleaved blocks: the ratio of the two is not blurred
        by a freshly started VE process or by the machine's moment."""
        proc, lib, (actx,) = await _async_rig(setup)
        fn = lib.find_function("long nop(void)")
        sctx = actx.sync
        for _ in range(200):
            await actx.call(fn)
            fn(sctx).wait_result()
        t_async = t_sync = 0.0
        block = max(1, n // 4)
        for _ in range(4):
            t0 = time.perf_counter()
            for _ in range(block):
                await actx.call(fn)
            t1 = time.perf_counter()
            for _ in range(block):
                fn(sctx).wait_result()
            t_async += t1 - t0
            t_sync += time.perf_counter() - t1
        await proc.close()
        return t_async / (4 * block), t_sync / (4 * block)

    for loop in LOOPS:
        out[f"async ({loop})"], out[f"sync API, same proc as async ({loop})"] = \
            run_async(loop, awaited)
    return out


def throughput(setup: Setup, rig: SyncRig, depth: int, total: int) -> dict[str, float]:
    """Calls per second with `depth` calls in flight, for each variant."""
    rounds = max(1, total // depth)
    n = rounds * depth
    out = {"raw C": 1 / setup.raw_c("pipeline", depth, n)}
    nop, ctx = rig.nop, rig.ctx
    t0 = time.perf_counter()
    for _ in range(rounds):
        reqs = [nop(ctx) for _ in range(depth)]
        for r in reqs:
            r.wait_result()
    out["sync API"] = n / (time.perf_counter() - t0)

    async def submit_form() -> float:
        proc, lib, (actx,) = await _async_rig(setup, max_in_flight=depth)
        fn = lib.find_function("long nop(void)")
        t0 = time.perf_counter()
        for _ in range(rounds):
            futs = [await actx.submit(fn) for _ in range(depth)]
            for f in futs:
                await f
        rate = n / (time.perf_counter() - t0)
        await proc.close()
        return rate

    async def batch_form() -> float:
        proc, lib, (actx,) = await _async_rig(setup, max_in_flight=max(2, 2 * depth))
        fn = lib.find_function("long nop(void)")
        args = [()] * depth
        t0 = time.perf_counter()
        for _ in range(rounds):
            await actx.map(fn, args)
        rate = n / (time.perf_counter() - t0)
        await proc.close()
        return rate

    out[f"async submit ({FAST})"] = run_async(FAST, submit_form)
    out[f"async map ({FAST})"] = run_async(FAST, batch_form)
    return out


def bandwidth(setup: Setup, rig: SyncRig, size: int, volume: int) -> dict[str, float]:
    """Bytes per second moving `size`-byte blocks, for each variant."""
    reps = max(3, min(20000, volume // max(size, 1)))
    out = {"memcpy": setup.raw_c("memcpy", size, reps),
           "raw C read": setup.raw_c("read", size, reps),
           "raw C write": setup.raw_c("write", size, reps)}
    proc = rig.proc
    host = _page_aligned(size)
    ve = proc.alloc_mem(max(size, 1))
    try:
        for name, op in (("sync read", lambda: proc.read_mem(host, ve, size)),
                         ("sync write", lambda: proc.write_mem(ve, host, size))):
            op()
            t0 = time.perf_counter()
            for _ in range(reps):
                op()
            out[name] = size * reps / (time.perf_counter() - t0)
    finally:
        proc.free_mem(ve)

    async def transfers() -> dict[str, float]:
        aproc, _lib, (actx,) = await _async_rig(setup)
        ptr = await actx.alloc_mem(max(size, 1))
        res = {}
        for name, op in (("async read", lambda: actx.read_mem(host, ptr, size)),
                         ("async write", lambda: actx.write_mem(ptr, host, size))):
            await op()
            t0 = time.perf_counter()
            for _ in range(reps):
                await op()
            res[name] = size * reps / (time.perf_counter() - t0)
        await actx.free_mem(ptr)
        await aproc.close()
        return res

    out.update(run_async(FAST, transfers))
    return out


def _page_aligned(size: int) -> np.ndarray:
    """A page-aligned host buffer (malloc's 16-byte offset costs ~3x on some
    copy sizes through 4K aliasing)."""
    raw = np.ones(size + 4096, np.uint8)
    off = (-raw.ctypes.data) % 4096
    return raw[off:off + size]


def scaling(setup: Setup, work_us: int, calls: int) -> dict[str, float]:
    """Calls per second of a `work_us` CPU kernel over several contexts and procs."""
    out = {}

    async def over_contexts(k: int) -> float:
        proc, lib, ctxs = await _async_rig(setup, contexts=k)
        fn = lib.find_function("long work_us(long)")
        per = [[(work_us,)] * (calls // k) for _ in range(k)]
        t0 = time.perf_counter()
        await asyncio.gather(*(c.map(fn, a) for c, a in zip(ctxs, per)))
        rate = (calls // k * k) / (time.perf_counter() - t0)
        await proc.close()
        return rate

    async def over_procs(k: int) -> float:
        rigs = [await _async_rig(setup) for _ in range(k)]
        fns = [lib.find_function("long work_us(long)") for _, lib, _ in rigs]
        t0 = time.perf_counter()
        await asyncio.gather(*(ctxs[0].map(fn, [(work_us,)] * (calls // k))
                               for (_, _, ctxs), fn in zip(rigs, fns)))
        rate = (calls // k * k) / (time.perf_counter() - t0)
        for proc, _, _ in rigs:
            await proc.close()
        return rate

    for k in (1, 2, 4, 8):
        out[f"{k} contexts"] = run_async(FAST, lambda: over_contexts(k))
    for k in (1, 2, 4):
        out[f"{k} procs"] = run_async(FAST, lambda: over_procs(k))
    return out


def cpu_cost(setup: Setup, rig: SyncRig, kernel_s: float) -> dict[str, float]:
    """Fraction of one core burned by the host while it waits on a long kernel,
    and by an idle proc (helper + host)."""
    ms = int(kernel_s * 1000)
    out = {}
    c0, t0 = time.process_time(), time.perf_counter()
    rig.sleep_ms(rig.ctx, ms).wait_result()
    out["sync wait_result"] = (time.process_time() - c0) / (time.perf_counter() - t0)

    async def awaited() -> float:
        proc, lib, (actx,) = await _async_rig(setup)
        fn = lib.find_function("long sleep_ms(long)")
        await actx.call(fn, 1)
        c0, t0 = time.process_time(), time.perf_counter()
        await actx.call(fn, ms)
        frac = (time.process_time() - c0) / (time.perf_counter() - t0)
        await proc.close()
        return frac

    for loop in LOOPS:
        out[f"await ({loop})"] = run_async(loop, awaited)
    pid = rig.proc.helper_pid
    h0, c0, t0 = _cpu_of(pid), time.process_time(), time.perf_counter()
    time.sleep(kernel_s)
    wall = time.perf_counter() - t0
    out["idle proc (helper)"] = (_cpu_of(pid) - h0) / wall if pid else float("nan")
    out["idle proc (host)"] = (time.process_time() - c0) / wall
    return out


def engine_modes(setup: Setup, quick: bool) -> dict[str, float]:
    """The completion engine's two designs, in this process, each on a fresh
    event loop configured with ``aioveo.settings.configure(loop=..., engine=...)``:
    one thread polling the oldest request of every context with back-off
    (poll) against a thread per context blocked in veo_call_wait_result (wait)."""
    out = {}
    for mode in ("poll", "wait"):
        for k, v in run_async(FAST, lambda: _engine_probe(setup.kernels, quick, mode),
                              engine=mode).items():
            out[f"{mode}: {k}"] = v
    return out


async def _engine_probe(kernels: str, quick: bool, mode: str) -> dict[str, float]:
    """Measured on one event loop: the hand-off cost of an awaited 200 us
    kernel (beyond a blocking wait_result of the same kernel), throughput of
    8 contexts awaiting 100 us kernels at once, CPU while awaiting 1 s."""
    n = 200 if quick else 1000
    proc = await open_proc(0)
    lib = await proc.load_library(kernels)
    ctxs = [await proc.open_context() for _ in range(8)]
    work = lib.find_function("long work_us(long)")
    sleep_ms = lib.find_function("long sleep_ms(long)")
    await ctxs[0].call(work, 1)   # the loop's first request creates its hub
    engine = _hub._hubs[asyncio.get_running_loop()].settings.engine
    if engine != mode:
        raise RuntimeError(f"asked for the {mode} engine, the loop's hub runs {engine}")
    t0 = time.perf_counter()
    for _ in range(n):
        work(ctxs[0].sync, 200).wait_result()
    blocking = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        await ctxs[0].call(work, 200)
    awaited = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    await asyncio.gather(*(c.map(work, [(100,)] * (n // 4)) for c in ctxs))
    rate = 8 * (n // 4) / (time.perf_counter() - t0)
    c0, t0 = time.process_time(), time.perf_counter()
    await ctxs[0].call(sleep_ms, 1000)
    cpu = (time.process_time() - c0) / (time.perf_counter() - t0)
    await proc.close()
    return {"hand-off, us": (awaited - blocking) * 1e6, "8 contexts, calls/s": rate,
            "CPU awaiting 1 s": cpu}


async def _crash_round(kernels: str) -> dict[str, float]:
    """A pool of 4 procs; one crashes (a kernel fault): the share of the next
    400 calls that succeed, and the time from the crash until its
    replacement has answered a call."""
    async with open_pool([0, 1, 2, 3]) as pool:
        nop = await pool.function(kernels, "long nop(void)")
        crash = await pool.function(kernels, "long crash(void)")
        await asyncio.gather(*(pool.call(nop) for _ in range(100)))
        t0 = time.perf_counter()
        try:
            await pool.call(crash)
        except VeoException:
            pass
        results = await asyncio.gather(*(pool.call(nop) for _ in range(400)),
                                       return_exceptions=True)
        ok = sum(1 for r in results if r == 0) / len(results)
        t_serving = await _replacement_served(pool, nop, t0)
    return {"next 400 calls after a crash: success": ok,
            "crash -> replacement serving, s": t_serving}


async def _kill_round(kernels: str) -> dict[str, float]:
    """An idle proc's VE process killed (SIGKILL): the time until its
    replacement has answered a call (found by the pool's probe)."""
    import signal
    async with open_pool([0, 1, 2, 3]) as pool:
        nop = await pool.function(kernels, "long nop(void)")
        await asyncio.gather(*(pool.call(nop) for _ in range(100)))
        pid = pool.procs[3].sync.helper_pid
        if pid is None:
            raise RuntimeError("SIGKILL needs the emulator (a helper process per proc)")
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        t_serving = await _replacement_served(pool, nop, t0)
    return {"SIGKILL -> replacement serving, s": t_serving}


async def _replacement_served(pool: Any, fn: Any, t0: float) -> float:
    while pool.stats()["replacements"] < 1 or pool.live_procs < 4:
        if time.perf_counter() - t0 > 10:
            raise RuntimeError(f"no replacement within 10 s: {pool.stats()}")
        await asyncio.sleep(0.0005)
    pid = next(p["pid"] for p in pool.stats()["procs"] if p["replacements"])
    ctx = next(c for c in pool.contexts if c.proc.sync.helper_pid == pid)
    await ctx.call(fn.for_proc(ctx.proc))
    return time.perf_counter() - t0


def healing(setup: Setup) -> dict[str, float]:
    """A 4-proc pool that loses a proc: calls that still succeed, time to heal."""
    return {**run_async(FAST, lambda: _crash_round(setup.kernels)),
            **run_async(FAST, lambda: _kill_round(setup.kernels))}


#: /primes over this many numbers: ~0.15 ms and ~2.4 ms on the 2-core CI machine
SERVICE_KERNELS = {"short kernel": 1000, "longer kernel": 20000}


def service(requests: int, workdir: Path) -> dict[str, float]:
    """examples/service.py (aiohttp) loaded by examples/loadgen.py over 32
    connections, /primes over 1,000 numbers (a short kernel) and over 20,000
    (a longer one), with 1, 2 and 4 procs: requests per second, p50
    and p99 latency.  Service and load generator share this machine's cores."""
    import importlib.util
    import signal
    spec = importlib.util.spec_from_file_location("loadgen", EXAMPLES / "loadgen.py")
    assert spec is not None and spec.loader is not None
    loadgen = importlib.util.module_from_spec(spec)
    sys.modules["loadgen"] = loadgen
    spec.loader.exec_module(loadgen)
    prefix = loadgen.sieve(loadgen.LIMIT)
    env = dict(os.environ, AIOVEO_CACHE=str(workdir / "cache"), PYTHONUNBUFFERED="1")
    out = {}
    for (kernel, span), k in ((ks, k) for ks in SERVICE_KERNELS.items() for k in (1, 2, 4)):
        reqs = loadgen.make_requests(requests, seed=3, prefix=prefix, kinds=("primes",),
                                     span=span)
        srv = subprocess.Popen([sys.executable, str(EXAMPLES / "service.py"), "--port", "0",
                                "--procs", str(k), "--contexts", "1", "--loop", FAST,
                                "--log-level", "WARNING"], cwd=workdir, env=env,
                               stdout=subprocess.PIPE, text=True)
        try:
            assert srv.stdout is not None
            line = srv.stdout.readline()
            url = line.split()[2]
            if not url.startswith("http://"):
                raise RuntimeError(f"the service did not start: {line!r}")
            run_async(FAST, lambda: loadgen.run_load(url, reqs[:100], 32))    # warm up
            t0 = time.perf_counter()
            res = run_async(FAST, lambda: loadgen.run_load(url, reqs, 32))
            s = loadgen.summary(res, time.perf_counter() - t0)
            if s["wrong"]:
                raise RuntimeError(f"{s['wrong']} wrong answers from the service")
            out[f"{kernel}, {k} procs: requests/s"] = s["requests_per_s"]
            out[f"{kernel}, {k} procs: p50 ms"] = s["p50_ms"]
            out[f"{kernel}, {k} procs: p99 ms"] = s["p99_ms"]
        finally:
            srv.send_signal(signal.SIGTERM)
            srv.wait(30)
    return out


def _cpu_of(pid: int | None) -> float:
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def overhead(rig: SyncRig, n: int) -> dict[str, float]:
    """Where the Python time of one call goes (seconds per call): submitting
    (argument conversion + veo_call_async), collecting a finished request."""
    nop, ctx = rig.nop, rig.ctx
    lib = rig.lib
    four = lib.find_function("long work_us(long)")
    out = {}
    t0 = time.perf_counter()
    reqs = [nop(ctx) for _ in range(n)]
    out["submit, 0 args"] = (time.perf_counter() - t0) / n
    ctx.context_sync()
    t0 = time.perf_counter()
    for r in reqs:
        r.wait_result()
    out["collect a finished request"] = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    reqs = [four(ctx, 0) for _ in range(n)]
    out["submit, 1 int arg"] = (time.perf_counter() - t0) / n
    for r in reqs:
        r.wait_result()
    return out


#: The timing profile under which the raw VEO allocation is measured: on a VE,
#: veo_alloc_mem and veo_free_mem each are a command round trip queued
#: behind the main context (AVEO's published VE10B figures: 10 us for one
#: command awaited); the plain emulator does them on the host.
RAW_ALLOC_PROFILE = "ve10b"


def timing_profile() -> str | None:
    """The emulator's timing profile this run is under (VEO_EMU_PROFILE), or None."""
    try:
        from aioveo import emulator
        return emulator.profile()
    except (ImportError, NotImplementedError, ValueError):
        return None


@contextlib.contextmanager
def _profile_env(name: str):
    """Procs created inside run under timing profile `name` (VEO_EMU_PROFILE)."""
    old = os.environ.get("VEO_EMU_PROFILE")
    os.environ["VEO_EMU_PROFILE"] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ["VEO_EMU_PROFILE"]
        else:
            os.environ["VEO_EMU_PROFILE"] = old


def mempool(setup: Setup, quick: bool) -> dict[str, float]:
    """The memory pool against raw VEO allocation (one round, every variant).

    Values are seconds per operation, except the pipelines (chunks per second)."""
    import random

    from aioveo import settings as aioveo_settings

    rng = random.Random(7)
    n_ops = 2000 if quick else 10000
    # random sizes up to 64 MiB, log-uniform (most small, some large)
    sizes = [int(2 ** rng.uniform(9, 26)) for _ in range(64)]
    out: dict[str, float] = {}

    async def pool_variants() -> dict[str, float]:
        proc, lib, (ctx, busy_ctx) = await _async_rig(setup, contexts=2)
        pool = proc.memory
        for size in sizes:                          # warm: every size cached once
            pool.malloc(size).free()
        res = {}
        t0 = time.perf_counter()
        for i in range(n_ops):
            pool.malloc(sizes[i & 63]).free()
        res["pool hit: malloc + free"] = (time.perf_counter() - t0) / n_ops
        t0 = time.perf_counter()
        for i in range(n_ops):
            (await ctx.empty(sizes[i & 63], np.uint8)).free()
        res["pool hit: await ctx.empty + free"] = (time.perf_counter() - t0) / n_ops
        # frees on a context busy with queued kernels
        sleep_ms = lib.find_function("long sleep_ms(long)")
        axpy = lib.find_function("long axpy(double *y, const double *x, double a, long n)")
        arrays = [await busy_ctx.empty(4096) for _ in range(64)]
        raws = [proc.sync.alloc_mem(32768) for _ in range(8)]
        for _ in range(5):
            await busy_ctx.submit(sleep_ms, 20)
        for a in arrays:
            await busy_ctx.submit(axpy, a, a, 1.0, 4096)
        t0 = time.perf_counter()
        for a in arrays:
            a.free()
        res["free on a busy context: pool (arr.free())"] = (time.perf_counter() - t0) / len(arrays)
        t0 = time.perf_counter()
        await busy_ctx.free_mem(raws[0])            # raw memory: waits for the queue, as before
        res["free on a busy context: raw (ctx.free_mem)"] = time.perf_counter() - t0
        for r in raws[1:]:
            proc.sync.free_mem(r)
        await proc.close()
        return res

    out.update(run_async(FAST, pool_variants))

    def raw_alloc_free(n: int) -> float:
        rig = VeoProc(0)
        try:
            t0 = time.perf_counter()
            for i in range(n):
                rig.free_mem(rig.alloc_mem(sizes[i & 63]))
            return (time.perf_counter() - t0) / n
        finally:
            rig.destroy()

    out["raw: veo_alloc_mem + veo_free_mem"] = raw_alloc_free(n_ops)
    if backend().is_emulator and backend().extensions:
        # a VE's allocation, measured: the same under the emulator's timing profile
        with _profile_env(RAW_ALLOC_PROFILE):
            out[f"raw under the {RAW_ALLOC_PROFILE} timing profile"] = raw_alloc_free(
                min(n_ops, 5000))

    chunks, chunk = (64, MiB) if quick else (256, MiB)

    async def pipeline(mode: str) -> float:
        with aioveo_settings.override(mempool=mode):
            proc, lib, (ctx,) = await _async_rig(setup)
            proc.memory   # made now, in this mode
        axpy = lib.find_function("long axpy(double *y, const double *x, double a, long n)")
        n = chunk // 8
        data = np.ones(n)
        out_buf = np.empty((chunks, n))
        out_buf.fill(0.0)   # the host pages faulted in before timing, for both variants
        t0 = time.perf_counter()
        reads = []
        for i in range(chunks):
            buf = await ctx.empty(n)                # a buffer per chunk
            await ctx.submit_write_mem(buf, data)
            await ctx.submit(axpy, buf, buf, 1.0, n)
            reads.append(await ctx.submit_read_mem(out_buf[i], buf))
            buf.free()                              # at once: reused after the read, in order
        await asyncio.gather(*reads)
        rate = chunks / (time.perf_counter() - t0)
        assert (out_buf == 2.0).all()
        await proc.close()
        return rate

    out["pipeline, a buffer per chunk: pool (chunks/s)"] = run_async(FAST, lambda: pipeline("1"))
    out["pipeline, a buffer per chunk: raw, AIOVEO_MEMPOOL=0 (chunks/s)"] = run_async(
        FAST, lambda: pipeline("0"))
    return out


# ---- running, reporting --------------------------------------------------------------
def _stats(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def collect(rounds: int, fn: Callable[[], dict[str, float]]) -> dict[str, dict]:
    """Run `fn` (one interleaved round of every variant) `rounds` times."""
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        for k, v in fn().items():
            samples.setdefault(k, []).append(v)
    return {k: {**_stats(v), "samples": v} for k, v in samples.items()}


def machine() -> dict[str, Any]:
    b = backend()
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "backend": b.kind, "libveo": b.version,
            "numpy": np.__version__, "date": time.strftime("%Y-%m-%d"),
            "timing_profile": timing_profile() if b.is_emulator else None}


def run(quick: bool, only: set[str] | None = None) -> dict[str, Any]:
    rounds = 3 if quick else 7
    want = (lambda s: only is None or s in only)
    res: dict[str, Any] = {"machine": machine(), "quick": quick, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="aioveo-bench-") as tmp:
        setup = Setup(Path(tmp))
        rig = SyncRig(setup)
        try:
            if want("latency"):
                res["latency"] = collect(rounds, lambda: latency(setup, rig, 2000 if quick else 20000))
            if want("throughput"):
                total = 20000 if quick else 100000
                res["throughput"] = {str(d): collect(rounds, lambda: throughput(setup, rig, d, total))
                                     for d in (1, 10, 100, 1000, 10000)}
            if want("bandwidth"):
                sizes = [1, 4096, 65536, MiB, 16 * MiB, 64 * MiB]
                if not quick:
                    sizes += [256 * MiB]
                volume = 128 * MiB if quick else 1024 * MiB
                res["bandwidth"] = {str(s): collect(rounds, lambda: bandwidth(setup, rig, s, volume))
                                    for s in sizes}
            if want("scaling"):
                res["scaling"] = collect(1 if quick else 3,
                                         lambda: scaling(setup, 1000, 64 if quick else 256))
            if want("cpu"):
                res["cpu"] = collect(1 if quick else 3, lambda: cpu_cost(setup, rig, 1.0 if quick else 2.0))
            if want("overhead"):
                res["overhead"] = collect(rounds, lambda: overhead(rig, 10000))
            if want("engine"):
                res["engine"] = collect(1 if quick else 3, lambda: engine_modes(setup, quick))
            if want("healing"):
                res["healing"] = collect(rounds, lambda: healing(setup))
            if want("service"):
                res["service"] = collect(1 if quick else 3,
                                         lambda: service(1000 if quick else 4000, Path(tmp)))
            if want("mempool"):
                res["mempool"] = collect(rounds, lambda: mempool(setup, quick))
        finally:
            rig.close()
    res["targets"] = targets(res)
    return res


def _med(res: dict, *path: str) -> float | None:
    node: Any = res
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node["median"]


def _ratio_med(res: dict, scenario: str, a: str, b: str) -> float | None:
    """The median over rounds of a / b (two variants measured in each round)."""
    node = res.get(scenario, {})
    if a not in node or b not in node:
        return None
    return statistics.median(x / y for x, y in zip(node[a]["samples"], node[b]["samples"]))


def targets(res: dict) -> list[dict[str, Any]]:
    """The targets of the issues, checked against this run."""
    out = []

    def check(name: str, value: float | None, limit: float, higher_is_better: bool, unit: str):
        if value is None:
            return
        ok = value >= limit if higher_is_better else value <= limit
        out.append({"target": name, "value": value, "limit": limit, "unit": unit,
                    "pass": bool(ok), "sense": ">=" if higher_is_better else "<="})

    # The targets of the "one core" issue (raised from the earlier ones).
    sync, raw = _med(res, "latency", "sync API"), _med(res, "latency", "raw C")
    if sync and raw:
        check("sync call cost vs the C loop", sync / raw, 1.3, False, "x")
        for loop in LOOPS:
            ratio = _ratio_med(res, "latency", f"async ({loop})",
                               f"sync API, same proc as async ({loop})")
            if ratio:
                check(f"async call latency vs sync ({loop}; same proc, interleaved)", ratio,
                      1.5, False, "x")
    for depth in ("1000", "10000"):
        m = _med(res, "throughput", depth, f"async map ({FAST})")
        r = _med(res, "throughput", depth, "raw C")
        if m and r:
            check(f"batch form vs raw C pipelined ({int(depth):,} in flight)", m / r, 0.75,
                  True, "x")
    sub = _med(res, "throughput", "10000", f"async submit ({FAST})")
    if sub:
        check(f"submit form on {FAST}, 10,000 in flight", sub, 500_000, True, "calls/s")
    for size, node in res.get("bandwidth", {}).items():
        if int(size) >= MiB:
            for v in ("sync read", "sync write", "async read", "async write"):
                if v in node:
                    check(f"{v} {int(size) // MiB} MiB vs memcpy",
                          node[v]["median"] / node["memcpy"]["median"], 0.8, True, "x")
    for v in (*(f"await ({loop})" for loop in LOOPS), "sync wait_result"):
        check(f"CPU while waiting on a long kernel, {v}", _med(res, "cpu", v), 0.01, False, "cores")
    check("CPU of an idle proc (helper)", _med(res, "cpu", "idle proc (helper)"), 0.01, False, "cores")
    check("calls succeeding after a crash in a 4-proc pool",
          _med(res, "healing", "next 400 calls after a crash: success"), 0.99, True, "fraction")
    check("4 live procs again after a crash", _med(res, "healing", "crash -> replacement serving, s"),
          2.0, False, "s")
    hit = _med(res, "mempool", "pool hit: malloc + free")
    raw = _med(res, "mempool", "raw: veo_alloc_mem + veo_free_mem")
    if hit is not None:
        check("pool hit, alloc + free", hit * 1e6, 1.0, False, "us")
    free_busy = _med(res, "mempool", "free on a busy context: pool (arr.free())")
    if free_busy is not None:
        check("free on a context busy with queued kernels", free_busy * 1e6, 10.0, False, "us")
    on_ve = _med(res, "mempool", f"raw under the {RAW_ALLOC_PROFILE} timing profile")
    if hit and on_ve:
        check(f"pool vs raw alloc + free on a VE (the emulator's {RAW_ALLOC_PROFILE} timing "
              f"profile)", on_ve / hit, 10.0, True, "x")
    p, r = (_med(res, "mempool", f"pipeline, a buffer per chunk: {v} (chunks/s)")
            for v in ("pool", "raw, AIOVEO_MEMPOOL=0"))
    if p and r:
        check("chunked pipeline, pool vs raw", p / r, 1.0, True, "x")
    return out


def _fmt_time(s: float) -> str:
    return f"{s * 1e6:.2f} us"


def _fmt_rate(r: float) -> str:
    return f"{r / 1e3:.0f} k/s"


def _fmt_bw(b: float) -> str:
    return f"{b / 1e9:.2f} GB/s"


def _size(s: int) -> str:
    return f"{s // MiB} MiB" if s >= MiB else (f"{s // 1024} KiB" if s >= 1024 else f"{s} B")


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
             f"{m['backend']} ({m['libveo']}), {m['date']}; "
             f"{'quick' if res['quick'] else 'full'} run, medians of {res['rounds']} rounds "
             f"(min-max in brackets).",
             "", f"Timing profile: {m.get('timing_profile') or 'none (the emulator at host speed)'}"
             if m["backend"] == "emulator" else "Timing: a VE's own.", ""]

    def cell(node: dict, fmt: Callable[[float], str]) -> str:
        return f"{fmt(node['median'])} [{fmt(node['min'])}-{fmt(node['max'])}]"

    if "latency" in res:
        lat = res["latency"]
        raw = lat["raw C"]["median"]
        lines += ["### Null call latency, one at a time", "", "| variant | per call | vs raw C |",
                  "|---|---|---|"]
        lines += [f"| {k} | {cell(v, _fmt_time)} | {v['median'] / raw:.2f}x |" for k, v in lat.items()]
        lines.append("")
    if "throughput" in res:
        tp = res["throughput"]
        variants = list(next(iter(tp.values())).keys())
        lines += ["### Pipelined throughput (calls per second, by calls in flight)", "",
                  "| in flight | " + " | ".join(variants) + " |",
                  "|---" * (len(variants) + 1) + "|"]
        for d, node in tp.items():
            raw = node["raw C"]["median"]
            lines.append(f"| {d} | " + " | ".join(
                f"{_fmt_rate(node[v]['median'])} ({node[v]['median'] / raw:.0%})" for v in variants) + " |")
        lines += ["", "Percentages are of raw C at the same depth.", ""]
    if "bandwidth" in res:
        bw = res["bandwidth"]
        variants = list(next(iter(bw.values())).keys())
        lines += ["### Transfer bandwidth (block size; % of memcpy)", "",
                  "| size | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
        for s, node in bw.items():
            mc = node["memcpy"]["median"]
            lines.append(f"| {_size(int(s))} | " + " | ".join(
                f"{_fmt_bw(node[v]['median'])} ({node[v]['median'] / mc:.0%})" for v in variants) + " |")
        lines.append("")
    if "scaling" in res:
        sc = res["scaling"]
        base_c, base_p = sc["1 contexts"]["median"], sc["1 procs"]["median"]
        lines += ["### Scaling a 1 ms CPU kernel", "", "| layout | calls/s | speed-up |", "|---|---|---|"]
        for k, v in sc.items():
            base = base_c if "context" in k else base_p
            lines.append(f"| {k} | {v['median']:.0f} | {v['median'] / base:.2f}x |")
        lines += ["", f"(the machine has {m['cores']} cores: that bounds the speed-up)", ""]
    if "cpu" in res:
        lines += ["### CPU cost (fraction of one core)", "", "| situation | CPU |", "|---|---|"]
        lines += [f"| {k} | {v['median']:.2%} |" for k, v in res["cpu"].items()]
        lines.append("")
    if "engine" in res:
        lines += ["### Completion engine: one polling thread (poll) vs a waiting thread per "
                  "context (wait)", "", "| measure | value |", "|---|---|"]
        for k, v in res["engine"].items():
            val = f"{v['median']:.2%}" if "CPU" in k else f"{v['median']:,.1f}"
            lines.append(f"| {k} | {val} |")
        lines.append("")
    if "healing" in res:
        lines += ["### A pool that loses a proc (4 procs)", "", "| measure | value |", "|---|---|"]
        for k, v in res["healing"].items():
            val = f"{v['median']:.1%}" if "success" in k else \
                f"{v['median'] * 1e3:.1f} ms [{v['min'] * 1e3:.1f}-{v['max'] * 1e3:.1f}]"
            lines.append(f"| {k.replace(', s', '')} | {val} |")
        lines.append("")
    if "service" in res:
        sv = res["service"]
        lines += ["### HTTP service (examples/service.py on aiohttp, examples/loadgen.py, "
                  "32 connections)", "", "| kernel | procs | requests/s | p50 | p99 |",
                  "|---|---|---|---|---|"]
        for kernel in SERVICE_KERNELS:
            for k in (1, 2, 4):
                key = f"{kernel}, {k} procs"
                if f"{key}: requests/s" in sv:
                    lines.append(f"| {kernel} | {k} | {sv[f'{key}: requests/s']['median']:.0f} | "
                                 f"{sv[f'{key}: p50 ms']['median']:.2f} ms | "
                                 f"{sv[f'{key}: p99 ms']['median']:.2f} ms |")
        lines += ["", "(/primes over 1,000 numbers (short) and 20,000 (longer): about 0.15 and "
                  "2.4 ms of kernel time on the 2-core CI machine. Service, emulated VEs and "
                  "load generator share its cores.)", ""]
    if "overhead" in res:
        lines += ["### Python-side cost per call (sync core)", "", "| step | per call |", "|---|---|"]
        lines += [f"| {k} | {cell(v, _fmt_time)} |" for k, v in res["overhead"].items()]
        lat = res.get("latency")
        if lat:
            hand = lat[f"async ({FAST})"]["median"] - lat["sync API"]["median"]
            lines.append(f"| completion hand-off to the event loop (async {FAST} - sync) "
                         f"| {_fmt_time(hand)} |")
        lines.append("")
    if "mempool" in res:
        mp = res["mempool"]
        lines += ["### Memory pool vs raw VEO allocation", "", "| variant | value |", "|---|---|"]
        for k, v in mp.items():
            if "chunks/s" in k:
                lines.append(f"| {k} | {v['median']:,.0f} [{v['min']:,.0f}-{v['max']:,.0f}] |")
            else:
                lines.append(f"| {k} | {cell(v, _fmt_time)} |")
        prof = res["machine"].get("timing_profile")
        lines += ["", "Sizes: 64 random sizes up to 64 MiB (log-uniform), cycled. "
                  + (f"The whole run is under the emulator's timing profile ({prof})."
                     if prof else
                     "The plain emulator's veo_alloc_mem is a host heap operation, so raw "
                     "allocation looks far cheaper here than on a VE; the row under the "
                     f"{RAW_ALLOC_PROFILE} timing profile measures it as a VE's round trips."), ""]
    lines += ["### Targets", ""]
    for t in res["targets"]:
        lines.append(f"- {'PASS' if t['pass'] else 'MISS'} {t['target']}: {_num(t)} "
                     f"(target {t['sense']} {t['limit']:g} {t['unit']})")
    return "\n".join(lines) + "\n"


def _num(t: dict) -> str:
    v = t["value"]
    if t["unit"] == "cores":
        return f"{v:.2%} of a core"
    if t["unit"] == "calls/s":
        return f"{v:,.0f} calls/s"
    if t["unit"] == "fraction":
        return f"{v:.1%}"
    if t["unit"] == "s":
        return f"{v * 1e3:.1f} ms"
    if t["unit"] == "us":
        return f"{v:.2f} us"
    return f"{v:.2f}x"


def plot(res: dict, path: Path) -> bool:
    """Latency, throughput and bandwidth curves as one PNG (needs matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    if "latency" in res:
        lat = res["latency"]
        axes[0].bar(list(lat), [v["median"] * 1e6 for v in lat.values()])
        axes[0].set_ylabel("us per null call")
        axes[0].set_title("latency")
        axes[0].tick_params(axis="x", rotation=20)
    if "throughput" in res:
        tp = res["throughput"]
        depths = [int(d) for d in tp]
        for v in next(iter(tp.values())):
            axes[1].plot(depths, [tp[str(d)][v]["median"] for d in depths], marker="o", label=v)
        axes[1].set_xscale("log")
        axes[1].set_xlabel("calls in flight")
        axes[1].set_ylabel("calls/s")
        axes[1].set_title("throughput")
        axes[1].legend(fontsize=8)
    if "bandwidth" in res:
        bw = res["bandwidth"]
        sizes = [int(s) for s in bw]
        for v in next(iter(bw.values())):
            axes[2].plot(sizes, [bw[str(s)][v]["median"] / 1e9 for s in sizes], marker="o", label=v)
        axes[2].set_xscale("log")
        axes[2].set_xlabel("block size (bytes)")
        axes[2].set_ylabel("GB/s")
        axes[2].set_title("bandwidth")
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _update_readme(path: Path, md: str) -> None:
    """Put this run's tables between the ``<!-- bench:start ...-->`` and
    ``<!-- bench:end -->`` lines of `path`."""
    text = path.read_text()
    start = text.index("<!-- bench:start")
    start = text.index("\n", start) + 1
    end = text.index("<!-- bench:end -->")
    path.write_text(text[:start] + md + text[end:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python benchmarks/suite.py",
        description="Measure every layer of aioveo against raw C and memcpy, in one run.")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and sizes (about a minute)")
    ap.add_argument("--out", metavar="DIR", help="write results.json, results.md and results.png here")
    ap.add_argument("--only", metavar="SCENARIO", action="append",
                    choices=["latency", "throughput", "bandwidth", "scaling", "cpu", "overhead",
                             "engine", "healing", "service", "mempool"],
                    help="run only this scenario (repeatable)")
    ap.add_argument("--update-readme", metavar="FILE",
                    help="replace the tables between the bench markers of FILE "
                         "(docs/performance.md)")
    args = ap.parse_args(argv)
    prof = timing_profile() if backend().is_emulator else None
    print(f"aioveo benchmark suite on {backend().kind} ({backend().version}); timing profile: "
          f"{prof or 'none'}", file=sys.stderr, flush=True)
    res = run(args.quick, set(args.only) if args.only else None)
    md = markdown(res)
    print(md)
    if args.update_readme:
        _update_readme(Path(args.update_readme), md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(res, indent=1))
        (out / "results.md").write_text(md)
        if plot(res, out / "results.png"):
            print(f"wrote {out / 'results.json'}, results.md and results.png")
        else:
            print(f"wrote {out / 'results.json'} and results.md (install matplotlib for the plot)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
