"""The HTTP service example (examples/service.py) under load and faults, on
asyncio's loop and on uvloop.

The service runs as a subprocess on 127.0.0.1 with a free port; an aiohttp
client (examples/loadgen.py's) sends 2,000 requests over 32 connections,
with malformed ones mixed in.  Mid-load one proc dies (a kernel that
faults, or its helper killed with SIGKILL): every request not running on it
must succeed, the proc is replaced, /metrics shows it, and after SIGTERM the
requests in flight are answered and no helper process is left.
"""
from __future__ import annotations

import asyncio
import importlib.util
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

aiohttp = pytest.importorskip("aiohttp")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 60
LOOPS = ["asyncio"]
if importlib.util.find_spec("uvloop") is not None:
    LOOPS.append("uvloop")

_spec = importlib.util.spec_from_file_location("loadgen", EXAMPLES / "loadgen.py")
assert _spec is not None and _spec.loader is not None
loadgen = importlib.util.module_from_spec(_spec)
sys.modules["loadgen"] = loadgen      # (dataclasses look their module up)
_spec.loader.exec_module(loadgen)


@pytest.fixture(scope="module")
def prefix():
    return loadgen.sieve(loadgen.LIMIT)


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("aioveo-cache")


class Service:
    """examples/service.py in a subprocess."""

    def __init__(self, loop: str, cwd: Path, cache: Path, *args: str) -> None:
        env = dict(os.environ, AIOVEO_CACHE=str(cache), PYTHONUNBUFFERED="1")
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "service.py"), "--port", "0", "--loop", loop,
             "--fault-injection", *args],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self._line(TIMEOUT)
        m = re.match(r"listening on (http://127\.0\.0\.1:\d+) \((\d+) procs x 2 contexts, "
                     r"(\w+) loop\)", line)
        assert m, line
        self.url = m.group(1)
        assert (m.group(2), m.group(3)) == ("4", loop)

    def _line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                return self.proc.stdout.readline()
            if self.proc.poll() is not None:
                break
        raise AssertionError(f"no line from the service (exit status {self.proc.poll()}): "
                             f"{self.proc.stderr.read() if self.proc.poll() is not None else ''}")

    def helpers(self) -> list[int]:
        """The emulated VEs: the service's child processes."""
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                pass
        return pids

    def stop(self) -> tuple[str, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=TIMEOUT)
        assert self.proc.returncode == 0, err
        assert "Traceback" not in err, err
        return out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def get(session, url: str) -> tuple[int, str]:
    async with session.get(url) as resp:
        return resp.status, await resp.text()


def gone(pids: list[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [p for p in pids if Path(f"/proc/{p}").exists()]:
            return True
        time.sleep(0.02)
    return False


async def load_with_a_fault(service: Service, prefix, fault, n: int, bad: float):
    """`n` requests over 32 connections; `fault()` (a coroutine taking the
    session) runs once a quarter of them are answered."""
    requests = loadgen.make_requests(n, seed=7, bad=bad, prefix=prefix)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=40),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        answered: list = []
        load = asyncio.ensure_future(loadgen.run_load(service.url, requests, 32, session,
                                                      on_result=answered.append))
        while len(answered) < n // 4 and not load.done():
            await asyncio.sleep(0.005)
        assert not load.done(), "the load finished before the fault: make it longer"
        await fault(session)
        t_fault = time.monotonic()
        took = None
        while took is None and time.monotonic() - t_fault < 5:     # during the load
            status, text = await get(session, service.url + "/health")
            if json.loads(text)["live_procs"] == 4 and \
                    json.loads(text)["replacements"] == 1:
                took = time.monotonic() - t_fault
            else:
                await asyncio.sleep(0.01)
        results = await load
        status, text = await get(session, service.url + "/metrics")
        m = metrics(text)
        health = await get(session, service.url + "/health")
    return results, m, health, took


def check_load(results, m, health) -> None:
    bad = [r for r in results if r.req.expect != 200]
    assert bad and all(r.ok for r in bad), \
        [(r.req.kind, r.status, r.answer) for r in bad if not r.ok][:5]
    assert {r.req.kind for r in bad} == {name for name, _ in loadgen.BAD}
    failed = [r for r in results if r.req.expect == 200 and not r.ok]
    # only requests running on the dead proc may fail, and only with a 503 saying so
    assert all(r.status == 503 and "died" in r.answer["error"] for r in failed), \
        [(r.req.kind, r.status, r.answer) for r in failed][:5]
    assert len(failed) <= 32
    good = [r for r in results if r.req.expect == 200]
    assert len(good) - len(failed) >= 0.97 * len(good)
    assert m["aioveo_pool_live_procs"] == 4
    assert 0 < m["aioveo_pool_last_replacement_seconds"] < 2.0
    assert m["aioveo_pool_replacements_total"] == 1 and m["aioveo_pool_deaths_total"] == 1
    assert sum(v for k, v in m.items() if k.startswith("aioveo_ve_replacements_total")) == 1
    assert sum(v for k, v in m.items() if k.startswith("aioveo_ve_up")) == 4
    assert m['aioveo_requests_total{endpoint="other",code="404"}'] >= 1
    assert m["aioveo_request_duration_seconds_count"] >= len(good)
    assert health[0] == 200 and json.loads(health[1])["status"] == "ok"


async def drain(service: Service) -> list:
    """Slow requests in flight when SIGTERM arrives are answered."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        body = json.dumps({"lo": 100_000_000, "hi": 100_200_000}).encode()

        async def slow():
            async with session.post(service.url + "/primes", data=body) as resp:
                return resp.status, await resp.json()

        tasks = [asyncio.ensure_future(slow()) for _ in range(4)]
        await asyncio.sleep(0.15)
        assert not any(t.done() for t in tasks)
        service.proc.send_signal(signal.SIGTERM)
        return await asyncio.gather(*tasks)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_kernel_fault_mid_load_with_bad_requests_then_sigterm(loop, tmp_path, cache, prefix):
    service = Service(loop, tmp_path, cache)
    try:
        helpers = service.helpers()
        assert len(helpers) == 4

        async def crash(session):
            async with session.post(service.url + "/debug/crash") as resp:
                assert resp.status == 500
                assert "kernel fault" in (await resp.json())["error"]

        results, m, health, took = asyncio.run(
            load_with_a_fault(service, prefix, crash, 2000, bad=0.05))
        check_load(results, m, health)
        assert took is not None and took < 2.0, took
        helpers += service.helpers()
        answers = asyncio.run(drain(service))
        assert [s for s, _ in answers] == [200] * 4
        assert len({json.dumps(a) for _, a in answers}) == 1
        out, err = service.proc.communicate(timeout=TIMEOUT)
        assert service.proc.returncode == 0, err
        assert "draining" in out and "stopped after" in out
        assert "Traceback" not in err, err
        assert re.search(r"pool: the proc on node \d \(pid \d+\) died: ", err), err
        assert "replaced the proc on node" in err
        assert gone(helpers), "a helper process survived the service"
    finally:
        service.kill()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_helper_killed_mid_load_then_sigterm(loop, tmp_path, cache, prefix):
    service = Service(loop, tmp_path, cache)
    try:
        helpers = service.helpers()

        async def kill(session):
            os.kill(helpers[2], signal.SIGKILL)

        results, m, health, took = asyncio.run(
            load_with_a_fault(service, prefix, kill, 1000, bad=0.02))
        check_load(results, m, health)
        assert took is not None and took < 2.0, took
        # the load generator as a user runs it
        r = subprocess.run([sys.executable, str(EXAMPLES / "loadgen.py"), "--url", service.url,
                            "--requests", "200", "--connections", "8", "--bad", "0.1"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(r"^200 requests over 8 connections in [\d.]+ s: \d+ requests/s$",
                         r.stdout, re.M), r.stdout
        assert re.search(r"p50 [\d.]+ ms, p99 [\d.]+ ms", r.stdout)
        assert "OK: every answer checked" in r.stdout
        helpers += service.helpers()
        out, err = service.stop()
        assert "stopped after" in out
        assert gone(helpers), "a helper process survived the service"
    finally:
        service.kill()
