"""The emulator as a test bench: faults on purpose, and the timing profile.

A fault is written in the grammar of ``VEO_EMU_FAULTS`` (the environment
variable arms faults on every proc a program creates, for programs you cannot
change); from code, arm them on one proc or on every proc created from now on::

    from aioveo import emulator

    emulator.inject(proc, "crash:sym=axpy,call=1000")   # the 1000th axpy call faults
    emulator.crash(proc, sym="axpy", call=1000)          # the same
    emulator.die(None, after_seconds=2.0, node=1)        # procs opened on node 1 die after 2 s
    emulator.faults(proc)   # ['crash:sym=axpy,call=1000,signal=SIGSEGV\\t(seen 3, fired 0)']
    emulator.clear(proc)

Kinds: ``crash`` (the kernel raises a signal), ``hang`` (it never returns),
``delay`` (it starts late), ``die`` (the VE process dies after N calls or a
time), ``nomem`` (allocations fail above a size, past a number of bytes, or
all).  Each may be limited to a node, a proc, a context (0: the main one) and,
for kernels, a symbol; and act on every matching event, only the N-th
(``call=N``) or at a seeded rate (``rate=P,seed=S``).  The emulator's
documentation has the grammar.

``proc`` is a :class:`~aioveo.VeoProc`, an :class:`~aioveo.AsyncProc` or
``None`` (every proc created from now on).  These need aioveo's emulator
(with its extensions): on NEC's libveo they raise
:class:`~aioveo.MissingFunctionError`.
"""
from __future__ import annotations

from typing import Any

from . import _core

__all__ = ["inject", "clear", "faults", "profile", "crash", "hang", "delay", "die", "nomem"]


def _target(proc: Any) -> _core.VeoProc | None:
    if proc is None or isinstance(proc, _core.VeoProc):
        return proc
    sync = getattr(proc, "sync", None)          # AsyncProc
    if isinstance(sync, _core.VeoProc):
        return sync
    raise TypeError(f"expected a VeoProc, an AsyncProc or None, not {type(proc).__name__}")


def inject(proc: Any, spec: str) -> None:
    """Arm the faults of `spec` ("kind:key=value,...; ...") on `proc`, or on
    every proc created from now on (None).  ValueError says what is wrong."""
    _core.emulator_inject(_target(proc), spec)


def clear(proc: Any = None) -> None:
    """Disarm the faults of `proc`; None: forget those injected for new procs
    (a ``VEO_EMU_FAULTS`` of the environment still applies to them)."""
    _core.emulator_clear_faults(_target(proc))


def faults(proc: Any = None) -> list[str]:
    """The faults armed on `proc` as written, each followed by a tab and
    "(seen N, fired M)"; None: those every new proc gets."""
    return _core.emulator_faults(_target(proc))


def profile() -> str | None:
    """The timing profile (``VEO_EMU_PROFILE``) new procs get, described in
    one line, or None.  ValueError if the variable names no valid profile."""
    return _core.emulator_profile()


# ---- the same, with keywords ----------------------------------------------------
def _duration(seconds: float) -> str:
    if not seconds > 0:
        raise ValueError(f"a duration must be positive, not {seconds!r}")
    return f"{round(seconds * 1e9)}ns"


def _spec(kind: str, **keys: Any) -> str:
    opts = [f"{k}={v}" for k, v in keys.items() if v is not None]
    return kind + (":" + ",".join(opts) if opts else "")


def _arm(proc: Any, kind: str, **keys: Any) -> str:
    spec = _spec(kind, **keys)
    inject(proc, spec)
    return spec


def crash(proc: Any, *, sym: str | None = None, call: int | None = None,
          rate: float | None = None, seed: int | None = None, signal: str | int = "SIGSEGV",
          ctx: int | None = None, node: int | None = None) -> str:
    """Kernels (matching `sym`, on context `ctx`) raise `signal` instead of
    running: every call, the `call`-th, or at `rate`.  Returns the spec."""
    return _arm(proc, "crash", node=node, ctx=ctx, sym=sym, call=call, rate=rate, seed=seed,
                signal=signal)


def hang(proc: Any, *, sym: str | None = None, call: int | None = None,
         rate: float | None = None, seed: int | None = None, ctx: int | None = None,
         node: int | None = None) -> str:
    """Kernels never return (their context is stuck until the VE process is
    ended, e.g. by ``VeoProc.kill()`` or a close with a grace)."""
    return _arm(proc, "hang", node=node, ctx=ctx, sym=sym, call=call, rate=rate, seed=seed)


def delay(proc: Any, seconds: float, *, sym: str | None = None, call: int | None = None,
          rate: float | None = None, seed: int | None = None, ctx: int | None = None,
          node: int | None = None) -> str:
    """Kernels start `seconds` late."""
    return _arm(proc, "delay", node=node, ctx=ctx, sym=sym, call=call, rate=rate, seed=seed,
                **{"for": _duration(seconds)})


def die(proc: Any, *, after_calls: int | None = None, after_seconds: float | None = None,
        sym: str | None = None, ctx: int | None = None, node: int | None = None) -> str:
    """The VE process dies after `after_calls` kernel calls (matching `sym`,
    on `ctx`; the last one completes) or `after_seconds` from now (from its
    creation, for new procs), as a VE process killed: pending requests fail."""
    after: int | str
    if after_calls is not None and after_seconds is None:
        after = after_calls
    elif after_seconds is not None and after_calls is None:
        after = _duration(after_seconds)
    else:
        raise ValueError("die: give after_calls or after_seconds")
    return _arm(proc, "die", node=node, ctx=ctx, sym=sym, after=after)


def nomem(proc: Any, *, above: int | None = None, after_bytes: int | None = None,
          call: int | None = None, rate: float | None = None, seed: int | None = None,
          ctx: int | None = None, node: int | None = None) -> str:
    """Allocations fail: larger than `above` bytes, or that would take the
    bytes allocated since now past `after_bytes`, or (neither) all; of those,
    every one, the `call`-th or at `rate`.  ``veo_alloc_mem`` returns -1, an
    async allocation completes with address 0, as a VE's failed malloc."""
    return _arm(proc, "nomem", node=node, ctx=ctx, call=call, rate=rate, seed=seed,
                above=above, after=after_bytes)
