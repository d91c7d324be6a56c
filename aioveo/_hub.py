"""Loop side of the completion engine: one hub per event loop.

A request that is not found finished on the spot (see AsyncContext) is
handed to the hub's engine with ``hub.engine.watch(request)``: C threads
without the GIL (``aioveo._core.Engine``) that hold a reference to the
request until the VE has finished it.  The engine writes the hub's eventfd
once per batch, and `drain` (the engine's ``dispatch``) hands every
finished request back to the AsyncContext that owns it
(``request.owner._complete``), in one loop callback.  The request object is
the whole record: the hub keeps no table of its own.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import weakref

from . import _core, settings

log = logging.getLogger("aioveo")


class Hub:
    """The completion engine of one event loop, with its settings."""

    def __init__(self, loop: asyncio.AbstractEventLoop, is_emulator: bool) -> None:
        self.loop_ref = weakref.ref(loop)
        self.settings = s = settings.for_loop(loop)
        #: How long the loop thread peeks at a lone request before handing it
        #: to the engine: a VE thread that went to sleep takes 5-30 us to
        #: wake, and a miss costs a cross-thread hand-off (tens of us).
        self.spot_us = s.spot_us
        self.inline_bytes = s.inline_transfer_bytes(is_emulator)
        self.engine = _core.Engine(s.engine, s.engine_spin_us, s.engine_max_sleep_us)
        self.engine.defer_wakes(self.loop_ref)
        self._fd = self.engine.fileno()
        loop.add_reader(self._fd, self.drain)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self.loop_ref()

    def forget(self, ctx: _core.VeoCtxt) -> bool:
        """Stop watching a context whose VE process was ended: its requests
        come back now, unfinished (status FORGOTTEN), while the core keeps
        their buffers.  False when an engine thread is still inside libveo
        for it (then the context must not be freed)."""
        done = self.engine.forget(ctx)
        self.drain()
        return done

    def drain(self) -> None:
        # Runs as a reader callback: it must never raise into the loop.
        try:
            failed = self.engine.dispatch()   # request.owner._complete(...) each
        except Exception:  # noqa: BLE001
            log.exception("aioveo: draining the completion engine failed")
            return
        for request, exc in failed:
            log.error("aioveo: completing request %s failed", request.req_id, exc_info=exc)

    def close(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.remove_reader(self._fd)
            except Exception:  # noqa: BLE001 - loop shutting down
                pass
        self.engine.close()


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def get_hub() -> Hub:
    """The hub of the running loop (created on first use)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        with _hubs_lock:
            for old_loop, old in list(_hubs.items()):  # loops that went away
                if old_loop.is_closed():
                    old.close()
                    del _hubs[old_loop]
            hub = _hubs[loop] = Hub(loop, _core.backend().is_emulator)
    return hub
