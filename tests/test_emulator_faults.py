"""The emulator as a test bench, seen from Python: every fault kind armed from
the environment (VEO_EMU_FAULTS, as for a program one cannot change) and from
code (aioveo.emulator), observed through the asyncio API; the timing profile
as the Python layer sees it; `python -m aioveo info` listing both."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

import aioveo
from aioveo import emulator
from helpers import declare

pytestmark = pytest.mark.skipif(not aioveo.backend().extensions,
                                reason="needs the emulator's veo_emu_* extensions")


class Kernels:
    def __init__(self, lib):
        self.nop = declare(lib, "nop", [])
        self.add = declare(lib, "add", ["long", "long"])
        self.sleep_ms = declare(lib, "sleep_ms", ["long"])


async def kernels(proc, aio_lib) -> Kernels:
    return Kernels(await proc.load_library(aio_lib))


@pytest.fixture(autouse=True)
def _no_faults_left(monkeypatch):
    monkeypatch.delenv("VEO_EMU_FAULTS", raising=False)
    monkeypatch.delenv("VEO_EMU_PROFILE", raising=False)
    yield
    emulator.clear(None)


def arm(how: str, monkeypatch, spec: str):
    """A function that opens a proc with `spec` armed the one way or the other."""
    async def open_proc(node: int = 0):
        if how == "env":
            monkeypatch.setenv("VEO_EMU_FAULTS", spec)
        try:
            proc = await aioveo.open_proc(node)
        finally:
            monkeypatch.delenv("VEO_EMU_FAULTS", raising=False)
        if how == "code":
            emulator.inject(proc, spec)
        return proc
    return open_proc


HOW = ["env", "code"]


@pytest.mark.asyncio
@pytest.mark.parametrize("how", HOW)
async def test_crash(how, monkeypatch, aio_lib):
    opener = arm(how, monkeypatch, "crash:sym=add,call=2")
    proc = await opener()
    try:
        k = await kernels(proc, aio_lib)
        main = await proc.open_context()
        assert await main.call(k.add, 1, 2) == 3
        assert await main.call(k.nop) == 0                 # another kernel: not counted
        with pytest.raises(aioveo.VeoException) as e:
            await main.call(k.add, 2, 3)
        assert e.value.signal == 11
        assert not proc.sync.alive
    finally:
        await proc.close()
    # off the main context, as AVEO: the VE process died under the call
    proc = await arm(how, monkeypatch, "crash:ctx=1,signal=SIGFPE")()
    try:
        k = await kernels(proc, aio_lib)
        main, other = await proc.open_context(), await proc.open_context()
        assert await main.call(k.add, 1, 1) == 2
        with pytest.raises(aioveo.KernelDiedError):
            await other.call(k.add, 1, 1)
    finally:
        await proc.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", HOW)
async def test_crash_at_a_seeded_rate_is_deterministic(how, monkeypatch, aio_lib):
    async def first_failure(seed: int) -> int:
        proc = await arm(how, monkeypatch, f"crash:rate=0.02,seed={seed}")()
        try:
            k = await kernels(proc, aio_lib)
            ctx = await proc.open_context()
            for i in range(1, 2000):
                try:
                    await ctx.call(k.add, i, 1)
                except aioveo.VeoException:
                    return i
            return -1
        finally:
            await proc.close()
    a, b = await first_failure(3), await first_failure(3)
    assert a == b and a > 0
    assert await first_failure(4) > 0


@pytest.mark.asyncio
@pytest.mark.parametrize("how", HOW)
async def test_hang(how, monkeypatch, aio_lib):
    proc = await arm(how, monkeypatch, "hang:sym=sleep_ms")()
    try:
        k = await kernels(proc, aio_lib)
        ctx = await proc.open_context()
        assert await ctx.call(k.add, 1, 1) == 2
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ctx.call(k.sleep_ms, 1), 0.3)
        assert proc.sync.alive
    finally:
        t0 = time.monotonic()
        await proc.close(cancel=True)      # ends the VE process: the kernel never returns
        assert time.monotonic() - t0 < 10


@pytest.mark.asyncio
@pytest.mark.parametrize("how", HOW)
async def test_delay(how, monkeypatch, aio_lib):
    proc = await arm(how, monkeypatch, "delay:sym=add,for=200ms")()
    try:
        k = await kernels(proc, aio_lib)
        ctx = await proc.open_context()
        t0 = time.monotonic()
        assert await ctx.call(k.add, 2, 2) == 4
        assert time.monotonic() - t0 >= 0.2
        t0 = time.monotonic()
        await ctx.call(k.nop)
        assert time.monotonic() - t0 < 0.15
    finally:
        await proc.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", HOW)
async def test_die_after_calls(how, monkeypatch, aio_lib):
    proc = await arm(how, monkeypatch, "die:after=5")()
    try:
        k = await kernels(proc, aio_lib)
        ctx = await proc.open_context()
        for i in range(5):
            assert await ctx.call(k.add, i, 1) == i + 1     # the 5th completes
        with pytest.raises(aioveo.ProcDeadError):
            for _ in range(100):
                await ctx.call(k.nop)
                await asyncio.sleep(0.01)
    finally:
        await proc.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", HOW)
async def test_die_after_a_time(how, monkeypatch, aio_lib):
    proc = await arm(how, monkeypatch, "die:after=300ms")()
    try:
        k = await kernels(proc, aio_lib)
        ctx = await proc.open_context()
        t0 = time.monotonic()
        with pytest.raises(aioveo.ProcDeadError):
            await ctx.call(k.sleep_ms, 5000)       # in flight when the VE process dies
        assert 0.25 < time.monotonic() - t0 < 4
        assert not proc.sync.alive
    finally:
        await proc.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", HOW)
async def test_nomem(how, monkeypatch, aio_lib):
    proc = await arm(how, monkeypatch, "nomem:above=16M")()
    try:
        ctx = await proc.open_context()
        small = await ctx.alloc_mem(1 << 20)                # the pool grows by small segments
        with pytest.raises(aioveo.VEOutOfMemoryError):
            await ctx.alloc_mem(64 << 20)
        await ctx.free_mem(small)
        with pytest.raises(aioveo.VeoError, match="injected fault 'nomem:above=16M'"):
            proc.sync.alloc_mem(32 << 20)                   # raw VEO memory
        assert proc.sync.alive
    finally:
        await proc.close()
    proc = await arm(how, monkeypatch, "nomem:after=8M")()
    try:
        ptrs = [proc.sync.alloc_mem(1 << 20) for _ in range(8)]
        with pytest.raises(aioveo.VeoError):
            proc.sync.alloc_mem(1 << 20)
        for p in ptrs:
            proc.sync.free_mem(p)
    finally:
        await proc.close()


@pytest.mark.asyncio
async def test_scopes_listing_and_clearing(aio_lib):
    # for every proc created from now on, on node 1 only
    spec = emulator.crash(None, node=1, sym="add", call=1)
    assert spec == "crash:node=1,sym=add,call=1,signal=SIGSEGV"
    assert emulator.faults() == [spec]
    async with aioveo.open_proc(0) as p0, aioveo.open_proc(1) as p1:
        k0, k1 = await kernels(p0, aio_lib), await kernels(p1, aio_lib)
        c0, c1 = await p0.open_context(), await p1.open_context()
        assert await c0.call(k0.add, 1, 1) == 2
        with pytest.raises(aioveo.VeoException):
            await c1.call(k1.add, 1, 1)
        assert emulator.faults(p0) == []
        assert emulator.faults(p1) == [f"{spec}\t(seen 1, fired 1)"]
        # on a live proc: scope checked, listed, cleared
        with pytest.raises(ValueError, match="does not apply to this proc"):
            emulator.inject(p0, "crash:node=3")
        emulator.delay(p0, 0.001, sym="add")
        emulator.nomem(p0.sync, above=1 << 30)
        assert emulator.faults(p0) == ["delay:sym=add,for=1ms\t(seen 0, fired 0)",
                                       "nomem:above=1G\t(seen 0, fired 0)"]
        assert await c0.call(k0.add, 2, 2) == 4
        assert emulator.faults(p0)[0].endswith("(seen 1, fired 1)")
        emulator.clear(p0)
        assert emulator.faults(p0) == []
    emulator.clear()
    assert emulator.faults() == []
    with pytest.raises(aioveo.ClosedError):
        emulator.inject(p0, "crash")
    with pytest.raises(TypeError):
        emulator.inject("proc 0", "crash")
    with pytest.raises(ValueError, match="die: give after_calls or after_seconds"):
        emulator.die(None)


def test_bad_specs_say_what_is_wrong(monkeypatch):
    with pytest.raises(ValueError, match="unknown fault 'boom'"):
        emulator.inject(None, "boom:sym=f")
    with pytest.raises(ValueError, match="for='fast' is not a duration"):
        emulator.inject(None, "delay:for=fast")
    assert emulator.faults() == []
    monkeypatch.setenv("VEO_EMU_FAULTS", "hang:sym=f,call=-1")
    with pytest.raises(ValueError, match="VEO_EMU_FAULTS: hang: bad value '-1' for call"):
        emulator.faults()
    with pytest.raises(aioveo.VeoError, match="VEO_EMU_FAULTS"):
        aioveo.VeoProc(0)


UNCHANGED_PROGRAM = textwrap.dedent("""
    import aioveo, sys
    proc = aioveo.VeoProc(0)
    lib = proc.load_library(sys.argv[1])
    add = lib.find_function("long add(long, long)")
    ctx = proc.open_context()
    done = 0
    try:
        for i in range(10):
            add(ctx, i, 1).wait_result()
            done += 1
    except aioveo.VeoError as e:
        print(f"failed after {done} calls: {type(e).__name__}")
    else:
        print(f"all {done} calls done")
    proc.destroy()
""")


def test_environment_reaches_a_program_that_knows_nothing(tmp_path, aio_lib):
    prog = tmp_path / "prog.py"
    prog.write_text(UNCHANGED_PROGRAM)
    env = dict(os.environ)
    env.pop("VEO_EMU_FAULTS", None)
    ok = subprocess.run([sys.executable, str(prog), aio_lib], env=env, capture_output=True,
                        text=True, timeout=60)
    assert ok.stdout.strip() == "all 10 calls done", ok.stderr
    env["VEO_EMU_FAULTS"] = "crash:sym=add,call=4"
    bad = subprocess.run([sys.executable, str(prog), aio_lib], env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.stdout.strip() == "failed after 3 calls: VeoException", bad.stderr
    assert "injected fault 'crash:sym=add,call=4,signal=SIGSEGV'" in bad.stderr


def test_info_lists_profile_and_faults():
    env = dict(os.environ, AIOVEO_LIBVEO="emulator", VEO_EMU_PROFILE="ve10b",
               VEO_EMU_FAULTS="die:after=2s,node=1; crash:sym=axpy,rate=0.001,seed=9")
    out = subprocess.run([sys.executable, "-m", "aioveo", "info"], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "timing       ve10b: call 5.6 us (pipelined), round trip 10.0 us" in out
    assert "faults       die:node=1,after=2s\n" in out
    assert "crash:sym=axpy,rate=0.001,seed=9,signal=SIGSEGV" in out
    info = json.loads(subprocess.run([sys.executable, "-m", "aioveo", "info", "--json"],
                                     env=env, capture_output=True, text=True, timeout=60,
                                     check=True).stdout)
    assert info["timing_profile"].startswith("ve10b:")
    assert len(info["faults"]) == 2
    env["VEO_EMU_PROFILE"] = "ve77"
    out = subprocess.run([sys.executable, "-m", "aioveo", "info"], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "timing       error: VEO_EMU_PROFILE: no profile 've77'" in out


@pytest.mark.asyncio
async def test_profile_as_python_sees_it(monkeypatch, aio_lib):
    """Under ve10b the VE's costs show through the asyncio API too (loose
    bounds: Python adds its own microseconds; tests/c/profile.c checks the
    figures within 25%)."""
    monkeypatch.setenv("VEO_EMU_PROFILE", "ve10b")
    assert emulator.profile().startswith("ve10b: call 5.6 us")
    async with aioveo.open_proc(0) as proc:
        k = await kernels(proc, aio_lib)
        ctx = await proc.open_context()
        for _ in range(50):
            await ctx.call(k.nop)
        times = []
        for _ in range(101):
            t0 = time.perf_counter()
            await ctx.call(k.nop)
            times.append(time.perf_counter() - t0)
        times.sort()
        assert times[50] >= 9.0e-6                           # a VE round trip at least
        t0 = time.perf_counter()
        await ctx.map(k.add, [(i, 1) for i in range(500)])
        assert (time.perf_counter() - t0) / 500 >= 5.0e-6   # 5.6 us per call in flight
        times = []
        for _ in range(51):
            t0 = time.perf_counter()
            ptr = await asyncio.get_running_loop().run_in_executor(None, proc.sync.alloc_mem,
                                                                    4096)
            proc.sync.free_mem(ptr)
            times.append(time.perf_counter() - t0)
        times.sort()
        assert times[25] >= 18e-6                           # two round trips
    monkeypatch.setenv("VEO_EMU_PROFILE", "off")
    assert emulator.profile() is None
