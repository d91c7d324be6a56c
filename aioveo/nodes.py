"""Which VE nodes to use, and opening procs on a machine where some are busy.

    aioveo.nodes.candidates()          # [0, 1, 2, ...]: the nodes to try, in order
    procs = await aioveo.open_procs(count=2)          # any 2 VEs that open
    procs = await aioveo.open_procs([0, 1, 2, 3])     # exactly these (all or an error)

Without explicit nodes the candidates come from the batch scheduler, then
from the machine:

- ``_VENODELIST`` set (the scheduler's physical nodes, ``"4 5 7"``): libveo
  takes a node number as an *index* into that list, so the candidates are
  its indices ``0 .. n-1`` (the index of ``VE_NODE_NUMBER`` first when it is
  one of them), and nothing outside the list is ever tried;
- else ``VE_NODE_NUMBER`` first, then every other node of the machine: the
  emulator's nodes (``VEO_EMU_NODES``), or the VEs present
  (``/dev/veslot*``, else ``/dev/ve*``).

A node that cannot be opened (absent, busy, out of memory) is skipped when
the caller asks for "any N"; the error says which nodes failed and why.
"""
from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence, TypeVar

from ._core import VeoError, backend, emulator_info

__all__ = ["candidates", "machine_nodes", "NodesUnavailableError", "open_any"]

log = logging.getLogger("aioveo")
P = TypeVar("P")


class NodesUnavailableError(VeoError):
    """Fewer procs than required could be opened.  ``failures`` lists
    ``(node, exception)`` for every node that failed, in the order tried."""

    def __init__(self, message: str, failures: Sequence[tuple[int, BaseException]]) -> None:
        super().__init__(message)
        self.failures = list(failures)


def machine_nodes() -> list[int]:
    """The VE nodes of this machine: the emulator's, or the VEs present."""
    info = emulator_info() if backend().is_emulator else None
    if info is not None:
        return list(range(int(info["nodes"])))
    found = set()
    for pattern, rx in (("/dev/veslot*", r"/dev/veslot(\d+)$"), ("/dev/ve*", r"/dev/ve(\d+)$")):
        for path in glob.glob(pattern):
            m = re.match(rx, path)
            if m:
                found.add(int(m.group(1)))
        if found:
            break
    return sorted(found)


def _int_list(text: str, var: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"${var}={text!r} is not a list of node numbers") from None


def candidates(environ: Mapping[str, str] | None = None) -> list[int]:
    """The node numbers to try, in order, when none are given (see the module)."""
    env = os.environ if environ is None else environ
    venodelist = env.get("_VENODELIST", "").strip()
    default = env.get("VE_NODE_NUMBER", "").strip()
    want = _int_list(default, "VE_NODE_NUMBER")[:1] if default else []
    if venodelist:
        physical = _int_list(venodelist, "_VENODELIST")
        order = list(range(len(physical)))
        if want and want[0] in physical:
            index = physical.index(want[0])
            order.remove(index)
            order.insert(0, index)
        return order
    return want + [n for n in machine_nodes() if n not in want]


def describe_failures(failures: Iterable[tuple[int, BaseException]]) -> str:
    return "; ".join(f"node {n}: {e}" for n, e in failures)


async def open_any(nodes: Iterable[int], count: int, open_one: Callable[[int], Awaitable[P]],
                   close_one: Callable[[P], Awaitable[Any]], *,
                   min_count: int | None = None) -> tuple[list[tuple[int, P]], list[int],
                                                          list[tuple[int, BaseException]]]:
    """Open `count` things on the first nodes of `nodes` that work, at most
    `count` attempts at a time, the next candidate replacing each failure.

    Returns ``(opened, spares, failures)``: ``(node, thing)`` pairs in the
    candidates' order, the candidates left untried, and ``(node, exception)``
    for the nodes that failed.  With fewer than `min_count` (default:
    `count`) opened, closes what was opened and raises NodesUnavailableError.
    """
    todo = list(nodes)
    need = count if min_count is None else min_count
    if count < 1 or not 0 <= need <= count:
        raise ValueError(f"need 1 <= count and 0 <= min_count <= count, not {count}, {min_count}")
    order = {n: i for i, n in reversed(list(enumerate(todo)))}
    opened: list[tuple[int, P]] = []
    failures: list[tuple[int, BaseException]] = []
    running: dict[asyncio.Future, int] = {}
    try:
        while todo or running:
            while todo and len(running) + len(opened) < count:
                node = todo.pop(0)
                running[asyncio.ensure_future(open_one(node))] = node
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                node = running.pop(fut)
                exc = fut.exception()
                if exc is None:
                    opened.append((node, fut.result()))
                elif isinstance(exc, Exception):
                    log.info("aioveo: cannot open node %d: %s", node, exc)
                    failures.append((node, exc))
                else:
                    raise exc
            if len(opened) >= count:
                break
    except BaseException:
        for fut in running:
            fut.cancel()
        results = await asyncio.gather(*running, return_exceptions=True)
        await asyncio.gather(*(close_one(p) for _, p in opened),
                             *(close_one(r) for r in results if not isinstance(r, BaseException)),
                             return_exceptions=True)
        raise
    opened.sort(key=lambda item: order.get(item[0], 0))
    failures.sort(key=lambda item: order.get(item[0], 0))
    if len(opened) < need:
        await asyncio.gather(*(close_one(p) for _, p in opened), return_exceptions=True)
        if not failures:
            raise NodesUnavailableError(f"{len(opened)} candidate nodes for the {need} procs "
                                        f"wanted", [])
        raise NodesUnavailableError(
            f"could open {len(opened)} of the {need} procs wanted: "
            f"{describe_failures(failures)}", failures)
    return opened, todo, failures
