"""Observers of the asyncio layer's requests and memory (aioveo.trace
subscribes here).  They observe, they never decide.

An observer has ``submitted(ctx, key, label, nbytes, calls, inline)``, called
when a request is handed to the VE (`key` identifies it until it ends;
`label` is the VeoFunction, or "read_mem"/"write_mem" for a transfer), and
``completed(key, status, cancelled)``, called when its end is known
(`status`: a VEO_COMMAND_* value, FORGOTTEN, or None for a copy done on the
loop thread); optionally ``memory_sample(proc, used, cached, pending)`` from
the memory pools.  Its own module, so that the asyncio layer and the memory
pools read one list without importing each other.
"""
from __future__ import annotations

from typing import Any

#: The observers, in the order added (the list is changed in place, never
#: rebound: the hot paths hold it by reference).
observers: list[Any] = []


def add_observer(observer: Any) -> None:
    observers.append(observer)


def remove_observer(observer: Any) -> None:
    if observer in observers:
        observers.remove(observer)
