"""Device records: the emulator's, and the VH's read from a fake sysfs tree
written as the VE driver writes its attributes (so the code path that runs
on a VH runs here), and the ``info`` command's table."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import aioveo
from aioveo.devices import Device, read_sysfs

GiB = 1 << 30


# ---- the emulator ------------------------------------------------------------------
def test_emulator_records(monkeypatch):
    monkeypatch.setenv("VEO_EMU_NODES", "3")
    devs = aioveo.devices()
    assert [d.node for d in devs] == [0, 1, 2]
    info = aioveo.emulator_info()
    for d in devs:
        assert isinstance(d, Device)
        assert d.architecture == "emulated" and d.source == "emulator"
        assert d.memory_total == info["node_memory"] and d.cores == os.cpu_count()
        assert d.state in ("online", "busy") and d.memory_free is not None
    from aioveo.devices import device
    assert device(2).node == 2
    with pytest.raises(LookupError, match="no VE node 7"):
        device(7)


@pytest.mark.asyncio
async def test_emulator_records_follow_live_procs(aio_lib):
    from aioveo.devices import device
    idle = device(1)
    async with aioveo.open_proc(1) as proc, proc.open_context() as ctx:
        v = await ctx.to_ve(np.zeros(3 << 20, np.uint8))
        d = proc.device
        assert d.node == 1 and d.state == "busy" and d.processes == idle.processes + 1
        assert d.memory_used >= idle.memory_used + (3 << 20)
        assert d.pool_reserved == proc.memory.stats().reserved_bytes > 0
        v.free()
    after = device(1)
    assert after.processes == idle.processes and after.memory_used == idle.memory_used
    assert after.pool_reserved == 0


# ---- a VH, through a fake sysfs -----------------------------------------------------
def write_ve(root, index, **attrs):
    d = root / "class" / "ve" / f"ve{index}"
    d.mkdir(parents=True)
    for name, value in attrs.items():
        (d / name).write_text(f"{value}\n")
    return d


VE1 = dict(ve_arch_class="ve1", os_state=0, ve_state=1, num_of_core=8, cores_enable="0x0000ff",
           memory_size=48, model=1, type=2, cache_l1i=32, cache_l1d=32, cache_l2=256,
           cache_llc=16384, clock_chip=1400, clock_base=1400, clock_memory=1600,
           fw_version=5311, abi_version=14, serial="0123456789abcdef0123456789abcdef",
           partitioning_mode=0, numa0_cores="0xff", numa1_cores="0x0", task_id_all="",
           sensor_8=12000000, sensor_12=8000, sensor_9=12100000, sensor_13=4000,
           **{f"sensor_{14 + c}": 45000000 + 1000000 * c for c in range(8)})


@pytest.fixture
def vh(tmp_path):
    """Two VEs whose sysfs indexes are swapped against their slots: slot 0
    (VEO node 0) is ve1 and slot 1 is ve0, as udev links them."""
    root = tmp_path
    write_ve(root, 1, **{**VE1, "dev": "240:1"})
    ve3 = {**VE1, "ve_arch_class": "ve3", "num_of_core": 16, "cores_enable": "0x00ffff",
           "memory_size": 96, "os_state": 0, "task_id_all": "4242\n4343", "partitioning_mode": 1,
           "dev": "240:0"}
    for c in range(16):
        ve3[f"sensor_{14 + c}"] = 50000000
    write_ve(root, 0, **ve3)
    dev = root / "dev"
    dev.mkdir()
    os.symlink("ve1", dev / "veslot0")
    os.symlink("ve0", dev / "veslot1")
    return root


def read(root, env=None):
    return read_sysfs(str(root / "class" / "ve"), str(root / "dev"), env or {})


def test_vh_records_from_sysfs(vh):
    d0, d1 = read(vh)
    assert (d0.node, d0.sysfs_index, d1.node, d1.sysfs_index) == (0, 1, 1, 0)
    assert d0.architecture == "VE1" and d0.state == "online" and d0.processes == 0
    assert d0.cores == 8 and d0.core_ids == tuple(range(8))
    assert d0.memory_total == 48 * GiB and d0.memory_used is None and d0.memory_free is None
    assert (d0.cache_l1i, d0.cache_l1d, d0.cache_l2, d0.cache_llc) == (
        32 << 10, 32 << 10, 256 << 10, 16 << 20)
    assert (d0.clock_chip_mhz, d0.clock_base_mhz, d0.clock_memory_mhz) == (1400, 1400, 1600)
    assert d0.firmware == 5311 and d0.driver_abi == 14 and d0.numa_nodes == 1
    assert d0.model == "model 1, type 2" and d0.serial == VE1["serial"]
    assert d0.temperatures == tuple(45.0 + c for c in range(8))
    assert d0.power_w == pytest.approx(12 * 8 + 12.1 * 4 + 5, abs=0.1)   # VEDA's estimate
    assert d0.source.endswith("ve1")
    assert d1.architecture == "VE3" and d1.state == "busy" and d1.processes == 2
    assert d1.numa_nodes == 2 and d1.memory_total == 96 * GiB and len(d1.temperatures) == 16


def test_vh_venodelist_renumbers_the_nodes(vh):
    (d,) = read(vh, {"_VENODELIST": "1"})                    # this process may use slot 1 only
    assert d.node == 0 and d.sysfs_index == 0 and d.architecture == "VE3"
    assert [x.sysfs_index for x in read(vh, {"_VENODELIST": "1 0"})] == [0, 1]


def test_vh_slots_found_by_device_number_or_index(tmp_path):
    write_ve(tmp_path, 0, **VE1)
    write_ve(tmp_path, 1, **VE1)
    (tmp_path / "dev").mkdir()                               # no slots: the index is the node
    assert [(d.node, d.sysfs_index) for d in read(tmp_path)] == [(0, 0), (1, 1)]


def test_vh_missing_or_unreadable_attributes_give_none(tmp_path):
    d = write_ve(tmp_path, 0, ve_arch_class="ve1", cores_enable="0x3", memory_size="garbage",
                 sensor_14=40000000)
    (d / "fw_version").mkdir()                               # unreadable: a directory
    (d / "os_state").write_bytes(b"\xff\xfe")                # not text
    (dev,) = read(tmp_path)
    assert dev.architecture == "VE1" and dev.core_ids == (0, 1) and dev.cores == 2
    assert dev.memory_total is None and dev.firmware is None and dev.state == "unknown"
    assert dev.temperatures is None and dev.power_w is None and dev.cache_l2 is None
    assert dev.as_dict()["memory_free"] is None
    assert read_sysfs(str(tmp_path / "nothing"), str(tmp_path / "nodev"), {}) == []


def test_vh_states(tmp_path):
    write_ve(tmp_path, 0, **{**VE1, "os_state": 1})
    write_ve(tmp_path, 1, **{**VE1, "os_state": 0, "ve_state": 3})
    write_ve(tmp_path, 2, **{**VE1, "os_state": 2})
    assert [d.state for d in read(tmp_path)] == ["offline", "maintenance", "initializing"]


# ---- the command line ---------------------------------------------------------------
def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "aioveo", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_info_shows_the_device_table():
    r = run_cli("info", env={"VEO_EMU_NODES": "2"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("node  "))
    assert "memory used / total" in lines[head] and "temp C" in lines[head]
    assert lines[head + 2].split()[:3] == ["0", "online", "emulated"]
    assert lines[head + 3].split()[0] == "1" and len(lines) == head + 4


def test_info_json_and_watch():
    r = run_cli("info", "--json", env={"VEO_EMU_NODES": "2"})
    assert r.returncode == 0, r.stderr
    devs = json.loads(r.stdout)["devices"]
    assert [d["node"] for d in devs] == [0, 1] and devs[0]["architecture"] == "emulated"
    assert devs[0]["memory_free"] == devs[0]["memory_total"] - devs[0]["memory_used"]
    r = run_cli("info", "--watch", "0.05", "--count", "3", env={"VEO_EMU_NODES": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("aioveo devices, every 0.05 s") == 3
    assert "\x1b[2J" not in r.stdout                       # not a terminal: no redraw codes
    assert run_cli("info", "--watch", "0").returncode == 2
