"""Issue 11: aioveo on AVEO's terms.  Each finding of the issue is reproduced
here on the AVEO-faithful emulator (see _ext/emu, tests/c/aveo.c) and fixed in
aioveo; test_fNN is finding NN.  Tests that could hang before their fix run in
a subprocess with a timeout.  ``AIOVEO_LIBVEO=emulator-noext`` runs aioveo on
the emulator built without its veo_emu_* extensions, as the vendor libveo
lacks them.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import aioveo
from aioveo import OnStack, settings

ROOT = Path(__file__).resolve().parent.parent


# ---- helpers -----------------------------------------------------------------------
def run_python(code: str, *, env: dict[str, str] | None = None, timeout: float = 20.0,
               cwd: str | None = None) -> tuple[subprocess.CompletedProcess | None, float]:
    """Run `code` in a fresh interpreter: (result or None on timeout, seconds)."""
    full_env = {**os.environ, "AIOVEO_EXIT_GRACE": "0.5", **(env or {})}
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                           text=True, timeout=timeout, env=full_env, cwd=cwd or "/tmp")
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - t0
    return r, time.monotonic() - t0


def report(r: subprocess.CompletedProcess | None, elapsed: float) -> str:
    if r is None:
        return f"timed out after {elapsed:.1f} s"
    return f"rc={r.returncode} after {elapsed:.1f} s\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


class GapMeter:
    """The longest stretch (seconds) a thread or the event loop could not run."""

    def __init__(self) -> None:
        self.longest = 0.0

    def thread(self) -> "GapMeter":
        """Measure the GIL: a Python thread ticking every millisecond."""
        self._stop = threading.Event()

        def tick() -> None:
            last = time.monotonic()
            while not self._stop.is_set():
                time.sleep(0.001)
                now = time.monotonic()
                self.longest = max(self.longest, now - last)
                last = now

        self._t = threading.Thread(target=tick, daemon=True)
        self._t.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.longest

    async def loop_ticker(self, stop: asyncio.Event) -> None:
        """Measure the event loop: a task ticking every millisecond."""
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now


def kernels(lib):
    class K:
        add = lib.find_function("long add(long, long)")
        nop = lib.find_function("long nop(void)")
        sleep_ms = lib.find_function("long sleep_ms(long)")
        spin = lib.find_function("long spin_forever(void)")
        crash = lib.find_function("long crash(void)")
        dsum = lib.find_function("double dsum(double *, long)")
        echo_double = lib.find_function("double echo_double(double)")
        ident = lib.find_function("long ident(long)")
    return K


# ---- 1. closing a context never touches a freed one --------------------------------
@pytest.mark.parametrize("engine", ["wait", "poll"])
def test_f01_a_context_left_with_work_in_flight_is_never_used_after_close(aio_lib, engine):
    """Leaving ``async with proc.open_context()`` by an exception with a kernel
    in flight: the context must not be closed while a thread of ours (the
    wait engine's waiter, an orphan reaper) is inside libveo for it; AVEO frees
    it there.  The emulator reports such uses on stderr."""
    code = f"""
    import asyncio, time, aioveo
    async def main():
        t0 = time.monotonic()
        try:
            async with aioveo.open_proc(0) as p:
                lib = await p.load_library({aio_lib!r})
                nap = lib.find_function("long sleep_ms(long)")
                main_ctx = await p.open_context()
                try:
                    async with p.open_context() as c:
                        fut = await c.submit(nap, 6000)
                        await asyncio.sleep(0.1)
                        raise RuntimeError("leave the context")
                except RuntimeError:
                    pass
                assert c.closed
                try:
                    await fut
                except aioveo.ClosedError:
                    print("awaiter failed at once")
                # the proc goes on, its main context too
                assert await main_ctx.call(lib.find_function("long add(long, long)"), 1, 2) == 3
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
        print(f"left after {{time.monotonic() - t0:.2f}} s")
    asyncio.run(main())
    """
    r, elapsed = run_python(code, env={"AIOVEO_ENGINE": engine}, timeout=15)
    assert r is not None and r.returncode == 0, report(r, elapsed)
    assert "awaiter failed at once" in r.stdout
    assert "aioveo emulator" not in r.stderr, report(r, elapsed)
    assert elapsed < 5, report(r, elapsed)


def test_f01_a_context_closed_while_its_proc_is_destroyed_is_left_to_the_destroy(aio_lib):
    """A proc's destroy frees its contexts on AVEO: a close (or any use) that
    starts on another thread meanwhile must not reach libveo for them."""
    code = f"""
    import threading, time, aioveo
    p = aioveo.VeoProc(0)
    nap = p.load_library({aio_lib!r}).find_function("long sleep_ms(long)")
    main = p.open_context()
    ctx = p.open_context()
    req = nap(main, 300)
    destroyer = threading.Thread(target=p.destroy, kwargs={{"grace": 5}})
    destroyer.start()                                  # waits for the main kernel
    time.sleep(0.1)
    try:
        nap(ctx, 1)
    except aioveo.ClosedError as e:
        print("use refused:", e)
    t0 = time.monotonic()
    p.close_context(ctx)                               # left to the destroy
    print(f"close returned after {{time.monotonic() - t0:.2f}} s")
    destroyer.join()
    """
    r, elapsed = run_python(code, timeout=15)
    assert r is not None and r.returncode == 0, report(r, elapsed)
    assert "use refused: the proc of this context was destroyed" in r.stdout, report(r, elapsed)
    m = re.search(r"close returned after ([\d.]+) s", r.stdout)
    assert m and float(m.group(1)) > 0.05, report(r, elapsed)   # waited for the destroy
    assert "aioveo emulator" not in r.stderr, report(r, elapsed)


# ---- 2. destroy, a cancelled close and exit end a busy VE on both backends -----------
@pytest.mark.parametrize("libveo", ["emulator", "emulator-noext"])
def test_f02_destroy_and_exit_end_a_busy_ve_through_aveos_pid(aio_lib, libveo):
    """The grace that ends a busy VE needs its pid: AVEO's API gives it
    (veo_get_pid_from_hmem); the emulator's veo_emu_proc_pid is absent from
    the vendor libveo (emulator-noext)."""
    code = f"""
    import time, aioveo
    p = aioveo.VeoProc(0)
    lib = p.load_library({aio_lib!r})
    spin = lib.find_function("long spin_forever(void)")
    pid = p.pid
    assert pid and pid > 0, pid
    c = p.open_context()
    r = spin(c)
    time.sleep(0.05)
    t0 = time.monotonic()
    p.destroy(grace=0.5)               # veo_proc_destroy alone would wait for ever
    print(f"destroyed {{time.monotonic() - t0:.2f}} {{pid}}", flush=True)
    q = aioveo.VeoProc(0)               # and at exit, with exit_grace (0.5 s here)
    print("exit pid", q.pid, flush=True)
    lib2 = q.load_library({aio_lib!r})
    lib2.find_function("long spin_forever(void)")(q.open_context())
    """
    r, elapsed = run_python(code, env={"AIOVEO_LIBVEO": libveo}, timeout=15)
    assert r is not None and r.returncode == 0, report(r, elapsed)
    m = re.search(r"destroyed ([\d.]+) (\d+)", r.stdout)
    assert m and float(m.group(1)) < 3, report(r, elapsed)
    assert gone(int(m.group(2)))
    exit_pid = int(re.search(r"exit pid (\d+)", r.stdout).group(1))
    assert gone(exit_pid)
    assert elapsed < 10, report(r, elapsed)


# ---- 3. a second context needs VE_OMP_NUM_THREADS=1 ------------------------------------
def test_f03_a_second_context_needs_ve_omp_num_threads(aio_lib, monkeypatch):
    monkeypatch.delenv("VE_OMP_NUM_THREADS", raising=False)
    p = aioveo.VeoProc(0)
    try:
        main = p.open_context()              # the main context: no variable needed
        assert main.is_main and main.index == 0
        with pytest.raises(aioveo.VeoError) as ei:
            p.open_context()
        msg = str(ei.value)
        assert "VE_OMP_NUM_THREADS=1" in msg and "not set" in msg
        assert ei.value.func is None          # refused before libveo was called
        monkeypatch.setenv("VE_OMP_NUM_THREADS", "four")   # AVEO would abort the process
        with pytest.raises(aioveo.VeoError, match="not a number") as ei:
            p.open_context()
        assert ei.value.func is None
        monkeypatch.setenv("VE_OMP_NUM_THREADS", "2")
        with pytest.raises(aioveo.VeoError, match="'2'"):
            p.open_context()
        # open -> close -> open: the main context stays, the new one is a second
        monkeypatch.delenv("VE_OMP_NUM_THREADS")
        p.close_context(main)
        with pytest.raises(aioveo.VeoError, match="VE_OMP_NUM_THREADS=1"):
            p.open_context()
        monkeypatch.setenv("VE_OMP_NUM_THREADS", " 1")     # as std::stoi reads it
        c = p.open_context()
        assert not c.is_main and c.index >= 1
    finally:
        p.destroy()


@pytest.mark.asyncio
async def test_f03_open_pool_checks_before_creating_procs(monkeypatch):
    monkeypatch.delenv("VE_OMP_NUM_THREADS", raising=False)
    created = []
    aioveo.set_proc_init_hook(created.append)
    try:
        with pytest.raises(aioveo.VeoError, match="VE_OMP_NUM_THREADS=1") as ei:
            async with aioveo.open_pool([0, 1], contexts_per_proc=2):
                pass
        assert created == [], "procs were created before the check"
        assert ei.value.func is None
        async with aioveo.open_pool([0], contexts_per_proc=1) as pool:   # one context: fine
            assert len(pool.contexts) == 1
    finally:
        aioveo.del_proc_init_hook(created.append)


# ---- 4. mk_veorun_static where AVEO installs it, without the host's flags -------------
def test_f04_build_veorun_runs_aveos_mk_veorun_static_with_a_clean_environment(
        tmp_path, monkeypatch):
    from aioveo import build as vebuild

    assert vebuild.MK_VEORUN_STATIC == "/opt/nec/ve/bin/mk_veorun_static"
    script = tmp_path / "mk_veorun_static"
    dump = tmp_path / "seen"
    script.write_text(f"#!/bin/sh\nenv > {dump}\necho \"ARGS $*\" >> {dump}\n: > \"$1\"\n")
    script.chmod(0o755)
    calls: list[list[str]] = []
    real_run = vebuild._run

    def run(cmd, cwd, verbose, env=None):   # compiling needs ncc: pretend
        calls.append(cmd)
        if cmd[0] == str(script):
            return real_run(cmd, cwd, verbose, env)
        for i, a in enumerate(cmd):
            if a == "-o":
                Path(cwd, cmd[i + 1]).touch()
        return ""

    monkeypatch.setattr(vebuild, "_run", run)
    for var, value in {"CC": "gcc", "CXX": "g++", "FC": "gfortran", "NM": "nm",
                       "CFLAGS": "-march=native", "LDFLAGS": "-L/opt/conda/lib",
                       "CCLD": "gcc"}.items():
        monkeypatch.setenv(var, value)
    b = vebuild.VeBuild(backend="vendor")
    b.set_build_dir(tmp_path / "bld")
    b.set_c_src("k", "long f(void) { return 1; }")
    with settings.override(mk_veorun_static=str(script)):
        helper = b.build_veorun(flags="-O3 -L/ve/lib -lfoo")
    seen = dump.read_text().splitlines()
    env = dict(line.split("=", 1) for line in seen if "=" in line and not line.startswith("ARGS"))
    for var in ("CC", "CXX", "FC", "NM", "LDFLAGS", "CCLD"):
        assert var not in env, f"the host's {var} reached mk_veorun_static"
    assert env.get("CFLAGS") == "-O3"                 # compile flags only
    args = next(line for line in seen if line.startswith("ARGS")).split()[1:]
    assert args[0] == helper and "-L/ve/lib" in args and "-lfoo" in args
    # without the override: AVEO's place first, PyVEO's old one as a fallback
    assert vebuild.mk_veorun_static_path() in (vebuild.MK_VEORUN_STATIC,
                                               vebuild.MK_VEORUN_STATIC_OLD)


# ---- 5. one waiter per request id ----------------------------------------------------------
def test_f05_two_waiters_and_a_peek_of_one_request(aio_lib):
    """AVEO's second waiter of one id (or a waiter whose completion a peek
    took) sleeps for ever; the core lets one thread wait in libveo and the
    others wait for it."""
    p = aioveo.VeoProc(0)
    try:
        k = kernels(p.load_library(aio_lib))
        p.open_context()
        c = p.open_context()
        req = k.sleep_ms(c, 300)
        results: list[tuple[str, object]] = []

        def waiter() -> None:
            try:
                results.append(("wait", req.wait_result()))
            except aioveo.VeoError as e:
                results.append(("error", e))

        threads = [threading.Thread(target=waiter, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                results.append(("peek", req.peek_result()))
                break
            except aioveo.Unfinished:
                time.sleep(0.0005)
            except aioveo.VeoError as e:    # collected by a waiter
                results.append(("error", e))
                break
        for t in threads:
            t.join(5)
        stuck = [t for t in threads if t.is_alive()]
    finally:
        p.destroy(grace=0)   # (ends a stuck waiter: the emulator wakes it at destroy)
    assert not stuck, f"{len(stuck)} waiter(s) never returned: {results}"
    got = [v for kind, v in results if kind in ("wait", "peek")]
    assert got == [300], results
    errors = [v for kind, v in results if kind == "error"]
    assert len(errors) == 2 and all("already collected" in str(e) for e in errors), results


# ---- 6. a fault on another context is named as such --------------------------------------
@pytest.mark.asyncio
async def test_f06_a_kernel_fault_on_another_context_is_named_as_such(aio_lib):
    """AVEO reports a fault with its signal on the main context only; on
    another context the faulting call, and the calls running at that moment
    on the other contexts, see their VE process die: KernelDiedError says
    so (the README promised a VeoException, which AVEO cannot give there)."""
    async with aioveo.open_proc(0) as p:
        k = kernels(await p.load_library(aio_lib))
        main = await p.open_context()
        other = await p.open_context()
        third = await p.open_context()
        assert main.sync.is_main and not other.sync.is_main
        waiting = await main.submit(k.sleep_ms, 5000)
        running = await third.submit(k.sleep_ms, 5000)
        queued = await third.submit(k.add, 1, 2)
        before = await other.submit(k.add, 1, 2)
        await asyncio.sleep(0.05)
        with pytest.raises(aioveo.ProcDeadError) as ei:
            await other.call(k.crash)
        assert await before == 3          # submitted first: done before the crash
        e = ei.value
        assert type(e) is aioveo.KernelDiedError and not isinstance(e, aioveo.VeoException)
        assert "main one" in str(e) and "may have faulted" in str(e)
        with pytest.raises(aioveo.KernelDiedError):    # running elsewhere: the same report
            await running
        for fut in (waiting, queued):                  # the main context's, a queued one
            with pytest.raises(aioveo.ProcDeadError) as ei2:
                await fut
            assert type(ei2.value) is aioveo.ProcDeadError
        with pytest.raises(aioveo.ProcDeadError) as ei3:
            await other.call(k.add, 1, 2)
        assert type(ei3.value) is aioveo.ProcDeadError


def test_f06_sync_fault_on_the_main_context_keeps_its_signal(aio_lib):
    p = aioveo.VeoProc(0)
    try:
        k = kernels(p.load_library(aio_lib))
        main = p.open_context()
        with pytest.raises(aioveo.VeoException) as ei:
            k.crash(main).wait_result()
        assert type(ei.value) is aioveo.VeoException and ei.value.signal == signal.SIGSEGV
    finally:
        p.destroy()


# ---- 7. calls that queue behind the main context stay off the loop -------------------------
@pytest.mark.asyncio
async def test_f07_transfers_and_lookups_behind_a_busy_main_context_keep_the_loop_running(
        aio_lib):
    async with aioveo.open_proc(0) as p:
        lib = await p.load_library(aio_lib)
        k = kernels(lib)
        main = await p.open_context()
        other = await p.open_context()
        ptr = await p.alloc_mem(4096)
        meter, stop = GapMeter(), asyncio.Event()
        ticker = asyncio.ensure_future(meter.loop_ticker(stop))
        await asyncio.sleep(0.01)
        busy = await main.submit(k.sleep_ms, 700)
        await asyncio.sleep(0.02)
        t0 = time.monotonic()
        await other.write_mem(ptr, bytes(4096))        # another context: not delayed
        assert time.monotonic() - t0 < 0.35
        out = bytearray(4096)
        await other.read_mem(out, ptr)
        await busy
        # a pool's function lookup while the main context is busy
        pool = await aioveo.Pool.create([p], 1)
        busy = await main.submit(k.sleep_ms, 300)
        task = asyncio.ensure_future(pool.function(aio_lib, "long ident(long)"))
        await asyncio.sleep(0.05)                      # its load queues behind `busy`
        busy2 = await main.submit(k.sleep_ms, 400)     # and its lookup behind this
        fn = await task
        await busy
        await busy2
        stop.set()
        await ticker
        assert meter.longest < 0.2, f"the event loop stalled {meter.longest:.3f} s"
        assert await pool.call(fn, 5) == 5
        await pool.close()
        await p.free_mem(ptr)


# ---- 8. closing a proc takes no global lock on the loop ------------------------------------
@pytest.mark.asyncio
async def test_f08_closing_a_proc_while_another_is_destroyed_keeps_the_loop_running(aio_lib):
    """AVEO's exitProc holds the global proc lock for a whole destroy, and
    veo_proc_identifier takes it: the identifier is read once, at creation."""
    a = await aioveo.open_proc(0)
    b = await aioveo.open_proc(0)
    k = kernels(await a.load_library(aio_lib))
    ctx = await a.open_context()
    await ctx.submit(k.sleep_ms, 600)
    meter, stop = GapMeter(), asyncio.Event()
    ticker = asyncio.ensure_future(meter.loop_ticker(stop))
    destroying = asyncio.get_running_loop().run_in_executor(None, a.sync.destroy)
    await asyncio.sleep(0.1)
    text = str(b)                       # a proc's description and its close
    await b.close()
    await destroying
    stop.set()
    await ticker
    assert "proc" in text
    assert meter.longest < 0.3, f"the event loop stalled {meter.longest:.3f} s"
    await a.close()


# ---- 9. smaller GIL-held waits ----------------------------------------------------------------
def test_f09_free_hmem_and_dead_checks_release_the_gil(aio_lib):
    p = aioveo.VeoProc(0)
    try:
        k = kernels(p.load_library(aio_lib))
        main = p.open_context()
        h = p.alloc_hmem(64)
        busy = k.sleep_ms(main, 400)
        meter = GapMeter().thread()
        time.sleep(0.02)
        p.free_hmem(h)                   # a free on the main context: waits for `busy`
        gil = meter.stop()
        assert busy.wait_result() == 400
        assert gil < 0.2, f"free_hmem held the GIL {gil:.3f} s"
        # a dead check while another thread opens a context (AVEO holds the
        # context list's lock while the main context synchronizes)
        busy = k.sleep_ms(main, 400)
        opener = threading.Thread(target=p.open_context)
        opener.start()
        time.sleep(0.05)
        t0 = time.monotonic()
        assert p.alive and not p._is_dead()
        assert time.monotonic() - t0 < 0.2
        opener.join()
        busy.wait_result()
    finally:
        p.destroy()


# ---- 10. OnStack over ~63 MB ------------------------------------------------------------------
def test_f10_onstack_over_the_stack_limit_fails_before_submission(aio_lib):
    import numpy as np

    p = aioveo.VeoProc(0)
    try:
        k = kernels(p.load_library(aio_lib))
        c = p.open_context()
        big = np.zeros((64 << 20) // 8)
        with pytest.raises(ValueError, match=r"63 MiB") as ei:
            k.dsum(c, OnStack(big), big.size)
        assert "VE memory" in str(ei.value)
        ok = np.ones((32 << 20) // 8)
        assert k.dsum(c, OnStack(ok), ok.size).wait_result() == ok.size
        assert aioveo._core.STACK_ARGS_LIMIT == 63 << 20
    finally:
        p.destroy()


# ---- 11. the README's CPU figures --------------------------------------------------------------
def test_f11_cpu_figures_are_labelled_by_backend_and_aveos_spinning_described():
    readme = (ROOT / "README.md").read_text()
    perf = readme[readme.index("## Performance"):]
    assert "the emulator's" in perf[:1500] and "AVEO" in perf[:1500]
    text = (ROOT / "docs" / "performance.md").read_text()
    assert re.search(r"AVEO.{0,200}(spins|busy-poll)", text, re.S)
    assert re.search(r"a host core", text)


# ---- 12. leaving `async with` by an exception, a timeout, Ctrl-C --------------------------------
needs_timeout = pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout: 3.11")


@needs_timeout
@pytest.mark.asyncio
async def test_f12_a_timeout_leaves_a_running_kernel_within_the_bound(aio_lib):
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            async with aioveo.open_proc(0) as p:
                k = kernels(await p.load_library(aio_lib))
                async with p.open_context() as c:
                    await c.call(k.sleep_ms, 20000)
    elapsed = time.monotonic() - t0
    assert elapsed < 0.5 + settings.current().cancel_timeout + 1, elapsed
    assert p.closed and not p.alive


@needs_timeout
@pytest.mark.asyncio
async def test_f12_a_timeout_leaves_a_pool_within_the_bound(aio_lib):
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            async with aioveo.open_pool([0, 1], contexts_per_proc=2) as pool:
                fn = await pool.function(aio_lib, "long sleep_ms(long)")
                await asyncio.gather(*(pool.call(fn, 20000) for _ in range(4)))
    assert time.monotonic() - t0 < 0.5 + settings.current().cancel_timeout + 1


# A suite started in the background by a shell without job control hands its
# children SIGINT ignored, and Python then installs no KeyboardInterrupt
# handler: the tests that press Ctrl-C give their child the terminal's default.
SIGINT_AS_IN_A_TERMINAL = """
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)"""


def test_f12_ctrl_c_interrupts_a_sync_wait_and_the_request_stays(aio_lib):
    code = SIGINT_AS_IN_A_TERMINAL + f"""
    import os, signal, threading, time, aioveo
    p = aioveo.VeoProc(0)
    lib = p.load_library({aio_lib!r})
    nap = lib.find_function("long sleep_ms(long)")
    req = nap(p.open_context(), 10000)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    try:
        req.wait_result()
    except KeyboardInterrupt:
        print(f"interrupted after {{time.monotonic() - t0:.2f}} s", flush=True)
    else:   # what kept the signal out, for the report
        status = open(f"/proc/{{os.getpid()}}/status").read()
        print("not interrupted:", signal.getsignal(signal.SIGINT),
              [l for l in status.splitlines() if l.startswith(("Sig", "Shd", "Threads"))],
              flush=True)
    assert not req.collected
    try:
        req.peek_result()
    except aioveo.Unfinished:
        print("still tracked", flush=True)
    p.destroy(grace=0)
    """
    r, elapsed = run_python(code, timeout=15)
    assert r is not None and r.returncode == 0, report(r, elapsed)
    m = re.search(r"interrupted after ([\d.]+) s", r.stdout)
    assert m and float(m.group(1)) < 1.5, report(r, elapsed)
    assert "still tracked" in r.stdout


@pytest.mark.parametrize("libveo", ["emulator", "emulator-noext"])
def test_f12_ctrl_c_leaves_asyncio_run_within_the_bound(aio_lib, libveo):
    code = SIGINT_AS_IN_A_TERMINAL + f"""
    import asyncio, os, signal, time, aioveo
    async def main():
        async with aioveo.open_proc(0) as p:
            lib = await p.load_library({aio_lib!r})
            spin = lib.find_function("long spin_forever(void)")
            async with p.open_context() as c:
                asyncio.get_running_loop().call_later(0.3, os.kill, os.getpid(), signal.SIGINT)
                await c.call(spin)
    t0 = time.monotonic()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print(f"left after {{time.monotonic() - t0:.2f}} s", flush=True)
    """
    r, elapsed = run_python(code, env={"AIOVEO_LIBVEO": libveo}, timeout=20)
    assert r is not None and r.returncode == 0, report(r, elapsed)
    m = re.search(r"left after ([\d.]+) s", r.stdout)
    assert m and float(m.group(1)) < 4, report(r, elapsed)


# ---- 13. a dead proc is visible ------------------------------------------------------------------
@pytest.mark.asyncio
async def test_f13_a_dead_proc_and_its_contexts_say_so(aio_lib):
    async with aioveo.open_proc(0) as p:
        k = kernels(await p.load_library(aio_lib))
        c = await p.open_context()
        pid = p.sync.pid
        assert p.alive and c.alive and pid
        with pytest.raises(aioveo.VeoException) as ei:
            await c.call(k.crash)
        e = ei.value
        assert e.node == p.nodeid and e.context and e.proc == p.sync.ident
        assert f"proc {p.sync.ident} on node {p.nodeid}" in str(e) and "context 0" in str(e)
        assert not p.alive and not c.alive and not p.closed and not c.closed
        assert p.sync.pid is None and "dead" in str(p)
        with pytest.raises(aioveo.ProcDeadError) as ei:
            await c.call(k.add, 1, 2)
        assert f"proc {p.sync.ident} on node {p.nodeid}" in str(ei.value)
    assert p.closed and c.closed


# ---- 14. no traceback at exit ----------------------------------------------------------------------
def test_f14_a_program_that_never_closes_exits_quietly(aio_lib):
    """Requests never collected, held with their context in a reference cycle
    that the interpreter clears at exit (PyVEO style), plus an asyncio proc
    left open with a submitted request nobody awaits."""
    code = f"""
    import asyncio, aioveo
    p = aioveo.VeoProc(0)
    lib = p.load_library({aio_lib!r})
    ctx = p.open_context()
    nap = lib.find_function("long sleep_ms(long)")
    class Job:
        pass
    job = Job()
    job.ctx, job.req, job.me = ctx, nap(ctx, 200), job
    others = [nap(ctx, 1) for _ in range(3)]
    async def main():
        ap = await aioveo.open_proc(0)
        l2 = await ap.load_library({aio_lib!r})
        c = await ap.open_context()
        fut = await c.submit(l2.find_function("long sleep_ms(long)"), 200)
        print("leaving", flush=True)
    asyncio.run(main())
    """
    r, elapsed = run_python(code, timeout=20)
    assert r is not None and r.returncode == 0, report(r, elapsed)
    assert "leaving" in r.stdout
    for bad in ("Exception ignored", "Traceback", "Error"):
        assert bad not in r.stderr, report(r, elapsed)


# ---- 15. fresh VE memory is poisoned ---------------------------------------------------------------
@pytest.mark.asyncio
async def test_f15_fresh_ve_memory_is_not_zero(aio_lib):
    async with aioveo.open_proc(0) as p:
        ptr = await p.alloc_mem(256)
        out = bytearray(256)
        await p.read_mem(out, ptr)
        assert out == b"\xa5" * 256
        await p.free_mem(ptr)


def test_f15_poisoning_can_be_switched_off(aio_lib):
    code = """
    import aioveo
    p = aioveo.VeoProc(0)
    ptr = p.alloc_mem(1 << 20)
    out = bytearray(1 << 20)
    p.read_mem(out, ptr)
    print("zero" if not any(out) else "poisoned")
    p.destroy()
    """
    r, elapsed = run_python(code, env={"VEO_EMU_POISON": "off"})
    assert r is not None and r.returncode == 0 and "zero" in r.stdout, report(r, elapsed)


# ---- the emulator without its extensions (as the vendor libveo) -------------------------------------
def test_noext_mode_looks_like_the_vendor_library_and_aioveo_works_on_it(aio_lib):
    code = f"""
    import asyncio, aioveo
    b = aioveo.backend()
    print("backend", b.kind, b.extensions, aioveo.emulator_info())
    p = aioveo.VeoProc(0)
    lib = p.load_library({aio_lib!r})
    add = lib.find_function("long add(long, long)")
    c = p.open_context()
    print("add", add(c, 40, 2).wait_result())
    print("pid", p.pid is not None and p.pid > 0)
    try:
        lib.find_function("double echo_double(double)")(c, 1.5)
    except aioveo.MissingFunctionError as e:
        print("float", "veo_emu_args_set_ret_type" in str(e))
    try:
        c2 = p.open_context()
        lib.find_function("long crash(void)")(c2).wait_result()
    except aioveo.KernelDiedError as e:
        print("fault", type(e).__name__)
    p.destroy()
    async def main():
        async with aioveo.open_proc(0) as ap:
            l2 = await ap.load_library({aio_lib!r})
            async with ap.open_context() as ctx:
                print("async", await ctx.call(l2.find_function("long add(long, long)"), 1, 2))
    asyncio.run(main())
    """
    r, elapsed = run_python(code, env={"AIOVEO_LIBVEO": "emulator-noext"})
    assert r is not None and r.returncode == 0, report(r, elapsed)
    out = r.stdout
    assert "backend emulator False None" in out
    assert "add 42" in out and "pid True" in out and "float True" in out
    assert "fault KernelDiedError" in out and "async 3" in out


def test_a_libveo_lacking_required_functions_is_refused_with_their_names(tmp_path):
    src = tmp_path / "oldveo.c"
    names = [n for n, required in aioveo._core.API_FUNCTIONS.items()
             if required and n not in ("veo_context_sync", "veo_get_pid_from_hmem")]
    names = [n for n in names if n not in ("veo_version_string", "veo_api_version")]
    src.write_text("".join(f"void {n}(void) {{}}\n" for n in names)
                   + 'const char *veo_version_string(void) { return "2.1.0"; }\n'
                   + "int veo_api_version(void) { return 9; }\n")
    so = tmp_path / "libveo.so.1"
    subprocess.run(["cc", "-shared", "-fPIC", str(src), "-o", str(so)], check=True)
    r, elapsed = run_python("import aioveo; aioveo.backend()", env={"AIOVEO_LIBVEO": str(so)})
    assert r is not None and r.returncode != 0
    assert "lacks functions aioveo needs: veo_context_sync, veo_get_pid_from_hmem" in r.stderr


def test_selftest_runs_on_the_emulator_and_reports_every_check():
    r = subprocess.run([sys.executable, "-m", "aioveo", "selftest"], capture_output=True,
                       text=True, timeout=60, cwd="/tmp")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if re.match(r"\s*(PASS|FAIL|SKIP)\b", line)]
    assert len(lines) >= 12 and not any(line.lstrip().startswith("FAIL") for line in lines), \
        r.stdout
