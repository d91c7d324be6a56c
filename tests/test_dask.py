"""aioveo on Dask distributed (aioveo.dask): in-process workers on the test's
loop (both event loops), then real worker processes (LocalVECluster and the
`dask-worker` command), each on its own emulated VE node, with no helper
process left behind."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

distributed = pytest.importorskip("distributed")
from distributed import Client, Scheduler, Worker  # noqa: E402

import aioveo  # noqa: E402
from aioveo import dask as ve_dask  # noqa: E402


def helpers_alive(pids) -> list[int]:
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] != "Z":
                    alive.append(pid)
        except FileNotFoundError:
            pass
    return alive


def all_helpers() -> set[int]:
    """Every aioveo-veorun process of this machine."""
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if b"aioveo-veorun" in f.read().split(b"\0")[0]:
                        out.add(int(d))
            except OSError:
                pass
    return out


# ---- environment --------------------------------------------------------------------
def test_environment_rotation_and_node_lists(monkeypatch):
    assert ve_dask.ve_environment(3, [0, 3, 6, 7]) == {
        "_VENODELIST": "3 6 7 0", "VE_NODE_NUMBER": "3", "VE_NLCPY_NODELIST": "0"}
    with pytest.raises(ValueError, match="not in"):
        ve_dask.ve_environment(5, [0, 1])
    assert ve_dask._parse_nodes("0,2-4") == [0, 2, 3, 4]
    monkeypatch.setenv("_VENODELIST", "5 1")
    assert ve_dask.host_nodes() == [5, 1]
    monkeypatch.delenv("_VENODELIST")
    assert ve_dask.host_nodes() == list(range(aioveo.emulator_info()["nodes"]))
    with pytest.raises(ValueError, match="processes"):
        ve_dask.LocalVECluster(nodes=[0], processes=False)


def test_current_pool_outside_a_worker_says_so():
    with pytest.raises(RuntimeError, match="not inside a Dask task"):
        ve_dask.current_pool()


# ---- in-process workers on the test's event loop ---------------------------------------
async def _node_and_sum(lib, i):
    add = await ve_dask.function(lib, "long add(long, long)")
    pool = ve_dask.current_pool()
    return pool.procs[0].nodeid, await pool.call(add, i, 1)


async def _nap(lib, ms):
    nap = await ve_dask.function(lib, "long sleep_ms(long)")
    return await ve_dask.current_pool().call(nap, ms)


async def _crash(lib):
    crash = await ve_dask.function(lib, "long crash(void)")
    return await ve_dask.current_pool().call(crash)


@pytest.mark.asyncio
async def test_async_tasks_on_two_in_process_ve_workers(aio_lib):
    async with Scheduler(dashboard_address=":0", port=0) as s, \
            Worker(s.address, nthreads=4, name="w0", resources={"VE": 1, "VE_SLOTS": 4},
                   plugins={ve_dask.VEPlugin([0], 1)}) as w0, \
            Worker(s.address, nthreads=4, name="w1", resources={"VE": 1, "VE_SLOTS": 4},
                   plugins={ve_dask.VEPlugin([1], 1)}) as w1, \
            Client(s.address, asynchronous=True) as client:
        out = {}
        for w in (w0, w1):
            out[w.name] = await client.submit(_node_and_sum, aio_lib, 41, workers=[w.address],
                                              pure=False)
        assert out == {"w0": (0, 42), "w1": (1, 42)}
        # tasks share a worker's VE: 4 tasks are in flight at once (nthreads counts
        # tasks, async ones included), their calls queued on the VE together
        futs = [client.submit(_nap, aio_lib, 200, workers=[w0.address], pure=False,
                              resources={"VE_SLOTS": 1}) for _ in range(4)]
        ctx = w0.plugins["aioveo"].pool.contexts[0]
        seen = 0
        for _ in range(200):
            seen = max(seen, ctx.in_flight)
            if seen == 4:
                break
            await asyncio.sleep(0.01)
        assert seen == 4
        assert await client.gather(futs) == [200] * 4
        metrics = w0.plugins["aioveo"].metrics()
        assert metrics["procs"] == 1 and metrics["in_flight"] == 0
        await w0.heartbeat()                        # the pool's numbers reach the scheduler
        assert s.workers[w0.address].metrics["ve"]["procs"] == 1
        # a VE fault fails that task only, with aioveo's exception at the client
        with pytest.raises(aioveo.VeoException):
            await client.submit(_crash, aio_lib, workers=[w1.address], pure=False)
        # ... and the worker's pool heals: its next tasks run on a new VE process
        await w1.plugins["aioveo"].pool.settled(10)
        assert (await client.submit(_node_and_sum, aio_lib, 5, workers=[w1.address],
                                    pure=False)) == (1, 6)
        m = w1.plugins["aioveo"].metrics()
        assert m["deaths"] == 1 and m["replacements"] == 1 and m["live_procs"] == 1
        assert (await client.submit(_node_and_sum, aio_lib, 1, workers=[w0.address],
                                    pure=False)) == (0, 2)
        pids = [p.sync.helper_pid for w in (w0, w1) for p in w.plugins["aioveo"].pool.procs]
    assert not helpers_alive([p for p in pids if p])


@pytest.mark.asyncio
async def test_cancelling_a_client_future_leaves_the_kernel_to_finish(aio_lib):
    async with Scheduler(dashboard_address=":0", port=0) as s, \
            Worker(s.address, nthreads=2, plugins={ve_dask.VEPlugin([0], 1)}) as w, \
            Client(s.address, asynchronous=True) as client:
        fut = client.submit(_nap, aio_lib, 400, pure=False)
        await asyncio.sleep(0.15)
        await fut.cancel()
        pool = w.plugins["aioveo"].pool
        assert pool.contexts[0].in_flight == 1       # the VE still runs it
        for _ in range(100):
            if pool.contexts[0].in_flight == 0:
                break
            await asyncio.sleep(0.02)
        assert pool.contexts[0].in_flight == 0
        assert await client.submit(_nap, aio_lib, 1, pure=False) == 1


# ---- worker processes ----------------------------------------------------------------
def _worker_view(dask_worker):
    pool = ve_dask.current_pool(dask_worker)
    return (os.environ["_VENODELIST"], os.environ["VE_NODE_NUMBER"],
            [p.sync.helper_pid for p in pool.procs])


def test_local_ve_cluster_one_worker_process_per_node(aio_lib):
    async def main():
        async with ve_dask.LocalVECluster(nodes=[0, 1], threads_per_worker=2,
                                          asynchronous=True) as cluster, \
                Client(cluster, asynchronous=True) as client:
            views = await client.run(_worker_view)
            assert sorted(v[:2] for v in views.values()) == [("0 1", "0"), ("1 0", "1")]
            pids = [pid for v in views.values() for pid in v[2]]
            futs = client.map(_node_and_sum, [aio_lib] * 6, range(6), pure=False,
                              resources={"VE_SLOTS": 1})
            assert sorted(r[1] for r in await client.gather(futs)) == list(range(1, 7))
            # distributed's race (dask/distributed#5407): the "remove" of a worker
            # that a refreshed scheduler_info no longer holds is not a KeyError
            cluster._update_worker_status("remove", "tcp://127.0.0.1:1")
            # a worker process killed: its helper goes with it, the Nanny restarts it
            victim = sorted(views)[0]
            pid = (await client.run(os.getpid, workers=[victim]))[victim]
            os.kill(pid, signal.SIGKILL)
            for _ in range(200):
                if not helpers_alive([views[victim][2][0]]):
                    break
                await asyncio.sleep(0.05)
            assert not helpers_alive([views[victim][2][0]])
            await client.wait_for_workers(2, timeout=30)
            assert await client.submit(_node_and_sum, aio_lib, 2, pure=False) is not None
            return pids

    pids = asyncio.run(main())
    assert not helpers_alive(pids)


def test_dask_worker_command_against_a_scheduler(aio_lib, tmp_path):
    sched_file = tmp_path / "scheduler.json"
    # the scheduler and workers unpickle this module's task functions by reference
    env = {**os.environ, "_VENODELIST": "3 5",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(__file__),
                                                       os.environ.get("PYTHONPATH")]))}
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                              "--scheduler-file", str(sched_file), "--port", "0",
                              "--dashboard-address", ":0"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = None
    try:
        for _ in range(200):
            if sched_file.exists() and sched_file.stat().st_size:
                break
            time.sleep(0.05)
        import json
        address = json.loads(sched_file.read_text())["address"]
        workers = subprocess.Popen([sys.executable, "-m", "aioveo", "dask-worker", address,
                                    "--nthreads", "2", "--contexts-per-proc", "1"],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        async def main():
            async with Client(address, asynchronous=True) as client:
                await client.wait_for_workers(2, timeout=60)
                views = await client.run(_worker_view)
                assert sorted(v[:2] for v in views.values()) == [("3 5", "3"), ("5 3", "5")]
                assert (await client.submit(_node_and_sum, aio_lib, 9, pure=False))[1] == 10
                return [pid for v in views.values() for pid in v[2]]

        pids = asyncio.run(main())
        workers.send_signal(signal.SIGTERM)
        assert workers.wait(timeout=60) == 0, workers.stderr.read().decode()[-2000:]
        assert not helpers_alive(pids)
    finally:
        for p in (workers, sched):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()

