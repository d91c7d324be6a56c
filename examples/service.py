"""An HTTP service running VE kernels on a pool of procs that heals (aiohttp).

    pip install "aioveo[server]"                       # aiohttp and uvloop
    python examples/service.py --port 8080             # --port 0 picks a free port
    python examples/loadgen.py --url http://127.0.0.1:8080 --requests 2000 --connections 32

Endpoints:

    POST /primes   {"lo": 0, "hi": 100000}             -> {"count": 9592}
    POST /stats    a float64 array: the raw little-endian bytes
                   (Content-Type: application/octet-stream), or {"data": [1.5, ...]}
                                                       -> {"n": .., "min": .., "max": .., "mean": .., "std": ..}
    GET  /health   200 {"status": "ok", ...}; 503 with no live VE or while draining
    GET  /metrics  Prometheus text format: requests, errors, latency histogram,
                   and per VE: up, calls in flight, replacements

The network is hostile: bodies are bounded (413), arrays and ranges too;
malformed input is answered 400 with the problem named, before any kernel
runs; nothing a request says chooses a library, a symbol or a path.  A VE
that dies is replaced by the pool while the others keep serving; a request
that was running on it is answered 503 (retry), so are requests refused by
admission (--max-pending, --fail-fast); 504 when --timeout passes.
SIGTERM or SIGINT drains: no new connections, requests in flight answered,
then the procs are closed (no helper process is left) and the service exits.

--fault-injection adds POST /debug/crash, which runs a kernel that faults
(for tests and demonstrations only).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any, Awaitable, Callable

import numpy as np
from aiohttp import web

import aioveo
from aioveo import OnStack, VEO_INTENT_OUT
from _kernels import kernel_library

MAX_BODY = 2 << 20                 # bytes of a request body (413 beyond)
MAX_STATS = 64 * 1024              # float64 values per /stats request (they travel on the VE stack)
MAX_HI = 10 ** 9                   # /primes: numbers below this ...
MAX_SPAN = 10 ** 6                 # ... at most this many per request
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

log = logging.getLogger("service")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(ValueError):
    """Malformed input: answered 400 with this message."""


def error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class Metrics:
    """Counters for /metrics (the pool keeps the per-VE ones)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.in_progress = 0
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.duration_sum = 0.0
        self.duration_count = 0

    def observe(self, endpoint: str, status: int, seconds: float | None) -> None:
        key = (endpoint, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if seconds is None:
            return
        for i, b in enumerate(BUCKETS):
            if seconds <= b:
                self.buckets[i] += 1
                break
        else:
            self.buckets[-1] += 1
        self.duration_sum += seconds
        self.duration_count += 1

    def render(self, pool: aioveo.Pool) -> str:
        s = pool.stats()
        out = ["# HELP aioveo_requests_total Requests answered, by endpoint and status code.",
               "# TYPE aioveo_requests_total counter"]
        for (ep, code), n in sorted(self.requests.items()):
            out.append(f'aioveo_requests_total{{endpoint="{ep}",code="{code}"}} {n}')
        out += ["# HELP aioveo_request_errors_total Requests answered with a 4xx or 5xx status.",
                "# TYPE aioveo_request_errors_total counter",
                f"aioveo_request_errors_total "
                f"{sum(n for (_, c), n in self.requests.items() if c >= 400)}",
                "# HELP aioveo_requests_in_progress Requests being handled.",
                "# TYPE aioveo_requests_in_progress gauge",
                f"aioveo_requests_in_progress {self.in_progress}",
                "# HELP aioveo_request_duration_seconds Time to answer a kernel request.",
                "# TYPE aioveo_request_duration_seconds histogram"]
        cum = 0
        for b, n in zip(BUCKETS, self.buckets):
            cum += n
            out.append(f'aioveo_request_duration_seconds_bucket{{le="{b}"}} {cum}')
        out += [f'aioveo_request_duration_seconds_bucket{{le="+Inf"}} {self.duration_count}',
                f"aioveo_request_duration_seconds_sum {self.duration_sum:.6f}",
                f"aioveo_request_duration_seconds_count {self.duration_count}"]
        per_ve = [("aioveo_ve_up", "gauge", "1 if the VE's proc is alive.",
                   lambda p: int(p["state"] == "alive")),
                  ("aioveo_ve_in_flight", "gauge", "Calls in flight on the VE.",
                   lambda p: p["in_flight"]),
                  ("aioveo_ve_replacements_total", "counter",
                   "Procs opened to replace a dead one on the VE.",
                   lambda p: p["replacements"])]
        for name, kind, help_, value in per_ve:
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
            for i, p in enumerate(s["procs"]):
                out.append(f'{name}{{slot="{i}",node="{p["node"]}"}} {value(p)}')
        pool_metrics = [
            ("aioveo_pool_live_procs", "gauge", "Live procs in the pool.", s["live_procs"]),
            ("aioveo_pool_pending", "gauge", "Calls admitted, not finished.", s["pending"]),
            ("aioveo_pool_deaths_total", "counter", "Procs that died.", s["deaths"]),
            ("aioveo_pool_replacements_total", "counter", "Procs replaced.",
             s["replacements"]),
            ("aioveo_pool_last_replacement_seconds", "gauge",
             "From the last death to its replacement serving.",
             s["last_replacement_s"] or 0),
        ]
        for name, kind, help_, v in pool_metrics:
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {v}"]
        out += ["# HELP aioveo_pool_calls_total Pool calls by outcome.",
                "# TYPE aioveo_pool_calls_total counter"]
        for outcome in ("completed", "failed", "retried", "rejected", "timed_out"):
            out.append(f'aioveo_pool_calls_total{{outcome="{outcome}"}} {s[outcome]}')
        return "\n".join(out) + "\n"


class Service:
    def __init__(self, pool: aioveo.Pool, args: argparse.Namespace) -> None:
        self.pool = pool
        self.timeout = args.timeout
        self.fault_injection = args.fault_injection
        self.metrics = Metrics()
        self.draining = False
        self.served = 0

    async def load(self) -> None:
        self.count_primes = await self.pool.function(
            kernel_library("primes"), "long count_primes(long lo, long hi)")
        self.stats_fn = await self.pool.function(
            kernel_library("stats"), "void stats(const double *x, long n, double *out)")
        if self.fault_injection:
            self.fault = await self.pool.function(kernel_library("faults"), "long fault(void)")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self.middleware])
        app.router.add_post("/primes", self.primes)
        app.router.add_post("/stats", self.stats)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.render_metrics)
        if self.fault_injection:
            app.router.add_post("/debug/crash", self.crash)
        return app

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every answer is JSON, every failure has its status; counted."""
        t0 = time.perf_counter()
        self.metrics.in_progress += 1
        try:
            try:
                resp = await handler(request)
            except web.HTTPException as e:   # 404, 405, 413 ... from aiohttp itself
                resp = error(e.status, e.reason)
            except BadRequest as e:
                resp = error(400, str(e))
            except aioveo.OverloadedError as e:
                resp = error(503, f"overloaded: {e}", **{"Retry-After": "1"})
            except aioveo.NoProcError as e:
                resp = error(503, f"no VE available: {e}", **{"Retry-After": "5"})
            except aioveo.ProcDeadError:
                resp = error(503, "the VE process running this request died; retry",
                             **{"Retry-After": "1"})
            except asyncio.TimeoutError:
                resp = error(504, f"the kernel did not finish within {self.timeout} s")
            except aioveo.VeoException as e:
                resp = error(500, f"kernel fault: {e}")
            except aioveo.VeoError as e:
                log.exception("VE error on %s", request.path)
                resp = error(500, f"VE error: {type(e).__name__}")
        finally:
            self.metrics.in_progress -= 1
        known = request.match_info.route.resource is not None
        endpoint = request.path if known else "other"
        kernel = endpoint in ("/primes", "/stats")
        self.metrics.observe(endpoint, resp.status, time.perf_counter() - t0 if kernel else None)
        self.served += 1
        return resp

    # -- input, checked before any kernel runs
    async def body_json(self, request: web.Request) -> Any:
        raw = await request.read()          # over MAX_BODY: aiohttp answers 413
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"the body is not JSON: {e}") from None
        except RecursionError:
            raise BadRequest("the body's JSON is nested too deeply") from None

    @staticmethod
    def integer(doc: Any, key: str) -> int:
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON object")
        if key not in doc:
            raise BadRequest(f"missing field {key!r}")
        v = doc[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise BadRequest(f"{key!r} must be an integer, not {type(v).__name__}")
        return v

    async def array(self, request: web.Request) -> np.ndarray:
        if request.content_type == "application/octet-stream":
            raw = await request.read()
            if len(raw) % 8:
                raise BadRequest(f"truncated array: {len(raw)} bytes is not a whole number of "
                                 f"float64 values (8 bytes each)")
            x = np.frombuffer(raw, dtype="<f8")
        else:
            doc = await self.body_json(request)
            if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
                raise BadRequest('send {"data": [numbers]} or application/octet-stream float64')
            data = doc["data"]
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in data):
                raise BadRequest("'data' must hold numbers only")
            if len(data) > MAX_STATS:
                raise BadRequest(f"at most {MAX_STATS} values, not {len(data)}")
            try:
                x = np.array(data, dtype=np.float64)
            except OverflowError:
                raise BadRequest("'data' holds a number too large for float64") from None
        if not 0 < x.size <= MAX_STATS:
            raise BadRequest(f"the array must hold 1 to {MAX_STATS} values, not {x.size}")
        if not np.isfinite(x).all():
            raise BadRequest("the array holds NaN or infinity")
        return np.ascontiguousarray(x, dtype=np.float64)

    # -- endpoints
    async def primes(self, request: web.Request) -> web.Response:
        doc = await self.body_json(request)
        lo, hi = self.integer(doc, "lo"), self.integer(doc, "hi")
        if not 0 <= lo <= hi <= MAX_HI or hi - lo > MAX_SPAN:
            raise BadRequest(f"need 0 <= lo <= hi <= {MAX_HI} and hi - lo <= {MAX_SPAN}")
        count = await self.pool.call(self.count_primes, lo, hi, timeout=self.timeout)
        return web.json_response({"count": count})

    async def stats(self, request: web.Request) -> web.Response:
        x = await self.array(request)
        out = np.empty(4)
        # Host buffers go by value on the VE stack: in with x, back into out.
        await self.pool.call(self.stats_fn, OnStack(x), x.size,
                             OnStack(out, inout=VEO_INTENT_OUT), timeout=self.timeout)
        return web.json_response({"n": int(x.size),
                                  **dict(zip(("min", "max", "mean", "std"), out.tolist()))})

    async def health(self, request: web.Request) -> web.Response:
        s = self.pool.stats()
        live, total = s["live_procs"], len(s["procs"])
        status = ("draining" if self.draining else "down" if live == 0
                  else "ok" if live == total else "degraded")
        return web.json_response({"status": status, "live_procs": live, "procs": total,
                                  "pending": s["pending"], "replacements": s["replacements"]},
                                 status=200 if status in ("ok", "degraded") else 503)

    async def render_metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(self.pool),
                            content_type="text/plain", charset="utf-8",
                            headers={"X-Prometheus-Format": "0.0.4"})

    async def crash(self, request: web.Request) -> web.Response:
        # On a proc's main context: AVEO reports a fault with its signal
        # there only (elsewhere every kernel running at that moment just sees
        # its VE process die, KernelDiedError, and none can be blamed).
        ctx = next((c for c in self.pool.contexts if c.sync.is_main and c.alive), None)
        if ctx is None:
            await self.pool.call(self.fault)
        else:
            await ctx.call(self.fault.for_proc(ctx.proc))
        return web.json_response({"crashed": False})


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    pool = await aioveo.open_pool(
        args.nodes, contexts_per_proc=args.contexts,
        procs=args.procs if args.nodes is None else None,
        max_pending=args.max_pending, fail_fast=args.fail_fast)
    try:
        service = Service(pool, args)
        await service.load()
        runner = web.AppRunner(service.app(), access_log=None, shutdown_timeout=args.drain)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(f"listening on http://{host}:{port} ({pool.live_procs} procs x {args.contexts} "
              f"contexts, {type(loop).__module__.split('.')[0]} loop)", flush=True)

        await stop.wait()
        service.draining = True
        print("draining: no new connections, answering the requests in flight", flush=True)
        await runner.cleanup()              # stops listening, waits for handlers
    finally:
        await pool.close()
    print(f"stopped after {service.served} requests", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one (default 8080)")
    p.add_argument("--procs", type=int, default=4,
                   help="VE procs: any this many of the machine's (default 4)")
    p.add_argument("--nodes", type=int, nargs="+", help="exactly these VE nodes instead")
    p.add_argument("--contexts", type=int, default=2, help="contexts per proc (default 2)")
    p.add_argument("--max-pending", type=int, default=1024,
                   help="calls admitted at once (default 1024)")
    p.add_argument("--fail-fast", action="store_true",
                   help="answer 503 at once when full instead of queueing")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds a request may take (default 10)")
    p.add_argument("--drain", type=float, default=30.0,
                   help="seconds to finish requests in flight at SIGTERM (default 30)")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="event loop (default: uvloop when installed)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    p.add_argument("--fault-injection", action="store_true",
                   help="add POST /debug/crash, a kernel that faults (tests only)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    use_uvloop = args.loop == "uvloop"
    if args.loop == "auto":
        try:
            import uvloop  # noqa: F401
            use_uvloop = True
        except ImportError:
            pass
    if not use_uvloop:
        asyncio.run(main(args))
        return
    import uvloop
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(args))


if __name__ == "__main__":
    run(parse())
