"""``python -m aioveo bench``: measure aioveo on this machine (its VE, or the emulator).

Call latency (awaited and sync), call throughput (one future per call, and
``ctx.map`` batches), transfer bandwidth (read and write) and the CPU the host
uses while awaiting a long kernel.  Kernels are built at run time with
VeBuild (NEC's compiler on a VE, cc on the emulator).  Progress goes to
stderr, the table (or ``--json``) to stdout.  (The development suite, with
raw C limits, targets and plots, is in aioveo's source tree, not installed.)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from typing import Any, Awaitable, Callable

import numpy as np

from . import VeoError, __version__, backend, open_proc
from .build import BuildError, VeBuild

KERNELS = """\
#include <time.h>

long nop(void) { return 0; }

/* Busy (not sleeping) for `us` microseconds. */
long busy_us(long us)
{
    struct timespec t0, t;
    volatile double acc = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (int i = 0; i < 1000; i++) acc += i * 0.5;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 < us);
    return us;
}
"""
KiB, MiB = 1 << 10, 1 << 20


def _page_aligned(size: int) -> np.ndarray:
    """A page-aligned host buffer: the fastest case for a copy."""
    raw = np.ones(size + 4096, np.uint8)
    off = (-raw.ctypes.data) % 4096
    return raw[off:off + size]


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n // KiB} KiB" if n >= KiB else f"{n} B"


async def _measure(so: str, args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    quick = args.quick
    rounds, calls, depth = (3, 2000, 1000) if quick else (5, 20000, 1000)
    sizes = [4 * KiB, MiB, 16 * MiB] if quick else [4 * KiB, MiB, 64 * MiB]
    volume, kernel_s = (64 * MiB, 1.0) if quick else (512 * MiB, 2.0)
    res: dict[str, Any] = {}

    async def timed(n: int, body: Callable[[], Awaitable[Any]]) -> float:
        """Median over rounds of the seconds one `body()` takes, divided by `n`."""
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            await body()
            samples.append((time.perf_counter() - t0) / n)
        return statistics.median(samples)

    async with open_proc(args.node) as proc:
        lib = await proc.load_library(so)
        nop = lib.find_function("long nop(void)")
        busy = lib.find_function("long busy_us(long us)")
        async with proc.open_context(max_in_flight=4 * depth) as ctx:
            progress("call latency (awaited, then sync)")
            for _ in range(200):
                await ctx.call(nop)

            async def awaited() -> None:
                for _ in range(calls):
                    await ctx.call(nop)

            async def sync() -> None:   # the PyVEO API: blocks the loop, as it would
                for _ in range(calls):
                    nop(ctx.sync).wait_result()
            res["latency_us"] = {"await": await timed(calls, awaited) * 1e6,
                                 "sync": await timed(calls, sync) * 1e6}

            progress(f"throughput, submit form ({depth} in flight)")

            async def submit() -> None:
                for _ in range(calls // depth):
                    futs = [await ctx.submit(nop) for _ in range(depth)]
                    for f in futs:
                        await f
            batch = [()] * (calls // depth * depth)
            res["throughput_calls_per_s"] = {"submit": 1 / await timed(len(batch), submit)}
            progress(f"throughput, ctx.map form ({len(batch)} calls)")
            res["throughput_calls_per_s"]["map"] = 1 / await timed(
                len(batch), lambda: ctx.map(nop, batch))

            bw: dict[str, dict[str, float]] = {"read": {}, "write": {}}
            res["bandwidth_bytes_per_s"] = bw
            for size in sizes:
                progress(f"bandwidth, {_size(size)} blocks")
                reps = max(3, min(2000, volume // size))
                host = _page_aligned(size)
                ve = await ctx.alloc_mem(size)
                try:
                    for name, op in (("read", lambda: ctx.read_mem(host, ve, size)),
                                     ("write", lambda: ctx.write_mem(ve, host, size))):
                        await op()

                        async def loop(op: Callable[[], Awaitable[None]] = op) -> None:
                            for _ in range(reps):
                                await op()
                        bw[name][str(size)] = size / await timed(reps, loop)
                finally:
                    await ctx.free_mem(ve)

            progress(f"CPU used while awaiting a {kernel_s:g} s busy kernel")
            await ctx.call(busy, 1)
            c0, t0 = time.process_time(), time.perf_counter()
            await ctx.call(busy, int(kernel_s * 1e6))
            res["cpu_awaiting"] = {"kernel_s": kernel_s, "cores": (time.process_time() - c0)
                                   / (time.perf_counter() - t0)}
    return res


def _table(out: dict) -> str:
    r = out["results"]
    rows = [("awaited call latency", f"{r['latency_us']['await']:.2f} us"),
            ("sync call latency (PyVEO API)", f"{r['latency_us']['sync']:.2f} us"),
            ("throughput, ctx.submit", f"{r['throughput_calls_per_s']['submit']:,.0f} calls/s"),
            ("throughput, ctx.map", f"{r['throughput_calls_per_s']['map']:,.0f} calls/s")]
    for way in ("read", "write"):
        for size, v in r["bandwidth_bytes_per_s"][way].items():
            rows.append((f"{way} {_size(int(size))} blocks", f"{v / 1e9:.2f} GB/s"))
    cpu = r["cpu_awaiting"]
    rows.append((f"CPU awaiting a {cpu['kernel_s']:g} s kernel", f"{cpu['cores']:.2%} of a core"))
    head = f"aioveo {out['aioveo_version']} on the {out['backend']} ({out['libveo']}), node {out['node']}"
    width = max(len(k) for k, _ in rows)
    return "\n".join([head, ""] + [f"{k:<{width}}  {v}" for k, v in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m aioveo bench",
        description="Measure aioveo on this machine: call latency, call throughput, "
                    "transfer bandwidth, CPU used while awaiting a kernel.")
    ap.add_argument("--quick", action="store_true", help="fewer calls and smaller transfers")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--node", type=int, default=0, help="VE node to use (default 0)")
    args = ap.parse_args(argv)
    steps, done, tty = 8, [0], sys.stderr.isatty()   # build, latency, 2 rates, 3 sizes, CPU

    def progress(what: str) -> None:   # one line, rewritten in place on a terminal
        done[0] += 1
        print(f"{chr(13) + chr(27) + '[K' if tty else ''}aioveo bench [{done[0]}/{steps}] {what}",
              end="" if tty else "\n", file=sys.stderr, flush=True)

    b = backend()
    try:
        with tempfile.TemporaryDirectory(prefix="aioveo-bench-") as tmp:
            bld = VeBuild()
            progress(f"building the kernels with VeBuild (the {bld.backend} backend)")
            bld.set_build_dir(tmp)
            bld.set_c_src("bench", KERNELS)
            results = asyncio.run(_measure(bld.build_so(), args, progress))
    except (BuildError, VeoError) as e:
        print(f"{chr(10) if tty else ''}aioveo bench: {e}", file=sys.stderr)
        return 1
    if tty:
        print(file=sys.stderr)
    out = {"aioveo_version": __version__, "backend": b.kind, "libveo": b.version,
           "node": args.node, "quick": args.quick, "results": results}
    print(json.dumps(out, indent=2) if args.json else _table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
