"""Reliability: kernel faults, a killed helper or host, hung kernels, memory
exhaustion, exits with work in flight, and bad input.  Every failure must be
the exact exception, leave the library usable and never hang or crash the host.

Kernels: tests/kernels/rel_kernels.c (faults, routing tags, checksums, an
argument-placement echo) and tests/kernels/core_kernels.c (the echo_* kernels).
"""
from __future__ import annotations

import asyncio
import math
import os
import select
import signal
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import aioveo as veo
from aioveo import OnStack, VEO_INTENT_OUT

SUBPROCESS_TIMEOUT = 60


# ---- helpers ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def rel_so(build_kernel):
    return build_kernel("rel_kernels")


@pytest.fixture(scope="module")
def core_so(build_kernel):
    return build_kernel("core_kernels")


class K:
    """The rel_kernels functions of one library, declared by prototype."""

    PROTOS = {
        "nop": "long rel_nop(void)",
        "add": "long rel_add(long a, long b)",
        "sleep_ms": "long rel_sleep_ms(long ms)",
        "segv": "long rel_segv(void)",
        "abort": "long rel_abort(void)",
        "fpe": "double rel_fpe(double num)",
        "idiv": "long rel_idiv(long a, long b)",
        "never": "long rel_never_returns(void)",
        "spin": "long rel_spin(void)",
        "tagged": "long rel_tagged(long seq)",
        "echo_all": "long rel_echo_all(int8_t a, uint8_t b, int16_t c, uint16_t d, int32_t e,"
                    " uint32_t f, int64_t g, uint64_t h, float i, double j, long k, double l,"
                    " void *o)",
    }

    def __init__(self, lib):
        self.lib = lib
        for attr, proto in self.PROTOS.items():
            setattr(self, attr, lib.find_function(proto))


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_gone(pids, timeout: float = 5.0) -> list[int]:
    """The pids still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if not process_gone(p)]
        if alive:
            time.sleep(0.02)
    return alive


def sync_still_works(rel_so, node: int = 0) -> None:
    """A fresh proc loads, calls and transfers normally."""
    p = veo.VeoProc(node)
    try:
        k = K(p.load_library(rel_so))
        c = p.open_context()
        assert k.add(c, 40, 2).wait_result() == 42
        ptr = p.alloc_mem(64)
        p.write_mem(ptr, bytes(range(64)))
        out = bytearray(64)
        p.read_mem(out, ptr)
        assert out == bytes(range(64))
    finally:
        p.destroy()


def run_python(code: str, cwd, env_extra=None, timeout=SUBPROCESS_TIMEOUT):
    env = {**os.environ, "AIOVEO_EXIT_GRACE": "0.5", **(env_extra or {})}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=timeout, cwd=cwd, env=env)
    return r, time.monotonic() - t0


def assert_clean_exit(r, elapsed, limit=20.0):
    assert r.returncode == 0, f"rc={r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert elapsed < limit, f"exit took {elapsed:.1f}s"
    for bad in ("Segmentation fault", "Fatal Python error", "core dumped"):
        assert bad not in r.stderr, r.stderr


# ---- 1. faults: sync -------------------------------------------------------------
FAULTS = [  # (kernel attribute, arguments, signal)
    ("segv", (), signal.SIGSEGV),
    ("abort", (), signal.SIGABRT),
    ("fpe", (1.0,), signal.SIGFPE),     # feenableexcept(FE_DIVBYZERO) then 1.0 / 0.0
    ("idiv", (1, 0), signal.SIGFPE),    # integer division by zero
]


@pytest.mark.parametrize("kernel,args,sig", FAULTS, ids=[f[0] for f in FAULTS])
def test_sync_fault_kills_only_its_proc(rel_so, kernel, args, sig):
    p = veo.VeoProc(0)
    other = veo.VeoProc(0)
    try:
        k = K(p.load_library(rel_so))
        ok = K(other.load_library(rel_so))
        c_main, c_busy = p.open_context(), p.open_context()
        oc = other.open_context()
        pid = p.helper_pid
        pending = k.sleep_ms(c_busy, 5000)          # queued on another context
        t0 = time.monotonic()
        with pytest.raises(veo.VeoException) as ei:
            getattr(k, kernel)(c_main, *args).wait_result()
        assert type(ei.value) is veo.VeoException
        assert isinstance(ei.value, ArithmeticError)  # PyVEO raised ArithmeticError
        assert ei.value.signal == sig
        with pytest.raises(veo.ProcDeadError):
            pending.wait_result()
        assert time.monotonic() - t0 < 3.0            # promptly, not after the 5 s sleep
        # the proc is dead: every later use says so
        assert c_main.state() == veo.VEO_STATE_EXIT
        with pytest.raises(veo.ProcDeadError):
            k.add(c_main, 1, 2)
        with pytest.raises(veo.ProcDeadError):
            k.add(c_busy, 1, 2)
        with pytest.raises(veo.ProcDeadError):
            p.alloc_mem(8)
        with pytest.raises(veo.ProcDeadError):
            p.open_context()
        with pytest.raises(veo.ProcDeadError):
            p.load_library(rel_so)
        # the other proc is untouched
        assert ok.add(oc, 20, 22).wait_result() == 42
        # the dead proc is destroyed cleanly, its helper is gone
        p.destroy()
        assert p.destroyed and p.helper_pid is None
        assert wait_gone([pid]) == []
        with pytest.raises(veo.ClosedError):
            p.alloc_mem(8)
        with pytest.raises(veo.ClosedError):
            k.add(c_main, 1, 2)
    finally:
        p.destroy()
        other.destroy()
    sync_still_works(rel_so)


def test_symbol_lookup_on_a_dead_proc_says_dead(rel_so):
    # (was a bug: SymbolNotFoundError, an AttributeError, so hasattr() said "no such symbol")
    p = veo.VeoProc(0)
    try:
        k = K(p.load_library(rel_so))
        c = p.open_context()
        with pytest.raises(veo.VeoException):
            k.segv(c).wait_result()
        for lookup in (lambda: k.lib.find_function("rel_checksum"),     # not cached yet
                       lambda: k.lib.get_symbol("rel_proc_tag")):
            with pytest.raises(veo.ProcDeadError):
                lookup()
    finally:
        p.destroy()


def test_sync_killed_helper_fails_all_queued_requests(rel_so):
    p = veo.VeoProc(0)
    other = veo.VeoProc(1)
    try:
        k = K(p.load_library(rel_so))
        ok = K(other.load_library(rel_so))
        oc = other.open_context()
        ctxs = [p.open_context() for _ in range(3)]
        reqs = []
        for c in ctxs:
            reqs.append(k.sleep_ms(c, 10_000))
            reqs += [k.add(c, i, i) for i in range(20)]
        pid = p.helper_pid
        time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        for r in reqs:
            with pytest.raises((veo.ProcDeadError, veo.VeoException)):
                r.wait_result()
        assert time.monotonic() - t0 < 3.0
        with pytest.raises(veo.ProcDeadError):
            k.add(ctxs[0], 1, 1)
        with pytest.raises(veo.ProcDeadError):
            p.alloc_mem(8)
        assert ok.add(oc, 1, 2).wait_result() == 3
        p.destroy()
        assert wait_gone([pid]) == []
        q = veo.VeoProc(0)                       # a new proc works
        try:
            qc = q.open_context()
            assert K(q.load_library(rel_so)).add(qc, 2, 2).wait_result() == 4
        finally:
            q.destroy()
    finally:
        p.destroy()
        other.destroy()


def test_sync_destroy_with_a_kernel_that_never_returns_on_the_main_context(rel_so, monkeypatch):
    monkeypatch.setenv("VEO_EMU_EXIT_TIMEOUT", "1")
    p = veo.VeoProc(0)
    try:
        k = K(p.load_library(rel_so))
        c1 = p.open_context()                      # the main context
        r = k.never(c1)
        queued = k.add(c1, 1, 2)
        time.sleep(0.05)
        with pytest.raises(veo.Unfinished):
            r.peek_result()
        pid = p.helper_pid
        t0 = time.monotonic()
        p.destroy()                                # kills the helper after the exit timeout
        assert time.monotonic() - t0 < 10
        assert wait_gone([pid]) == []
        for req in (r, queued):
            with pytest.raises(veo.ClosedError):
                req.wait_result()
    finally:
        p.destroy()


def test_sync_destroy_with_a_kernel_that_never_returns_on_another_context(rel_so, tmp_path):
    code = f"""
    import time, aioveo as veo
    p = veo.VeoProc(0)
    lib = p.load_library({rel_so!r})
    never = lib.find_function("long rel_never_returns(void)")
    p.open_context()
    c2 = p.open_context()
    r = never(c2)
    time.sleep(0.05)
    p.destroy()
    print("destroyed", flush=True)
    """
    # (was a bug: destroy() closed every context first, and veo_context_close
    # waits without a timeout, so it hung forever)
    try:
        r, elapsed = run_python(code, tmp_path, {"VEO_EMU_EXIT_TIMEOUT": "1"}, timeout=8)
    except subprocess.TimeoutExpired:
        pytest.fail("VeoProc.destroy() did not return within 8 s")
    assert r.returncode == 0 and "destroyed" in r.stdout, r.stderr


# ---- 1. faults: asyncio ------------------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.parametrize("kernel,args,sig", FAULTS, ids=[f[0] for f in FAULTS])
async def test_async_fault_kills_only_its_proc(rel_so, kernel, args, sig):
    async with veo.open_proc(0) as good, veo.open_proc(0) as bad:
        kg = K(await good.load_library(rel_so))
        kb = K(await bad.load_library(rel_so))
        gctx = await good.open_context()
        c1 = await bad.open_context()
        c2 = await bad.open_context()
        pid = bad.sync.helper_pid
        pending = [asyncio.ensure_future(c2.call(kb.sleep_ms, 5000)) for _ in range(3)]
        await asyncio.sleep(0.02)
        t0 = time.monotonic()
        with pytest.raises(veo.VeoException) as ei:
            await c1.call(getattr(kb, kernel), *args)
        assert type(ei.value) is veo.VeoException and ei.value.signal == sig
        for f in pending:
            with pytest.raises(veo.ProcDeadError):
                await f
        assert time.monotonic() - t0 < 3.0
        assert c1.in_flight == 0 and c2.in_flight == 0
        with pytest.raises(veo.ProcDeadError):
            await c1.call(kb.add, 1, 2)
        with pytest.raises(veo.ProcDeadError):
            await c2.write_mem(0x1000, b"x")
        with pytest.raises(veo.ProcDeadError):
            await bad.alloc_mem(8)
        with pytest.raises(veo.ProcDeadError):
            await bad.load_library(rel_so)
        with pytest.raises(veo.ProcDeadError):
            await bad.open_context()
        assert await gctx.call(kg.add, 20, 22) == 42
        t0 = time.monotonic()
        await bad.close()
        assert time.monotonic() - t0 < 3.0
        assert bad.closed and wait_gone([pid]) == []
        with pytest.raises(veo.ClosedError):
            await c1.call(kb.add, 1, 2)
        with pytest.raises(veo.ClosedError):
            await bad.alloc_mem(8)
    async with veo.open_proc(0) as again, again.open_context() as ctx:
        assert await ctx.call(K(await again.load_library(rel_so)).add, 1, 1) == 2


@pytest.mark.asyncio
async def test_async_killed_helper_fails_all_queued_requests(rel_so):
    async with veo.open_proc(1) as good:
        kg = K(await good.load_library(rel_so))
        gctx = await good.open_context()
        bad = await veo.open_proc(0)
        kb = K(await bad.load_library(rel_so))
        ctxs = [await bad.open_context() for _ in range(4)]
        futs = []
        for c in ctxs:
            futs.append(await c.submit(kb.sleep_ms, 10_000))
            futs += [await c.submit(kb.add, i, i) for i in range(50)]
        tasks = [asyncio.ensure_future(c.call(kb.tagged, 1)) for c in ctxs for _ in range(10)]
        await asyncio.sleep(0.05)
        pid = bad.sync.helper_pid
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(*futs, *tasks, return_exceptions=True), 5)
        assert time.monotonic() - t0 < 3.0
        assert all(isinstance(r, (veo.ProcDeadError, veo.VeoException)) for r in results), \
            {type(r).__name__ for r in results}
        assert all(c.in_flight == 0 for c in ctxs)
        with pytest.raises(veo.ProcDeadError):
            await ctxs[0].call(kb.add, 1, 1)
        assert await gctx.call(kg.add, 1, 2) == 3
        await bad.close()
        assert wait_gone([pid]) == []
        async with veo.open_proc(0) as fresh, fresh.open_context() as fc:
            assert await fc.call(K(await fresh.load_library(rel_so)).add, 3, 4) == 7


@pytest.mark.asyncio
@pytest.mark.parametrize("kernel", ["never", "spin"])
async def test_async_timeout_on_a_kernel_that_never_returns(rel_so, kernel):
    proc = await veo.open_proc(0)
    try:
        k = K(await proc.load_library(rel_so))
        await proc.open_context()                  # the main context stays free
        ctx = await proc.open_context()
        pid = proc.sync.helper_pid
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await ctx.call(getattr(k, kernel))
        assert time.monotonic() - t0 < 1.0
        assert ctx.in_flight == 1                  # the VE is still running it
        queued = await ctx.submit(k.add, 1, 2)     # behind the hung kernel
        t0 = time.monotonic()
        await proc.close(cancel=True)
        assert time.monotonic() - t0 < 5.0
        assert proc.closed and wait_gone([pid]) == []
        with pytest.raises(veo.VeoError):
            await asyncio.wait_for(queued, 5)
    finally:
        await proc.close(cancel=True)


# ---- 1. memory exhaustion ----------------------------------------------------------
def test_allocation_larger_than_the_node(rel_so):
    node_mem = veo.emulator_info()["node_memory"]
    p = veo.VeoProc(0)
    try:
        for size in (node_mem + 1, node_mem * 2, 2**63):
            with pytest.raises(veo.VeoError, match="cannot allocate") as ei:
                p.alloc_mem(size)
            assert type(ei.value) is veo.VeoError    # not ProcDeadError: the proc lives
        with pytest.raises(OverflowError):
            p.alloc_mem(2**64)
        k = K(p.load_library(rel_so))
        c = p.open_context()
        assert k.add(c, 1, 2).wait_result() == 3
        p.free_mem(p.alloc_mem(4096))
    finally:
        p.destroy()


@pytest.mark.asyncio
async def test_async_allocation_larger_than_the_node(rel_so):
    node_mem = veo.emulator_info()["node_memory"]
    async with veo.open_proc(0) as proc, proc.open_context() as ctx:
        with pytest.raises(veo.VeoError, match="cannot allocate") as ei:
            await proc.alloc_mem(node_mem + 1)
        # out of memory, from the pool: the proc is fine (not dead, not closed)
        assert type(ei.value) is veo.VEOutOfMemoryError
        assert ei.value.requested == node_mem + 1
        with pytest.raises(veo.VeoError, match="cannot allocate"):
            await ctx.alloc_mem(node_mem * 4)
        arr = await ctx.to_ve(np.arange(10.0))
        np.testing.assert_array_equal(await ctx.from_ve(arr), np.arange(10.0))
        await arr.free()
        assert await ctx.call(K(await proc.load_library(rel_so)).add, 2, 2) == 4


def test_fill_the_node_then_free_then_allocate_again(rel_so, monkeypatch):
    monkeypatch.setenv("VEO_EMU_NODE_MEMORY", "32M")
    assert veo.emulator_info()["node_memory"] == 32 << 20
    p = veo.VeoProc(0)
    try:
        chunk = 1 << 20
        for _round in range(2):
            ptrs = []
            with pytest.raises(veo.VeoError, match="cannot allocate") as ei:
                while len(ptrs) < 1000:
                    ptrs.append(p.alloc_mem(chunk))
            assert type(ei.value) is veo.VeoError
            assert len(ptrs) == 32                   # the whole node, and not a byte more
            assert len({x.addr for x in ptrs}) == 32
            # the full proc still transfers and calls
            p.write_mem(ptrs[-1], b"\x5a" * chunk)
            out = bytearray(chunk)
            p.read_mem(out, ptrs[-1])
            assert out == b"\x5a" * chunk
            for x in ptrs:
                p.free_mem(x)
            big = p.alloc_mem(32 << 20)              # freed chunks coalesced into one
            p.free_mem(big)
        k = K(p.load_library(rel_so))
        assert k.add(p.open_context(), 5, 5).wait_result() == 10
    finally:
        p.destroy()


@pytest.mark.asyncio
async def test_async_fill_the_node_then_free(rel_so, monkeypatch):
    monkeypatch.setenv("VEO_EMU_NODE_MEMORY", "16M")
    async with veo.open_proc(0) as proc, proc.open_context() as ctx:
        results = await asyncio.gather(*(proc.alloc_mem(1 << 20) for _ in range(24)),
                                       return_exceptions=True)
        ptrs = [r for r in results if isinstance(r, veo.VEMemPtr)]
        errors = [r for r in results if not isinstance(r, veo.VEMemPtr)]
        assert len(ptrs) == 16 and len(errors) == 8
        assert all(type(e) is veo.VEOutOfMemoryError for e in errors)
        await asyncio.gather(*(ctx.free_mem(x) for x in ptrs))
        arr = await ctx.to_ve(np.ones(2 << 20, np.uint8))   # 2 MiB fits again
        await arr.free()
        assert await ctx.call(K(await proc.load_library(rel_so)).add, 1, 1) == 2


# ---- 1. the host dies, the loop closes, the interpreter exits -----------------------
HOST_SYNC = """
import sys, time, aioveo as veo
procs = [veo.VeoProc(n) for n in (0, 1, 2)]
for p in procs:
    lib = p.load_library(sys.argv[1])
    sl = lib.find_function("long rel_sleep_ms(long)")
    for c in [p.open_context() for _ in range(2)]:
        reqs = [sl(c, 100000) for _ in range(3)]
print(*[p.helper_pid for p in procs], flush=True)
time.sleep(600)
"""

HOST_ASYNC = """
import asyncio, sys, aioveo as veo
async def main():
    procs = [await veo.open_proc(n) for n in (0, 1)]
    futs = []
    for p in procs:
        lib = await p.load_library(sys.argv[1])
        sl = lib.find_function("long rel_sleep_ms(long)")
        ctxs = [await p.open_context() for _ in range(2)]  # open first: opening a context
        for c in ctxs:                                        # syncs the main one
            futs += [await c.submit(sl, 100000) for _ in range(3)]
    print(*[p.sync.helper_pid for p in procs], flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


@pytest.mark.parametrize("code", [HOST_SYNC, HOST_ASYNC], ids=["sync", "async"])
def test_host_sigkilled_leaves_no_helper(rel_so, tmp_path, code):
    child = subprocess.Popen([sys.executable, "-c", code, rel_so], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready, "the child printed no helper pids within 30 s"
        line = child.stdout.readline()
        pids = [int(x) for x in line.split()]
        assert len(pids) >= 2, (line, child.stderr.read() if child.poll() is not None else "")
        assert not any(process_gone(p) for p in pids)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert child.returncode == -signal.SIGKILL
        assert wait_gone(pids, 5.0) == [], "helpers outlived their host"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()


def test_interpreter_exit_with_threads_blocked_in_wait_result(rel_so, tmp_path):
    code = f"""
    import threading, time, aioveo as veo
    procs = [veo.VeoProc(n) for n in (0, 1)]
    for p in procs:
        lib = p.load_library({rel_so!r})
        never = lib.find_function("long rel_never_returns(void)")
        spin = lib.find_function("long rel_spin(void)")
        sl = lib.find_function("long rel_sleep_ms(long)")
        c1, c2, c3 = p.open_context(), p.open_context(), p.open_context()
        for r in (never(c1), spin(c2), sl(c3, 100000)):
            threading.Thread(target=r.wait_result, daemon=True).start()
        dropped = [sl(c3, 1) for _ in range(20)]   # dropped requests, never collected
    time.sleep(0.1)
    print("bye", flush=True)
    """
    r, elapsed = run_python(code, tmp_path)
    assert_clean_exit(r, elapsed)
    assert r.stdout.strip() == "bye"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_asyncio_run_returns_with_procs_and_pending_requests(rel_so, tmp_path, loop):
    code = f"""
    import asyncio, aioveo as veo
    if {loop!r} == "uvloop":
        import uvloop
        new_loop = uvloop.new_event_loop
    else:
        new_loop = asyncio.new_event_loop
    async def main():
        procs = [await veo.open_proc(n) for n in (0, 1)]
        for p in procs:
            lib = await p.load_library({rel_so!r})
            never = lib.find_function("long rel_never_returns(void)")
            sl = lib.find_function("long rel_sleep_ms(long)")
            await p.open_context()
            c1, c2 = await p.open_context(), await p.open_context()
            asyncio.ensure_future(c1.call(never))            # a task awaiting forever
            futs = [await c2.submit(sl, 100000) for _ in range(5)]
            asyncio.ensure_future(c2.map(sl, [(1,)] * 100))
        await asyncio.sleep(0.1)
        print("main done", flush=True)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(main())
    print("loop closed", flush=True)
    """
    r, elapsed = run_python(code, tmp_path)
    assert_clean_exit(r, elapsed)
    assert r.stdout.split("\n")[:2] == ["main done", "loop closed"]


def test_loop_closed_abruptly_with_tasks_waiting(rel_so, tmp_path):
    # loop.close() without cancelling its tasks; then a second loop reuses nothing.
    code = f"""
    import asyncio, gc, aioveo as veo
    loop = asyncio.new_event_loop()
    async def start():
        p = await veo.open_proc(0)
        lib = await p.load_library({rel_so!r})
        sl = lib.find_function("long rel_sleep_ms(long)")
        never = lib.find_function("long rel_never_returns(void)")
        await p.open_context()
        c = await p.open_context()
        c2 = await p.open_context()
        tasks = [asyncio.ensure_future(c.call(sl, 100000)) for _ in range(4)]
        tasks.append(asyncio.ensure_future(c2.call(never)))
        await asyncio.sleep(0.05)
        return p, tasks
    p, tasks = loop.run_until_complete(start())
    loop.close()
    del tasks
    gc.collect()
    async def again():          # a new loop works while the old proc is busy
        q = await veo.open_proc(1)
        lib = await q.load_library({rel_so!r})
        add = lib.find_function("long rel_add(long, long)")
        async with q.open_context() as c:
            r = await c.call(add, 2, 3)
        await q.close()
        return r
    print(asyncio.run(again()), flush=True)
    """
    r, elapsed = run_python(code, tmp_path)
    assert_clean_exit(r, elapsed)
    assert r.stdout.strip() == "5"


# ---- 2. bad input --------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(rel_so, core_so):
    """One proc with rel_kernels and core_kernels loaded and a context."""
    p = veo.VeoProc(0)
    k = K(p.load_library(rel_so))
    core = p.load_library(core_so)
    c = p.open_context()
    yield p, k, core, c
    p.destroy()


def assert_usable(env):
    p, k, _core, c = env
    assert k.add(c, 40, 2).wait_result() == 42
    ptr = p.alloc_mem(16)
    p.write_mem(ptr, b"0123456789abcdef")
    out = bytearray(16)
    p.read_mem(out, ptr)
    assert out == b"0123456789abcdef"
    p.free_mem(ptr)


def test_argument_count(env):
    p, k, _core, c = env
    with pytest.raises(TypeError, match=r"rel_nop\(\) takes 0 arguments \(1 given\)"):
        k.nop(c, 1)
    with pytest.raises(TypeError, match=r"takes 2 arguments \(3 given\)"):
        k.add(c, 1, 2, 3)
    with pytest.raises(TypeError, match=r"takes 13 arguments \(0 given\)"):
        k.echo_all(c)
    with pytest.raises(TypeError):
        k.add()                                   # no context at all
    with pytest.raises(TypeError):
        k.add(None, 1, 2)
    with pytest.raises(TypeError):
        k.add("ctx", 1, 2)
    assert_usable(env)


@pytest.mark.parametrize("value", [None, "1", b"1", 1.0, 1.5, [1], object(), np.float64(2.0),
                                   complex(1, 0)])
def test_integer_argument_of_the_wrong_type(env, value):
    p, k, _core, c = env
    with pytest.raises(TypeError, match=r"rel_add\(\) argument 2 \(long\) must be an int"):
        k.add(c, 1, value)
    assert_usable(env)


@pytest.mark.parametrize("value", [None, "1.0", b"x", [1.0], complex(1, 1), object()])
def test_double_argument_of_the_wrong_type(env, value):
    p, k, _core, c = env
    with pytest.raises(TypeError, match=r"argument 1 \(double\) must be a number"):
        k.fpe(c, value)
    with pytest.raises(OverflowError):
        k.fpe(c, 10**400)
    assert_usable(env)


def test_argument_that_belongs_to_another_proc(env):
    p, k, core, c = env
    other = veo.VeoProc(1)
    try:
        optr = other.alloc_mem(64)
        ve_malloc_fill = core.find_function("void fill(char *p, long n, int c)")
        with pytest.raises(ValueError, match="another proc"):
            ve_malloc_fill(c, optr, 64, 1)
        with pytest.raises(ValueError, match="another proc"):
            p.write_mem(optr, bytearray(64))
        with pytest.raises(ValueError, match="another proc"):
            p.free_mem(optr)
        with pytest.raises(ValueError, match="another proc"):
            c.async_write_mem(optr, bytearray(64))
        with pytest.raises(ValueError, match="another proc"):
            c.async_read_mem(bytearray(64), optr)
        oc = other.open_context()
        with pytest.raises(ValueError, match="another proc"):
            k.add(oc, 1, 2)                      # a function of this proc on another's context
        other.write_mem(optr, b"x" * 64)         # the other proc is fine too
    finally:
        other.destroy()
    assert_usable(env)


def test_buffers_too_small_read_only_or_strided(env):
    p, k, _core, c = env
    ptr = p.alloc_mem(256)
    try:
        ro = np.zeros(32, np.uint8)
        ro.flags.writeable = False
        strided = np.zeros(64, np.uint8)[::2]
        for dst in (b"x" * 32, memoryview(bytearray(32)).toreadonly(), ro):
            with pytest.raises(BufferError, match="writable"):
                p.read_mem(dst, ptr, 32)
            with pytest.raises(BufferError, match="writable"):
                c.async_read_mem(dst, ptr, 32)
        for buf, writable in ((strided, True), (strided, False)):
            with pytest.raises(BufferError, match="contiguous"):
                (p.read_mem if writable else p.write_mem)(*((buf, ptr) if writable else (ptr, buf)))
        with pytest.raises(BufferError, match="contiguous"):
            c.async_write_mem(ptr, strided)
        with pytest.raises(TypeError, match="buffer"):
            p.write_mem(ptr, "text is not a buffer")
        with pytest.raises(TypeError, match="buffer"):
            p.read_mem(12345, ptr, 8)
        # smaller than the size
        with pytest.raises(ValueError, match="fewer than size"):
            p.read_mem(bytearray(8), ptr, 16)
        with pytest.raises(ValueError, match="fewer than size"):
            c.async_read_mem(bytearray(8), ptr, 16)
        with pytest.raises(ValueError, match="fewer than size"):
            c.async_write_mem(ptr, bytearray(8), 9)
        with pytest.raises(ValueError, match="fewer than size"):
            OnStack(np.zeros(2), 17)
        # larger than the VE allocation
        with pytest.raises(ValueError, match="256-byte VE allocation"):
            p.read_mem(bytearray(512), ptr)
        with pytest.raises(ValueError, match="VE allocation"):
            c.async_write_mem(ptr + 200, bytearray(64))
        with pytest.raises(ValueError, match="outside"):
            ptr + 257
        with pytest.raises(ValueError, match="outside"):
            ptr + (-1)
        # negative sizes
        for op in (lambda: p.read_mem(bytearray(8), ptr, -1),
                   lambda: c.async_read_mem(bytearray(8), ptr, -8),
                   lambda: c.async_write_mem(ptr, bytearray(8), -1)):
            with pytest.raises(ValueError, match="size must be >= 0"):
                op()
        for op in (lambda: p.alloc_mem(-1), lambda: p.alloc_hmem(-1), lambda: OnStack(bytearray(8), -1)):
            with pytest.raises(ValueError, match="> 0"):
                op()
        # addresses that are not addresses
        with pytest.raises(OverflowError):
            p.read_mem(bytearray(8), -8, 8)
        with pytest.raises(OverflowError):
            p.write_mem(2**64, b"x")
        with pytest.raises(veo.VeoError):
            p.write_mem(0x10, b"x" * 8)          # unmapped
        # nothing was written by the failed calls, and the context still works
        out = bytearray(256)
        p.write_mem(ptr, bytes(256))
        assert c.async_read_mem(out, ptr).wait_result() == 0 and out == bytes(256)
    finally:
        p.free_mem(ptr)
    assert_usable(env)


def test_out_stack_buffer_must_be_writable(env):
    p, k, _core, c = env
    with pytest.raises(BufferError, match="writable"):
        OnStack(memoryview(bytearray(8)).toreadonly(), inout=VEO_INTENT_OUT)
    with pytest.raises(BufferError):
        OnStack(np.zeros((4, 4))[:, 1], inout=VEO_INTENT_OUT)
    with pytest.raises(ValueError, match="empty"):
        OnStack(bytearray(0))
    assert_usable(env)


def test_freed_address_twice_and_stale_pointer(env):
    p, k, core, c = env
    ptr = p.alloc_mem(64)
    p.free_mem(ptr)
    assert ptr.freed
    with pytest.raises(veo.ClosedError, match="freed"):
        p.free_mem(ptr)                           # the same VEMemPtr twice
    raw = p.alloc_mem(64)
    p.free_mem(raw.addr)                          # freed through its int address
    with pytest.raises(veo.VeoError) as ei:
        p.free_mem(raw.addr)                      # the emulator knows it is not allocated
    assert type(ei.value) is veo.VeoError
    other = p.alloc_mem(64)
    with pytest.raises(veo.VeoError):
        p.free_mem(other.addr + 8)                # not the start of an allocation
    p.free_mem(other)
    assert_usable(env)


def test_transfer_to_a_freed_address_is_rejected(env):
    # (was a bug: a freed VEMemPtr was silently read and written)
    p, k, core, c = env
    ptr = p.alloc_mem(1 << 16)
    p.free_mem(ptr)
    fill = core.find_function("void fill(char *p, long n, int c)")
    for op in (lambda: p.write_mem(ptr, b"x" * 64), lambda: p.read_mem(bytearray(64), ptr),
               lambda: c.async_write_mem(ptr, b"x" * 64),
               lambda: c.async_read_mem(bytearray(64), ptr),
               lambda: fill(c, ptr, 64, 1)):
        with pytest.raises(veo.ClosedError, match="freed"):
            op()
    assert_usable(env)


def test_transfer_through_a_derived_pointer_to_freed_memory_is_rejected(env):
    p, k, core, c = env
    ptr = p.alloc_mem(1 << 16)
    view = ptr + 128
    p.free_mem(ptr)
    for op in (lambda: p.write_mem(ptr + 8, b"x"), lambda: p.write_mem(view, b"x"),
               lambda: p.read_mem(bytearray(8), ptr.addr)):
        with pytest.raises(veo.VeoError):
            op()


def test_closed_context(env, rel_so):
    p, k, _core, _c = env
    c = p.open_context()
    r = k.add(c, 1, 2)
    p.close_context(c)
    p.close_context(c)                            # closing twice is harmless
    for op in (lambda: k.add(c, 1, 2), lambda: c.async_read_mem(bytearray(8), 0x1000, 8),
               lambda: c.async_write_mem(0x1000, b"x"), lambda: c.context_sync(),
               lambda: r.wait_result(), lambda: r.peek_result()):
        with pytest.raises(veo.ClosedError):
            op()
    assert c.state() == veo.VEO_STATE_EXIT
    assert_usable(env)


def test_destroyed_proc(rel_so):
    p = veo.VeoProc(0)
    lib = p.load_library(rel_so)
    k = K(lib)
    c = p.open_context()
    ptr = p.alloc_mem(64)
    p.destroy()
    ops = [lambda: p.alloc_mem(8), lambda: p.free_mem(ptr), lambda: p.write_mem(ptr, b"x"),
           lambda: p.read_mem(bytearray(1), ptr), lambda: p.alloc_hmem(8),
           lambda: p.open_context(), lambda: p.load_library(rel_so),
           lambda: p.unload_library(lib), lambda: p.static_library(),
           lambda: p.proc_identifier(), lambda: lib.get_symbol("rel_proc_tag"),
           lambda: lib.find_function("rel_add"), lambda: k.add(c, 1, 2),
           lambda: c.async_read_mem(bytearray(8), ptr), lambda: c.context_sync()]
    for op in ops:
        with pytest.raises(veo.ClosedError):
            op()
    with pytest.raises(TypeError):
        p.close_context(None)
    sync_still_works(rel_so)


@pytest.mark.asyncio
async def test_async_closed_context_and_proc(rel_so):
    proc = await veo.open_proc(0)
    k = K(await proc.load_library(rel_so))
    ctx = await proc.open_context()
    await ctx.close()
    for aw in (lambda: ctx.call(k.add, 1, 2), lambda: ctx.read_mem(bytearray(8), 0x1000),
               lambda: ctx.write_mem(0x1000, b"x"), lambda: ctx.map(k.add, [(1, 2)]),
               lambda: ctx.submit(k.nop)):
        with pytest.raises(veo.ClosedError):
            await aw()
    with pytest.raises(veo.ClosedError):
        ctx.submit_nowait(k.nop)
    ctx2 = await proc.open_context()
    assert await ctx2.call(k.add, 1, 2) == 3
    await proc.close()
    await proc.close()                           # idempotent
    for aw in (lambda: proc.alloc_mem(8), lambda: proc.load_library(rel_so),
               lambda: proc.open_context(), lambda: proc.read_mem(bytearray(8), 0x1000),
               lambda: proc.write_mem(0x1000, b"x"), lambda: ctx2.call(k.add, 1, 2),
               lambda: proc.free_mem(0x1000)):
        with pytest.raises(veo.ClosedError):
            await aw()


@pytest.mark.asyncio
async def test_async_bad_input_releases_the_in_flight_slot(rel_so):
    async with veo.open_proc(0) as proc, proc.open_context(max_in_flight=2) as ctx:
        k = K(await proc.load_library(rel_so))
        ptr = await proc.alloc_mem(64)
        ro = np.zeros(8, np.uint8)
        ro.flags.writeable = False
        for _ in range(5):                        # more failures than slots
            with pytest.raises(TypeError):
                await ctx.call(k.add, 1, "2")
            with pytest.raises(TypeError):
                await ctx.call(k.add, 1)
            with pytest.raises(OverflowError):
                await ctx.call(k.add, 2**63, 1)
            with pytest.raises(BufferError):
                await ctx.read_mem(ro, ptr)
            with pytest.raises(ValueError):
                await ctx.write_mem(ptr, bytearray(8), 16)
            with pytest.raises(TypeError):
                ctx.submit_nowait(k.add, None, 1)
            assert ctx.in_flight == 0
        assert await ctx.call(k.add, 1, 2) == 3
        await ctx.free_mem(ptr)


def test_bad_library_paths(env, tmp_path):
    p, k, _core, c = env
    empty = tmp_path / "empty.so"
    empty.write_bytes(b"")
    text = tmp_path / "text.so"
    text.write_text("int main;")
    obj = tmp_path / "rel.o"                       # an ELF object, not a shared object
    subprocess.run(["cc", "-c", "-fPIC", "-x", "c", "-", "-o", str(obj)], input="int x;",
                   text=True, check=True)
    (tmp_path / "dir.so").mkdir()
    with pytest.raises(veo.VeoError, match="no such file"):
        p.load_library(tmp_path / "missing.so")
    for bad in (empty, text, obj, tmp_path / "dir.so"):
        with pytest.raises(veo.VeoError, match=os.path.basename(bad)) as ei:
            p.load_library(bad)
        assert type(ei.value) is veo.VeoError
    with pytest.raises(ValueError, match="NUL"):
        p.load_library(str(text) + "\0x")
    with pytest.raises(TypeError):
        p.load_library(12345)
    with pytest.raises(TypeError):
        p.load_library(None)
    assert not any(str(bad) in p.lib for bad in (empty, text, obj))
    with pytest.raises(ValueError, match="not a library"):
        p.unload_library(str(text))
    assert_usable(env)


@pytest.mark.asyncio
async def test_async_bad_library_path(rel_so, tmp_path):
    (tmp_path / "junk.so").write_bytes(b"\x7fELF garbage")
    async with veo.open_proc(0) as proc, proc.open_context() as ctx:
        with pytest.raises(veo.VeoError, match="no such file"):
            await proc.load_library(tmp_path / "nope.so")
        with pytest.raises(veo.VeoError, match="junk.so"):
            await proc.load_library(tmp_path / "junk.so")
        assert await ctx.call(K(await proc.load_library(rel_so)).add, 1, 2) == 3


def test_missing_symbols(env):
    p, k, core, c = env
    for name in ("rel_does_not_exist", "long rel_does_not_exist(long)", ""):
        with pytest.raises(veo.SymbolNotFoundError) as ei:
            k.lib.find_function(name)
        assert isinstance(ei.value, AttributeError)
    with pytest.raises(veo.SymbolNotFoundError, match="rel_no_global"):
        k.lib.get_symbol("rel_no_global")
    assert getattr(k.lib, "rel_nothing_here", None) is None
    assert "rel_does_not_exist" not in k.lib.func
    with pytest.raises(veo.SymbolNotFoundError):
        p.static_library().find_function("rel_add")  # not linked into the helper
    assert_usable(env)


def test_symbol_name_with_nul_is_rejected(env):
    # (was a bug: the name was silently truncated at the NUL and rel_add found)
    p, k, _core, c = env
    for lookup in (lambda: k.lib.find_function("rel_add\0junk"),
                   lambda: k.lib.find_function("long rel_add\0junk(long, long)"),
                   lambda: k.lib.get_symbol("rel_proc_tag\0x")):
        with pytest.raises(ValueError, match=r"NUL|\\x00"):
            lookup()
    assert "rel_add\0junk" not in k.lib.func
    assert_usable(env)


BAD_PROTOTYPES = ["long f(long, long", "long (long)", "long f(long,, long)", "struct x f(long)",
                  "long f(void, long)", "long f(...)", "", "(", "long f(long x y)",
                  "unsigned unsigned f()", "long f(int x) extra", "long long long f()",
                  "long double f(void)", "f()", "long f(void *, )", "long f(int (*)(int))"]
BAD_TYPES = ["lnog", "", "const", "struct s", "long[2]", "long double", "__int128",
             "int (*)(int)", "unsigned unsigned", "double double", "void void", "*"]


@pytest.mark.parametrize("proto", BAD_PROTOTYPES)
def test_malformed_prototypes(env, proto):
    p, k, _core, c = env
    with pytest.raises(veo.CTypeError):
        k.lib.find_function(proto if "(" in proto else proto + "(")
    assert_usable(env)


def test_malformed_type_strings(env):
    p, k, core, c = env
    f = core.find_function("echo_i64")
    for t in BAD_TYPES:
        with pytest.raises(veo.CTypeError):
            f.args_type(t)
        with pytest.raises(veo.CTypeError):
            f.ret_type(t)
    for t in (5, None, 1.5, ["long"]):
        with pytest.raises(veo.CTypeError, match="must be a str"):
            f.args_type(t)
    with pytest.raises(ValueError, match="cannot be void"):
        f.args_type("long", "void")
    with pytest.raises(ValueError, match="maximum"):
        f.args_type(*["long"] * 257)
    # the failed declarations changed nothing
    f.args_type("int64_t")
    f.ret_type("int64_t")
    assert f(c, -5).wait_result() == -5
    assert_usable(env)


_type_text = st.lists(st.sampled_from(list("abcdefghijlnorstuvx_ 0123456789*()[],.;&\0") +
                                     ["long", "int", "unsigned", "double", "void", "const",
                                      "struct", "char", "*", "(", ")", ",", "...", " "]),
                      max_size=16).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_type_text)
def test_type_parser_fuzz_raises_only_ctypeerror(text):
    from aioveo._ctype import parse_prototype, parse_type
    for parse in (parse_type, parse_prototype):
        try:
            parse(text)
        except veo.CTypeError:
            pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(_type_text)
def test_find_function_fuzz(env, text):
    p, k, _core, c = env
    try:
        k.lib.find_function("long rel_add(" + text + ")")
    except (veo.CTypeError, ValueError):
        pass
    try:
        k.lib.find_function(text + " rel_add(long, long)")
    except (veo.CTypeError, veo.SymbolNotFoundError, ValueError):
        pass
    assert k.add(c, 1, 2).wait_result() == 3


# ---- 2. type conversions: properties ------------------------------------------------
INT_TYPES = {  # C type -> (echo suffix, min, max)
    "int8_t": ("i8", -2**7, 2**7 - 1), "uint8_t": ("u8", 0, 2**8 - 1),
    "int16_t": ("i16", -2**15, 2**15 - 1), "uint16_t": ("u16", 0, 2**16 - 1),
    "int32_t": ("i32", -2**31, 2**31 - 1), "uint32_t": ("u32", 0, 2**32 - 1),
    "int64_t": ("i64", -2**63, 2**63 - 1), "uint64_t": ("u64", 0, 2**64 - 1),
}
ALIASES = {"char": "int8_t", "signed char": "int8_t", "unsigned char": "uint8_t",
           "short": "int16_t", "unsigned short": "uint16_t", "int": "int32_t",
           "unsigned": "uint32_t", "long": "int64_t", "long long": "int64_t",
           "unsigned long long": "uint64_t", "size_t": "uint64_t", "ssize_t": "int64_t"}


def _int_and_type(draw_types=tuple(INT_TYPES)):
    return st.sampled_from(draw_types).flatmap(
        lambda t: st.tuples(st.just(t), st.integers(INT_TYPES[t][1], INT_TYPES[t][2])))


HYP = settings(max_examples=80, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@HYP
@given(_int_and_type())
def test_every_integer_type_round_trips(env, tv):
    p, k, core, c = env
    ctype, v = tv
    suffix = INT_TYPES[ctype][0]
    f = core.find_function(f"{ctype} echo_{suffix}({ctype} x)")
    assert f(c, v).wait_result() == v


@HYP
@given(st.sampled_from(sorted(ALIASES)), st.data())
def test_integer_aliases_round_trip(env, alias, data):
    p, k, core, c = env
    ctype = ALIASES[alias]
    suffix, lo, hi = INT_TYPES[ctype]
    v = data.draw(st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0])))
    f = core.find_function(f"{alias} echo_{suffix}({alias} x)")
    assert f(c, v).wait_result() == v


@HYP
@given(st.sampled_from(sorted(INT_TYPES)), st.data())
def test_out_of_range_integers_are_rejected(env, ctype, data):
    p, k, core, c = env
    suffix, lo, hi = INT_TYPES[ctype]
    v = data.draw(st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1)))
    f = core.find_function(f"{ctype} echo_{suffix}({ctype} x)")
    with pytest.raises(OverflowError, match=f"argument 1 .*{v}.* out of range"):
        f(c, v)
    assert f(c, lo).wait_result() == lo         # the next call is fine


def _bits64(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


@HYP
@given(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True))
def test_double_round_trips_bit_exactly(env, x):
    p, k, core, c = env
    r = core.find_function("double echo_double(double)")(c, x).wait_result()
    if math.isnan(x):
        assert math.isnan(r)
    else:
        assert _bits64(r) == _bits64(x)           # -0.0, subnormals, infinities included


@HYP
@given(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True))
def test_float_rounds_like_c(env, x):
    p, k, core, c = env
    f = core.find_function("float echo_float(float)")
    if math.isfinite(x) and abs(x) > float(np.finfo(np.float32).max):
        with pytest.raises(OverflowError, match="float"):
            f(c, x)
        return
    r = f(c, x).wait_result()
    expect = float(np.float32(x))
    if math.isnan(x):
        assert math.isnan(r)
    else:
        assert _bits64(r) == _bits64(expect)


@HYP
@given(st.integers(0, 2**64 - 1))
def test_pointer_round_trip(env, v):
    p, k, core, c = env
    r = core.find_function("void *echo_ptr(void *)")(c, v).wait_result()
    assert isinstance(r, veo.VEMemPtr) and r.addr == v and r.proc is p


_ECHO_ALL = struct.Struct("<qQqQqQqQffdqd")


@HYP
@given(st.tuples(
    st.integers(-2**7, 2**7 - 1), st.integers(0, 2**8 - 1), st.integers(-2**15, 2**15 - 1),
    st.integers(0, 2**16 - 1), st.integers(-2**31, 2**31 - 1), st.integers(0, 2**32 - 1),
    st.integers(-2**63, 2**63 - 1), st.integers(0, 2**64 - 1),
    st.floats(width=32, allow_nan=False), st.floats(allow_nan=False),
    st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False)))
def test_thirteen_mixed_arguments_land_in_place(env, args):
    """Each argument reaches the kernel unchanged, past every register slot."""
    p, k, core, c = env
    out = bytearray(_ECHO_ALL.size)
    assert k.echo_all(c, *args, OnStack(out, inout=VEO_INTENT_OUT)).wait_result() == 13
    got = _ECHO_ALL.unpack(out)
    expect = args[:9] + (0.0,) + args[9:]
    for i, (g, e) in enumerate(zip(got, expect)):
        if isinstance(e, float):
            assert _bits64(g) == _bits64(e), (i, g, e)
        else:
            assert g == e, (i, g, e)


@pytest.mark.asyncio
async def test_async_round_trip_of_every_type(core_so):
    rng = np.random.default_rng(7)
    async with veo.open_proc(0) as proc, proc.open_context() as ctx:
        lib = await proc.load_library(core_so)
        calls = []
        for ctype, (suffix, lo, hi) in INT_TYPES.items():
            f = lib.find_function(f"{ctype} echo_{suffix}({ctype} x)")
            values = [lo, hi, 0, lo + 1, hi - 1] + [int(v) for v in
                                                   rng.integers(lo, hi, 20, dtype=np.int64 if hi < 2**63 else np.uint64)]
            calls += [(f, v, v) for v in values]
        fd = lib.find_function("double echo_double(double)")
        ff = lib.find_function("float echo_float(float)")
        for v in [0.0, -0.0, 5e-324, 1.7976931348623157e308, float("inf"), float("-inf")]:
            calls.append((fd, v, v))
        for v in [0.0, 1.5, 1e-45, 3.4028234663852886e38, float("-inf"), 0.1]:
            calls.append((ff, v, float(np.float32(v))))
        futs = [await ctx.submit(f, v) for f, v, _ in calls]
        results = await asyncio.gather(*futs)
        for (f, v, expect), r in zip(calls, results):
            assert r == expect, (f, v, r)
        assert math.isnan(await ctx.call(fd, float("nan")))
