"""Every ``AIOVEO_*`` setting, read from the environment in one place, once.

    import aioveo.settings as settings

    settings.current()                        # the process-wide Settings
    settings.configure(spot_us=0)             # change them from code
    with settings.override(engine="wait"):    # change them for a block (tests, benchmarks)
        asyncio.run(main())
    settings.configure(loop=loop, engine="wait")   # one event loop only

An event loop's completion hub reads its settings when it is created (on the
loop's first request), so a new loop picks up what was configured before it
started; a loop already running keeps its engine.  The native core reads
``exit_grace`` when a proc is destroyed and at interpreter exit.

| variable | field | default | meaning |
|---|---|---|---|
| ``AIOVEO_LIBVEO`` | ``libveo`` | (auto) | the libveo to load: a path, ``emulator``, or ``emulator-noext`` (the emulator without its ``veo_emu_*`` extensions, as the vendor library) |
| ``AIOVEO_ENGINE`` | ``engine`` | ``poll`` | ``wait``: a thread per context blocked in ``veo_call_wait_result`` |
| ``AIOVEO_ENGINE_SPIN_US`` | ``engine_spin_us`` | 50 | the poll thread spins this long after activity |
| ``AIOVEO_ENGINE_MAX_SLEEP_US`` | ``engine_max_sleep_us`` | 5000 | its longest sleep between peeks (a sleep is also at most 1/8 of the time already waited) |
| ``AIOVEO_SPOT_US`` | ``spot_us`` | 20 | how long the loop peeks at a lone request before handing it to the engine |
| ``AIOVEO_INLINE_TRANSFER`` | ``inline_transfer`` | 1 MiB emulator, 0 VE | transfers up to this size are copied on the loop thread when the proc's main context is idle; 0: never |
| ``AIOVEO_EXIT_GRACE`` | ``exit_grace`` | 5 | seconds a busy VE gets at ``VeoProc.destroy()`` or interpreter exit before it is ended by force |
| ``AIOVEO_CANCEL_TIMEOUT`` | ``cancel_timeout`` | 2 | leaving ``async with`` by an exception ends the VE process at once, then waits at most this long for its requests to come back |
| ``AIOVEO_MK_VEORUN_STATIC`` | ``mk_veorun_static`` | (auto) | AVEO's ``mk_veorun_static`` for ``VeBuild.build_veorun`` (default: ``/opt/nec/ve/bin``, then PyVEO's ``/opt/nec/ve/libexec``) |
| ``AIOVEO_POOL_PROBE_MS`` | ``pool_probe_ms`` | 100 | a pool checks its procs are alive this often (0: only when calls fail) |
| ``AIOVEO_MEMPOOL`` | ``mempool`` | ``1`` | VE memory of the asyncio API: ``1`` a caching pool per proc, ``0`` one ``veo_alloc_mem`` per block, ``debug`` as ``0`` plus poisoned frees and allocation sites (read when a proc's pool is made) |
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import weakref
from typing import Any, Iterator

__all__ = ["Settings", "current", "configure", "override", "for_loop", "ENV"]

ENGINES = ("poll", "wait")
MEMPOOL_MODES = ("1", "0", "debug", "on", "off", "cache", "raw")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The knobs of aioveo (see the module's table)."""

    libveo: str | None = None
    engine: str = "poll"
    engine_spin_us: int = 50
    engine_max_sleep_us: int = 5000
    spot_us: float = 20.0
    inline_transfer: int | None = None    # None: the backend's default
    exit_grace: float = 5.0
    cancel_timeout: float = 2.0
    mk_veorun_static: str | None = None
    pool_probe_ms: float = 100.0
    mempool: str = "1"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {self.engine!r}")
        if self.mempool not in MEMPOOL_MODES:
            raise ValueError(f"mempool must be one of {MEMPOOL_MODES}, not {self.mempool!r}")
        for name in ("engine_spin_us", "engine_max_sleep_us", "spot_us", "exit_grace",
                     "cancel_timeout", "pool_probe_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)!r}")
        if self.inline_transfer is not None and self.inline_transfer < 0:
            raise ValueError(f"inline_transfer must be >= 0, not {self.inline_transfer!r}")

    def inline_transfer_bytes(self, is_emulator: bool) -> int:
        """Transfers up to this size are copied on the loop thread when the
        proc's main context is idle (a sync transfer queues behind the main
        context's work): on the emulator a 1 MiB memcpy (~50 us) costs less
        than a cross-thread hand-off; on a VE the copy is a DMA the thread
        waits for, and other threads may keep the main context busy without
        aioveo knowing, so it is off there by default."""
        if self.inline_transfer is not None:
            return self.inline_transfer
        return 1 << 20 if is_emulator else 0


#: environment variable -> (field, parser)
ENV: dict[str, tuple[str, Any]] = {
    "AIOVEO_LIBVEO": ("libveo", str),
    "AIOVEO_ENGINE": ("engine", str),
    "AIOVEO_ENGINE_SPIN_US": ("engine_spin_us", int),
    "AIOVEO_ENGINE_MAX_SLEEP_US": ("engine_max_sleep_us", int),
    "AIOVEO_SPOT_US": ("spot_us", float),
    "AIOVEO_INLINE_TRANSFER": ("inline_transfer", int),
    "AIOVEO_EXIT_GRACE": ("exit_grace", float),
    "AIOVEO_CANCEL_TIMEOUT": ("cancel_timeout", float),
    "AIOVEO_MK_VEORUN_STATIC": ("mk_veorun_static", str),
    "AIOVEO_POOL_PROBE_MS": ("pool_probe_ms", float),
    "AIOVEO_MEMPOOL": ("mempool", str),
}


def from_environ(environ: Any = os.environ) -> Settings:
    """Settings from the ``AIOVEO_*`` variables (a bad value raises, naming it)."""
    values: dict[str, Any] = {}
    for var, (field, parse) in ENV.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        try:
            values[field] = parse(raw)
        except ValueError:
            raise ValueError(f"${var}={raw!r} is not a valid {parse.__name__}") from None
    try:
        return Settings(**values)
    except ValueError as e:
        raise ValueError(f"aioveo settings from the environment: {e}") from None


_current = from_environ()
_per_loop: "weakref.WeakKeyDictionary[Any, Settings]" = weakref.WeakKeyDictionary()


def current() -> Settings:
    """The process-wide settings."""
    return _current


def for_loop(loop: Any) -> Settings:
    """The settings of one event loop: its own if configured, else the process's."""
    return _per_loop.get(loop, _current)


def configure(*, loop: Any = None, **changes: Any) -> Settings:
    """Change settings process-wide, or (``loop=``) for one event loop only;
    returns the new Settings.  Takes effect for hubs created afterwards."""
    global _current
    if loop is not None:
        new = dataclasses.replace(for_loop(loop), **changes)
        _per_loop[loop] = new
        return new
    _current = dataclasses.replace(_current, **changes)
    return _current


@contextlib.contextmanager
def override(**changes: Any) -> Iterator[Settings]:
    """Process-wide settings changed inside a ``with`` block, restored after."""
    global _current
    saved = _current
    try:
        yield configure(**changes)
    finally:
        _current = saved
