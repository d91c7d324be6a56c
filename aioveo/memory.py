"""VE memory for the asyncio API: one caching, stream-ordered pool per proc.

    arr = await ctx.empty((n,), "f8")          # from proc.memory, the proc's pool
    arr = await ctx.to_ve(host_array)          # pool + copy
    await ctx.call(kernel, arr, n)             # aioveo records that this request uses arr
    arr.free()                                 # never waits (``await arr.free()`` works too)
    proc.memory.stats()                        # PoolStats
    proc.memory.set_limit("60%")               # or bytes, or a fraction; None: no limit
    await proc.memory.reserve("50%")           # one arena: nothing fragments across segments

How reuse is kept safe without ever synchronizing: every request a pool
block is passed to is recorded as the block's last use on that request's
context (its ticket: the request id).  A context runs its queue in order,
so when it completes a request every earlier one is done (its frontier).  A
freed block whose uses are over is reusable at once; one whose only
unfinished use is on context C is reusable at once *on C* (anything C runs
next runs after that use) and everywhere once C's frontier passes the use;
one used on several contexts waits for all of them.  The checks happen as
completions arrive, never by polling.  Cancelling an await does not end a
use: the VE still runs the request.  A finalizer only queues the free for
the event loop.  A proc's death frees its pool without a VEO call.

Addresses a kernel keeps for later (in a VE global, say) cannot be tracked:
keep the array alive (and unfreed) until the kernel is done with them.

``AIOVEO_MEMPOOL`` (aioveo.settings) chooses the mode: ``1`` (default)
caches; ``0`` makes every block its own ``veo_alloc_mem``, given back with
``veo_free_mem`` once its uses are over; ``debug`` does the same, fills
freed blocks with 0xDB before freeing them and records where each block was
allocated (the emulator's freed-memory checks keep working: a cache would
hide use-after-free from them).
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import traceback
import warnings
import weakref
from typing import TYPE_CHECKING, Any

from . import _core, settings
from ._observers import observers
from ._core import CtxMem, NativePool, PoolBlock, VeoError

if TYPE_CHECKING:
    from .aio import AsyncContext, AsyncProc

__all__ = ["MemoryPool", "PoolStats", "VEOutOfMemoryError", "parse_size"]

log = logging.getLogger("aioveo")

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SMALL_MAX = 1 * MiB           # requests up to this come from small segments
SMALL_SEGMENT = 2 * MiB
LARGE_MIN_SEGMENT = 20 * MiB  # requests of 1-10 MiB share 20 MiB segments
LARGE_ROUND = 2 * MiB
GROWTH_CAP = 256 * MiB        # a miss grows by up to the pool's size, at most this
_SMALL, _LARGE, _ARENA = 0, 1, 2
MODES = {"1": "cache", "on": "cache", "cache": "cache", "0": "raw", "off": "raw", "raw": "raw",
         "debug": "debug"}


class VEOutOfMemoryError(VeoError, MemoryError):
    """The pool could not find or get `requested` bytes.  The message (and
    the attributes) say what the VE and the pool hold; see the README's
    "Reading an out-of-memory error"."""

    def __init__(self, message: str, *, requested: int, node: int | None,
                 total: int | None, free: int | None, used: int, cached: int,
                 pending: int, largest_free: int, fragmentation: float,
                 limit: int | None, reserved: int, sites: tuple[str, ...] = ()) -> None:
        super().__init__(message, func="veo_alloc_mem", node=node)
        self.requested, self.total, self.free = requested, total, free
        self.used, self.cached, self.pending = used, cached, pending
        self.largest_free, self.fragmentation = largest_free, fragmentation
        self.limit, self.reserved, self.sites = limit, reserved, sites


@dataclasses.dataclass(frozen=True)
class PoolStats:
    """A proc's pool at one moment (bytes unless said otherwise)."""

    mode: str                  # "cache", "raw" (AIOVEO_MEMPOOL=0) or "debug"
    used_bytes: int            # held by live arrays and blocks (as rounded in the pool)
    requested_bytes: int       # what those asked for
    cached_bytes: int          # free in the pool, reusable by any context
    pending_free_bytes: int    # freed, waiting for queued work to pass their last use
    reserved_bytes: int        # taken from the VE (segments and arena)
    arena_bytes: int           # of which the reserved arena
    peak_bytes: int            # highest used_bytes (since reset_peak)
    live_blocks: int
    segments: int
    largest_free_block: int
    fragmentation: float       # 1 - largest_free_block / cached_bytes (0: none)
    hits: int
    misses: int
    limit: int | None
    oom_waits: int             # allocations that waited for memory (wait=)
    oom_wait_seconds: float

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0


def parse_size(value: int | float | str | None, total: int | None = None) -> int | None:
    """Bytes from ``1 << 30``, ``"40G"``, ``"512MiB"``, ``"60%"`` or ``0.6``
    (fractions and percentages of `total`); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("a size must be a number of bytes, a fraction or a string")
    if isinstance(value, float):
        if not 0 < value <= 1:
            raise ValueError(f"a fraction of the VE's memory must be in (0, 1], not {value}")
        if total is None:
            raise ValueError("the VE's memory size is unknown: give bytes")
        return int(total * value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size must be >= 0, not {value}")
        return value
    s = str(value).strip().replace(" ", "")
    if s.endswith("%"):
        return parse_size(float(s[:-1]) / 100, total)
    units = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1 << 40}
    body = s.upper().removesuffix("B").removesuffix("I")
    unit = body[-1] if body and body[-1] in "KMGT" else ""
    try:
        number = float(body[:-1] if unit else body)
    except ValueError:
        raise ValueError(f"not a size: {value!r} (bytes, '40G', '512MiB', '60%' or 0.6)") \
            from None
    return int(number * units[unit])


def _fmt(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, div in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _ctx_mem(ctx: "AsyncContext") -> CtxMem:
    """The context's record in its proc's pool (made on first use)."""
    mem = ctx._mem
    if mem is None:
        pool = ctx.proc.memory
        mem = ctx._mem = CtxMem(pool, f"context 0x{ctx.sync.handle:x}")
    return mem


class MemoryPool(NativePool):
    """A proc's VE memory pool (``proc.memory``; see the module docstring).

    Sizes are rounded up to 512 bytes.  Requests up to 1 MiB share 2 MiB
    segments; larger ones get best-fit blocks of large segments, split and
    merged again when freed.  A miss grows the pool by one ``veo_alloc_mem``
    of the request (at least 20 MiB for 1-10 MiB requests) or of the pool's
    current size (at most 256 MiB), whichever is larger, halving the try
    when the VE refuses.  ``reserve()`` takes one arena instead, so nothing
    fragments across segments (one process per VE)."""

    def __init__(self, proc: "AsyncProc", *, mode: str | None = None,
                 track: bool | None = None, max_split: int | str | None = None) -> None:
        choice = settings.current().mempool if mode is None else mode
        if choice not in MODES:
            raise ValueError(f"memory pool mode must be one of {sorted(MODES)}, not {choice!r}")
        self.mode = MODES[choice]
        self._setup(proc.sync, self.mode != "cache", self.mode == "debug", SMALL_MAX, 0)
        self.async_proc = proc
        self.limit: int | None = None
        self.oom_waits = 0
        self.oom_wait_seconds = 0.0
        self._max_split = 0
        self._reported: set[CtxMem] = set()    # closed contexts whose live blocks were reported
        self._is_emulator = _core.backend().is_emulator
        self.observers = observers
        from .devices import _register_pool
        _register_pool(proc.sync, self)
        if track or (track is None and self.mode == "debug"):
            self.tracked = weakref.WeakSet()
        if max_split is not None:
            self.set_max_split(max_split)

    def __repr__(self) -> str:
        return f"<MemoryPool of {self.async_proc} ({self.mode})>"

    # ---- configuration --------------------------------------------------------
    def set_limit(self, limit: int | float | str | None) -> None:
        """Cap the bytes the pool takes from the VE: bytes, ``"40G"``, a
        fraction (``0.6``) or ``"60%"`` of the node's memory; None: no cap.
        Cached segments are given back first when the cap is reached."""
        self.limit = parse_size(limit, self._node_total())

    def get_limit(self) -> int | None:
        return self.limit

    def set_max_split(self, max_split: int | str | None) -> None:
        """Cached blocks of at least this size are kept whole for requests
        at least as large (PyTorch's ``max_split_size``); None: no bound."""
        self._max_split = parse_size(max_split) or 0
        self._set_max_split(self._max_split)

    def track(self, on: bool = True) -> None:
        """Record where each block is allocated (for leak and OOM reports)."""
        self.tracked = weakref.WeakSet() if on else None

    async def reserve(self, size: int | float | str) -> int:
        """Take one arena of `size` bytes (or ``"50%"``, ``0.5`` of the node)
        from the VE now and serve every request from it first: freed blocks
        always merge with their neighbours, so the arena does not fragment
        the way separate segments do.  Returns the bytes reserved."""
        self._check()
        if self.raw:
            raise ValueError(f"the pool does not cache in {self.mode!r} mode "
                             f"(AIOVEO_MEMPOOL): nothing to reserve")
        if (self._native_stats() or {}).get("reserved_arena"):
            raise ValueError("the pool already has an arena")
        nbytes = self._round(parse_size(size, self._node_total()) or 0)
        if self.limit is not None and self._reserved() + nbytes > self.limit:
            raise ValueError(f"an arena of {_fmt(nbytes)} exceeds the pool's limit "
                             f"({_fmt(self.limit)})")
        addr = await self._upstream([nbytes])
        if addr is None:
            raise self._oom(nbytes, "the VE refused the arena")
        self._add_segment(addr[0], addr[1], _ARENA)
        return nbytes

    # ---- allocation -------------------------------------------------------------
    async def alloc(self, nbytes: int, *, ctx: "AsyncContext | None" = None,
                    wait: float = 0.0) -> PoolBlock:
        """A block of at least `nbytes` bytes; on `ctx`, its freed blocks are
        reusable at once (FIFO).  With `wait` (seconds), a pool short of
        memory waits that long for blocks being freed before it raises
        VEOutOfMemoryError."""
        nbytes = _check_size(nbytes)
        mem = self._mem_of(ctx)
        blk = self._hit(nbytes, mem)
        if blk is None:
            blk = await self._alloc_slow(nbytes, mem, wait)
        return blk

    def _mem_of(self, ctx: "AsyncContext | None") -> CtxMem | None:
        if ctx is None:
            return None
        if ctx.proc is not self.async_proc:
            raise ValueError(f"{ctx!r} is a context of another proc than this pool's")
        return _ctx_mem(ctx)

    def malloc(self, nbytes: int, *, ctx: "AsyncContext | None" = None) -> PoolBlock:
        """``alloc`` without awaiting: a cached block, else the pool grows on
        the calling thread (a VE round trip on hardware); never waits for
        frees."""
        nbytes = _check_size(nbytes)
        mem = self._mem_of(ctx)
        blk = self._hit(nbytes, mem)
        if blk is not None:
            return blk
        self._check()
        self.misses += 1
        blk = self._retry(nbytes, mem) or self._grow_now(nbytes, mem)
        if blk is None:
            self._release_segments(1 << _SMALL | 1 << _LARGE)
            blk = self._grow_now(nbytes, mem)
        if blk is None:
            raise self._oom(nbytes)
        return blk

    def _check(self) -> None:
        if self.closed:
            proc = self.async_proc.sync
            if not proc.destroyed and proc._is_dead():
                raise _core.ProcDeadError("the VE process is dead: its memory went with it",
                                          node=proc.nodeid)
            raise _core.ClosedError("the proc's memory pool is closed (the proc was destroyed)")

    def _retry(self, nbytes: int, mem: CtxMem | None) -> PoolBlock | None:
        self._drain()
        return None if self.raw else self._after_growth(nbytes, mem)

    async def _alloc_slow(self, nbytes: int, mem: CtxMem | None, wait: float) -> PoolBlock:
        self._check()
        self.misses += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait, 0.0)
        collected = False
        waited = 0.0
        try:
            while True:
                blk = self._retry(nbytes, mem) or await self._grow(nbytes, mem)
                if blk is not None:
                    return blk
                # Over the limit or the VE is full: give back whole cached
                # segments (they cannot serve this request), then try again.
                if self._release_segments(1 << _SMALL | 1 << _LARGE):
                    blk = await self._grow(nbytes, mem)
                    if blk is not None:
                        return blk
                if not collected:   # arrays only garbage keeps alive
                    collected = True
                    gc.collect()
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    raise self._oom(nbytes)
                fut = loop.create_future()
                self.oom_waiters.append(fut)
                if waited == 0.0:
                    self.oom_waits += 1
                t0 = loop.time()
                try:
                    await asyncio.wait_for(fut, left)
                except asyncio.TimeoutError:
                    pass
                finally:
                    waited += loop.time() - t0
                self._check()
        finally:
            self.oom_wait_seconds += waited

    # ---- growth -------------------------------------------------------------------
    def _reserved(self) -> int:
        s = self._native_stats()
        if s is None:
            return self.raw_bytes
        return s["reserved_small"] + s["reserved_large"] + s["reserved_arena"] + self.raw_bytes

    def _tries(self, nbytes: int) -> list[int]:
        """Segment sizes to ask the VE for, largest first (halving on refusal)."""
        rounded = self._round(nbytes)
        if self.raw:
            tries = [nbytes]
        elif self._kind_for(nbytes) == _SMALL:
            tries = [SMALL_SEGMENT]
        else:
            need = _round_up(rounded, LARGE_ROUND)
            base = LARGE_MIN_SEGMENT if rounded <= 10 * MiB else need
            s = self._native_stats() or {}
            grow = _round_up(min(s.get("reserved_large", 0), GROWTH_CAP), LARGE_ROUND)
            first = max(base, grow)
            if self._max_split and rounded < self._max_split:
                first = min(first, max(need, self._max_split - int(_core.MEMPOOL_UNIT)))
            tries = []
            t = first
            while t > need:
                tries.append(t)
                t = _round_up(t // 2, LARGE_ROUND)
            tries.append(need)
        if self.limit is not None:
            room = self.limit - self._reserved()
            tries = [t for t in tries if t <= room]
        return tries

    def _grow_now(self, nbytes: int, mem: CtxMem | None) -> PoolBlock | None:
        tries = self._tries(nbytes)
        if self.raw:
            return self._raw_alloc(nbytes, mem) if tries else None
        for t in tries:
            addr = self._upstream_alloc(t)
            if addr:
                self._add_segment(addr, t, self._kind_for(nbytes))
                return self._after_growth(nbytes, mem)
        return None

    async def _grow(self, nbytes: int, mem: CtxMem | None) -> PoolBlock | None:
        if self._is_emulator:     # a host heap operation: cheaper than a hand-off
            return self._grow_now(nbytes, mem)
        # On a VE, veo_alloc_mem is a round trip queued behind the main
        # context: never on the loop thread.
        tries = self._tries(nbytes)
        if not tries:
            return None
        if self.raw:
            got = await self._upstream([nbytes])
            if got is None:
                return None
            return self._raw_block(got[0], nbytes, mem)
        got = await self._upstream(tries)
        if got is None:
            return None
        self._add_segment(got[0], got[1], self._kind_for(nbytes))
        return self._after_growth(nbytes, mem)

    def _raw_block(self, addr: int, nbytes: int, mem: CtxMem | None) -> PoolBlock | None:
        # allocated off the loop: the proc may have gone meanwhile (and its memory with it)
        return None if self.closed else self._raw_wrap(addr, nbytes, mem)

    async def _upstream(self, tries: list[int]) -> tuple[int, int] | None:
        def attempt() -> tuple[int, int] | None:
            for t in tries:
                addr = self._upstream_alloc(t)
                if addr:
                    return addr, t
            return None

        if self._is_emulator:
            return attempt()
        return await asyncio.get_running_loop().run_in_executor(None, attempt)

    # ---- giving memory back ---------------------------------------------------------
    def free_all_blocks(self) -> int:
        """Give every cached segment that is entirely free back to the VE
        (not the arena); returns the bytes released."""
        if self.closed:
            return 0
        self._drain()
        return self._release_segments(1 << _SMALL | 1 << _LARGE)

    def reset_peak(self) -> None:
        self._reset_peak()

    # ---- what it holds -------------------------------------------------------------
    def stats(self) -> PoolStats:
        if not self.closed:
            self._drain()
        s = self._native_stats() or {}
        fenced = s.get("fenced", 0)
        cached = s.get("free", 0)
        largest = s.get("largest_free", 0)
        if self.raw:
            used, peak = self.raw_bytes - self.pending_bytes, self.raw_peak
        else:
            used, peak = s.get("used", 0) - self.pending_bytes, s.get("peak", 0)
        return PoolStats(
            mode=self.mode, used_bytes=used, requested_bytes=self.live_bytes,
            cached_bytes=cached, pending_free_bytes=fenced + self.pending_bytes,
            reserved_bytes=self._reserved() if not self.closed else 0,
            arena_bytes=s.get("reserved_arena", 0), peak_bytes=peak,
            live_blocks=self.live_blocks, segments=s.get("segments", 0),
            largest_free_block=largest,
            fragmentation=(1 - largest / cached) if cached else 0.0,
            hits=self.hits, misses=self.misses, limit=self.limit,
            oom_waits=self.oom_waits, oom_wait_seconds=self.oom_wait_seconds)

    def snapshot(self) -> list[dict[str, Any]]:
        """The segments and their blocks, in address order: ``[{"addr",
        "size", "kind", "blocks": [{"addr", "size", "state"}]}]``, states
        "used", "free" or "fenced" (freed, reusable on one context only)."""
        states = {1: "used", 2: "free", 3: "fenced"}
        out: list[dict[str, Any]] = []
        for seg_addr, seg_size, kind, addr, size, state in self._walk():
            if not out or out[-1]["addr"] != seg_addr:
                out.append({"addr": seg_addr, "size": seg_size,
                            "kind": _core.SEGMENT_KINDS[kind], "blocks": []})
            out[-1]["blocks"].append({"addr": addr, "size": size, "state": states[state]})
        return out

    def live_sites(self, top: int = 5) -> list[tuple[str, int, int]]:
        """(allocation site, blocks, bytes) of live blocks, largest first
        (needs tracking: ``track()``, or the debug mode)."""
        if self.tracked is None:
            return []
        sites: dict[str, list[int]] = {}
        for blk in list(self.tracked):
            if blk.site is None or blk.freed:
                continue
            entry = sites.setdefault(blk.site, [0, 0])
            entry[0] += 1
            entry[1] += blk.size
        ranked = sorted(sites.items(), key=lambda kv: -kv[1][1])[:top]
        return [(site, n, b) for site, (n, b) in ranked]

    # ---- hooks the native half calls ------------------------------------------------
    def _track(self, blk: PoolBlock) -> None:
        frames = traceback.extract_stack(limit=12)[:-1]
        mine = [f for f in frames if "/aioveo/" not in f.filename] or frames
        f = mine[-1]
        blk.site = f"{f.filename}:{f.lineno} in {f.name}"
        self.tracked.add(blk)

    def _observe(self) -> None:
        s = self._native_stats() or {}
        used = (s.get("used", 0) if not self.raw else self.raw_bytes) - self.pending_bytes
        pending = s.get("fenced", 0) + self.pending_bytes
        for o in self.observers:
            sample = getattr(o, "memory_sample", None)
            if sample is not None:
                sample(self.async_proc, used, s.get("free", 0), pending)

    # ---- errors and leaks --------------------------------------------------------------
    def _node_total(self) -> int | None:
        from .devices import device
        try:
            return device(self.async_proc.nodeid).memory_total
        except Exception:   # noqa: BLE001 - no record: sizes in bytes still work
            return None

    def _oom(self, nbytes: int, why: str | None = None) -> VEOutOfMemoryError:
        from .devices import device
        st = self.stats()
        node = self.async_proc.nodeid
        try:
            dev = device(node)
            total, used_on_ve = dev.memory_total, dev.memory_used
        except Exception:   # noqa: BLE001
            total = used_on_ve = None
        free = None if total is None or used_on_ve is None else total - used_on_ve
        sites = tuple(f"{site}: {n} blocks, {_fmt(b)}" for site, n, b in self.live_sites())
        limited = st.limit is not None and st.reserved_bytes + self._round(nbytes) > st.limit
        if why is None:
            why = (f"the pool's limit of {_fmt(st.limit)} would be exceeded" if limited
                   else "the VE has no room left for it")
        if st.pending_free_bytes >= nbytes:
            hint = (f"{_fmt(st.pending_free_bytes)} are freed but still used by queued "
                    f"requests: pass wait=seconds to await them (or free earlier)")
        elif st.cached_bytes >= nbytes and st.largest_free_block < nbytes:
            hint = ("the pool has the bytes but not in one piece (fragmentation): reserve one "
                    "arena with `await proc.memory.reserve(...)`, or give cached segments back "
                    "with proc.memory.free_all_blocks()")
        elif limited and (free is None or free >= nbytes):
            hint = "raise the limit with proc.memory.set_limit(...)"
        else:
            hint = ("free arrays earlier (arr.free(), or drop them) or allocate less at once"
                    + ("; set AIOVEO_MEMPOOL=debug or proc.memory.track() to see where the "
                       "live blocks come from" if self.tracked is None else ""))
        lines = [
            f"cannot allocate {_fmt(nbytes)} of VE memory on node {node}: {why}.",
            f"  VE node {node}: {_fmt(total)} total, {_fmt(free)} free.",
            f"  This proc's pool ({st.mode}): {_fmt(st.used_bytes)} in use by {st.live_blocks} "
            f"blocks, {_fmt(st.cached_bytes)} cached free (largest free block "
            f"{_fmt(st.largest_free_block)}, fragmentation {st.fragmentation:.0%}), "
            f"{_fmt(st.pending_free_bytes)} pending free (waiting for queued requests), "
            f"{_fmt(st.reserved_bytes)} reserved, limit "
            f"{_fmt(st.limit) if st.limit is not None else 'none'}.",
        ]
        if sites:
            lines.append("  Largest live allocation sites: " + "; ".join(sites) + ".")
        lines.append(f"  Hint: {hint}.")
        return VEOutOfMemoryError(
            "\n".join(lines), requested=nbytes, node=node, total=total, free=free,
            used=st.used_bytes, cached=st.cached_bytes, pending=st.pending_free_bytes,
            largest_free=st.largest_free_block, fragmentation=st.fragmentation,
            limit=st.limit, reserved=st.reserved_bytes, sites=sites)

    def _leaks(self, mem: CtxMem | None = None) -> str | None:
        if not self.closed:
            self._drain()
        if mem is None:   # the proc: what closing contexts did not report already
            n = self.live_blocks - sum(m.live_blocks for m in self._reported)
            nbytes = self.live_bytes - sum(m.live_bytes for m in self._reported)
        else:
            n, nbytes = mem.live_blocks, mem.live_bytes
        if n <= 0:
            return None
        if mem is not None:
            self._reported.add(mem)
        sites = ""
        if self.tracked is not None:
            where = [f"{site} ({k} blocks, {_fmt(b)})" for site, k, b in self.live_sites(10)]
            if where:
                sites = "; allocated at " + ", ".join(where)
        else:
            sites = " (AIOVEO_MEMPOOL=debug or proc.memory.track() records where)"
        return f"{n} VE memory blocks ({_fmt(nbytes)}) still live{sites}"

    def _warn_leaks(self, where: str, mem: CtxMem | None = None) -> None:
        msg = self._leaks(mem)
        if msg:
            warnings.warn(f"{where}: {msg}; free them with arr.free()", ResourceWarning,
                          stacklevel=3)


def _check_size(nbytes: Any) -> int:
    try:
        n = int(nbytes)
    except (TypeError, ValueError):
        raise TypeError(f"a size in bytes must be an int, not {type(nbytes).__name__}") from None
    if n < 0:
        raise ValueError(f"size must be >= 0, not {n}")
    return max(n, 1)


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit

