"""The VEs users can see: one record per VE (or emulated node).

    for d in aioveo.devices():
        print(d.node, d.state, d.architecture, d.memory_total, d.temperatures)
    proc.device                                  # the record of a proc's node

On a VH the records come from the VE driver's sysfs attributes
(``/sys/class/ve/ve<index>/``; names, formats and units as the VE driver
writes them and VEDA reads them):

- ``ve_arch_class`` ("ve1"/"ve3"), ``os_state`` (VEOS: 0 online, 1 offline,
  2 initializing, 3 terminating), ``ve_state`` (driver: 3 maintenance,
  4 unavailable), ``model``, ``type``, ``num_of_core``, ``cores_enable``
  (hex bit mask), ``memory_size`` (GiB), ``cache_l1i``/``cache_l1d``/
  ``cache_l2``/``cache_llc`` (KiB), ``clock_chip``/``clock_base``/
  ``clock_memory`` (MHz), ``fw_version``, ``abi_version``, ``serial``,
  ``partitioning_mode`` (1: two NUMA nodes), ``numa0_cores``/``numa1_cores``,
  ``task_id_all`` (the VE processes);
- sensors as VEDA reads them: core temperatures ``sensor_<14 + core>`` in
  µ°C, AUX voltage ``sensor_8`` (µV) and current ``sensor_12`` (mA), PCIe edge
  voltage ``sensor_9`` and current ``sensor_13``; power is VEDA's estimate,
  AUX + edge + 5 W.  The sensor numbering was checked against VEDA (written
  for VE1); on VE3 it is not verified.

A sysfs index is not always the VEO node number: VEO numbers VEs by their
``/dev/veslot<N>`` slots (re-mapped by ``_VENODELIST``), and a slot's device
is found through its symlink or device number.  Memory in use is not in
sysfs (VEOS's veosinfo has it): on a VH ``memory_used`` is None, and
``pool_reserved`` says what this process's memory pools hold.  A missing or
unreadable attribute gives None, never an exception.

On the emulator the same schema comes from its configuration
(``VEO_EMU_NODES``, ``VEO_EMU_NODE_MEMORY``) and its live per-proc memory.
"""
from __future__ import annotations

import dataclasses
import os
import re
import weakref
from typing import Any, Mapping

from . import _core

__all__ = ["Device", "devices", "device", "read_sysfs", "SYSFS_ROOT", "DEV_ROOT"]

SYSFS_ROOT = "/sys/class/ve"
DEV_ROOT = "/dev"
KiB, GiB = 1 << 10, 1 << 30
_OS_STATES = {0: "online", 1: "offline", 2: "initializing", 3: "terminating"}
_VE_STATES = {3: "maintenance", 4: "unavailable"}
_TEMP_SENSOR_BASE = 14

#: VeoProc -> a weak reference to its MemoryPool, so that records show what
#: this process's pools hold (weak both ways: the pool refers to its proc)
_pools: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _register_pool(proc: Any, pool: Any) -> None:
    _pools[proc] = weakref.ref(pool)


@dataclasses.dataclass(frozen=True)
class Device:
    """One VE (or emulated node).  Fields a backend does not expose are None."""

    node: int                        # the VEO node number (what open_proc takes)
    state: str                       # online, busy, offline, initializing, terminating, ...
    architecture: str | None         # "VE1", "VE3" or "emulated"
    model: str | None
    cores: int | None
    memory_total: int | None         # bytes
    memory_used: int | None          # bytes in use on the VE (None: not exposed)
    processes: int | None            # VE processes running on it
    pool_reserved: int = 0           # bytes this process's memory pools hold on it
    sysfs_index: int | None = None   # /sys/class/ve/ve<index>
    core_ids: tuple[int, ...] | None = None
    cache_l1i: int | None = None     # bytes
    cache_l1d: int | None = None
    cache_l2: int | None = None
    cache_llc: int | None = None
    numa_nodes: int | None = None    # 2 in partitioning mode
    clock_chip_mhz: int | None = None
    clock_base_mhz: int | None = None
    clock_memory_mhz: int | None = None
    firmware: int | None = None
    driver_abi: int | None = None
    serial: str | None = None
    temperatures: tuple[float, ...] | None = None   # °C, per core
    power_w: float | None = None
    source: str = ""                 # "emulator" or the sysfs directory

    @property
    def memory_free(self) -> int | None:
        if self.memory_total is None or self.memory_used is None:
            return None
        return max(self.memory_total - self.memory_used, 0)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["memory_free"] = self.memory_free
        return d


# ---- the emulator ------------------------------------------------------------------
def _emulator_devices(environ: Mapping[str, str]) -> list[Device]:
    info = _core.emulator_info()
    assert info is not None
    out = []
    for node, phys in _nodes({k: k for k in range(info["nodes"])}, environ):
        usage = _core.emulator_node_usage(phys)
        procs, used = usage if usage is not None else (None, None)
        out.append(Device(
            node=node, state="busy" if procs else "online", architecture="emulated",
            model="aioveo host emulator", cores=os.cpu_count(),
            memory_total=info["node_memory"], memory_used=used, processes=procs,
            pool_reserved=_pool_reserved(node), source="emulator"))
    return out


# ---- a VH: sysfs --------------------------------------------------------------------
def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _int(text: str | None, base: int = 10) -> int | None:
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def _hex(text: str | None) -> int | None:
    return _int(text, 16)


def _slot_indexes(sysfs_root: str, dev_root: str) -> dict[int, int]:
    """VE slot number (/dev/veslot<N>) -> sysfs index (/sys/class/ve/ve<K>)."""
    by_devnum: dict[str, int] = {}
    try:
        entries = os.listdir(sysfs_root)
    except OSError:
        entries = []
    indexes = sorted(int(m.group(1)) for e in entries if (m := re.fullmatch(r"ve(\d+)", e)))
    for k in indexes:
        devnum = _read(os.path.join(sysfs_root, f"ve{k}", "dev"))
        if devnum:
            by_devnum[devnum] = k
    slots: dict[int, int] = {}
    try:
        dev_entries = os.listdir(dev_root)
    except OSError:
        dev_entries = []
    for e in dev_entries:
        m = re.fullmatch(r"veslot(\d+)", e)
        if not m:
            continue
        slot, path = int(m.group(1)), os.path.join(dev_root, e)
        target = None
        try:
            if os.path.islink(path):       # udev: /dev/veslot<N> -> ve<K>
                t = re.fullmatch(r"ve(\d+)", os.path.basename(os.readlink(path)))
                target = int(t.group(1)) if t else None
            if target is None:             # else by device number (major:minor)
                st = os.stat(path)
                target = by_devnum.get(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
        except OSError:
            target = None
        slots[slot] = target if target is not None else slot
    if not slots:                          # no slots: the sysfs index is the node
        slots = {k: k for k in indexes}
    return slots


def _nodes(slots: Mapping[int, int], environ: Mapping[str, str]) -> list[tuple[int, int]]:
    """(VEO node, sysfs index) pairs, VEO's numbering: _VENODELIST, if set,
    lists the slots the process may use, in node order."""
    listed = environ.get("_VENODELIST")
    if listed is None:
        return sorted(slots.items())
    out = []
    for node, word in enumerate(listed.split()):
        slot = _int(word)
        if slot is not None and slot in slots:
            out.append((node, slots[slot]))
    return out


def _sysfs_device(node: int, index: int, sysfs_root: str) -> Device:
    base = os.path.join(sysfs_root, f"ve{index}")

    def attr(name: str) -> str | None:
        return _read(os.path.join(base, name))

    arch = attr("ve_arch_class")
    mask = _hex(attr("cores_enable"))
    core_ids = tuple(i for i in range(64) if mask >> i & 1) if mask is not None else None
    cores = _int(attr("num_of_core"))
    if cores is None and core_ids is not None:
        cores = len(core_ids)
    partitioned = _int(attr("partitioning_mode"))
    mem_gib = _int(attr("memory_size"))
    tasks = attr("task_id_all")
    processes = len(tasks.split()) if tasks is not None else None
    os_state, ve_state = _int(attr("os_state")), _int(attr("ve_state"))
    if ve_state in _VE_STATES:
        state = _VE_STATES[ve_state]
    elif os_state is None:
        state = "unknown"
    else:
        state = _OS_STATES.get(os_state, f"state {os_state}")
        if state == "online" and processes:
            state = "busy"
    temps = None
    if core_ids:
        raw = [_int(attr(f"sensor_{_TEMP_SENSOR_BASE + c}")) for c in core_ids]
        if all(t is not None for t in raw):
            temps = tuple(round(t / 1e6, 1) for t in raw if t is not None)
    v_aux, i_aux = _int(attr("sensor_8")), _int(attr("sensor_12"))
    v_edge, i_edge = _int(attr("sensor_9")), _int(attr("sensor_13"))
    power = None
    if None not in (v_aux, i_aux, v_edge, i_edge):
        assert v_aux is not None and i_aux is not None and v_edge is not None \
            and i_edge is not None
        share = 2 if partitioned else 1
        power = round(v_aux / 1e6 * i_aux / 1e3 / share + v_edge / 1e6 * i_edge / 1e3 / share
                      + 5.0, 1)
    model, typ = attr("model"), attr("type")
    llc = _int(attr("cache_llc"))

    def kib(v: int | None) -> int | None:
        return None if v is None else v * KiB

    return Device(
        node=node, state=state, architecture=arch.upper() if arch else None,
        model=None if model is None and typ is None else f"model {model}, type {typ}",
        cores=cores, memory_total=mem_gib * GiB if mem_gib is not None else None,
        memory_used=None, processes=processes, pool_reserved=_pool_reserved(node),
        sysfs_index=index, core_ids=core_ids, cache_l1i=kib(_int(attr("cache_l1i"))),
        cache_l1d=kib(_int(attr("cache_l1d"))), cache_l2=kib(_int(attr("cache_l2"))),
        cache_llc=kib(llc), numa_nodes=None if partitioned is None else (2 if partitioned else 1),
        clock_chip_mhz=_int(attr("clock_chip")), clock_base_mhz=_int(attr("clock_base")),
        clock_memory_mhz=_int(attr("clock_memory")), firmware=_int(attr("fw_version")),
        driver_abi=_int(attr("abi_version")), serial=attr("serial"), temperatures=temps,
        power_w=power, source=base)


def read_sysfs(sysfs_root: str = SYSFS_ROOT, dev_root: str = DEV_ROOT,
               environ: Mapping[str, str] | None = None) -> list[Device]:
    """The VEs of a VH, from the VE driver's sysfs (see the module docstring)."""
    env = os.environ if environ is None else environ
    slots = _slot_indexes(sysfs_root, dev_root)
    return [_sysfs_device(node, index, sysfs_root) for node, index in _nodes(slots, env)]


# ---- the API ------------------------------------------------------------------------
def _pool_reserved(node: int) -> int:
    """Bytes this process's memory pools hold on `node`."""
    total = 0
    for p in list(_core._live_procs):
        if p.nodeid == node:
            ref = _pools.get(p)
            pool = ref() if ref is not None else None
            if pool is not None and not pool.closed:
                s = pool._native_stats()
                if s is not None:
                    total += s["reserved_small"] + s["reserved_large"] + s["reserved_arena"]
                total += pool.raw_bytes
    return total


def devices() -> list[Device]:
    """One record per VE (or emulated node), by VEO node number."""
    if _core.backend().is_emulator:
        return _emulator_devices(os.environ)
    return read_sysfs()


def device(node: int) -> Device:
    """The record of VEO node `node` (-1: the default node, $VE_NODE_NUMBER or 0)."""
    if node == -1:
        node = _int(os.environ.get("VE_NODE_NUMBER")) or 0
    for d in devices():
        if d.node == node:
            return d
    raise LookupError(f"no VE node {node} (nodes: {[d.node for d in devices()]})")

