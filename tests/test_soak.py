"""Load and soak: 4 procs x 4 contexts driven by many asyncio tasks while two
threads drive their own contexts of the same procs through the PyVEO API.

Every call's result names the proc it ran on and a sequence number unique in
the whole run, so a lost, duplicated or misrouted result is caught; every
transfer is checked end to end with checksums computed on the VE
(``rel_checksum``) and data generated on the VE (``rel_fill``) compared with
the same functions computed on the host with numpy.

Resources (RSS, open fds, threads, helper processes) are measured after the
first 10% of the work and at the end, with the same threads alive, and must
stay flat.  RSS is split: private memory (RssAnon + RssFile) must stay flat;
the emulator's shared memory (RssShmem: per-context rings touched until they
wrap, VE memory) must stay under its fixed bound.

Short form (the default, about 2 s per event loop): ~42k calls and ~440 MB
of transfers per loop.  Long form, >= 1,000,000 calls and >= 10 GB of
transfers per loop (about a minute per loop here; not for CI)::

    AIOVEO_SOAK=long /work/venv/bin/pytest -q -s tests/test_soak.py

(or ``pytest --soak-long tests/test_soak.py``).  ``-s`` shows the measured
numbers.
"""
from __future__ import annotations

import asyncio
import collections
import os
import threading
import time

import numpy as np
import pytest

import aioveo as veo
from aioveo import OnStack

pytestmark = pytest.mark.soak

N_PROCS = 4
N_CTXS = 4                      # per proc, for the asyncio tasks
N_TASKS = 48                    # asyncio tasks, spread over the 16 contexts
N_THREADS = 2                   # PyVEO threads, each with one context per proc
CALLS_PER_TASK_ROUND = 16       # tagged calls per task per round (+ 3 transfer-related)
CALLS_PER_THREAD_CTX_ROUND = 16
WORDS = 12 * 1024               # 96 KiB buffers: write + read per transfer step
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _long_form(request) -> bool:
    return os.environ.get("AIOVEO_SOAK") == "long" or bool(request.config.getoption(
        "--soak-long", default=False))


def _rounds(long: bool) -> int:
    # Per round: 48*(16+3) + 2*4*(16+3) ~ 1064 calls; (48 + 8) * 2 * 96 KiB ~ 10.5 MiB.
    return 1000 if long else 40


# ---- host mirrors of the VE kernels ------------------------------------------------
def splitmix_fill(seed: int, n: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(seed) + i * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


_POS_MASK: dict[int, np.ndarray] = {}


def checksum(a: np.ndarray) -> int:
    mask = _POS_MASK.get(a.size)
    if mask is None:
        with np.errstate(over="ignore"):
            mask = _POS_MASK[a.size] = np.arange(a.size, dtype=np.uint64) * GOLDEN
    with np.errstate(over="ignore"):
        return int(np.bitwise_xor(a, mask).sum(dtype=np.uint64))


# ---- resource probes -----------------------------------------------------------------
def status_kib() -> dict[str, int]:
    """VmRSS and its parts (RssAnon, RssFile, RssShmem) in KiB, from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0])
    return out


def rss_kib() -> int:
    return status_kib()["VmRSS"]


def helper_children() -> list[int]:
    me = os.getpid()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == me and fields[0] not in "ZX" and "veorun" in comm:
            pids.append(int(d))
    return sorted(pids)


def snapshot() -> dict:
    st = status_kib()
    # RssShmem is the emulator's shared memory (command/result rings of every
    # context, VE memory) touched by the host: bounded, checked separately.
    return {"rss_kib": st["VmRSS"], "rss_private_kib": st["RssAnon"] + st["RssFile"],
            "shmem_kib": st["RssShmem"], "fds": len(os.listdir("/proc/self/fd")),
            "py_threads": threading.active_count(), "os_threads": len(os.listdir("/proc/self/task")),
            "helpers": helper_children()}


# ---- the workload -------------------------------------------------------------------
class Kern:
    def __init__(self, lib):
        self.tagged = lib.find_function("long rel_tagged(long seq)")
        self.add = lib.find_function("long rel_add(long a, long b)")
        self.fill = lib.find_function("long rel_fill(uint64_t *p, long n, uint64_t seed)")
        self.checksum = lib.find_function("uint64_t rel_checksum(const uint64_t *p, long n)")
        self.stack_checksum = lib.find_function(
            "uint64_t rel_stack_checksum(const uint64_t *p, long n, long tag)")


class Ledger:
    """Every sequence number issued and how often its result came back (a
    preallocated array, so the ledger itself does not grow during the run)."""

    def __init__(self, capacity: int):
        self._lock = threading.Lock()
        self._next = 0
        self.seen = np.zeros(capacity, np.uint8)
        self.bytes = 0
        self.calls = 0
        self.errors: list[str] = []

    @property
    def issued(self) -> int:
        return self._next

    def take(self, n: int) -> int:
        with self._lock:
            start = self._next
            self._next += n
            return start

    def got(self, base: int, n: int, calls: int, nbytes: int) -> None:
        with self._lock:
            self.seen[base:base + n] += 1
            self.calls += calls
            self.bytes += nbytes

    def error(self, msg: str) -> None:
        with self._lock:
            self.errors.append(msg)


def expect_tag(tag: int, seq: int) -> int:
    return (tag << 40) | seq


async def task_round(ctx, k: Kern, tag: int, ptr, host: np.ndarray, back: np.ndarray,
                     rng: np.random.Generator, ledger: Ledger) -> None:
    n = CALLS_PER_TASK_ROUND
    base = ledger.take(n)
    futs = [await ctx.submit(k.tagged, base + i) for i in range(n)]
    results = await asyncio.gather(*futs)
    for i, r in enumerate(results):
        if r != expect_tag(tag, base + i):
            ledger.error(f"tagged({base + i}) on proc tag {tag} returned {r:#x}")
    # transfer: host data -> VE, checksummed on the VE
    host[:] = rng.integers(0, 2**64 - 1, WORDS, dtype=np.uint64, endpoint=True)
    await ctx.write_mem(ptr, host)
    cs = await ctx.call(k.checksum, ptr, WORDS)
    if cs != checksum(host):
        ledger.error(f"VE checksum {cs:#x} != host {checksum(host):#x} (tag {tag})")
    # VE-generated data -> host, compared with the host's own generation
    seed = int(rng.integers(0, 2**63))
    await ctx.call(k.fill, ptr, WORDS, seed)
    await ctx.read_mem(back, ptr)
    if not np.array_equal(back, splitmix_fill(seed, WORDS)):
        ledger.error(f"fill({seed}) read back wrong (tag {tag})")
    small = host[: 64 + int(rng.integers(0, 64))]
    st = await ctx.call(k.stack_checksum, OnStack(small), small.size, base)
    if st != (checksum(small) + base) % 2**64:
        ledger.error(f"stack checksum wrong (tag {tag})")
    ledger.got(base, n, n + 3, 2 * host.nbytes + small.nbytes)


def thread_round(ctxs, kerns, tags, ptrs, host, back, rng, ledger: Ledger) -> None:
    n = CALLS_PER_THREAD_CTX_ROUND
    for c, k, tag, ptr in zip(ctxs, kerns, tags, ptrs):
        base = ledger.take(n)
        reqs = [k.tagged(c, base + i) for i in range(n)]
        for i, r in enumerate(reqs):
            v = r.wait_result()
            if v != expect_tag(tag, base + i):
                ledger.error(f"thread: tagged({base + i}) on tag {tag} returned {v:#x}")
        host[:] = rng.integers(0, 2**64 - 1, WORDS, dtype=np.uint64, endpoint=True)
        w = c.async_write_mem(ptr, host)
        cs = k.checksum(c, ptr, WORDS)
        seed = int(rng.integers(0, 2**63))
        f = k.fill(c, ptr, WORDS, seed)
        rd = c.async_read_mem(back, ptr)
        w.wait_result()
        if cs.wait_result() != checksum(host):
            ledger.error(f"thread: VE checksum wrong (tag {tag})")
        f.wait_result()
        rd.wait_result()
        if not np.array_equal(back, splitmix_fill(seed, WORDS)):
            ledger.error(f"thread: fill({seed}) read back wrong (tag {tag})")
        ledger.got(base, n, n + 4, 2 * host.nbytes)


class Gate:
    """Where a worker thread pauses so the main loop can measure."""

    def __init__(self):
        self.arrived = threading.Event()
        self.go = threading.Event()

    def wait_here(self):
        self.arrived.set()
        self.go.wait(600)


def thread_main(procs, libs, tags, rounds, at, gates, ledger, seed, failures):
    ctxs = []
    try:
        rng = np.random.default_rng(seed)
        ctxs = [p.open_context() for p in procs]
        kerns = [Kern(lib) for lib in libs]
        ptrs = [p.alloc_mem(WORDS * 8) for p in procs]
        host = np.empty(WORDS, np.uint64)
        back = np.empty(WORDS, np.uint64)
        for r in range(rounds):
            if r == at:
                gates[0].wait_here()
            thread_round(ctxs, kerns, tags, ptrs, host, back, rng, ledger)
        for p, ptr in zip(procs, ptrs):
            p.free_mem(ptr)
    except BaseException as e:  # noqa: BLE001 - reported by the main thread
        failures.append(e)
        gates[0].arrived.set()
    finally:
        gates[1].wait_here()          # alive for the final measurement
        for p, c in zip(procs, ctxs):
            p.close_context(c)


async def soak(rel_so: str, rounds: int) -> dict:
    loop = asyncio.get_running_loop()
    ledger = Ledger(rounds * (N_TASKS * CALLS_PER_TASK_ROUND
                              + N_THREADS * N_PROCS * CALLS_PER_THREAD_CTX_ROUND))
    at = max(1, rounds // 10)
    # Warm the default executor up to its maximum so its thread count is stable.
    workers = min(32, (os.cpu_count() or 1) + 4)
    barrier = threading.Barrier(workers + 1)
    warm = [loop.run_in_executor(None, barrier.wait, 30) for _ in range(workers)]
    barrier_thread = threading.Thread(target=barrier.wait, args=(30,))
    barrier_thread.start()
    await asyncio.gather(*warm)
    barrier_thread.join()

    async with veo.open_procs(range(N_PROCS)) as procs:
        libs = await asyncio.gather(*(p.load_library(rel_so) for p in procs))
        tags = [i + 1 for i in range(N_PROCS)]
        for p, lib, tag in zip(procs, libs, tags):
            p.sync.write_mem(lib.get_symbol("rel_proc_tag"), np.array([tag], np.int64))
        kerns = [Kern(lib) for lib in libs]
        for p in procs:
            await p.open_context()           # the main context: proc-level ops go there
        ctxs = [[await p.open_context(max_in_flight=64) for _ in range(N_CTXS)] for p in procs]

        gates = [[Gate(), Gate()] for _ in range(N_THREADS)]
        failures: list[BaseException] = []
        threads = [threading.Thread(target=thread_main, name=f"soak-{t}",
                                    args=([p.sync for p in procs], libs, tags, rounds, at,
                                          gates[t], ledger, 100 + t, failures))
                   for t in range(N_THREADS)]
        for t in threads:
            t.start()

        # task i uses proc i % 4, context (i // 4) % 4
        plan = []
        for i in range(N_TASKS):
            pi = i % N_PROCS
            ctx = ctxs[pi][(i // N_PROCS) % N_CTXS]
            ptr = await procs[pi].alloc_mem(WORDS * 8)
            plan.append((ctx, kerns[pi], tags[pi], ptr, np.empty(WORDS, np.uint64),
                         np.empty(WORDS, np.uint64), np.random.default_rng(i)))

        async def wait_gates(which: int) -> None:
            while not all(g[which].arrived.is_set() for g in gates):
                await asyncio.sleep(0.005)

        async def run_rounds(start: int, stop: int) -> None:
            for _ in range(start, stop):
                await asyncio.gather(*(task_round(*args, ledger) for args in plan))

        marks = {}
        t0 = time.monotonic()
        async with asyncio.timeout(3600 if rounds > 100 else 120):
            await run_rounds(0, at)
            await wait_gates(0)
            marks["10%"] = snapshot()
            marks["10%"]["calls"], marks["10%"]["bytes"] = ledger.calls, ledger.bytes
            for g in gates:
                g[0].go.set()
            await run_rounds(at, rounds)
            await wait_gates(1)
            marks["end"] = snapshot()
            marks["end"]["calls"], marks["end"]["bytes"] = ledger.calls, ledger.bytes
        elapsed = time.monotonic() - t0
        for g in gates:
            g[0].go.set()
            g[1].go.set()
        while any(t.is_alive() for t in threads):
            await asyncio.sleep(0.01)
        if failures:
            raise failures[0]
        for args in plan:
            await args[0].free_mem(args[3])
        in_flight = sum(c.in_flight for cs in ctxs for c in cs)

    return {"marks": marks, "ledger": ledger, "elapsed": elapsed, "in_flight": in_flight}


@pytest.fixture(scope="module")
def rel_so(build_kernel):
    return build_kernel("rel_kernels")


def _loop_factory(name):
    if name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_soak(rel_so, request, loop):
    long = _long_form(request)
    rounds = _rounds(long)
    with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
        out = runner.run(soak(rel_so, rounds))
    ledger: Ledger = out["ledger"]
    mid, end = out["marks"]["10%"], out["marks"]["end"]

    # nothing lost, duplicated or misrouted
    assert ledger.errors == []
    assert ledger.issued == ledger.seen.size
    assert (ledger.seen != 0).all(), f"lost results: {np.flatnonzero(ledger.seen == 0)[:10]}"
    assert (ledger.seen <= 1).all(), f"duplicated results: {np.flatnonzero(ledger.seen > 1)[:10]}"
    assert out["in_flight"] == 0

    print(f"\nsoak[{loop}{', long' if long else ''}]: {ledger.calls} calls, "
          f"{ledger.bytes / 1e6:.0f} MB in {out['elapsed']:.1f}s; "
          f"10%: {mid}; end: {end}")
    request.node.user_properties.append(("soak", {"mid": mid, "end": end,
                                                  "calls": ledger.calls, "bytes": ledger.bytes}))
    if long:
        assert ledger.calls >= 1_000_000 and ledger.bytes >= 10e9
    else:
        assert ledger.calls >= 40_000 and ledger.bytes >= 400e6
    # flat resources between 10% and the end
    assert end["helpers"] == mid["helpers"] and len(end["helpers"]) == N_PROCS
    assert end["fds"] - mid["fds"] <= 2, (mid, end)
    assert end["py_threads"] == mid["py_threads"], (mid, end)
    assert end["os_threads"] - mid["os_threads"] <= 1, (mid, end)
    growth_mib = (end["rss_private_kib"] - mid["rss_private_kib"]) / 1024
    assert growth_mib < (48 if long else 16), (mid, end)
    # Shared memory: each context's rings (1 MiB of commands, 64 Ki 16-byte
    # result slots) are touched progressively until they wrap, then reused;
    # plus the VE memory the run allocated.  Bounded, whatever the run length.
    contexts = N_PROCS * (1 + N_CTXS + N_THREADS)
    ve_bytes = (N_TASKS + N_THREADS * N_PROCS) * WORDS * 8
    bound_kib = contexts * (2 * 1024 + 8) + ve_bytes // 1024 + N_PROCS * 2048
    assert end["shmem_kib"] <= bound_kib, (end, bound_kib)
