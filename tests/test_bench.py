"""Both benchmarks run end to end, so they do not rot: the development suite
(benchmarks/suite.py, its cheapest scenario) and the installed
``python -m aioveo bench``.  Their numbers are not judged here beyond being
sane: speed is measured by the benchmarks, not timed in tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aioveo

SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "suite.py"


def test_dev_suite_quick_latency_scenario_writes_json_markdown_and_targets(tmp_path):
    out = tmp_path / "results"
    r = subprocess.run([sys.executable, str(SUITE), "--quick", "--only", "latency",
                        "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert {"raw C", "sync API", "async (asyncio)"} <= set(res["latency"])
    for variant in res["latency"].values():
        assert len(variant["samples"]) == res["rounds"]
        assert all(s > 0 for s in variant["samples"])
    names = [t["target"] for t in res["targets"]]
    assert "sync call cost vs the C loop" in names
    md = (out / "results.md").read_text()
    assert "Null call latency" in md and ("PASS" in md or "MISS" in md)
    assert "### Targets" in r.stdout


def test_dev_suite_quick_healing_scenario(tmp_path):
    r = subprocess.run([sys.executable, str(SUITE), "--quick", "--only", "healing"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "### A pool that loses a proc (4 procs)" in r.stdout
    assert "PASS calls succeeding after a crash in a 4-proc pool" in r.stdout
    assert "PASS 4 live procs again after a crash" in r.stdout


def test_installed_bench_quick_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "aioveo", "bench", "--quick", "--json"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    b = aioveo.backend()
    assert out["aioveo_version"] == aioveo.__version__
    assert (out["backend"], out["libveo"], out["node"], out["quick"]) == (b.kind, b.version, 0, True)
    res = out["results"]
    assert set(res) == {"latency_us", "throughput_calls_per_s", "bandwidth_bytes_per_s",
                        "cpu_awaiting"}
    assert set(res["latency_us"]) == {"await", "sync"}
    assert all(0 < v < 1e5 for v in res["latency_us"].values())       # under 0.1 s a call
    assert set(res["throughput_calls_per_s"]) == {"submit", "map"}
    assert all(10 < v < 1e9 for v in res["throughput_calls_per_s"].values())
    bw = res["bandwidth_bytes_per_s"]
    assert set(bw) == {"read", "write"}
    for way in bw.values():
        assert len(way) == 3 and all(int(size) > 0 for size in way)
        assert all(1e3 < v < 1e13 for v in way.values())
    cpu = res["cpu_awaiting"]
    assert cpu["kernel_s"] == 1.0 and 0 <= cpu["cores"] <= os.cpu_count()
    # progress on stderr, one line per measurement; nothing left behind
    assert "aioveo bench [1/8]" in r.stderr and "aioveo bench [8/8]" in r.stderr
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_installed_bench_table(tmp_path):
    from aioveo import bench
    table = bench._table({"aioveo_version": "0", "backend": "emulator", "libveo": "x", "node": 0,
                          "results": {"latency_us": {"await": 2.5, "sync": 1.0},
                                      "throughput_calls_per_s": {"submit": 2e5, "map": 1e6},
                                      "bandwidth_bytes_per_s": {"read": {"4096": 1e9},
                                                                "write": {"1048576": 2e10}},
                                      "cpu_awaiting": {"kernel_s": 1.0, "cores": 0.015}}})
    lines = table.splitlines()
    assert lines[0] == "aioveo 0 on the emulator (x), node 0"
    assert any(line.startswith("awaited call latency") and line.endswith("2.50 us")
               for line in lines)
    assert any("200,000 calls/s" in line for line in lines)
    assert any(line.startswith("read 4 KiB blocks") and line.endswith("1.00 GB/s")
               for line in lines)
    assert any(line.startswith("write 1 MiB blocks") and line.endswith("20.00 GB/s")
               for line in lines)
    assert lines[-1].endswith("1.50% of a core")
