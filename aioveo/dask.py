"""aioveo on Dask distributed: one worker per VE, tasks awaiting VE calls on
the worker's own event loop (``pip install "aioveo[dask]"``).

    from distributed import Client
    from aioveo.dask import LocalVECluster, current_pool, function

    async def count(n):                       # runs on a VE worker's event loop
        f = await function("./libkernels.so", "long count_primes(long)")
        return await current_pool().call(f, n)

    async def main():                          # under `if __name__ == "__main__":`
        async with LocalVECluster(nodes=[0, 1], asynchronous=True) as cluster, \\
                Client(cluster, asynchronous=True) as client:
            futures = client.map(count, range(8), resources={"VE_SLOTS": 1}, pure=False)
            print(await client.gather(futures))

The pieces, modelled on dask-cuda: ``VEPlugin`` (a WorkerPlugin) opens a pool
of the worker's VE procs on the worker's loop and closes it at teardown;
``current_pool()`` / ``function()`` reach it from a task; ``LocalVECluster``
starts one worker process (under a Nanny) per VE node, each with its VE chosen
by environment as VEOS users expect; ``dask ve worker SCHEDULER`` (and
``python -m aioveo dask-worker``) starts the same against an existing
scheduler, on each host of a real cluster.

A worker's ``nthreads`` counts in-flight *tasks*, async ones included
(distributed counts them against it), not CPU cores; each worker advertises
the resources ``{"VE": 1, "VE_SLOTS": nthreads}``, so tasks that ask for
``{"VE_SLOTS": 1}`` share a VE, and ``{"VE": 1}`` gets one VE alone.
"""
from __future__ import annotations

import asyncio
import os
import signal
from typing import Any, Iterable, Sequence

from distributed import LocalCluster, Nanny, WorkerPlugin, get_worker

from . import _core
from .aio import DEFAULT_MAX_IN_FLIGHT
from .pool import Pool, PoolFunction, open_pool

__all__ = ["VEPlugin", "LocalVECluster", "current_pool", "function", "ve_environment",
           "host_nodes", "run_workers", "cli"]

PLUGIN_NAME = "aioveo"


class VEPlugin(WorkerPlugin):
    """Opens a pool of the worker's VE procs (`nodes`; default: the node its
    environment names, ``VE_NODE_NUMBER`` within ``_VENODELIST``) with
    `contexts_per_proc` contexts each, loads `libraries`, and closes it all at
    teardown.  The pool's numbers are published as the worker metric ``ve``."""

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self, nodes: Sequence[int] | None = None, contexts_per_proc: int = 2,
                 libraries: Iterable[str] = (), max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self.nodes = list(nodes) if nodes is not None else [-1]
        self.contexts_per_proc = contexts_per_proc
        self.libraries = [os.fspath(p) for p in libraries]
        self.max_in_flight = max_in_flight
        self.pool: Pool | None = None
        self._functions: dict[tuple[str, str], PoolFunction] = {}
        self._lock: asyncio.Lock | None = None

    def __getstate__(self) -> dict[str, Any]:   # sent to workers before setup
        return {k: v for k, v in self.__dict__.items() if k in
                ("nodes", "contexts_per_proc", "libraries", "max_in_flight")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)   # type: ignore[misc]

    async def setup(self, worker: Any) -> None:
        self.pool = await open_pool(self.nodes, self.contexts_per_proc,
                                    max_in_flight=self.max_in_flight)
        self._lock = asyncio.Lock()
        for lib in self.libraries:
            await asyncio.gather(*(p.load_library(lib) for p in self.pool.procs))
        worker.metrics["ve"] = self.metrics

    def metrics(self, worker: Any = None) -> dict[str, Any]:
        """What the scheduler and its dashboard see of this worker's VEs."""
        pool = self.pool
        if pool is None:
            return {}
        stats = pool.stats()
        return {"procs": len(pool.procs), "live_procs": stats["live_procs"],
                "contexts": len(pool.contexts), "in_flight": stats["in_flight"],
                "completed": stats["completed"], "failed": stats["failed"],
                "deaths": stats["deaths"], "replacements": stats["replacements"],
                "failed_nodes": len(stats["failed_nodes"]),
                "nodes": [p.nodeid for p in pool.procs]}

    async def function(self, library: str | os.PathLike[str], prototype: str) -> PoolFunction:
        """`prototype` of `library`, resolved once per worker and cached."""
        if self.pool is None or self._lock is None:
            raise RuntimeError("the aioveo worker plugin is not set up")
        key = (os.fspath(library), prototype)
        fn = self._functions.get(key)
        if fn is None:
            async with self._lock:
                fn = self._functions.get(key)
                if fn is None:
                    fn = self._functions[key] = await self.pool.function(library, prototype)
        return fn

    async def teardown(self, worker: Any) -> None:
        worker.metrics.pop("ve", None)
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.close(cancel=True)


def _plugin(worker: Any = None) -> VEPlugin:
    if worker is None:
        try:
            worker = get_worker()
        except ValueError:
            raise RuntimeError("aioveo.dask: not inside a Dask task on a worker") from None
    plugin = worker.plugins.get(PLUGIN_NAME)
    if not isinstance(plugin, VEPlugin) or plugin.pool is None:
        raise RuntimeError("aioveo.dask: this worker has no VE (start it with LocalVECluster, "
                           "`dask ve worker`, or client.register_plugin(VEPlugin()))")
    return plugin


def current_pool(worker: Any = None) -> Pool:
    """The pool of the worker running this task (sync or async task), or of
    `worker` (for functions run with ``client.run``, which get ``dask_worker``)."""
    pool = _plugin(worker).pool
    assert pool is not None
    return pool


async def function(library: str | os.PathLike[str], prototype: str) -> PoolFunction:
    """Inside a task: the worker's PoolFunction for `prototype` in `library`,
    declared once per worker (later tasks get the cached one)."""
    return await _plugin().function(library, prototype)


# ---- one worker per VE ------------------------------------------------------------
def host_nodes() -> list[int]:
    """This host's VE nodes: the scheduler's ``_VENODELIST``, else every node of
    the emulator (or, on a VH, every VE device)."""
    listed = os.environ.get("_VENODELIST", "").split()
    if listed:
        return [int(n) for n in listed]
    info = _core.emulator_info()
    if info is not None:
        return list(range(info["nodes"]))
    return sorted(int(p.name[2:]) for p in _dev_ves())


def _dev_ves() -> list[Any]:
    from pathlib import Path

    return [p for p in Path("/dev").glob("ve[0-9]*") if p.name[2:].isdigit()]


def ve_environment(node: int, nodes: Sequence[int]) -> dict[str, str]:
    """The environment giving a worker the VE `node` of `nodes`, as VEOS users
    expect: ``_VENODELIST`` rotated so `node` comes first (node -1 then means
    it), ``VE_NODE_NUMBER``, and ``VE_NLCPY_NODELIST`` so NLCPy in the same
    worker picks the same VE."""
    nodes = [int(n) for n in nodes]
    if node not in nodes:
        raise ValueError(f"VE node {node} is not in {nodes}")
    i = nodes.index(node)
    rotated = nodes[i:] + nodes[:i]
    return {"_VENODELIST": " ".join(map(str, rotated)), "VE_NODE_NUMBER": str(node),
            "VE_NLCPY_NODELIST": "0"}


def _worker_options(node: int, nodes: Sequence[int], nthreads: int, contexts_per_proc: int,
                    libraries: Iterable[str]) -> dict[str, Any]:
    return {"env": ve_environment(node, nodes),
            "resources": {"VE": 1, "VE_SLOTS": nthreads},
            "plugins": {VEPlugin(None, contexts_per_proc, libraries)}}


class LocalVECluster(LocalCluster):
    """A LocalCluster with one worker process (under a Nanny) per VE node of
    this host (`nodes`, default `host_nodes()`), each given its VE by
    environment and a VEPlugin; `threads_per_worker` is the number of tasks a
    worker runs at once (async VE tasks mostly wait)."""

    def __init__(self, nodes: Sequence[int] | None = None, contexts_per_proc: int = 2,
                 threads_per_worker: int = 8, libraries: Iterable[str] = (),
                 **kwargs: Any) -> None:
        if kwargs.pop("processes", True) is False:
            raise ValueError("LocalVECluster needs processes: each VE gets a worker process")
        self.ve_nodes = list(nodes) if nodes is not None else host_nodes()
        if not self.ve_nodes:
            raise ValueError("LocalVECluster: no VE nodes")
        self._ve_contexts = contexts_per_proc
        self._ve_libraries = [os.fspath(p) for p in libraries]
        kwargs.setdefault("dashboard_address", ":0")
        super().__init__(n_workers=0, threads_per_worker=threads_per_worker, processes=True,
                         **kwargs)
        self.scale(len(self.ve_nodes))    # through new_worker_spec: a VE per worker
        self.sync(self._correct_state)

    def new_worker_spec(self) -> dict[Any, Any]:
        free = [n for n in self.ve_nodes if f"ve{n}" not in self.worker_spec]
        if not free:
            raise ValueError(f"LocalVECluster: every VE node of {self.ve_nodes} has a worker")
        node = free[0]
        spec = dict(self.new_spec)
        options = dict(spec["options"])
        options.update(_worker_options(node, self.ve_nodes, options.get("nthreads", 1),
                                       self._ve_contexts, self._ve_libraries))
        spec["options"] = options
        return {f"ve{node}": spec}

    def _update_worker_status(self, op: str, msg: Any) -> None:
        # distributed's own race (dask/distributed#5407): wait_for_workers
        # replaces scheduler_info with a fresh copy from the scheduler, so the
        # "remove" of a worker that died can arrive after the worker is already
        # gone from it; SpecCluster's lookup then raises KeyError, which ends
        # the status watcher and comes back out of the cluster's close. Such a
        # worker is already forgotten here; its Nanny restarts it.
        if op == "remove" and msg not in self.scheduler_info["workers"]:
            return
        super()._update_worker_status(op, msg)


async def run_workers(scheduler: str, nodes: Sequence[int] | None = None,
                      nthreads: int = 8, contexts_per_proc: int = 2,
                      libraries: Iterable[str] = ()) -> None:
    """One Nanny per VE of this host against `scheduler`, until they end or
    SIGINT/SIGTERM closes them (``dask ve worker``)."""
    nodes = list(nodes) if nodes is not None else host_nodes()
    libraries = list(libraries)
    nannies = [Nanny(scheduler, nthreads=nthreads, name=f"ve{node}",
                     **_worker_options(node, nodes, nthreads, contexts_per_proc, libraries))
               for node in nodes]
    await asyncio.gather(*nannies)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    finished: asyncio.Future[Any] = asyncio.gather(*(n.finished() for n in nannies))
    stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    await asyncio.wait([finished, stopper], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    await asyncio.gather(*(n.close() for n in nannies), return_exceptions=True)


def _parse_nodes(text: str | None) -> list[int] | None:
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m aioveo dask-worker SCHEDULER [--nodes 0,1] ...``"""
    import argparse

    ap = argparse.ArgumentParser(prog="dask ve worker",
                                 description="Start one Dask worker per VE of this host.")
    ap.add_argument("scheduler", help="scheduler address, e.g. tcp://host:8786")
    ap.add_argument("--nodes", help="VE nodes, e.g. 0,1 or 0-3 (default: _VENODELIST, "
                                    "else every VE of this host)")
    ap.add_argument("--nthreads", type=int, default=8, help="tasks each worker runs at once")
    ap.add_argument("--contexts-per-proc", type=int, default=2)
    ap.add_argument("--library", action="append", default=[],
                    help="a kernel library every worker loads (repeatable)")
    a = ap.parse_args(argv)
    asyncio.run(run_workers(a.scheduler, _parse_nodes(a.nodes), a.nthreads,
                            a.contexts_per_proc, a.library))
    return 0


def _click_cli() -> Any:
    import click

    @click.group(name="ve", help="aioveo: Dask workers on NEC Vector Engines")
    def ve() -> None:
        pass

    @ve.command(name="worker", help="Start one Dask worker per VE of this host.",
                context_settings={"ignore_unknown_options": True, "help_option_names": []})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def worker(args: tuple[str, ...]) -> None:
        raise SystemExit(main(list(args)))

    return ve


cli = _click_cli()
