"""Every program in examples/ runs as a user would run it, and says the right thing.

Each runs as a subprocess with its working directory in a temporary directory
and AIOVEO_CACHE pointing into it (kernels are built once per session), with
sizes small enough for the whole file to take seconds.
"""
from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import aioveo

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 60


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("aioveo-cache")


@pytest.fixture
def env(cache) -> dict[str, str]:
    return dict(os.environ, AIOVEO_CACHE=str(cache), PYTHONUNBUFFERED="1")


def run(name: str, *args: str, env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in:\n{text}"
    return float(m.group(1))


def test_quickstart(env, tmp_path):
    out = run("quickstart.py", env=env, cwd=tmp_path)
    assert "add(40, 2) = 42" in out
    assert abs(number(r"basel\(10\*\*7\) = ([\d.]+)", out) - 1.6449340668) < 1e-6
    assert number(r"in flight: ([\d.]+) us per call", out) > 0
    assert "backend: emulator" in out


def test_quickstart_reuses_the_cached_kernel(env, tmp_path, cache):
    run("quickstart.py", env=env, cwd=tmp_path)
    built = sorted((cache / "examples").glob("libquickstart-*.so"))
    assert len(built) == 1
    mtime = built[0].stat().st_mtime_ns
    run("quickstart.py", env=env, cwd=tmp_path)
    assert built[0].stat().st_mtime_ns == mtime          # not rebuilt
    assert not list((cache / "examples").glob(".quickstart-*"))   # no build leftovers


def test_numpy_daxpy(env, tmp_path):
    out = run("numpy_daxpy.py", "200000", env=env, cwd=tmp_path)
    assert "n = 200000" in out
    assert number(r"daxpy max \|error\| = (\S+)", out) <= 1e-12
    assert "OK: the VE agrees with numpy" in out


def test_pipeline(env, tmp_path):
    out = run("pipeline.py", "--chunks", "8", "--chunk-size", "65536", "--sweeps", "8",
              env=env, cwd=tmp_path)
    assert "8 chunks of 65536 doubles" in out
    assert number(r"serial .*: +([\d.]+) ms", out) > 0
    assert number(r"overlapped .*: +([\d.]+) ms", out) > 0
    assert number(r"speed-up: ([\d.]+)x", out) > 0       # printed, not asserted: shared CI cores
    assert "OK: results identical" in out


def test_pipeline_trace(env, tmp_path):
    out = run("pipeline.py", "--chunks", "6", "--chunk-size", "16384", "--sweeps", "2",
              "--contexts", "2", "--trace", "out.json", env=env, cwd=tmp_path)
    assert "OK: results identical" in out
    assert "trace of the overlapped run: out.json" in out
    for name in ("smooth", "write_mem", "read_mem"):           # the summary table
        assert re.search(rf"^{name} +6 +6 ", out, re.M), out
    doc = json.loads((tmp_path / "out.json").read_text())
    events = doc["traceEvents"]
    assert all(e["ph"] in ("X", "M") and isinstance(e["pid"], int) for e in events)
    xs = [e for e in events if e["ph"] == "X"]
    assert sorted(e["name"] for e in xs) == ["read_mem"] * 6 + ["smooth"] * 6 + ["write_mem"] * 6
    assert all(e["ts"] >= 0 and e["dur"] >= 0 and e["args"]["outcome"] == "ok" for e in xs)
    assert {e["tid"] for e in xs} == {1, 2}
    assert sum(e["args"].get("bytes", 0) for e in xs) == 2 * 6 * 16384 * 8
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert len(names) == 2


def test_multi_ve(env, tmp_path):
    out = run("multi_ve.py", "--limit", "200000", env=env, cwd=tmp_path)
    assert "primes below 200000: 17984" in out
    assert number(r"speed-up: ([\d.]+)x with 4 procs", out) > 0


def test_dask_array(env, tmp_path):
    pytest.importorskip("distributed")
    out = run("dask_array.py", "--size", "200000", "--chunk", "50000", env=env, cwd=tmp_path)
    assert "2 VE workers up" in out
    assert "200,000 doubles in 4 chunks on VEs [0, 1]" in out
    assert "checked against NumPy: max |error| = 0" in out


def test_pyveo_port(env, tmp_path):
    out = run("pyveo_port.py", env=env, cwd=tmp_path)
    assert "async write, scale, async read: OK" in out
    assert "cumsum on the VE: [0.0, 1.0, 3.0, 6.0, 10.0, 15.0, 21.0, 28.0, 36.0, 45.0]" in out
    assert out.rstrip().endswith("finished")


def test_pyveo_port_changes_only_the_import():
    lines = (EXAMPLES / "pyveo_port.py").read_text().splitlines()
    imports = [line for line in lines if "aioveo" in line and "import" in line]
    assert imports == ["import aioveo as veo     # the only change; was: import veo"]
    assert "await" not in "\n".join(lines)


def test_c_program(env, tmp_path):
    """examples/c/hello_veo.c sets x = 1 and y = i (i < N), runs daxpy (y += 2 x)
    then dot(x, y) on the VE, prints the dot product and checks it itself."""
    out = run("c_program.py", env=env, cwd=tmp_path)
    src = (EXAMPLES / "c" / "hello_veo.c").read_text()
    n = int(number(r"(?m)^#define N (\d+)$", src))
    x = [1] * n
    y = [i + 2 * x[i] for i in range(n)]                       # daxpy, a = 2
    expected = sum(a * b for a, b in zip(x, y))                # dot: exact in doubles (< 2**53)
    m = re.fullmatch(r"dot\(x, y \+ 2x\) = (\d+\.\d) \(expected (\d+\.\d)\) on (.+)\nOK\n", out)
    assert m, out
    assert float(m[1]) == expected == float(m[2])
    if aioveo.backend().is_emulator:
        assert m[3] == aioveo.backend().version


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            break
    raise AssertionError(f"no line from the server (exit status {proc.poll()}): "
                         f"{proc.stderr.read() if proc.poll() is not None else ''}")


def test_server_and_client(env, tmp_path):
    server = subprocess.Popen([sys.executable, str(EXAMPLES / "server.py"), "--port", "0"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        first = _read_line(server, TIMEOUT)
        m = re.match(r"listening on 127\.0\.0\.1:(\d+) \(4 procs x 2 contexts\)", first)
        assert m, first
        port = m.group(1)

        out = run("client.py", "--port", port, "--requests", "200", "--connections", "16",
                  env=env, cwd=tmp_path)
        assert "200 requests over 16 connections" in out
        assert number(r": (\d+) requests/s", out) > 0
        assert number(r"p99 ([\d.]+) ms", out) > 0
        assert "OK: every answer checked" in out

        # A bad request gets an error answer, and the connection stays usable.
        import socket
        with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as s:
            f = s.makefile("rwb")
            f.write(b'{"op": "nope"}\n{"op": "primes", "lo": 0, "hi": 100}\n')
            f.flush()
            assert json.loads(f.readline()) == {"ok": False, "error": "ValueError: unknown op "
                                                "'nope' (use 'primes' or 'stats')"}
            assert json.loads(f.readline()) == {"ok": True, "count": 25}

        server.send_signal(signal.SIGTERM)
        rest, err = server.communicate(timeout=TIMEOUT)
        assert server.returncode == 0, err
        assert "stopped after 202 requests" in rest
        assert "Traceback" not in err, err
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
