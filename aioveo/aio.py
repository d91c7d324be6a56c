"""The asyncio API: awaitable VE calls and transfers on the PyVEO objects.

    async with aioveo.open_proc(0) as proc:
        lib = await proc.load_library("./libkernels.so")
        add = lib.find_function("long add(long, long)")
        async with proc.open_context() as ctx:
            print(await ctx.call(add, 1, 2))

Everything here wraps the synchronous core (`VeoProc`, `VeoCtxt`,
`VeoFunction`, `VeoRequest`); nothing is implemented twice.  Blocking
operations (proc creation, library loading, destroying) run in the loop's
default executor; requests complete through the loop's hub (see _hub.py).

Cancelling an awaiting task cannot stop a VE kernel: the request stays
tracked, its buffers stay alive until the VE is done with them, its result is
dropped and its in-flight slot is released only when the VE completes it.

Leaving ``async with`` by an exception (a timeout, Ctrl-C) never waits for a
kernel: a context fails its awaiters at once and is closed when the VE is
done with its requests; a proc fails its awaiters, ends its VE process by
force (SIGKILL to the pid AVEO's API gives, on both backends), waits at most
``cancel_timeout`` (settings, 2 s) for the requests to come back and
destroys it.  Calls that queue behind the proc's main context (memory,
libraries, symbol lookups) run off the loop thread, without the GIL.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
from types import TracebackType
from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Generator, Generic, Iterable,
                    Sequence, TypeVar)

if TYPE_CHECKING:
    import numpy as np

    from .pool import PoolFunction

from . import _hub, settings
from ._core import (
    FORGOTTEN,
    VEO_COMMAND_ERROR,
    VEO_COMMAND_OK,
    ClosedError,
    VEArray,
    VeoCtxt,
    VeoError,
    VeoFunction,
    VeoLibrary,
    VeoProc,
    VeoRequest,
    VEMemPtr,
    _array_from_block,
    _array_layout,
    _fences,
    _pool_blocks,
    _pool_blocks_batch,
    _record_uses,
)
from ._observers import add_observer, remove_observer
from ._observers import observers as _observers
from .memory import MemoryPool, VEOutOfMemoryError, _ctx_mem

__all__ = [
    "AsyncProc", "AsyncContext", "VEArray", "InFlightLimitError",
    "MemoryPool", "VEOutOfMemoryError", "open_proc", "open_procs",
]

T = TypeVar("T")
log = logging.getLogger("aioveo")

DEFAULT_MAX_IN_FLIGHT = 1024



class InFlightLimitError(VeoError):
    """A non-waiting submission found the context's in-flight bound reached."""


class _Opener(Generic[T]):
    """Awaitable that is also an async context manager (closing on exit)."""

    def __init__(self, open_coro: Callable[[], Awaitable[T]]) -> None:
        self._open = open_coro
        self._obj: T | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._open().__await__()

    async def __aenter__(self) -> T:
        self._obj = await self._open()
        return self._obj

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        obj, self._obj = self._obj, None
        if obj is not None:
            await obj.close(cancel=exc_type is not None)  # type: ignore[attr-defined]




async def _in_executor(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# ---- procs ------------------------------------------------------------------
class AsyncProc:
    """A VE process driven from asyncio.  `proc.sync` is the PyVEO `VeoProc`."""

    def __init__(self, proc: VeoProc) -> None:
        self.sync = proc
        self.contexts: list[AsyncContext] = []
        self.main_context: AsyncContext | None = None   # the first one opened
        self._closed = False
        self._ops = 0      # proc-level calls running off the loop (they use the main context)
        self._closing: set[asyncio.Task] = set()
        self._memory: MemoryPool | None = None
        log.debug("aioveo: opened %s", self)

    @property
    def memory(self) -> MemoryPool:
        """The proc's VE memory pool (made on first use; see aioveo.memory)."""
        pool = self._memory
        if pool is None:
            self._check()
            pool = self._memory = MemoryPool(self)
        return pool

    @property
    def device(self) -> Any:
        """The record of this proc's VE (or emulated node): aioveo.devices.Device."""
        from .devices import device
        return device(self.nodeid)

    def _died(self) -> None:
        """The VE process died: its memory went with it (no VEO call)."""
        if self._memory is not None:
            self._memory._invalidate()

    @property
    def nodeid(self) -> int:
        return self.sync.nodeid

    @property
    def closed(self) -> bool:
        """Closed by you; see ``alive``."""
        return self._closed

    @property
    def alive(self) -> bool:
        """Open and its VE process running (False once closed, or after a fault)."""
        return not self._closed and self.sync.alive

    @property
    def dead(self) -> bool:
        """Whether the VE process died under us (a kernel fault, a kill)."""
        return not self._closed and self.sync._is_dead()

    def __str__(self) -> str:
        # (the identifier and pid were read at creation: on AVEO reading them
        # takes a lock that destroying any proc holds)
        pid = self.sync.pid
        state = "" if self.sync.destroyed or self.sync.alive else " (dead)"
        return (f"proc {self.sync.ident} on node {self.nodeid}"
                + (f" (pid {pid})" if pid else "") + state)

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("the proc is closed")

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """A proc-level call: it queues behind the main context, so it runs
        in the executor (and inline transfers wait until it is done)."""
        self._check()
        self._ops += 1
        try:
            return await _in_executor(fn, *args)
        finally:
            self._ops -= 1

    def _main_idle(self) -> bool:
        """Nothing of aioveo's queued on the main context: a sync transfer
        would not wait behind it."""
        main = self.main_context
        return self._ops == 0 and (main is None or main._in_flight == 0)

    async def load_library(self, path: str | os.PathLike) -> VeoLibrary:
        return await self._off_loop(self.sync.load_library, os.fspath(path))

    async def find_function(self, lib: VeoLibrary, name: str) -> VeoFunction:
        """``lib.find_function(name)`` off the loop: a symbol lookup queues
        behind the main context."""
        return await self._off_loop(lib.find_function, name)

    def static_library(self) -> VeoLibrary:
        return self.sync.static_library()

    def open_context(self, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> _Opener["AsyncContext"]:
        """``ctx = await proc.open_context()`` or ``async with proc.open_context() as ctx``.
        The first one is the proc's main context; a second one needs
        VE_OMP_NUM_THREADS=1 (AVEO)."""
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, not {max_in_flight}")

        async def _open() -> AsyncContext:
            ctx = AsyncContext(self, await self._off_loop(self.sync.open_context), max_in_flight)
            self.contexts.append(ctx)
            if ctx.sync.is_main:
                self.main_context = ctx
            log.debug("aioveo: opened context 0x%x (%scontext %d) of %s", ctx.sync.handle,
                      "main " if ctx.sync.is_main else "", ctx.sync.index, self)
            return ctx

        return _Opener(_open)

    async def alloc_mem(self, size: int, *, wait: float = 0.0) -> VEMemPtr:
        """`size` bytes of VE memory from the proc's pool, as a VEMemPtr
        (``ptr.block`` is its pool block).  Give it back with ``free_mem``."""
        self._check()
        blk = await self.memory.alloc(size, wait=wait)
        return blk.ptr()

    async def free_mem(self, ptr: VEMemPtr) -> None:
        """Free memory from ``alloc_mem`` (pool memory: at once, never waiting
        for the VE; raw VEO memory: off the loop)."""
        if type(ptr) is VEMemPtr and ptr.block is not None:
            ptr.block.free()
            return
        self._check()
        await _in_executor(self.sync.free_mem, ptr)

    async def read_mem(self, dst: Any, src: Any, size: int | None = None) -> None:
        """``VeoProc.read_mem`` off the loop (``AsyncContext.read_mem`` keeps a
        context's order)."""
        self._check()
        await self._copy_off_loop(self.sync.read_mem, src, dst, src, size)

    async def write_mem(self, dst: Any, src: Any, size: int | None = None) -> None:
        """``VeoProc.write_mem`` off the loop."""
        self._check()
        await self._copy_off_loop(self.sync.write_mem, dst, dst, src, size)

    async def _copy_off_loop(self, copy: Callable[..., None], ve: Any, *args: Any) -> None:
        """`copy(*args)` in the executor; pool memory it touches stays held
        until the copy really ends (a cancelled await does not stop it)."""
        blocks = _pool_blocks((ve,))
        if blocks is None:
            await self._off_loop(copy, *args)
            return
        await _await_fences(blocks, None)
        loop = asyncio.get_running_loop()
        for b in blocks:
            b._hold()

        def job() -> None:
            try:
                copy(*args)
            finally:
                try:
                    loop.call_soon_threadsafe(_unhold, blocks)
                except RuntimeError:   # the loop is gone: nobody can reuse them either
                    pass

        self._ops += 1
        try:
            await loop.run_in_executor(None, job)
        finally:
            self._ops -= 1

    async def close(self, *, cancel: bool = False) -> None:
        """Close every context (waiting for its requests), then destroy the VE
        process off the loop.  With `cancel` (leaving ``async with`` by an
        exception): fail every awaiter, end the VE process at once, wait at
        most ``cancel_timeout`` seconds for its requests to come back, destroy."""
        if self._closed:
            return
        self._closed = True
        what = str(self)
        pool = self._memory
        try:
            if not cancel:
                for ctx in list(self.contexts):
                    await ctx.close()
                if pool is not None and not pool.closed:
                    pool._warn_leaks(f"closing {what}")
                await _in_executor(self.sync.destroy, None)
                log.debug("aioveo: closed %s", what)
                return
            for ctx in list(self.contexts):
                ctx._abandon()
            busy = [c for c in self.contexts if c._in_flight]
            # The VE process ends now, on both backends (the pid from AVEO's
            # API): veo_proc_destroy would wait for its kernels without limit.
            self.sync.kill()
            if busy:
                timeout = settings.current().cancel_timeout
                try:
                    await asyncio.wait_for(asyncio.gather(*(c.synchronize() for c in busy)),
                                           timeout)
                except asyncio.TimeoutError:
                    pass
            stuck = []
            for c in busy:
                if c._in_flight and c._hub is not None and not c._hub.forget(c.sync):
                    stuck.append(c)
            if stuck:
                # an engine thread is still inside libveo for them: AVEO would
                # free the contexts under it, so the proc is left undestroyed
                log.warning("aioveo: %s: %d context(s) did not come back after the VE process "
                            "was ended; the proc is left undestroyed", what, len(stuck))
                return
            await _in_executor(self.sync.destroy, 0)
            log.debug("aioveo: closed %s (cancelled)", what)
        finally:
            if pool is not None:
                pool._invalidate()   # its memory went with the VE process

    async def __aenter__(self) -> "AsyncProc":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close(cancel=exc_type is not None)


def open_proc(node: int = -1, *, veorun_bin: str | None = None) -> _Opener[AsyncProc]:
    """Create a VE process off the loop: ``async with open_proc(0) as proc``."""

    async def _open() -> AsyncProc:
        return AsyncProc(await _in_executor(VeoProc, node, veorun_bin))

    return _Opener(_open)


def open_procs(nodes: Iterable[int] | None = None, *, count: int | None = None,
               veorun_bin: str | None = None) -> _Opener["ProcGroup"]:
    """Open several procs at once: ``async with open_procs([0, 1, 2, 3]) as procs``
    (exactly these nodes), or ``open_procs(count=4)``: any 4 VEs that open,
    tried in the order of `nodes` (default: ``aioveo.nodes.candidates()``, the
    scheduler's nodes, else the machine's).  A node that cannot be opened is
    skipped for the next; NodesUnavailableError says which failed and why."""
    from . import nodes as _nodes

    async def _open() -> ProcGroup:
        todo = _nodes.candidates() if nodes is None else list(nodes)
        want = len(todo) if count is None else count
        opened, _, _ = await _nodes.open_any(
            todo, want, lambda n: open_proc(n, veorun_bin=veorun_bin), _close_now)
        return ProcGroup(p for _, p in opened)

    return _Opener(_open)


async def _close_now(proc: "AsyncProc") -> None:
    await proc.close(cancel=True)


class ProcGroup(list[AsyncProc]):
    """A list of AsyncProc closed together."""

    async def close(self, *, cancel: bool = False) -> None:
        await asyncio.gather(*(p.close(cancel=cancel) for p in self), return_exceptions=True)


# ---- contexts ------------------------------------------------------------------
class AsyncContext:
    """A VE context (a worker thread with a FIFO queue) driven from asyncio."""

    def __init__(self, proc: AsyncProc, ctx: VeoCtxt, max_in_flight: int) -> None:
        self.proc = proc
        self.sync = ctx
        self.max_in_flight = max_in_flight
        self._in_flight = 0
        self._slot_waiters: collections.deque[asyncio.Future] = collections.deque()
        self._idle: asyncio.Future | None = None
        self._closed = False
        self._cancelled = False     # closed by an exception (no leak warnings then)
        self._close_when_idle = False
        self._hub: _hub.Hub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None   # the hub's
        self._spot_us = 0.0     # the hub's, for the fast path of call
        #: this context's record in the proc's memory pool (its completed
        #: frontier), made when pool memory is first used on it
        self._mem: Any = None

    # -- bookkeeping
    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet completed by the VE."""
        return self._in_flight

    @property
    def closed(self) -> bool:
        """Closed by you; see ``alive``."""
        return self._closed

    @property
    def alive(self) -> bool:
        """Open and its VE process running (False once closed, or after a fault)."""
        return not self._closed and self.sync.alive

    def _get_hub(self) -> _hub.Hub:
        hub = self._hub
        if hub is not None and hub.loop_ref() is asyncio.get_running_loop():
            return hub
        hub = _hub.get_hub()
        if self._hub is not hub:
            if self._hub is not None and self._in_flight:
                raise RuntimeError("this context has requests in flight on another event loop")
            self._hub = hub
            self._loop = hub.loop
            self._spot_us = hub.spot_us
        return hub

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("the context is closed")

    async def _acquire(self, n: int = 1) -> None:
        while self._in_flight + n > self.max_in_flight and self._in_flight:
            waiter = asyncio.get_running_loop().create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if not waiter.cancelled() and waiter.done():
                    self._wake_slot_waiters()  # pass our wake-up on
                raise
            self._check()
        self._in_flight += n

    def _release(self, n: int = 1) -> None:
        self._in_flight -= n
        if self._slot_waiters:
            self._wake_slot_waiters(n)
        if self._in_flight == 0:
            if self._idle is not None:
                if not self._idle.done():
                    self._idle.set_result(None)
                self._idle = None
            if self._close_when_idle:
                self._close_when_idle = False
                task = asyncio.get_running_loop().create_task(self._finish_close())
                self.proc._closing.add(task)
                task.add_done_callback(self.proc._closing.discard)

    def _wake_slot_waiters(self, n: int = 1) -> None:
        """Wake up to `n` waiters for slots (each checks again when it runs)."""
        while n > 0 and self._slot_waiters:
            w = self._slot_waiters.popleft()
            if not w.done():
                w.set_result(None)
                n -= 1

    def _track(self, request: Any, hub: _hub.Hub, label: Any = None, nbytes: Any = None,
               spotted: bool = False) -> asyncio.Future:
        """A future for `request` (a VeoRequest or VeoBatch, its slots taken).
        Alone on the context it may finish at once: peek first (unless the
        caller just did, `spotted`), then hand it to the hub."""
        fut = hub.loop_ref().create_future()  # type: ignore[union-attr]  # the running loop
        request.future = fut
        request.owner = self
        if _observers:
            for o in _observers:
                o.submitted(self, request, label, nbytes, request.slots, False)
        if not spotted and self._in_flight == request.slots:
            done = request.spot(hub.spot_us)
            if done is not None:
                self._complete(request, *done)
                return fut
        hub.engine.watch(request)
        return fut

    def _complete(self, request: Any, status: int, retval: int) -> None:
        """The VE finished `request`, or (status FORGOTTEN) its context is
        closing: release its slots and settle its future.  A cancelled
        awaiter's request is still finished (buffers released), its result
        dropped; a forgotten one is dropped unfinished, so the core keeps its
        buffers until the VE is done with them."""
        fut = request.future
        request.future = request.owner = None
        self._release(request.slots)
        if status != VEO_COMMAND_OK or self._mem is not None or _observers:
            # (an OK request of a plain context, the common case at hundreds
            # of thousands a second, skips these)
            if self._mem is not None and status != FORGOTTEN:
                self._mem.completed(request)   # the frontier: uses up to it are over
            if status != VEO_COMMAND_OK and status != FORGOTTEN and self.proc.sync._is_dead():
                self.proc._died()
            for o in _observers:
                o.completed(request, status, fut is not None and fut.cancelled())
            if status == FORGOTTEN:
                if fut is not None and not fut.done():
                    fut.set_exception(ClosedError("the context was closed"))
                return
        try:
            result = request.finish(status, retval)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiter
            waiting = fut is not None and not fut.done()
            log.debug("aioveo: request %s failed%s: %r", request.req_id,
                      "" if waiting else " with nobody waiting", exc)
            if waiting:
                fut.set_exception(exc)
            return
        if fut is not None and not fut.done():
            fut.set_result(result)

    # -- calls
    def submit_nowait(self, fn: VeoFunction | PoolFunction, *args: Any) -> asyncio.Future[Any]:
        """Submit a call and return a future of its result, without waiting
        for a slot (raises InFlightLimitError when the bound is reached)."""
        self._check()
        hub = self._get_hub()
        if self._in_flight >= self.max_in_flight:
            raise InFlightLimitError(
                f"{self._in_flight} requests in flight (max_in_flight={self.max_in_flight})")
        blocks = _pool_blocks(args)
        if blocks is not None and _fences(blocks, self._mem) is not None:
            raise VeoError("an argument's VE memory was reused from another context that "
                           "still has its previous use queued; submit with `await "
                           "ctx.submit(...)`, which waits for it")
        self._in_flight += 1
        return self._start(hub, fn, blocks, _for_context(fn, self), self.sync, *args)

    def _submit_call(self, fn: Any, args: tuple, blocks: Any) -> Any:
        """``fn(*args)`` submitted on the slot already taken (given back if
        it fails); the uses of pool memory among `args` are recorded."""
        try:
            request = (fn if type(fn) is VeoFunction else _for_context(fn, self))(self.sync, *args)
        except BaseException:
            self._release()
            raise
        if blocks is not None:
            _record_uses(blocks, self._mem or _ctx_mem(self), request)
        return request

    # submit is the hot path of many calls in flight: its first steps are
    # written out (the same as _check, _get_hub and _start, with the slot taken
    # in place) to spare a Python frame each.
    async def submit(self, fn: VeoFunction | PoolFunction, *args: Any) -> asyncio.Future[Any]:
        """Submit a call once a slot is free; returns a future of its result,
        so many calls can be in flight without a task each."""
        if self._closed:
            raise ClosedError("the context is closed")
        loop = asyncio.get_running_loop()
        hub = self._hub
        if hub is None or loop is not self._loop:
            hub = self._get_hub()
        blocks = _pool_blocks(args) if args else None   # pool memory: uses recorded
        if blocks is not None:
            await _await_fences(blocks, self)
        if self._in_flight < self.max_in_flight and not self._slot_waiters:
            self._in_flight += 1
        else:
            await self._acquire()
        if (self._in_flight > 1 and blocks is None and not _observers
                and type(fn) is VeoFunction):
            # Behind other work: no spot peek; submitted, given its future and
            # handed to the engine in one native step.
            fut = loop.create_future()
            try:
                fn._submit_watched(self.sync, args, fut, self, hub.engine)
            except BaseException:
                self._release()
                raise
            return fut
        request = self._submit_call(fn, args, blocks)
        return self._track(request, hub, fn)

    async def call(self, fn: VeoFunction | PoolFunction, *args: Any) -> Any:
        """Call a VE function and return its converted result.  A call found
        finished on the spot is returned without a future or a hand-off."""
        if self._closed:
            raise ClosedError("the context is closed")
        if (self._in_flight == 0 and self._hub is not None and self._mem is None
                and not _observers and type(fn) is VeoFunction
                and (not args or _pool_blocks(args) is None)):
            # Alone on the context: submit and peek in one native step
            # (VeoFunction._call_within).  No other task runs meanwhile, so
            # the slot is taken only if the call turns out to take longer.
            try:
                r = fn._call_within(self.sync, args, self._spot_us)
            except BaseException:
                if self.proc.sync._is_dead():
                    self.proc._died()
                raise
            if type(r) is not VeoRequest:             # done: r is the result
                return r
            hub = self._get_hub()
            self._in_flight = 1
            return await self._track(r, hub, fn, None, True)
        # Otherwise (work in flight, pool memory, observers): the submit form,
        # whose _track still peeks on the spot when the call is alone.
        return await (await self.submit(fn, *args))

    async def map(self, fn: VeoFunction | PoolFunction,
                  arg_tuples: Iterable[Sequence[Any]]) -> list[Any]:
        """Call `fn` once per argument tuple; results in order.  Calls go to
        the VE in batches (``VeoFunction.submit_batch``) of up to half the
        in-flight bound, so the Python cost is paid per batch, not per call,
        and the next batch is queued while the VE runs the previous one."""
        self._check()
        hub = self._get_hub()
        todo = arg_tuples if isinstance(arg_tuples, list) else list(arg_tuples)
        chunk = max(1, self.max_in_flight // 2)
        futures: list[asyncio.Future] = []
        try:
            for pos in range(0, len(todo), chunk):
                part = todo[pos:pos + chunk]
                blocks = _pool_blocks_batch(part)
                if blocks is not None:
                    await _await_fences(blocks, self)
                await self._acquire(len(part))
                try:
                    batch = _for_context(fn, self).submit_batch(self.sync, part)
                except BaseException:
                    self._release(len(part))
                    raise
                if blocks is not None:
                    _record_uses(blocks, self._mem or _ctx_mem(self), batch)
                futures.append(self._track(batch, hub, fn))
            results: list[Any] = []
            for f in futures:
                results.extend(await f)
            return results
        except BaseException:
            for f in futures:  # failed or cancelled: nobody reads the others
                f.add_done_callback(_consume)
            raise

    # -- memory
    async def _submit_request(self, label: str, nbytes: Any, ve: Any, make: Callable[..., Any],
                              *args: Any) -> asyncio.Future:
        self._check()
        hub = self._get_hub()
        blocks = _pool_blocks((ve,))
        if blocks is not None:
            await _await_fences(blocks, self)
        await self._acquire()
        return self._start(hub, (label, nbytes), blocks, make, *args)

    def _start(self, hub: _hub.Hub, label: Any, blocks: list | None, make: Callable[..., Any],
               *args: Any) -> asyncio.Future:
        """``make(*args)`` on the slot already taken (given back if it fails);
        `label` names it for observers (a function, or (transfer name, bytes));
        `blocks` are the pool blocks it uses."""
        try:
            request = make(*args)
        except BaseException:
            self._release()
            raise
        if blocks is not None:
            _record_uses(blocks, self._mem or _ctx_mem(self), request)
        if type(label) is tuple:
            return self._track(request, hub, label[0], label[1])
        return self._track(request, hub, label, None)

    # The rule for every transfer path: a host buffer belongs to the VE from
    # submission until the transfer is done (its future, or the await).  The
    # VE may read a source or write a destination at any moment in between
    # (at once on an idle context, later behind queued work), so the buffer
    # must not be changed or read until then.
    async def submit_read_mem(self, dst: Any, src: Any, size: int | None = None) -> asyncio.Future:
        """Queue a copy of VE memory `src` into `dst` behind this context's
        work; returns a future of its completion.  `dst` is kept alive, and
        may be written at any moment, until the future is done."""
        return await self._submit_request("read_mem", dst if size is None else size, src,
                                          self.sync.async_read_mem, dst, src, size)

    async def submit_write_mem(self, dst: Any, src: Any, size: int | None = None) -> asyncio.Future:
        """Queue a copy of the host buffer `src` to VE memory `dst`; returns a
        future of its completion.  `src` is kept alive, and may be read at any
        moment, until the future is done: change it only after that."""
        return await self._submit_request("write_mem", src if size is None else size, dst,
                                          self.sync.async_write_mem, dst, src, size)

    def _inline_ok(self, size: int) -> bool:
        """A small transfer is copied on the loop thread (veo_read_mem/
        veo_write_mem) when nothing is queued on this context and none of
        aioveo's work is queued on the main context, which such a copy
        queues behind (AVEO); on a VE inline copies are off by default."""
        return (self._in_flight == 0 and size <= self._get_hub().inline_bytes
                and self.proc._main_idle())

    async def read_mem(self, dst: Any, src: Any, size: int | None = None) -> None:
        """Copy VE memory `src` into the host buffer `dst`, in this context's order."""
        size = _nbytes(dst) if size is None else size
        if self._inline_ok(size) and (
                type(src) is not VEArray or _fences(_pool_blocks((src,)) or [], self._mem) is None):
            self._copy_inline("read_mem", self.proc.sync.read_mem, dst, src, size)
            return
        await (await self.submit_read_mem(dst, src, size))

    async def write_mem(self, dst: Any, src: Any, size: int | None = None) -> None:
        """Copy the host buffer `src` to VE memory `dst`, in this context's order."""
        size = _nbytes(src) if size is None else size
        if self._inline_ok(size) and (
                type(dst) is not VEArray or _fences(_pool_blocks((dst,)) or [], self._mem) is None):
            self._copy_inline("write_mem", self.proc.sync.write_mem, dst, src, size)
            return
        await (await self.submit_write_mem(dst, src, size))

    def _copy_inline(self, label: str, copy: Callable[..., None], *args: Any) -> None:
        """A small transfer on a context with nothing queued, copied on the
        loop thread: cheaper than a hand-off, and the order is kept."""
        self._check()
        if not _observers:
            copy(*args)
            return
        key = object()
        for o in _observers:
            o.submitted(self, key, label, args[-1], 1, True)
        status: int | None = VEO_COMMAND_ERROR
        try:
            copy(*args)
            status = None
        finally:
            for o in _observers:
                o.completed(key, status, False)

    async def alloc_mem(self, size: int, *, wait: float = 0.0) -> VEMemPtr:
        """`size` bytes of VE memory from the proc's pool, as a VEMemPtr;
        blocks freed on this context are reusable here at once."""
        self._check()
        blk = await self.proc.memory.alloc(size, ctx=self, wait=wait)
        return blk.ptr()

    async def free_mem(self, ptr: VEMemPtr) -> None:
        """Free memory from ``alloc_mem``: pool memory goes back at once,
        never waiting for the VE (it is reused only after the requests
        already queued with it); raw VEO memory waits for this context."""
        if type(ptr) is VEMemPtr and ptr.block is not None:
            ptr.block.free()
            return
        await self.synchronize()
        await self.proc.free_mem(ptr)

    async def empty(self, shape: Any, dtype: Any = float, *, wait: float = 0.0) -> VEArray:
        """An uninitialised VEArray from the proc's pool.  With `wait`
        (seconds), a pool short of memory waits that long for blocks being
        freed (by other tasks, or queued work passing their last use)
        before it raises VEOutOfMemoryError."""
        self._check()
        shape, dt, nbytes = _array_layout(shape, dtype)
        pool = self.proc._memory or self.proc.memory
        mem = self._mem or _ctx_mem(self)
        blk = pool._hit(nbytes or 1, mem)
        if blk is None:
            blk = await pool.alloc(nbytes, ctx=self, wait=wait)
        return _array_from_block(self, blk, shape, dt)

    async def to_ve(self, array: Any, *, wait: float = 0.0) -> VEArray:
        """Copy a numpy array to a new VEArray (memory from the proc's pool)."""
        import numpy as np  # imported on first use: it is half of aioveo's import time

        array = np.ascontiguousarray(array)
        ve = await self.empty(array.shape, array.dtype, wait=wait)
        try:
            await self.write_mem(ve, array, array.nbytes)
        except BaseException:
            ve.free()
            raise
        return ve

    async def from_ve(self, ve: VEArray, out: np.ndarray | None = None) -> np.ndarray:
        """Copy a VEArray back into `out` (same dtype and size, C-contiguous
        and writable) or into a new array."""
        if type(ve) is not VEArray:
            raise TypeError(f"from_ve copies a VEArray, not {type(ve).__name__} (for a "
                            f"VEMemPtr use read_mem)")
        if out is None:
            import numpy as np

            out = np.empty(ve.shape, ve.dtype)
        else:
            if getattr(out, "dtype", None) != ve.dtype:
                raise TypeError(f"out has dtype {getattr(out, 'dtype', type(out).__name__)}, "
                                f"the VEArray {ve.dtype}: copy into a {ve.dtype} array (or "
                                f"reinterpret the VEArray with ve.view(...))")
            if out.size != ve.size:
                raise ValueError(f"out has {out.size} items, the VEArray {ve.size}")
            if not out.flags.c_contiguous or not out.flags.writeable:
                raise ValueError("out must be a writable C-contiguous array")
        await self.read_mem(out, ve, ve.nbytes)
        return out

    async def synchronize(self) -> None:
        """Wait until every request submitted so far on this context is done."""
        if self._in_flight == 0:
            return
        if self._idle is None:
            self._idle = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._idle)

    async def close(self, *, cancel: bool = False) -> None:
        """Close the context: wait for its requests, or (cancel=True, leaving
        ``async with`` by an exception) fail their awaiters with ClosedError
        at once, without waiting for kernels that may never return: the
        context itself is closed when the VE is done with them (or with its
        proc).  AVEO frees a context at close, so it is never closed while
        one of its requests is still being waited for."""
        if self._closed:
            return
        if cancel:
            self._abandon()
            if self._in_flight:
                self._close_when_idle = True
                log.debug("aioveo: context %d of %s closed with %d requests in flight: it "
                          "goes once the VE is done with them", self.sync.index, self.proc,
                          self._in_flight)
                return
        else:
            await self.synchronize()
            self._closed = True
            self._fail_slot_waiters()
        await self._finish_close()

    def _fail_slot_waiters(self) -> None:
        for w in self._slot_waiters:
            if not w.done():
                w.set_exception(ClosedError("the context was closed"))
        self._slot_waiters.clear()

    def _abandon(self) -> None:
        """Closed by an exception: no new work, every awaiter fails now; the
        requests stay watched, so their buffers live until the VE is done."""
        if self._closed:
            return
        self._closed = True
        self._cancelled = True
        self._fail_slot_waiters()
        if self._hub is None or not self._in_flight:
            return
        error = ClosedError(f"the context was closed (context {self.sync.index} of "
                            f"{self.proc}) with this request in flight; the VE may still run it")
        for request in self._hub.engine.watched(self.sync):
            fut = request.future
            if fut is not None and not fut.done():
                fut.set_exception(error)
                fut.add_done_callback(_consume)

    async def _finish_close(self) -> None:
        """Close the VeoCtxt (off the loop), once nothing of ours is in flight."""
        if self in self.proc.contexts:
            self.proc.contexts.remove(self)
        if self.proc.main_context is self:
            self.proc.main_context = None
        handle = self.sync.handle_was
        mem = self._mem
        pool = self.proc._memory
        if mem is not None and pool is not None and not pool.closed and not self._cancelled:
            pool._warn_leaks(f"closing context 0x{handle:x}", mem)
        try:
            if not self.proc.sync.destroyed and not self.sync.closed:
                try:
                    await _in_executor(self.proc.sync.close_context, self.sync)
                except VeoError as e:   # a dead proc: nothing to close
                    log.debug("aioveo: closing context %d: %s", self.sync.index, e)
        finally:
            if mem is not None:
                mem.close()   # its queue is drained: every use on it is over
        log.debug("aioveo: closed context 0x%x (context %d) of %s", handle, self.sync.index,
                  self.proc)

    async def __aenter__(self) -> "AsyncContext":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close(cancel=exc_type is not None)


def _for_context(fn: "PoolFunction | VeoFunction", ctx: AsyncContext) -> VeoFunction:
    """The VeoFunction to call on `ctx` (a PoolFunction names one per proc)."""
    if isinstance(fn, VeoFunction):
        return fn
    return fn.for_proc(ctx.proc)


def _consume(f: asyncio.Future) -> None:
    if not f.cancelled():
        f.exception()


def _nbytes(obj: Any) -> int:
    if type(obj) is VEArray:
        return obj.nbytes
    return memoryview(obj).nbytes


def _unhold(blocks: list) -> None:
    for b in blocks:
        b._unhold()


async def _await_fences(blocks: list | None, ctx: AsyncContext | None) -> None:
    """Wait until pool blocks reused from another context's queue may be
    used on `ctx` (None: the proc's own calls): their previous life's last
    use there is done.  Usually nothing to wait for."""
    if blocks is None:
        return
    waits = _fences(blocks, ctx._mem if ctx is not None else None)
    if waits is None:
        return
    loop = asyncio.get_running_loop()
    for mem, ticket in waits:
        fut = loop.create_future()
        mem.wait_for(ticket, fut)
        await fut
