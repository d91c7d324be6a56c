"""Loop side of the completion engine: one hub per event loop.

A request is first checked "on the spot": right after submission the loop
peeks it a few times (a null kernel finishes within microseconds), so a
lightly loaded context never pays a cross-thread wake-up.  Otherwise the
request is handed to the hub's engine (C threads, no GIL) under a token; the
engine writes the hub's eventfd once per batch, and `_drain` resolves every
completed future in one loop callback.

The hub only needs three things from a request: ``ctx_handle`` (the raw
``veo_thr_ctxt *``), ``req_id`` and ``finish(status, retval)``, which converts
the raw result (or raises) and releases the request's buffers exactly once.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import weakref
from typing import Any, Callable

from . import _engine, settings

log = logging.getLogger("aioveo")

UNFINISHED = 3
ERROR = 2
EXCEPTION = 1



class _Pending:
    """What the hub remembers about a watched request."""

    __slots__ = ("request", "future", "on_done")

    def __init__(self, request: Any, future: asyncio.Future | None,
                 on_done: Callable[[Any, int, int], None] | None) -> None:
        self.request = request
        self.future = future
        self.on_done = on_done


class Hub:
    """The completion engine of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, lib_path: str, is_emulator: bool) -> None:
        self._loop_ref = weakref.ref(loop)
        self.settings = s = settings.for_loop(loop)
        #: How long the loop thread peeks at a lone request before handing it
        #: to the engine: a VE thread that went to sleep takes 5-30 us to
        #: wake, and a miss costs a cross-thread hand-off (tens of us).
        self.spot_us = s.spot_us
        self.inline_bytes = s.inline_transfer_bytes(is_emulator)
        mode = _engine.WAIT if s.engine == "wait" else _engine.POLL
        self.engine = _engine.Engine(lib_path, mode, s.engine_spin_us, s.engine_max_sleep_us)
        self._pending: dict[int, _Pending] = {}
        self._next_token = 0
        self._fd = self.engine.fileno()
        loop.add_reader(self._fd, self._drain)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop_ref()

    def watch(self, request: Any, future: asyncio.Future | None = None,
              on_done: Callable[[Any, int, int], None] | None = None) -> None:
        """Resolve `future` (and/or call ``on_done(request, status, retval)``)
        on the loop when `request` completes."""
        self._next_token += 1
        token = self._next_token
        self._pending[token] = _Pending(request, future, on_done)
        try:
            self.engine.watch(request.ctx_handle, request.req_id, token)
        except BaseException:
            del self._pending[token]
            raise

    def abandon_context(self, ctx_handle: int, exc: Callable[[], BaseException]) -> int:
        """Stop watching a context that is closing: its awaiters get `exc()`
        now, but its requests are not finished here: they are dropped
        unfinished, so the core keeps their buffers until the VE is done with
        them (the context's close drains it).  Returns how many were watched."""
        doomed = [t for t, e in self._pending.items() if e.request.ctx_handle == ctx_handle]
        for token in doomed:
            entry = self._pending.pop(token)
            if entry.on_done is not None:
                entry.on_done(entry.request, ERROR, 0)
            if entry.future is not None and not entry.future.done():
                entry.future.set_exception(exc())
        self.engine.forget(ctx_handle, ERROR)  # its completions now name no token
        return len(doomed)

    def _drain(self) -> None:
        # Runs as a reader callback: it must never raise into the loop.
        try:
            records = self.engine.drain()
        except Exception:  # engine closed under us
            log.exception("aioveo: draining the completion engine failed")
            return
        pending = self._pending
        for token, status, retval in records:
            entry = pending.pop(token, None)
            if entry is not None:
                deliver(entry.request, entry.future, entry.on_done, status, retval)

    def close(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.remove_reader(self._fd)
            except Exception:  # loop shutting down
                pass
        self.engine.close()
        self._pending.clear()


def deliver(request: Any, future: asyncio.Future | None,
            on_done: Callable[[Any, int, int], None] | None, status: int, retval: int) -> None:
    """Convert a raw completion; a cancelled awaiter still gets its request
    finished (buffers released) but its result dropped."""
    if on_done is not None:
        try:
            on_done(request, status, retval)
        except Exception:
            log.exception("aioveo: completion callback failed")
    try:
        result = request.finish(status, retval)
    except BaseException as exc:  # noqa: BLE001 - handed to the awaiter
        waiting = future is not None and not future.done()
        log.debug("aioveo: request %s on context 0x%x failed%s: %r", request.req_id,
                  request.ctx_handle, "" if waiting else " with nobody waiting", exc)
        if status == EXCEPTION:
            log.debug("aioveo: the VE process died (kernel exception, signal %d)", retval)
        if future is not None and waiting:
            future.set_exception(exc)
        return
    if future is not None and not future.done():
        future.set_result(result)


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def get_hub(lib_path: str, is_emulator: bool) -> Hub:
    """The hub of the running loop (created on first use)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        with _hubs_lock:
            for old_loop, old in list(_hubs.items()):  # loops that went away
                if old_loop.is_closed():
                    old.close()
                    del _hubs[old_loop]
            hub = _hubs[loop] = Hub(loop, lib_path, is_emulator)
    return hub


@atexit.register
def _close_hubs() -> None:
    # Engine threads stop before the core destroys procs at exit.
    with _hubs_lock:
        for hub in list(_hubs.values()):
            hub.engine.close(200)
        _hubs.clear()
