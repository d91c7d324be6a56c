"""Pools that keep serving: calls spread over the contexts of several VE
processes (least loaded first), healed when a process dies.

    async with aioveo.open_pool([0, 1, 2, 3], contexts_per_proc=2) as pool:
        work = await pool.function("./libk.so", "long work(long)", retries=1)
        r = await pool.call(work, 7, timeout=2.0)
        print(pool.stats())

**Healing.**  A proc that dies (a kernel fault, a killed VE process) leaves
the dispatch set at once: the pool learns it from the failed request, from a
failed submission, or from its probe of every proc's state (every
``AIOVEO_POOL_PROBE_MS``, default 100 ms).  Requests that were in flight on
it fail with ProcDeadError (the VE may have run them); a call that never
reached it goes to another proc.  ``retries=N`` (per function or per call,
for kernels you declare idempotent) re-runs a call that failed with
ProcDeadError on another proc; a call that raised VeoException crashed its
proc itself and is never re-run.  With ``heal=True`` (the default of
open_pool) the pool opens a replacement on the same node in the background,
re-loads the pool's libraries, re-resolves every PoolFunction (callers keep
their objects) and runs ``setup(proc)``.  Consecutive failures of a node (a
replacement that cannot be opened, or a proc that dies within
``stable_after`` seconds of joining) back off exponentially (``backoff``,
doubling, at most ``max_backoff`` seconds); after ``max_failures`` the node
is marked failed, with the reason, and the pool moves to a spare node when
it was opened with ``procs=N`` from a longer candidate list.  A node marked
failed is tried again ``revive_after`` seconds later (open_pool; default:
never) or when you ``await pool.revive()``.  With no live proc and none
coming, calls fail at once with NoProcError.

**Admission.**  ``max_pending`` bounds the pool's calls admitted and not yet
finished by the VE (a cancelled or timed-out call keeps its place until the
VE is done with it).  A call beyond it waits its turn, or with
``fail_fast=True`` raises OverloadedError at once, as it does when every
context is at its ``max_in_flight``.  ``pool.call(..., timeout=)`` bounds the
wait for admission, for a proc and for the result: it raises TimeoutError
and the VE still finishes the kernel (``asyncio.timeout()`` around a call
behaves the same).  ``pool.map`` is bounded by the contexts' max_in_flight
only.

**Numbers.**  ``pool.stats()``: per proc and context their state, calls in
flight, completed and failed, replacements and history; pool-wide counters
and the latency percentiles of recent calls.  Life-cycle events (a proc
died, was replaced, a node was marked failed) are logged to ``aioveo.pool``.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
import weakref
from types import TracebackType
from typing import Any, Awaitable, Callable, Iterable, Sequence

from . import settings
from ._core import (ClosedError, ProcDeadError, VeoError, VeoException, VeoFunction, VeoLibrary,
                    second_context_problem)
from .aio import DEFAULT_MAX_IN_FLIGHT, AsyncContext, AsyncProc, _Opener, open_proc
from .nodes import NodesUnavailableError, candidates, describe_failures, open_any

__all__ = ["Pool", "PoolFunction", "open_pool", "OverloadedError", "NoProcError",
           "NodesUnavailableError"]

log = logging.getLogger("aioveo.pool")

ALIVE, REPLACING, DEAD, FAILED, CLOSED = "alive", "replacing", "dead", "failed", "closed"
Setup = Callable[[AsyncProc], Awaitable[Any]]


class OverloadedError(VeoError):
    """A fail-fast pool is full: ``max_pending`` calls admitted, or every
    context at its ``max_in_flight``.  Shed the load (HTTP 503) or retry later."""


class NoProcError(ProcDeadError):
    """The pool has no live proc and none is coming (every node failed, or
    healing is off); the message says why for each node."""


# ---- functions --------------------------------------------------------------------
class PoolFunction:
    """A function named once and resolved in every proc of a pool; a proc
    that replaces a dead one resolves it again, so keep using the object.
    ``retries``: how often a call that failed with ProcDeadError is re-run
    on another proc (declare only idempotent kernels)."""

    def __init__(self, per_proc: dict[AsyncProc, VeoFunction], name: str, *,
                 library: str | None = None, retries: int = 0) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        self.per_proc = per_proc
        self.name = name
        self.library = library
        self.retries = retries
        self._args: tuple[Any, ...] | None = None
        self._ret: Any = None

    def for_proc(self, proc: AsyncProc) -> VeoFunction:
        """The VeoFunction in `proc`."""
        try:
            return self.per_proc[proc]
        except KeyError:
            raise ValueError(f"{self!r} is not resolved in {proc}") from None

    def args_type(self, *types: Any) -> None:
        """Declare the argument types in every proc, and in future replacements."""
        for f in self.per_proc.values():
            f.args_type(*types)
        self._args = types

    def ret_type(self, rettype: Any) -> None:
        """Declare the return type in every proc, and in future replacements."""
        for f in self.per_proc.values():
            f.ret_type(rettype)
        self._ret = rettype

    def _resolve(self, proc: AsyncProc, lib: VeoLibrary, f: VeoFunction | None = None) -> None:
        if f is None:
            f = lib.find_function(self.name)
        args, ret = self._args, self._ret
        if args is None:   # declared PyVEO style on the VeoFunctions: carry it over
            for sib in self.per_proc.values():
                if sib._args_type is not None:
                    args, ret = sib._args_type, sib._ret_type
                    break
        if args is not None:
            f.args_type(*args)
        if ret is not None:
            f.ret_type(ret)
        self.per_proc[proc] = f

    def __repr__(self) -> str:
        return f"PoolFunction({self.name!r}, procs={len(self.per_proc)})"


# ---- the pool's bookkeeping -----------------------------------------------------------
class _ProcRecord:
    """One proc of a member (a place in the pool), alive or in its history."""

    __slots__ = ("pid", "started", "ended", "state", "reason", "contexts", "counts")

    def __init__(self, pid: int | None, contexts: list[AsyncContext]) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self.ended: float | None = None
        self.state = ALIVE
        self.reason: str | None = None
        self.contexts = contexts
        self.counts = [[0, 0] for _ in contexts]   # per context: completed, failed

    def summary(self) -> dict[str, Any]:
        end = self.ended if self.ended is not None else time.monotonic()
        return {"pid": self.pid, "state": self.state, "reason": self.reason,
                "completed": sum(c[0] for c in self.counts),
                "failed": sum(c[1] for c in self.counts),
                "lifetime_s": round(end - self.started, 6)}


class _Member:
    """A place in the pool: a node, its current proc and contexts."""

    def __init__(self, node: int, owned: bool) -> None:
        self.node = node
        self.owned = owned
        self.proc: AsyncProc | None = None
        self.contexts: list[AsyncContext] = []
        self.libs: dict[str, VeoLibrary] = {}
        self.record: _ProcRecord | None = None
        self.history: collections.deque[_ProcRecord] = collections.deque(maxlen=8)
        self.state = DEAD
        self.generation = 0       # procs this place has had
        self.replacements = 0
        self.streak = 0           # consecutive failures (deaths soon after joining, failed opens)
        self.reason: str | None = None
        self.since = 0.0
        self.died_at = 0.0
        self.task: asyncio.Task | None = None


class _Attempt:
    """One submission of a pool call: settles the caller's waiter and the
    pool's accounting when the VE is done with it (the context's future's
    done-callback), even after the caller stopped waiting."""

    __slots__ = ("pool", "member", "record", "index", "proc", "t0", "inner", "waiter",
                 "relay", "admitted")

    def __init__(self, pool: "Pool", member: _Member, record: _ProcRecord | None, index: int,
                 proc: AsyncProc, inner: asyncio.Future, t0: float) -> None:
        self.pool = pool
        self.member = member
        self.record = record
        self.index = index
        self.proc = proc
        self.t0 = t0
        self.inner = inner
        self.waiter: asyncio.Future | None = None
        self.relay = False         # the waiter gets the outcome (else just None: wake up)
        self.admitted = False      # settling gives the admission slot back

    def __call__(self, inner: asyncio.Future) -> None:
        self.pool._settled(self)


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError("the pool call timed out"))


async def _until(fut: asyncio.Future, deadline: float | None) -> Any:
    """``await fut``, failing it with TimeoutError at loop time `deadline`."""
    if deadline is None:
        return await fut
    loop = asyncio.get_running_loop()
    handle = loop.call_at(deadline, _expire, fut)
    try:
        return await fut
    finally:
        handle.cancel()


def _drop(waiters: collections.deque, fut: asyncio.Future) -> None:
    try:
        waiters.remove(fut)
    except ValueError:
        pass


# ---- the pool -----------------------------------------------------------------------------
class Pool:
    """Contexts of several procs; calls go to the least-loaded live context.

    Open one with open_pool().  ``procs`` and ``contexts`` are the live ones
    (they change as procs die and are replaced)."""

    def __init__(self, procs: Sequence[AsyncProc], contexts: Sequence[AsyncContext],
                 owns_procs: bool, *, heal: bool = False, max_failures: int = 5,
                 backoff: float = 0.1, max_backoff: float = 10.0, stable_after: float = 10.0,
                 max_pending: int | None = None, fail_fast: bool = False,
                 contexts_per_proc: int | None = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, setup: Setup | None = None,
                 spares: Iterable[int] = (), failed_nodes: Iterable[tuple[int, str]] = (),
                 veorun_bin: str | None = None, probe_ms: float | None = None,
                 latency_window: int = 1024, revive_after: float | None = None) -> None:
        if max_failures < 1:
            raise ValueError(f"max_failures must be >= 1, not {max_failures}")
        if revive_after is not None and not revive_after > 0:
            raise ValueError(f"revive_after must be > 0 seconds or None, not {revive_after}")
        if max_pending is not None and max_pending < 1:
            raise ValueError(f"max_pending must be >= 1 or None, not {max_pending}")
        self.heal = heal
        self.max_failures = max_failures
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.max_pending = max_pending
        self.fail_fast = fail_fast
        self.revive_after = revive_after
        self.max_in_flight = max_in_flight
        self._veorun_bin = veorun_bin
        self._setup = setup
        self._spares = list(spares)
        self._failed_nodes: dict[int, str] = dict(failed_nodes)
        self._probe_s = (settings.current().pool_probe_ms if probe_ms is None else probe_ms) / 1e3

        self._members: list[_Member] = []
        self._member_of: dict[AsyncContext, _Member] = {}
        self._live: list[AsyncContext] = []
        self._libraries: dict[str, None] = {}          # loaded by function(), in order
        self._functions: "weakref.WeakSet[PoolFunction]" = weakref.WeakSet()
        self._pending = 0
        self._admit_waiters: collections.deque[asyncio.Future] = collections.deque()
        self._proc_waiters: collections.deque[asyncio.Future] = collections.deque()
        self._tasks: set[asyncio.Task] = set()
        self._burying: dict[asyncio.Task, AsyncProc | None] = {}
        self._probe: asyncio.Task | None = None
        self._closing = False
        self._closed = False
        self._done_closing: asyncio.Future | None = None
        self._latency: collections.deque[float] = collections.deque(maxlen=latency_window)
        self._n = dict(completed=0, failed=0, retried=0, rejected=0, timed_out=0, deaths=0,
                       replacements=0)
        self._last_replacement_s: float | None = None

        by_proc: dict[AsyncProc, list[AsyncContext]] = {p: [] for p in procs}
        for c in contexts:
            by_proc.setdefault(c.proc, []).append(c)
        for p, ctxs in by_proc.items():
            m = _Member(p.nodeid, owns_procs)
            self._members.append(m)
            self._join(m, p, ctxs, {})
        counts = [len(c) for c in by_proc.values()]
        self.contexts_per_proc = contexts_per_proc or (max(counts) if counts else 1)

    @classmethod
    async def create(cls, procs: Sequence[AsyncProc], contexts_per_proc: int = 1, *,
                     max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, owns_procs: bool = False,
                     **policy: Any) -> "Pool":
        """A pool over procs already open (``heal=`` and the other keywords of
        open_pool apply; replacements are the pool's own procs)."""
        contexts: list[AsyncContext] = []
        setup = policy.get("setup")
        for p in procs:
            for _ in range(contexts_per_proc):
                contexts.append(await p.open_context(max_in_flight=max_in_flight))
            if setup is not None:
                await setup(p)
        pool = cls(procs, contexts, owns_procs, contexts_per_proc=contexts_per_proc,
                   max_in_flight=max_in_flight, **policy)
        pool._start_probe()
        return pool

    # -- what is live
    @property
    def contexts(self) -> list[AsyncContext]:
        """The live contexts (a copy)."""
        return list(self._live)

    @property
    def procs(self) -> list[AsyncProc]:
        """The live procs."""
        return [m.proc for m in self._members if m.state == ALIVE and m.proc is not None]

    @property
    def live_procs(self) -> int:
        return sum(1 for m in self._members if m.state == ALIVE)

    @property
    def closed(self) -> bool:
        return self._closing

    def least_loaded(self) -> AsyncContext:
        ctx = self._pick()
        if ctx is None:
            raise NoProcError(self._why_no_proc())
        return ctx

    def _pick(self) -> AsyncContext | None:
        live = self._live
        if not live:
            return None
        best = live[0]
        n = best.in_flight
        if n:
            for c in live:
                if c.in_flight < n:
                    best, n = c, c.in_flight
                    if not n:
                        break
        return best

    # -- functions
    async def function(self, library: str | os.PathLike, prototype: str, *,
                       retries: int = 0) -> PoolFunction:
        """Load `library` in every proc (once) and find `prototype` (a C
        prototype like ``"double dot(double *, double *, long)"``, or a bare
        name) in each; replacements load and resolve it again.  ``retries``:
        see PoolFunction."""
        path = os.fspath(library)
        await self._load_everywhere(path)
        fn = PoolFunction({}, prototype, library=path, retries=retries)
        members = [m for m in self._members
                   if m.state == ALIVE and m.proc is not None and path in m.libs]
        # (a symbol lookup queues behind each proc's main context: off the loop)
        found = await asyncio.gather(*(m.proc.find_function(m.libs[path], prototype)
                                       for m in members if m.proc is not None))
        for m, f in zip(members, found):
            if m.proc is not None and path in m.libs:
                fn._resolve(m.proc, m.libs[path], f)
        self._functions.add(fn)
        return fn

    async def _load_everywhere(self, path: str) -> None:
        new = path not in self._libraries
        self._libraries[path] = None
        try:
            while True:
                missing = [(m, m.proc) for m in self._members
                           if m.state == ALIVE and m.proc is not None and path not in m.libs]
                if not missing:
                    return
                results = await asyncio.gather(*(p.load_library(path) for _, p in missing),
                                               return_exceptions=True)
                for (m, p), r in zip(missing, results):
                    if isinstance(r, BaseException):
                        if not isinstance(r, Exception) or not self._check_death(m, p, r):
                            raise r
                    elif m.proc is p:
                        m.libs[path] = r
        except BaseException:
            if new:
                self._libraries.pop(path, None)
            raise

    # -- admission
    def _admit_now(self) -> bool:
        if self._closing:
            raise ClosedError("the pool is closed")
        if self.max_pending is None or (self._pending < self.max_pending
                                        and not self._admit_waiters):
            self._pending += 1
            return True
        if self.fail_fast:
            self._n["rejected"] += 1
            raise OverloadedError(f"the pool is full: {self._pending} calls pending "
                                  f"(max_pending={self.max_pending})")
        return False

    async def _admit(self, deadline: float | None) -> None:
        w = asyncio.get_running_loop().create_future()
        self._admit_waiters.append(w)
        try:
            await _until(w, deadline)
        except BaseException:
            if w.done() and not w.cancelled() and w.exception() is None:
                self._unadmit()          # we were let in as we gave up: pass it on
            else:
                _drop(self._admit_waiters, w)
            raise

    def _unadmit(self) -> None:
        self._pending -= 1
        while self._admit_waiters:
            w = self._admit_waiters.popleft()
            if not w.done():
                self._pending += 1
                w.set_result(None)
                return

    # -- calls
    def _retries(self, fn: Any, retries: int | None) -> int:
        n = getattr(fn, "retries", 0) if retries is None else retries
        if n < 0:
            raise ValueError(f"retries must be >= 0, not {n}")
        return n

    async def call(self, fn: PoolFunction | VeoFunction, *args: Any, timeout: float | None = None,
                   retries: int | None = None) -> Any:
        """Call `fn` on the least-loaded live context; its result.  Waits for
        admission (see the module), for a proc when a replacement is coming,
        and for the result, all within `timeout` seconds (TimeoutError; the
        VE still finishes the kernel).  ``retries`` overrides the function's."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        left = self._retries(fn, retries)
        if not self._admit_now():
            try:
                await self._admit(deadline)
            except asyncio.TimeoutError:
                self._n["timed_out"] += 1
                raise
        return await self._call_admitted(fn, args, deadline, left)

    async def _call_admitted(self, fn: Any, args: tuple, deadline: float | None,
                             left: int) -> Any:
        att: _Attempt | None = None
        try:
            while True:
                att = await self._start(fn, args, deadline)
                inner = att.inner
                if inner.done():
                    self._settled(att)
                else:
                    att.waiter = asyncio.get_running_loop().create_future()
                    inner.add_done_callback(att)
                    await _until(att.waiter, deadline)
                exc = inner.exception()
                if exc is None:
                    return inner.result()
                if (left > 0 and isinstance(exc, ProcDeadError) and not isinstance(exc, VeoException)
                        and not self._closing):
                    left -= 1
                    self._n["retried"] += 1
                    log.info("pool: re-running %s on another proc (%s)",
                             getattr(fn, "name", fn), exc)
                    continue
                raise exc
        except asyncio.TimeoutError:
            self._n["timed_out"] += 1
            raise
        finally:
            if att is not None and not att.inner.done():
                att.admitted = True        # the VE still runs it: it keeps its place
            else:
                self._unadmit()

    async def submit(self, fn: PoolFunction | VeoFunction, *args: Any,
                     retries: int | None = None) -> asyncio.Future:
        """Admit and submit a call (waiting for admission and a slot, not for
        the result); returns a future of its result.  A function with retries
        runs in a task (a retry needs one); else no task is made."""
        left = self._retries(fn, retries)
        if not self._admit_now():
            await self._admit(None)
        if left:
            return asyncio.get_running_loop().create_task(
                self._call_admitted(fn, args, None, left))
        try:
            att = await self._start(fn, args, None)
        except BaseException:
            self._unadmit()
            raise
        att.waiter = asyncio.get_running_loop().create_future()
        att.relay = att.admitted = True
        if att.inner.done():
            self._settled(att)
        else:
            att.inner.add_done_callback(att)
        return att.waiter

    async def _start(self, fn: Any, args: tuple, deadline: float | None) -> _Attempt:
        """Submit on the least-loaded live context; a submission that finds
        its proc dead never reached the VE and goes to another proc."""
        if self._probe is None:
            self._start_probe()
        for _ in range(2 * len(self._members) + 2):
            ctx = self._pick()
            if ctx is None:
                await self._wait_for_proc(deadline)
                continue
            member = self._member_of[ctx]
            proc, record = ctx.proc, member.record
            index = member.contexts.index(ctx)
            vf = fn if isinstance(fn, VeoFunction) else fn.for_proc(proc)
            t0 = time.perf_counter()
            try:
                if ctx.in_flight < ctx.max_in_flight:
                    inner = ctx.submit_nowait(vf, *args)
                elif self.fail_fast:
                    self._n["rejected"] += 1
                    raise OverloadedError(f"every context of the pool has max_in_flight="
                                          f"{ctx.max_in_flight} calls in flight")
                elif deadline is None:
                    inner = await ctx.submit(vf, *args)
                else:
                    loop = asyncio.get_running_loop()
                    inner = await asyncio.wait_for(ctx.submit(vf, *args),
                                                   max(0.0, deadline - loop.time()))
            except (ProcDeadError, ClosedError) as e:
                if self._closing or not self._lost(member, proc, e):
                    raise
                continue
            return _Attempt(self, member, record, index, proc, inner, t0)
        raise NoProcError(f"no proc of the pool accepted the call: {self._why_no_proc()}")

    def _lost(self, member: _Member, proc: AsyncProc, exc: BaseException) -> bool:
        """Whether `exc`, raised submitting on `proc`, means it left the pool."""
        if member.proc is not proc or member.state != ALIVE:
            return True
        return self._check_death(member, proc, exc)

    async def _wait_for_proc(self, deadline: float | None) -> None:
        if self._closing:
            raise ClosedError("the pool is closed")
        if self.fail_fast or not any(m.state == REPLACING for m in self._members):
            raise NoProcError(self._why_no_proc())
        w = asyncio.get_running_loop().create_future()
        self._proc_waiters.append(w)
        try:
            await _until(w, deadline)
        finally:
            _drop(self._proc_waiters, w)

    def _settled(self, att: _Attempt) -> None:
        """The VE is done with an attempt (or its context was closed)."""
        inner = att.inner
        exc = None if inner.cancelled() else inner.exception()
        rec = att.record
        counts = rec.counts[att.index] if rec is not None else [0, 0]
        if exc is None and not inner.cancelled():
            counts[0] += 1
            self._n["completed"] += 1
            self._latency.append(time.perf_counter() - att.t0)
        else:
            counts[1] += 1
            self._n["failed"] += 1
            if isinstance(exc, Exception):
                self._check_death(att.member, att.proc, exc)
        w = att.waiter
        if w is not None and not w.done():
            if not att.relay:
                w.set_result(None)
            elif inner.cancelled():
                w.cancel()
            elif exc is not None:
                w.set_exception(exc)
            else:
                w.set_result(inner.result())
        if att.admitted:
            att.admitted = False
            self._unadmit()

    async def map(self, fn: PoolFunction | VeoFunction, arg_tuples: Iterable[Sequence[Any]], *,
                  retries: int | None = None) -> list[Any]:
        """Spread calls over the live contexts in contiguous slices (each one
        batch, ``AsyncContext.map``); results in order.  With retries, a
        slice that failed with ProcDeadError runs again on another context."""
        todo = list(arg_tuples)
        if not todo:
            return []
        left = self._retries(fn, retries)
        if not self._live:
            await self._wait_for_proc(None)
        ctxs = list(self._live)
        k = len(ctxs)
        slices = [todo[i * len(todo) // k:(i + 1) * len(todo) // k] for i in range(k)]

        async def run(ctx: AsyncContext, part: list[Sequence[Any]]) -> list[Any]:
            nonlocal left
            while True:
                member, proc = self._member_of[ctx], ctx.proc
                rec = member.record
                counts = rec.counts[member.contexts.index(ctx)] if rec is not None and \
                    ctx in member.contexts else [0, 0]
                try:
                    out = await ctx.map(fn if isinstance(fn, VeoFunction) else fn.for_proc(proc),
                                        part)
                except VeoError as e:
                    counts[1] += len(part)
                    self._n["failed"] += len(part)
                    gone = self._lost(member, proc, e)
                    if self._closing or not gone or isinstance(e, VeoException) or left <= 0:
                        raise
                    left -= 1
                    self._n["retried"] += 1
                    nxt = self._pick()
                    if nxt is None:
                        await self._wait_for_proc(None)
                        nxt = self._pick()
                    if nxt is None:
                        raise
                    ctx = nxt
                    continue
                counts[0] += len(part)
                self._n["completed"] += len(part)
                return out

        parts = await asyncio.gather(*(run(c, s) for c, s in zip(ctxs, slices) if s))
        return [r for part in parts for r in part]

    # -- healing
    def _check_death(self, member: _Member, proc: AsyncProc, exc: BaseException) -> bool:
        """After `exc` on `proc`: evict it if it died.  True when it is gone."""
        if member.proc is not proc or member.state != ALIVE:
            return True
        if isinstance(exc, VeoException):
            reason = f"a kernel fault ({exc})"
        elif isinstance(exc, ProcDeadError):
            reason = f"the VE process died ({exc})"
        elif isinstance(exc, VeoError) and proc.dead:
            reason = f"the VE process died ({exc})"
        else:
            return False
        self._evict(member, reason)
        return True

    def _evict(self, member: _Member, reason: str) -> None:
        proc, contexts, rec = member.proc, member.contexts, member.record
        now = time.monotonic()
        member.state, member.reason, member.died_at = DEAD, reason, now
        live = set(contexts)
        self._live[:] = [c for c in self._live if c not in live]
        for fn in list(self._functions):
            fn.per_proc.pop(proc, None)   # type: ignore[arg-type]
        if rec is not None:
            rec.state, rec.reason, rec.ended = DEAD, reason, now
        if now - member.since >= self.stable_after:
            member.streak = 0
        member.streak += 1
        self._n["deaths"] += 1
        log.warning("pool: the proc on node %d (pid %s) died: %s; evicted, %d of %d "
                    "procs live", member.node, rec.pid if rec else None, reason, self.live_procs,
                    len(self._members))
        member.proc, member.contexts, member.libs = None, [], {}
        if proc is not None:
            self._bury(proc, contexts, member.owned)
        if self._closing:
            return
        if self.heal:
            member.owned = True
            self._schedule_replacement(member)
        self._wake_if_hopeless()

    def _bury(self, proc: AsyncProc, contexts: list[AsyncContext], owned: bool) -> None:
        """Close a dead proc once its requests have failed (the engine fails
        them with ProcDeadError within milliseconds)."""
        async def bury() -> None:
            try:
                for _ in range(500):
                    if not any(c.in_flight for c in contexts):
                        break
                    await asyncio.sleep(0.01)
                await self._close_proc(proc, contexts, owned)
            finally:
                for c in contexts:
                    self._member_of.pop(c, None)

        task = asyncio.get_running_loop().create_task(bury())
        self._burying[task] = proc if owned else None
        task.add_done_callback(self._buried)

    def _buried(self, task: asyncio.Task) -> None:
        self._burying.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.debug("pool: closing a dead proc: %r", task.exception())

    @staticmethod
    async def _close_proc(proc: AsyncProc, contexts: list[AsyncContext], owned: bool,
                          cancel: bool = True) -> None:
        if owned:
            await proc.close(cancel=cancel)
        else:
            await asyncio.gather(*(c.close(cancel=cancel) for c in contexts),
                                 return_exceptions=True)

    def _schedule_replacement(self, member: _Member) -> None:
        if member.streak >= self.max_failures:
            self._mark_failed(member)
            return
        member.state = REPLACING
        member.task = self._spawn(self._replace(member))

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _delay(self, streak: int) -> float:
        return 0.0 if streak <= 1 else min(self.backoff * 2 ** (streak - 2), self.max_backoff)

    async def _replace(self, member: _Member) -> None:
        while not self._closing:
            delay = self._delay(member.streak)
            if delay:
                log.info("pool: replacing the proc on node %d in %.2f s "
                         "(%d failures in a row)", member.node, delay, member.streak)
                await asyncio.sleep(delay)
            proc: AsyncProc | None = None
            try:
                proc, contexts, libs = await self._open_member(member.node)
                for fn in list(self._functions):     # no await from here to the join
                    if fn.library in libs:
                        fn._resolve(proc, libs[fn.library])   # type: ignore[index]
            except Exception as e:  # noqa: BLE001 - counted, logged, retried
                if proc is not None:
                    for fn in list(self._functions):
                        fn.per_proc.pop(proc, None)
                    await self._close_proc(proc, [], True)
                member.streak += 1
                member.reason = f"cannot open a replacement: {e}"
                if member.streak >= self.max_failures:
                    self._mark_failed(member)
                    return
                log.warning("pool: replacing the proc on node %d failed (%d failures "
                            "in a row): %s", member.node, member.streak, e)
                continue
            if self._closing:
                await proc.close(cancel=True)
                return
            self._join(member, proc, contexts, libs)
            member.replacements += 1
            self._n["replacements"] += 1
            self._last_replacement_s = time.monotonic() - member.died_at
            log.info("pool: replaced the proc on node %d %.3f s after it died "
                        "(pid %s); %d of %d procs live", member.node, self._last_replacement_s,
                        proc.sync.helper_pid, self.live_procs, len(self._members))
            return

    async def _open_member(self, node: int) -> tuple[AsyncProc, list[AsyncContext],
                                                     dict[str, VeoLibrary]]:
        """A new proc on `node` with the pool's contexts, setup and libraries."""
        proc = await open_proc(node, veorun_bin=self._veorun_bin)
        try:
            contexts = [await proc.open_context(max_in_flight=self.max_in_flight)
                        for _ in range(self.contexts_per_proc)]
            if self._setup is not None:
                await self._setup(proc)
            libs: dict[str, VeoLibrary] = {}
            while missing := [p for p in self._libraries if p not in libs]:
                for path in missing:
                    libs[path] = await proc.load_library(path)
        except BaseException:
            await proc.close(cancel=True)
            raise
        return proc, contexts, libs

    def _join(self, member: _Member, proc: AsyncProc, contexts: list[AsyncContext],
              libs: dict[str, VeoLibrary]) -> None:
        if member.record is not None:
            if member.record.state == DEAD:
                member.record.state = "replaced"
            member.history.append(member.record)
        member.proc, member.contexts, member.libs = proc, list(contexts), libs
        member.record = _ProcRecord(proc.sync.helper_pid, member.contexts)
        member.state, member.since = ALIVE, time.monotonic()
        member.generation += 1
        for c in member.contexts:
            self._member_of[c] = member
            self._live.append(c)
        for w in list(self._proc_waiters):
            if not w.done():
                w.set_result(None)

    def _mark_failed(self, member: _Member) -> None:
        member.state = FAILED
        reason = f"{member.streak} failures in a row, the last: {member.reason}"
        self._failed_nodes[member.node] = reason
        log.error("pool: node %d marked failed: %s", member.node, reason)
        if self.revive_after is not None and not self._closing:
            self._spawn(self._revive_later(member, member.node))
        while self._spares and not self._closing:
            node = self._spares.pop(0)
            if node in self._failed_nodes:
                continue
            log.warning("pool: moving from node %d to the spare node %d",
                        member.node, node)
            member.node, member.streak, member.reason = node, 0, None
            self._schedule_replacement(member)
            return
        self._wake_if_hopeless()

    async def _revive_later(self, member: _Member, node: int) -> None:
        await asyncio.sleep(self.revive_after)   # type: ignore[arg-type]
        if self._closing or node not in self._failed_nodes:
            return
        log.info("pool: trying node %d again, %.1f s after it was marked failed",
                 node, self.revive_after)
        if member.state == FAILED and member.node == node:
            self._start_revival(member)
        elif all(m.node != node for m in self._members):   # its place moved to a spare
            del self._failed_nodes[node]
            self._spares.append(node)

    def _start_revival(self, member: _Member) -> None:
        self._failed_nodes.pop(member.node, None)
        member.streak = 0
        self._schedule_replacement(member)

    async def revive(self, nodes: Iterable[int] | None = None) -> int:
        """Try the places marked failed (those on `nodes`, or all) again now,
        with a fresh run of replacement attempts (the same back-off and
        ``max_failures``); waits for those attempts and returns how many of
        these places are live again.  Nodes marked failed that no place holds
        any more (it moved to a spare) become spares again.  For a VE that
        was busy, absent or broken and is back; ``revive_after=`` does this
        on its own."""
        if self._closing:
            raise ClosedError("the pool is closed")
        if not self.heal:
            raise VeoError("revive() needs a healing pool (heal=True)")
        wanted = None if nodes is None else set(nodes)
        members = [m for m in self._members
                   if m.state == FAILED and (wanted is None or m.node in wanted)]
        held = {m.node for m in self._members}
        for node in list(self._failed_nodes):
            if node not in held and (wanted is None or node in wanted):
                del self._failed_nodes[node]
                if node not in self._spares:
                    self._spares.append(node)
        for m in members:
            self._start_revival(m)
        tasks = [m.task for m in members if m.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return sum(1 for m in members if m.state == ALIVE)

    def _wake_if_hopeless(self) -> None:
        if any(m.state in (ALIVE, REPLACING) for m in self._members):
            return
        err = self._why_no_proc()
        for w in list(self._proc_waiters):
            if not w.done():
                w.set_exception(NoProcError(err))

    def _why_no_proc(self) -> str:
        if self._closing:
            return "the pool is closed"
        parts = []
        for m in self._members:
            if m.state == FAILED:
                parts.append(f"node {m.node}: marked failed ({self._failed_nodes.get(m.node)})")
            elif m.state == REPLACING:
                parts.append(f"node {m.node}: being replaced ({m.reason})")
            elif m.state != ALIVE:
                parts.append(f"node {m.node}: {m.state} ({m.reason})")
        how = "" if self.heal else "; healing is off (heal=False)"
        return "no live proc in the pool" + (": " + "; ".join(parts) if parts else "") + how

    def _start_probe(self) -> None:
        if self._probe is None and self._probe_s > 0:
            self._probe = asyncio.get_running_loop().create_task(
                _probe(weakref.ref(self), self._probe_s))

    async def settled(self, timeout: float | None = None) -> int:
        """Wait until no replacement is pending (every place alive or failed);
        returns the number of live procs."""
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        while self.heal and any(m.state == REPLACING for m in self._members):
            if end is not None and loop.time() >= end:
                raise asyncio.TimeoutError("replacements still pending")
            await asyncio.sleep(0.005)
        return self.live_procs

    # -- numbers
    def stats(self) -> dict[str, Any]:
        """Counters and states (plain data, JSON-ready); see the module."""
        now = time.monotonic()
        lat = sorted(self._latency)

        def pct(q: float) -> float | None:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None

        procs = []
        for m in self._members:
            rec = m.record if m.state == ALIVE else None
            ctxs = [{"in_flight": c.in_flight, "completed": n[0], "failed": n[1]}
                    for c, n in zip(rec.contexts, rec.counts)] if rec else []
            procs.append({
                "node": m.node, "state": m.state, "pid": rec.pid if rec else None,
                "generation": m.generation, "replacements": m.replacements,
                "failures_in_a_row": m.streak, "reason": m.reason,
                "uptime_s": round(now - m.since, 6) if rec else None,
                "in_flight": sum(c["in_flight"] for c in ctxs),
                "completed": sum(c["completed"] for c in ctxs),
                "failed": sum(c["failed"] for c in ctxs),
                "contexts": ctxs,
                "history": [r.summary() for r in m.history]
                           + ([m.record.summary()] if m.record is not None and not rec else []),
            })
        return {
            "live_procs": self.live_procs, "procs": procs,
            "pending": self._pending,
            "queued": sum(1 for w in self._admit_waiters if not w.done()),
            "in_flight": sum(c.in_flight for c in self._live),
            **self._n,
            "last_replacement_s": self._last_replacement_s,
            "latency_s": {"p50": pct(0.5), "p99": pct(0.99), "window": len(lat)},
            "failed_nodes": [{"node": n, "reason": r} for n, r in self._failed_nodes.items()],
            "max_pending": self.max_pending, "fail_fast": self.fail_fast,
        }

    # -- closing
    async def close(self, *, cancel: bool = False) -> None:
        """Stop healing, then close every context (waiting for its calls, or
        failing them with ClosedError when `cancel`) and the pool's procs."""
        if self._closing:
            if self._done_closing is not None:
                await asyncio.shield(self._done_closing)   # a second close waits for the first
            return
        self._closing = True
        self._done_closing = asyncio.get_running_loop().create_future()
        try:
            await self._close(cancel)
        finally:
            self._closed = True
            self._done_closing.set_result(None)

    async def _close(self, cancel: bool) -> None:
        tasks = list(self._tasks) + ([self._probe] if self._probe is not None else [])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for waiters in (self._admit_waiters, self._proc_waiters):
            while waiters:
                w = waiters.popleft()
                if not w.done():
                    w.set_exception(ClosedError("the pool is closed"))
        members = [m for m in self._members if m.state == ALIVE and m.proc is not None]
        self._live.clear()
        await asyncio.gather(*(c.close(cancel=cancel) for m in members for c in m.contexts),
                             return_exceptions=True)
        await asyncio.gather(*(self._close_proc(m.proc, m.contexts, m.owned, cancel)  # type: ignore[arg-type]
                               for m in members), return_exceptions=True)
        burying = list(self._burying)
        for t in burying:
            t.cancel()
        await asyncio.gather(*burying, return_exceptions=True)
        await asyncio.gather(*(p.close(cancel=True) for p in self._burying.values() if p),
                             return_exceptions=True)
        for m in self._members:
            m.state = CLOSED if m.state != FAILED else FAILED

    async def __aenter__(self) -> "Pool":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close(cancel=exc_type is not None)


async def _probe(pool_ref: "weakref.ref[Pool]", interval: float) -> None:
    """Evict procs whose VE process died while nobody was calling them."""
    while True:
        await asyncio.sleep(interval)
        pool = pool_ref()
        if pool is None or pool._closing:
            return
        for m in pool._members:
            if m.state == ALIVE and m.proc is not None and m.proc.dead:
                pool._evict(m, "the VE process died (found by the pool's probe)")
        del pool


def open_pool(nodes: Iterable[int] | None = None, contexts_per_proc: int = 1, *,
              procs: int | None = None, min_procs: int | None = None,
              max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, heal: bool = True,
              max_failures: int = 5, backoff: float = 0.1, max_backoff: float = 10.0,
              stable_after: float = 10.0, max_pending: int | None = None,
              fail_fast: bool = False, setup: Setup | None = None,
              veorun_bin: str | None = None, revive_after: float | None = None) -> _Opener[Pool]:
    """Open procs and a pool over their contexts:
    ``async with open_pool([0, 1, 2, 3], contexts_per_proc=2) as pool``.

    `nodes`: exactly these (every one must open; NodesUnavailableError names
    each that failed and why).  ``procs=N``: any N of `nodes` (default: the
    candidates of aioveo.nodes: the scheduler's, else the machine's) that
    open, skipping busy or absent ones; the rest are spares for nodes marked
    failed later.  Neither: one proc on every candidate.  ``min_procs``: accept fewer than N.  ``setup(proc)``: an
    async function run on every proc, the replacements too.
    ``revive_after``: seconds after which a node marked failed is tried again
    (default: never; see Pool.revive).  The healing and admission keywords are
    explained in the module's documentation."""
    async def _open() -> Pool:
        if contexts_per_proc > 1:   # refused by AVEO without VE_OMP_NUM_THREADS=1
            problem = second_context_problem()
            if problem is not None:
                raise VeoError(f"open_pool(contexts_per_proc={contexts_per_proc}): {problem}")
        todo = list(nodes) if nodes is not None else candidates()
        count = procs if procs is not None else len(todo)
        if count < 1:
            raise ValueError(f"a pool needs at least one proc (nodes={todo}, procs={procs})")
        opened, spares, failures = await open_any(
            todo, count, lambda n: open_proc(n, veorun_bin=veorun_bin), _close_now,
            min_count=min_procs)
        if failures:
            log.warning("pool: skipped the nodes that could not be opened: %s",
                        describe_failures(failures))
        try:
            return await Pool.create(
                [p for _, p in opened], contexts_per_proc, max_in_flight=max_in_flight,
                owns_procs=True, heal=heal, max_failures=max_failures, backoff=backoff,
                max_backoff=max_backoff, stable_after=stable_after, max_pending=max_pending,
                fail_fast=fail_fast, setup=setup, veorun_bin=veorun_bin,
                spares=spares, revive_after=revive_after,
                failed_nodes=[(n, str(e)) for n, e in failures])
        except BaseException:
            await asyncio.gather(*(p.close(cancel=True) for _, p in opened),
                                 return_exceptions=True)
            raise

    return _Opener(_open)


async def _close_now(proc: AsyncProc) -> None:
    await proc.close(cancel=True)
