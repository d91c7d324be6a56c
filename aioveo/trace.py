"""Record every request made through the asyncio layer, then look at it.

    import aioveo.trace

    with aioveo.trace.record() as rec:          # or rec = aioveo.trace.start() ... stop()
        await ctx.call(fn, x, n)
        await ctx.read_mem(out, ptr)
    rec.to_chrome_trace("out.json")             # open in ui.perfetto.dev or chrome://tracing
    print(rec.summary())                        # per function: count, total/mean/p50/p99, bytes
    rec.plot("timeline.png")                    # needs matplotlib

What is recorded, per request (a call, a ``map`` batch, an async transfer, or
a small transfer the context copied inline): its proc and context, the
function name (``"read_mem"``/``"write_mem"`` for transfers), the bytes moved
by transfers, the outcome (``"ok"``, ``"error"`` or ``"cancelled"``) and three
times:

- ``submit``: when the request was handed to the VE (after waiting for an
  in-flight slot, if the context was at its bound);
- ``end``: when the host saw it complete (the completion engine reports in
  batches, so this can trail the VE by a few microseconds);
- ``start``: not observable on the host, so *derived*: a context runs its
  queue in FIFO order, so a request starts when it is submitted or when the
  request before it on the same context completes, whichever is later
  (``start = max(submit, previous end)``).  For a context that always has
  work queued, ``end - start`` is the request's run time on the VE; ``end -
  submit`` includes the queueing.

Memory pools report too: every allocation, free and reclaim samples the
proc's pool (bytes in use, cached free, pending free), shown as a "VE memory"
counter track of the proc in the Chrome trace.

Only one recorder is active at a time (process wide, every event loop).  It
observes the asyncio layer through its observer hooks (``aio.add_observer``)
and decides nothing there; when none is active, the layer pays one test of an
empty list per request.
Everything runs on the event loop thread; no locks are taken.
"""
from __future__ import annotations

import json
import math
import os
import time
import weakref
from typing import Any

from . import aio

__all__ = ["Recorder", "Request", "record", "start", "stop", "active"]

OK, ERROR, CANCELLED = "ok", "error", "cancelled"
_STATUS = {0: OK, 1: ERROR, 2: ERROR}      # VEO_COMMAND_OK / _EXCEPTION / _ERROR
_clock = time.perf_counter_ns
_active: "Recorder | None" = None


class Request:
    """One recorded request.  Times are nanoseconds since the recorder started;
    ``end`` is None while the request is in flight."""

    __slots__ = ("seq", "pid", "tid", "name", "calls", "nbytes", "submit", "end", "start",
                 "outcome", "status", "inline")

    def __init__(self, seq: int, pid: int, tid: int, name: str, calls: int, nbytes: int,
                 submit: int, inline: bool = False) -> None:
        self.seq = seq                  # order of submission (process wide)
        self.pid = pid                  # the proc's number in this trace (1, 2, ...)
        self.tid = tid                  # the context's number in this trace (1, 2, ...)
        self.name = name
        self.calls = calls              # > 1 for a batch of calls (AsyncContext.map)
        self.nbytes = nbytes            # bytes moved by a transfer, 0 for calls
        self.submit = submit
        self.end: int | None = None
        self.start: int = submit        # derived by Recorder.finished() (module docstring)
        self.outcome: str | None = None  # "ok", "error", "cancelled"
        self.status: int | None = None  # raw VEO_COMMAND_* status, None for inline copies
        self.inline = inline            # a small transfer copied on the loop thread

    @property
    def duration(self) -> int:
        """``end - start`` in nanoseconds (0 while in flight)."""
        return 0 if self.end is None else self.end - self.start

    @property
    def latency(self) -> int:
        """``end - submit`` in nanoseconds (0 while in flight)."""
        return 0 if self.end is None else self.end - self.submit

    def __repr__(self) -> str:
        return (f"Request({self.name!r}, proc={self.pid}, context={self.tid}, "
                f"submit={self.submit}, start={self.start}, end={self.end}, "
                f"outcome={self.outcome!r}, nbytes={self.nbytes})")


class Recorder:
    """Requests recorded between ``start()`` and ``stop()`` (see the module docstring)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        #: pid -> name, (pid, tid) -> name, for the trace's metadata
        self.proc_names: dict[int, str] = {}
        self.context_names: dict[tuple[int, int], str] = {}
        self.t0 = _clock()
        self.wall_t0 = time.time()
        self.stopped: int | None = None
        self._ctx_ids: dict[int, tuple[Any, int, int]] = {}   # id(ctx) -> (weakref, pid, tid)
        self._proc_ids: dict[int, tuple[Any, int]] = {}       # id(proc) -> (weakref, pid)
        self._open: dict[int, Request] = {}                   # id(key) -> in flight
        #: memory pool samples: (time, pid, used, cached, pending), bytes
        self.memory: list[tuple[int, int, int, int, int]] = []

    # ---- hooks called by aioveo.aio (loop thread) ------------------------------
    def _ids(self, ctx: aio.AsyncContext) -> tuple[int, int]:
        entry = self._ctx_ids.get(id(ctx))
        if entry is not None and entry[0]() is ctx:
            return entry[1], entry[2]
        pid = self._pid(ctx.proc)
        tid = 1 + sum(1 for p, _ in self.context_names if p == pid)
        handle = ctx.sync.handle
        self.context_names[(pid, tid)] = f"context {tid} (0x{handle:x})"
        self._ctx_ids[id(ctx)] = (weakref.ref(ctx), pid, tid)
        return pid, tid

    def _pid(self, proc: aio.AsyncProc) -> int:
        entry = self._proc_ids.get(id(proc))
        if entry is not None and entry[0]() is proc:
            return entry[1]
        pid = len(self.proc_names) + 1
        try:
            ident = f"proc {proc.sync.proc_identifier()}"
        except Exception:  # noqa: BLE001 - a libveo without veo_proc_identifier, a dead proc
            ident = "proc"
        self.proc_names[pid] = f"{ident} on node {proc.nodeid}"
        self._proc_ids[id(proc)] = (weakref.ref(proc), pid)
        return pid

    def _new(self, ctx: aio.AsyncContext, label: Any, nbytes: Any, calls: int,
             inline: bool = False) -> Request:
        t = _clock() - self.t0
        pid, tid = self._ids(ctx)
        if isinstance(label, str):
            name = label
        else:
            name = getattr(label, "name", None) or repr(label)
        if nbytes is None:
            nbytes = 0
        elif not isinstance(nbytes, int):   # a host buffer whose size was not given
            nbytes = memoryview(nbytes).nbytes
        req = Request(len(self.requests), pid, tid, name, calls, nbytes, t, inline)
        self.requests.append(req)
        return req

    # ---- the observer hooks (aioveo.aio calls them on the loop thread) -------------
    def submitted(self, ctx: aio.AsyncContext, key: Any, label: Any, nbytes: Any, calls: int,
                  inline: bool) -> None:
        """A request was handed to the VE (or, `inline`, is being copied on the
        loop thread); `key` names it until ``completed``."""
        if self.stopped is None:
            self._open[id(key)] = self._new(ctx, label, nbytes, calls, inline)

    def memory_sample(self, proc: aio.AsyncProc, used: int, cached: int, pending: int) -> None:
        """A proc's memory pool changed (called by aioveo.memory)."""
        if self.stopped is None:
            self.memory.append((_clock() - self.t0, self._pid(proc), used, cached, pending))

    def completed(self, key: Any, status: int | None, cancelled: bool) -> None:
        """The request `key` ended with `status` (None: an inline copy that worked)."""
        req = self._open.pop(id(key), None)
        if req is not None:
            req.end = _clock() - self.t0
            req.status = status
            if cancelled:
                req.outcome = CANCELLED
            else:
                req.outcome = _STATUS.get(status, ERROR) if status is not None else OK
        if self.stopped is not None and not self._open:
            aio.remove_observer(self)

    # ---- control ------------------------------------------------------------------
    def stop(self) -> "Recorder":
        """Stop recording (requests still in flight complete into the trace)."""
        global _active
        if _active is self:
            _active = None
        if self.stopped is None:
            self.stopped = _clock() - self.t0
        if not self._open:
            aio.remove_observer(self)
        return self

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- results ------------------------------------------------------------------
    def finished(self) -> list[Request]:
        """The completed requests, with their start times derived (FIFO rule)."""
        self._derive_starts()
        return [r for r in self.requests if r.end is not None]

    def _derive_starts(self) -> None:
        last_end: dict[tuple[int, int], int] = {}
        for r in self.requests:
            key = (r.pid, r.tid)
            prev = last_end.get(key)
            start = r.submit if prev is None else max(r.submit, prev)
            if r.end is not None:
                start = min(start, r.end)
                last_end[key] = max(r.end, prev or 0)
            r.start = start

    def to_chrome_trace(self, path: str | os.PathLike | None = None) -> dict[str, Any]:
        """The trace in Chrome's Trace Event Format (JSON object form): one
        complete ("X") event per finished request, pid = proc, tid = context,
        ts/dur in microseconds from ``start`` to ``end``, and metadata ("M")
        events naming procs and contexts.  Written to `path` when given.
        Open it in https://ui.perfetto.dev or chrome://tracing."""
        events: list[dict[str, Any]] = []
        for pid, name in sorted(self.proc_names.items()):
            events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                           "args": {"name": name}})
            events.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0,
                           "args": {"sort_index": pid}})
        for (pid, tid), name in sorted(self.context_names.items()):
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                           "args": {"name": name}})
            events.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid,
                           "args": {"sort_index": tid}})
        for r in self.finished():
            assert r.end is not None
            args: dict[str, Any] = {"seq": r.seq, "outcome": r.outcome,
                                    "submit_us": r.submit / 1e3,
                                    "queued_us": (r.start - r.submit) / 1e3}
            if r.nbytes:
                args["bytes"] = r.nbytes
            if r.calls != 1:
                args["calls"] = r.calls
            if r.inline:
                args["inline"] = True
            cat = "transfer" if r.name in ("read_mem", "write_mem") else "call"
            events.append({"name": r.name, "cat": cat, "ph": "X", "pid": r.pid, "tid": r.tid,
                           "ts": r.start / 1e3, "dur": (r.end - r.start) / 1e3, "args": args})
        for t, pid, used, cached, pending in self.memory:
            events.append({"name": "VE memory", "ph": "C", "pid": pid, "ts": t / 1e3,
                           "args": {"used": used, "cached": cached, "pending": pending}})
        trace = {"traceEvents": events, "displayTimeUnit": "ms",
                 "otherData": {"producer": "aioveo.trace", "wall_clock_start": self.wall_t0}}
        if path is not None:
            with open(path, "w") as f:
                json.dump(trace, f)
        return trace

    def stats(self) -> dict[str, dict[str, float]]:
        """Per name: requests, calls, errors, cancelled, bytes and times
        (total/mean/p50/p99/max of ``end - start``, in seconds)."""
        groups: dict[str, list[Request]] = {}
        for r in self.finished():
            groups.setdefault(r.name, []).append(r)
        out: dict[str, dict[str, float]] = {}
        for name, reqs in groups.items():
            d = sorted(r.duration for r in reqs)
            out[name] = {
                "count": len(reqs), "calls": sum(r.calls for r in reqs),
                "errors": sum(r.outcome == ERROR for r in reqs),
                "cancelled": sum(r.outcome == CANCELLED for r in reqs),
                "bytes": sum(r.nbytes for r in reqs),
                "total": sum(d) / 1e9, "mean": sum(d) / len(d) / 1e9,
                "p50": _percentile(d, 50) / 1e9, "p99": _percentile(d, 99) / 1e9,
                "max": d[-1] / 1e9,
            }
        return out

    def summary(self) -> str:
        """A table, one row per function (and transfer direction), by total time."""
        stats = sorted(self.stats().items(), key=lambda kv: -kv[1]["total"])
        head = ("name", "count", "calls", "total ms", "mean us", "p50 us", "p99 us", "MB",
                "failed")
        rows = [head]
        for name, s in stats:
            failed = f"{int(s['errors'])}" + (f"+{int(s['cancelled'])}c" if s["cancelled"] else "")
            rows.append((name, f"{int(s['count'])}", f"{int(s['calls'])}",
                         f"{s['total'] * 1e3:.3f}", f"{s['mean'] * 1e6:.1f}",
                         f"{s['p50'] * 1e6:.1f}", f"{s['p99'] * 1e6:.1f}",
                         f"{s['bytes'] / 1e6:.2f}", failed))
        n = len(self.requests)
        pending = n - sum(1 for r in self.requests if r.end is not None)
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"{n} requests on {len(self.context_names)} contexts of "
                     f"{len(self.proc_names)} procs" + (f", {pending} in flight" if pending else "")
                     + "; time = end - start, start = max(submit, previous end on its context)")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike, *, title: str | None = None) -> None:
        """Draw the timeline (one row per context, one bar per request) as an
        image (PNG for a ``.png`` path).  Needs matplotlib."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as e:
            raise ImportError("Recorder.plot needs matplotlib (pip install matplotlib); "
                              "to_chrome_trace() and summary() work without it") from e
        reqs = self.finished()
        rows = sorted(self.context_names)
        row_of = {key: i for i, key in enumerate(rows)}
        names = sorted({r.name for r in reqs})
        cmap = plt.get_cmap("tab10")
        colour = {n: cmap(i % 10) for i, n in enumerate(names)}
        fig, ax = plt.subplots(figsize=(12, 1 + 0.5 * max(len(rows), 1)))
        for name in names:
            mine = [r for r in reqs if r.name == name]
            for y in {row_of[(r.pid, r.tid)] for r in mine}:
                bars = [(r.start / 1e6, max(r.duration / 1e6, 1e-4)) for r in mine
                        if row_of[(r.pid, r.tid)] == y]
                ax.broken_barh(bars, (y - 0.4, 0.8), facecolors=colour[name])
        for r in reqs:
            if r.outcome != OK and r.end is not None:
                ax.plot([r.end / 1e6], [row_of[(r.pid, r.tid)]], "x", color="red")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{self.proc_names[p]} / {self.context_names[(p, t)]}"
                            for p, t in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("time (ms)")
        ax.set_title(title or "aioveo requests")
        from matplotlib.patches import Patch
        ax.legend(handles=[Patch(color=colour[n], label=n) for n in names],
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        fig.tight_layout()
        fig.savefig(os.fspath(path))
        plt.close(fig)


def _percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return 0.0
    k = max(0, math.ceil(q / 100 * len(sorted_values)) - 1)
    return float(sorted_values[k])


def start() -> Recorder:
    """Start recording into a new Recorder (replacing any active one) and return it."""
    global _active
    rec = Recorder()
    if _active is not None:
        _active.stop()
    _active = rec
    aio.add_observer(rec)
    return rec


def stop() -> Recorder | None:
    """Stop the active recorder, returning it (None when nothing was recording)."""
    rec = _active
    if rec is not None:
        rec.stop()
    return rec


def active() -> Recorder | None:
    """The recorder now recording, if any."""
    return _active


def record() -> Recorder:
    """``with aioveo.trace.record() as rec:`` — record the block's requests."""
    return start()
