"""aioveo on Dask distributed: what a task costs and how workers scale.

    pip install ".[dask]"
    python benchmarks/dask_bench.py [--quick]

- tasks/s and VE calls/s with 1, 2 and 4 workers (LocalVECluster, one worker
  process per emulated VE node), each task one call of a kernel burning 1 ms
  of CPU; the emulated VEs share this machine's cores, which bound the
  speed-up;
- the per-task overhead of Dask: a task making one null call, against the
  same null call awaited directly on a pool in this process.

Medians of a few rounds; the machine is noisy, the ratios are what to read.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from distributed import Client

import aioveo
from aioveo.dask import LocalVECluster, current_pool, function

HERE = Path(__file__).resolve().parent


def build(tmp: str) -> str:
    bld = aioveo.VeBuild()
    bld.set_build_dir(tmp)
    bld.set_c_src("bench_kernels", (HERE / "kernels.c").read_text())
    return bld.build_so()


async def one_call(lib: str, proto: str, *args: int) -> int:
    fn = await function(lib, proto)
    return await current_pool().call(fn, *args)


async def scaling(lib: str, workers: int, tasks: int) -> dict[str, float]:
    async with LocalVECluster(nodes=list(range(workers)), threads_per_worker=4,
                              contexts_per_proc=2, asynchronous=True) as cluster, \
            Client(cluster, asynchronous=True) as client:
        warm = client.map(one_call, [lib] * workers * 4, ["long work_us(long)"] * workers * 4,
                          [1] * workers * 4, pure=False)
        await client.gather(warm)
        t0 = time.perf_counter()
        futs = client.map(one_call, [lib] * tasks, ["long work_us(long)"] * tasks,
                          [1000] * tasks, pure=False, resources={"VE_SLOTS": 1})
        await client.gather(futs)
        rate = tasks / (time.perf_counter() - t0)
    return {"tasks/s": rate, "calls/s": rate}


async def overhead(lib: str, n: int) -> dict[str, float]:
    async with LocalVECluster(nodes=[0], threads_per_worker=1, contexts_per_proc=1,
                              asynchronous=True) as cluster, \
            Client(cluster, asynchronous=True) as client:
        await client.submit(one_call, lib, "long nop(void)", pure=False)
        t0 = time.perf_counter()
        for _ in range(n):
            await client.submit(one_call, lib, "long nop(void)", pure=False)
        task = (time.perf_counter() - t0) / n
    async with aioveo.open_pool([0]) as pool:
        fn = await pool.function(lib, "long nop(void)")
        await pool.call(fn)
        t0 = time.perf_counter()
        for _ in range(n * 100):
            await pool.call(fn)
        direct = (time.perf_counter() - t0) / (n * 100)
    return {"dask task (one null call)": task, "pool.call": direct}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    rounds, tasks, n = (1, 200, 50) if a.quick else (3, 1000, 200)
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(tmp)
        print("| workers | tasks/s (1 ms kernel each) | speed-up |\n|---|---|---|")
        base = None
        for w in (1, 2, 4):
            rate = statistics.median(asyncio.run(scaling(lib, w, tasks))["tasks/s"]
                                     for _ in range(rounds))
            base = base or rate
            print(f"| {w} | {rate:,.0f} | {rate / base:.2f}x |")
            sys.stdout.flush()
        res = [asyncio.run(overhead(lib, n)) for _ in range(rounds)]
        task = statistics.median(r["dask task (one null call)"] for r in res)
        direct = statistics.median(r["pool.call"] for r in res)
        print(f"\n| per call | time |\n|---|---|\n| Dask task making one null call | "
              f"{task * 1e3:.2f} ms |\n| `await pool.call(nop)` in-process | {direct * 1e6:.1f} µs |"
              f"\n| ratio | {task / direct:,.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
