"""A VE compute server on plain asyncio streams, one kernel call per request.

    python examples/server.py --port 8765      # --port 0 picks a free port
    python examples/client.py --port 8765

Protocol: one JSON object per line, one answer per line, in order:

    {"op": "primes", "lo": 0, "hi": 100000}   -> {"ok": true, "count": 9592}
    {"op": "stats", "data": [1.5, 2.5, ...]}  -> {"ok": true, "min": .., "max": .., "mean": .., "std": ..}
    anything else                             -> {"ok": false, "error": "..."}

Every request is one `await pool.call(...)`: the pool spreads the calls of
all connections over the contexts of its procs (least loaded first), and the
event loop keeps serving other connections while the VEs compute.
SIGINT or SIGTERM stops the server cleanly (connections closed, procs destroyed).
"""
import argparse
import asyncio
import json
import os
import signal

import numpy as np

# AVEO opens a second context of a proc only with VE_OMP_NUM_THREADS=1 in the
# environment (each kernel then runs one OpenMP thread): this program uses
# several contexts per proc.  (A value you set yourself is kept.)
os.environ.setdefault("VE_OMP_NUM_THREADS", "1")

import aioveo
from aioveo import OnStack, VEO_INTENT_OUT
from _kernels import kernel_library

MAX_STATS = 64 * 1024          # doubles per "stats" request (they travel on the VE stack)
MAX_PRIMES_SPAN = 10_000_000   # numbers per "primes" request


class Service:
    def __init__(self, pool):
        self.pool = pool
        self.served = 0

    async def load(self):
        self.count_primes = await self.pool.function(
            kernel_library("primes"), "long count_primes(long lo, long hi)")
        self.stats = await self.pool.function(
            kernel_library("stats"), "void stats(const double *x, long n, double *out)")

    async def handle(self, req: dict) -> dict:
        op = req.get("op")
        if op == "primes":
            lo, hi = int(req["lo"]), int(req["hi"])
            if not 0 <= lo <= hi or hi - lo > MAX_PRIMES_SPAN:
                raise ValueError(f"need 0 <= lo <= hi and hi - lo <= {MAX_PRIMES_SPAN}")
            return {"count": await self.pool.call(self.count_primes, lo, hi)}
        if op == "stats":
            x = np.asarray(req["data"], dtype=np.float64)
            if x.ndim != 1 or not 0 < x.size <= MAX_STATS:
                raise ValueError(f"data must be a list of 1 to {MAX_STATS} numbers")
            out = np.empty(4)
            # Host buffers go by value on the VE stack: in with x, back into out.
            await self.pool.call(self.stats, OnStack(x), x.size,
                                 OnStack(out, inout=VEO_INTENT_OUT))
            return dict(zip(("min", "max", "mean", "std"), out.tolist()))
        raise ValueError(f"unknown op {op!r} (use 'primes' or 'stats')")

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while line := await reader.readline():
                try:
                    answer = {"ok": True, **await self.handle(json.loads(line))}
                except (ValueError, KeyError, TypeError, aioveo.VeoError) as e:
                    answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                self.served += 1
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass                                   # the client went away
        finally:
            writer.close()


async def main(args) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with aioveo.open_pool(range(args.procs), contexts_per_proc=args.contexts) as pool:
        service = Service(pool)
        await service.load()
        handlers: set[asyncio.Task] = set()

        async def on_connect(reader, writer):
            task = asyncio.current_task()
            assert task is not None  # a connection callback runs in a task
            handlers.add(task)
            try:
                await service.connection(reader, writer)
            except asyncio.CancelledError:
                pass   # shutting down; (Python 3.11 logs a cancelled handler as an error)
            finally:
                handlers.discard(task)

        server = await asyncio.start_server(on_connect, args.host, args.port,
                                            limit=2 ** 21)   # long "stats" lines
        host, port = server.sockets[0].getsockname()[:2]
        print(f"listening on {host}:{port} ({args.procs} procs x {args.contexts} contexts)",
              flush=True)

        await stop.wait()
        server.close()                       # stop accepting
        for task in list(handlers):          # end open connections
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
    print(f"stopped after {service.served} requests", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default 8765)")
    p.add_argument("--procs", type=int, default=4, help="VE procs in the pool (default 4)")
    p.add_argument("--contexts", type=int, default=2, help="contexts per proc (default 2)")
    asyncio.run(main(p.parse_args()))
