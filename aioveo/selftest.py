"""``python -m aioveo selftest``: check, on this machine's libveo, each point
where AVEO's behaviour matters to aioveo, and print a report to send back.

On the emulator it checks that the emulator reproduces AVEO; on a VH with a
VE it checks AVEO itself (what docs/vendor-checklist.md lists as "only a VH
can confirm").  Each line is PASS, FAIL, SKIP or INFO with what was seen.
It builds a small kernel library with VeBuild (the host compiler on the
emulator, NEC's ncc on a VH), uses node ``--node`` (default 0) and takes a
few seconds.  Some checks call libveo directly (ctypes), as a C program
would, to see AVEO's own behaviour rather than aioveo's.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Callable

KERNELS = r"""
#include <unistd.h>
long st_add(long a, long b) { return a + b; }
long st_sleep_ms(long ms) { usleep((useconds_t)ms * 1000); return ms; }
volatile long st_counter;
long st_spin(void) { for (;;) st_counter++; return 0; }
long st_crash(void) { volatile long *p = (long *)0; return *p; }
double st_half(double x) { return x / 2; }
float st_twice(float x) { return 2 * x; }
long st_sum(const char *p, long n) { long s = 0; for (long i = 0; i < n; i++) s += p[i]; return s; }
long st_store(long *p, long ms, long v) { usleep((useconds_t)ms * 1000); *p = v; return v; }
"""


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, status: str, name: str, detail: str) -> None:
        self.rows.append((status, name, detail))
        print(f"{status:<5} {name}: {detail}", flush=True)

    def failed(self) -> int:
        return sum(1 for s, _, _ in self.rows if s == "FAIL")


def _check(report: Report, name: str, fn: Callable[[], tuple[str, str]]) -> None:
    try:
        status, detail = fn()
    except Exception as e:  # noqa: BLE001 - a check that breaks is a failure to report
        status, detail = "FAIL", f"{type(e).__name__}: {e}"
    report.add(status, name, detail)


def run(node: int = 0) -> int:
    import aioveo
    from aioveo import OnStack, VeBuild, VeoError, VeoProc

    report = Report()
    try:
        b = aioveo.backend()
    except ImportError as e:
        report.add("FAIL", "libveo", str(e))
        return 1
    print(f"aioveo {aioveo.__version__} selftest on the {b.kind}: {b.path}\n"
          f"  version {b.version}, VEO API {b.api_version}, extensions {b.extensions}, "
          f"Python {sys.version.split()[0]}\n", flush=True)
    report.add("PASS", "libveo", f"loaded, every function aioveo needs is there ({b.reason})")
    user_omp = os.environ.get("VE_OMP_NUM_THREADS")
    report.add("INFO", "VE_OMP_NUM_THREADS", f"{user_omp!r} in your environment; the checks "
               "set it to 1 (a second context needs it)")
    os.environ["VE_OMP_NUM_THREADS"] = "1"
    libveo = ctypes.CDLL(b.path)
    libveo.veo_context_open.restype = ctypes.c_void_p
    libveo.veo_context_open.argtypes = [ctypes.c_void_p]
    libveo.veo_context_close.argtypes = [ctypes.c_void_p]
    libveo.veo_get_context.restype = ctypes.c_void_p
    libveo.veo_get_context.argtypes = [ctypes.c_void_p, ctypes.c_int]
    libveo.veo_args_alloc.restype = ctypes.c_void_p
    libveo.veo_args_free.argtypes = [ctypes.c_void_p]
    libveo.veo_args_set_stack.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                          ctypes.c_void_p, ctypes.c_size_t]
    libveo.veo_args_set_i64.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64]
    libveo.veo_call_async.restype = ctypes.c_uint64
    libveo.veo_call_async.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p]
    libveo.veo_call_wait_result.argtypes = [ctypes.c_void_p, ctypes.c_uint64,
                                            ctypes.POINTER(ctypes.c_uint64)]
    invalid = (1 << 64) - 1

    with tempfile.TemporaryDirectory(prefix="aioveo-selftest-") as tmp:
        try:
            bld = VeBuild()
            bld.set_build_dir(tmp)
            bld.set_c_src("selftest", KERNELS)
            so = bld.build_so()
        except Exception as e:  # noqa: BLE001
            report.add("FAIL", "kernels", f"cannot build the test kernels with VeBuild: {e}")
            return 1
        report.add("PASS", "kernels", f"built with the {bld.backend} compiler")

        def proc() -> tuple[Any, Any]:
            p = VeoProc(node)
            return p, p.load_library(so)

        # -- identifiers and pid
        def pid_check() -> tuple[str, str]:
            p, _ = proc()
            try:
                pid = p.pid
                if not pid or not os.path.exists(f"/proc/{pid}"):
                    return "FAIL", f"veo_get_pid_from_hmem gave {pid!r}: no such process"
                same = os.getpgid(pid) == os.getpgid(0)
                group = ("in the host's process group: a terminal's Ctrl-C reaches it too"
                         if same else "in its own process group: a terminal's Ctrl-C does "
                         "not reach it")
                return "PASS", (f"proc {p.ident}: the VE process's pid {pid} "
                                f"(veo_get_pid_from_hmem), {group}")
            finally:
                p.destroy()
        _check(report, "pid", pid_check)

        # -- the main context
        def main_context() -> tuple[str, str]:
            p, lib = proc()
            try:
                c = p.open_context()
                if not c.is_main or libveo.veo_get_context(p.handle, 0) != c.handle:
                    return "FAIL", "the first veo_context_open did not return the main context"
                libveo.veo_context_close(c.handle)       # a no-op on AVEO
                if c.state() != aioveo.VEO_STATE_RUNNING:
                    return "FAIL", "closing the main context changed its state"
                ptr = p.alloc_mem(8)
                p.free_mem(ptr)
                return "PASS", "the first context is the main one; closing it does nothing"
            finally:
                p.destroy()
        _check(report, "main context", main_context)

        def omp_check() -> tuple[str, str]:
            p, lib = proc()
            try:
                p.open_context()
                os.environ["VE_OMP_NUM_THREADS"] = "2"    # AVEO throws: NULL (no abort)
                h = libveo.veo_context_open(p.handle)
                os.environ["VE_OMP_NUM_THREADS"] = "1"
                if h:
                    libveo.veo_context_close(h)
                    return "FAIL", "veo_context_open gave a second context with VE_OMP_NUM_THREADS=2"
                c = p.open_context()
                return "PASS", ("a second context needs VE_OMP_NUM_THREADS=1 (refused with 2, "
                                f"opened with 1: context {c.index})")
            finally:
                os.environ["VE_OMP_NUM_THREADS"] = "1"
                p.destroy()
        _check(report, "VE_OMP_NUM_THREADS", omp_check)

        # -- sync calls queue behind the main context
        def queued() -> tuple[str, str]:
            p, lib = proc()
            try:
                main = p.open_context()
                other = p.open_context()
                nap = lib.find_function("long st_sleep_ms(long)")
                times = {}
                for name, ctx in (("main", main), ("other", other)):
                    r = nap(ctx, 300)
                    time.sleep(0.02)
                    t0 = time.monotonic()
                    ptr = p.alloc_mem(64)
                    p.write_mem(ptr, bytes(64))
                    p.free_mem(ptr)
                    times[name] = time.monotonic() - t0
                    r.wait_result()
                if times["main"] < 0.2 or times["other"] > 0.2:
                    return "FAIL", (f"alloc/write/free took {times['main']:.3f} s behind the "
                                    f"main context, {times['other']:.3f} s behind another")
                return "PASS", (f"alloc/write/free wait for the main context's kernel "
                                f"({times['main']:.3f} s), not another's ({times['other']:.3f} s)")
            finally:
                p.destroy()
        _check(report, "sync calls queue behind the main context", queued)

        # -- results: integers, double, float
        def results() -> tuple[str, str]:
            p, lib = proc()
            try:
                c = p.open_context()
                a = lib.find_function("long st_add(long, long)")(c, 40, 2).wait_result()
                try:
                    h = lib.find_function("double st_half(double)")(c, 5.0).wait_result()
                    f = lib.find_function("float st_twice(float)")(c, 1.25).wait_result()
                except aioveo.MissingFunctionError as e:
                    return "SKIP", f"add -> {a}; floating point: {e}"
                if (a, h, f) != (42, 2.5, 2.5):
                    return "FAIL", f"add -> {a}, half(5.0) -> {h}, twice(1.25f) -> {f}"
                return "PASS", "long 42, double 2.5, float 2.5 (float in bits 63:32)"
            finally:
                p.destroy()
        _check(report, "results", results)

        # -- the stack-argument limit
        def stack_limit() -> tuple[str, str]:
            p, lib = proc()
            try:
                c = p.open_context()
                fn = lib.find_function("long st_sum(const char *, long)")
                small = bytearray(b"\x01" * 4096)
                if fn(c, OnStack(small), len(small)).wait_result() != 4096:
                    return "FAIL", "a 4 KiB OnStack argument did not arrive"
                try:
                    fn(c, OnStack(bytearray(64 << 20)), 64 << 20)
                    return "FAIL", "aioveo submitted a 64 MiB stack argument"
                except ValueError:
                    pass
                big = ctypes.create_string_buffer(64 << 20)
                args = libveo.veo_args_alloc()
                libveo.veo_args_set_stack(args, 0, 0, big, 64 << 20)
                libveo.veo_args_set_i64(args, 1, 0)
                rid = libveo.veo_call_async(c.handle, fn.addr, args)
                ret = ctypes.c_uint64()
                if rid != invalid:
                    libveo.veo_call_wait_result(c.handle, rid, ctypes.byref(ret))
                libveo.veo_args_free(args)
                if rid != invalid:
                    return "FAIL", "libveo accepted a 64 MiB stack argument"
                return "PASS", "64 MiB refused by libveo (INVALID) and by aioveo before it"
            finally:
                p.destroy()
        _check(report, "stack-argument limit", stack_limit)

        # -- faults
        def faults() -> tuple[str, str]:
            seen = []
            for where in ("main", "other"):
                p, lib = proc()
                try:
                    main = p.open_context()
                    other = p.open_context()
                    ctx = main if where == "main" else other
                    try:
                        lib.find_function("long st_crash(void)")(ctx).wait_result()
                        return "FAIL", f"a fault on the {where} context raised nothing"
                    except VeoError as e:
                        seen.append(f"{where}: {type(e).__name__}"
                                    f"(signal={getattr(e, 'signal', None)})")
                        kind_ok = (type(e) is aioveo.VeoException and e.signal) \
                            if where == "main" else type(e) is aioveo.KernelDiedError
                        if not kind_ok:
                            return "FAIL", "; ".join(seen)
                    if p.alive or p.pid is not None:
                        return "FAIL", f"the proc still looks alive after a fault on {where}"
                finally:
                    p.destroy()
            return "PASS", ("EXCEPTION with the signal on the main context, ERROR elsewhere: "
                            + "; ".join(seen))
        _check(report, "faults", faults)

        # -- one waiter per request id
        def waiters() -> tuple[str, str]:
            p, lib = proc()
            try:
                p.open_context()
                c = p.open_context()
                req = lib.find_function("long st_sleep_ms(long)")(c, 200)
                out: list[Any] = []

                def wait() -> None:
                    try:
                        out.append(req.wait_result())
                    except VeoError as e:
                        out.append(type(e).__name__)
                ts = [threading.Thread(target=wait, daemon=True) for _ in range(2)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join(5)
                if any(t.is_alive() for t in ts):
                    return "FAIL", "a second waiter of one request never returned"
                return "PASS", f"two waiters of one request: {sorted(map(str, out))}"
            finally:
                p.destroy(grace=0)
        _check(report, "one waiter per request", waiters)

        # -- closing a context with work in flight (AVEO drains it?)
        def close_drains() -> tuple[str, str]:
            p, lib = proc()
            try:
                p.open_context()
                c = p.open_context()
                ptr = p.alloc_mem(8)
                p.write_mem(ptr, (0).to_bytes(8, "little"))
                fn = lib.find_function("long st_store(long *, long, long)")
                req = fn(c, ptr, 300, 7)
                t0 = time.monotonic()
                p.close_context(c)
                dt = time.monotonic() - t0
                out = bytearray(8)
                p.read_mem(out, ptr)
                ran = int.from_bytes(out, "little") == 7
                del req
                return "INFO", (f"closing a context with a 300 ms kernel in flight took {dt:.2f} s; "
                                f"the kernel {'ran' if ran else 'did not run'} to its end")
            finally:
                p.destroy()
        _check(report, "close with a request in flight", close_drains)

        # -- destroy waits; the grace ends a kernel that never returns
        def destroy() -> tuple[str, str]:
            p, lib = proc()
            c = p.open_context()
            lib.find_function("long st_sleep_ms(long)")(c, 500)
            time.sleep(0.02)
            t0 = time.monotonic()
            p.destroy(grace=30)
            waited = time.monotonic() - t0
            p, lib = proc()
            c = p.open_context()
            pid = p.pid
            lib.find_function("long st_spin(void)")(c)
            time.sleep(0.02)
            t0 = time.monotonic()
            p.destroy(grace=0.5)
            forced = time.monotonic() - t0
            still = os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read() \
                .rsplit(")", 1)[1].split()[0] not in "ZX"
            if waited < 0.4 or forced > 5 or still:
                return "FAIL", (f"destroy waited {waited:.2f} s for a 0.5 s kernel; with a "
                                f"0.5 s grace a spinning one took {forced:.2f} s, pid "
                                f"{'still runs' if still else 'gone'}")
            return "PASS", (f"veo_proc_destroy waits for kernels ({waited:.2f} s for 0.5 s); "
                            f"a 0.5 s grace ends a spinning one by its pid in {forced:.2f} s")
        _check(report, "destroy", destroy)

        # -- a sync wait: interruptible, and what it costs
        def sync_wait() -> tuple[str, str]:
            p, lib = proc()
            try:
                c = p.open_context()
                nap = lib.find_function("long st_sleep_ms(long)")
                cpu0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.monotonic()
                out: list[Any] = []
                t = threading.Thread(target=lambda: out.append(nap(c, 1000).wait_result()))
                t.start()
                t.join()
                cpu1 = resource.getrusage(resource.RUSAGE_SELF)
                wall = time.monotonic() - t0
                cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
                detail = f"a 1 s wait in a thread cost {100 * cpu / wall:.0f}% of a host core"
                if threading.current_thread() is not threading.main_thread():
                    return "INFO", detail
                req = nap(c, 5000)
                def interrupt(*_: Any) -> None:
                    raise KeyboardInterrupt

                old = signal.signal(signal.SIGALRM, interrupt)
                signal.setitimer(signal.ITIMER_REAL, 0.3)
                t0 = time.monotonic()
                try:
                    req.wait_result()
                    return "FAIL", "a signal did not interrupt wait_result"
                except KeyboardInterrupt:
                    dt = time.monotonic() - t0
                finally:
                    signal.signal(signal.SIGALRM, old)
                if dt > 1.5 or req.collected:
                    return "FAIL", f"interrupted after {dt:.2f} s, collected={req.collected}"
                return "PASS", f"{detail}; a signal interrupted a wait in {dt:.2f} s"
            finally:
                p.destroy(grace=0)
        _check(report, "sync wait", sync_wait)

        # -- fresh VE memory
        def fresh_memory() -> tuple[str, str]:
            p, _ = proc()
            try:
                ptr = p.alloc_mem(1 << 16)
                out = bytearray(1 << 16)
                p.read_mem(out, ptr)
                zero = out.count(0)
                return "INFO", (f"{100 * zero / len(out):.0f}% zero bytes "
                                f"(first bytes {bytes(out[:8]).hex()}): never rely on it")
            finally:
                p.destroy()
        _check(report, "fresh VE memory", fresh_memory)

        # -- asyncio: leaving `async with` by a timeout
        def leave_by_timeout() -> tuple[str, str]:
            async def main() -> float:
                async def body() -> None:
                    async with aioveo.open_proc(node) as ap:
                        lib = await ap.load_library(so)
                        spin = lib.find_function("long st_spin(void)")
                        async with ap.open_context() as ctx:
                            await ctx.call(spin)

                t0 = time.monotonic()
                try:
                    await asyncio.wait_for(body(), 0.3)
                except asyncio.TimeoutError:
                    pass
                return time.monotonic() - t0
            dt = asyncio.run(main())
            bound = 0.3 + aioveo.settings.current().cancel_timeout + 1
            return ("PASS" if dt < bound else "FAIL",
                    f"a 0.3 s timeout around a spinning kernel left after {dt:.2f} s")
        _check(report, "leaving async with", leave_by_timeout)

    failed = report.failed()
    print(f"\n{len(report.rows)} checks, {failed} failed.  On a VH, send this report with "
          "`python -m aioveo info` to the aioveo maintainers.", flush=True)
    return 1 if failed else 0
