"""aioveo.trace (the request recorder) and the "aioveo" logger."""
from __future__ import annotations

import asyncio
import json
import logging
import subprocess

import numpy as np
import pytest

import aioveo
import aioveo.trace
from aioveo import aio
from helpers import declare

@pytest.fixture(autouse=True)
def no_recorder_left():
    yield
    aioveo.trace.stop()
    assert aioveo.trace.active() is None and not aio._observers


# ---- a Trace Event Format check (the parts a viewer relies on) ------------------
PHASES = {"B", "E", "X", "i", "I", "C", "b", "n", "e", "s", "t", "f", "P", "O", "N", "D",
          "M", "R", "c", "(", ")"}
REQUIRED = {
    "X": {"name": str, "ph": str, "ts": (int, float), "dur": (int, float), "pid": (int, str),
          "tid": (int, str)},
    "M": {"name": str, "ph": str, "pid": (int, str), "args": dict},
}
METADATA_NAMES = {"process_name", "process_labels", "process_sort_index", "thread_name",
                  "thread_sort_index"}


def check_trace_event_format(doc) -> list[dict]:
    """Validate the JSON object form of the Trace Event Format; returns the events."""
    assert isinstance(doc, dict), "the JSON object form is expected"
    assert isinstance(doc.get("traceEvents"), list)
    if "displayTimeUnit" in doc:
        assert doc["displayTimeUnit"] in ("ms", "ns")
    for ev in doc["traceEvents"]:
        assert isinstance(ev, dict), ev
        ph = ev.get("ph")
        assert ph in PHASES, f"unknown phase {ph!r} in {ev}"
        for key, types in REQUIRED.get(ph, {}).items():
            assert key in ev, f"{ph!r} event lacks {key!r}: {ev}"
            assert isinstance(ev[key], types) and not isinstance(ev[key], bool), (key, ev)
        for key in ("ts", "dur"):
            if key in ev:
                assert isinstance(ev[key], (int, float)) and ev[key] >= 0, (key, ev)
        for key in ("pid", "tid"):
            if key in ev:
                assert isinstance(ev[key], (int, str)), (key, ev)
        if "args" in ev:
            assert isinstance(ev["args"], dict)
        if "cat" in ev:
            assert isinstance(ev["cat"], str)
        if ph == "M":
            assert ev["name"] in METADATA_NAMES, ev
            if ev["name"].endswith("_name"):
                assert isinstance(ev["args"].get("name"), str), ev
            if ev["name"].startswith("thread_"):
                assert "tid" in ev, ev
    json.dumps(doc)   # and serialisable as is
    return doc["traceEvents"]




# ---- recording ------------------------------------------------------------------
@pytest.mark.asyncio
async def test_calls_and_transfers_on_two_contexts(aio_lib, tmp_path):
    n = 1 << 16          # 512 KiB of doubles: inline on the emulator when the context is idle
    x = np.arange(n, dtype=np.float64)
    out = np.empty_like(x)
    async with aioveo.open_proc(0) as proc:
        lib = await proc.load_library(aio_lib)
        add = declare(lib, "add", ["long", "long"])
        dsum = declare(lib, "dsum", ["double *", "long"], "double")
        sleep_ms = declare(lib, "sleep_ms", ["long"])
        # (AVEO: the first context is the proc's main context, which a
        # synchronous transfer, as an inline one is, queues behind; c1 and c2
        # are others, so c2's inline transfer does not wait for c1's work)
        main = await proc.open_context()
        async with proc.open_context() as c1, proc.open_context() as c2:
            ptr = await c1.alloc_mem(x.nbytes)
            with aioveo.trace.record() as rec:
                assert aioveo.trace.active() is rec
                # context 1: write, add x3, dsum, read, queued back to back
                f_sleep = await c1.submit(sleep_ms, 20)      # keeps the rest queued
                f_write = await c1.submit_write_mem(ptr, x)
                f_adds = [await c1.submit(add, i, 1) for i in range(3)]
                f_sum = await c1.submit(dsum, ptr, n)
                f_read = await c1.submit_read_mem(out, ptr)
                # context 2: a map batch and an idle-context (inline) transfer
                assert await c2.map(add, [(i, i) for i in range(5)]) == [0, 2, 4, 6, 8]
                await c2.write_mem(ptr, x[:8])
                assert [await f for f in f_adds] == [1, 2, 3]
                await asyncio.gather(f_sleep, f_write, f_read)
                assert await f_sum == float(x.sum())
            assert aioveo.trace.active() is None
            await c1.call(add, 1, 1)                         # after stop(): not recorded
            await c1.free_mem(ptr)
    np.testing.assert_array_equal(out, x)

    reqs = rec.finished()
    assert len(reqs) == len(rec.requests) == 9
    assert all(r.outcome == "ok" for r in reqs)
    by_ctx: dict[int, list] = {}
    for r in reqs:
        by_ctx.setdefault(r.tid, []).append(r)
    assert {r.pid for r in reqs} == {1} and sorted(by_ctx) == [1, 2]
    names1 = [r.name for r in by_ctx[1]]
    assert names1 == ["sleep_ms", "write_mem", "add", "add", "add", "dsum", "read_mem"]
    assert [r.nbytes for r in by_ctx[1]] == [0, x.nbytes, 0, 0, 0, 0, x.nbytes]
    assert [(r.name, r.calls, r.nbytes, r.inline) for r in by_ctx[2]] == [
        ("add", 5, 0, False), ("write_mem", 1, 64, True)]
    # FIFO: each request starts when the one before it on its context ended
    for rs in by_ctx.values():
        for a, b in zip(rs, rs[1:]):
            assert a.seq < b.seq and a.end <= b.end
            assert b.start == max(b.submit, a.end)
        for r in rs:
            assert r.submit <= r.start <= r.end
    assert by_ctx[1][0].duration >= 15e6                # the 20 ms sleep, in ns
    assert by_ctx[1][1].start >= by_ctx[1][0].end       # the write waited for it

    path = tmp_path / "trace.json"
    rec.to_chrome_trace(path)
    events = check_trace_event_format(json.loads(path.read_text()))
    xs = [e for e in events if e["ph"] == "X"]
    meta = [e for e in events if e["ph"] == "M"]
    assert len(xs) == 9
    assert {(e["name"], e["args"]["name"]) for e in meta if e["name"] == "process_name"} == {
        ("process_name", rec.proc_names[1])}
    assert "node 0" in rec.proc_names[1]
    assert sorted(e["tid"] for e in meta if e["name"] == "thread_name") == [1, 2]
    ctx1 = sorted((e for e in xs if e["tid"] == 1), key=lambda e: e["args"]["seq"])
    assert [e["name"] for e in ctx1] == names1
    assert [e["cat"] for e in ctx1] == ["call", "transfer", "call", "call", "call", "call",
                                        "transfer"]
    assert [e["args"].get("bytes", 0) for e in ctx1] == [0, x.nbytes, 0, 0, 0, 0, x.nbytes]
    for a, b in zip(ctx1, ctx1[1:]):            # in order and not overlapping
        assert b["ts"] >= a["ts"] + a["dur"] - 1e-3
    batch = [e for e in xs if e["tid"] == 2 and e["name"] == "add"]
    assert batch[0]["args"]["calls"] == 5
    assert ctx1[0]["dur"] >= 15000              # microseconds

    summary = rec.summary()
    for name in ("sleep_ms", "add", "dsum", "read_mem", "write_mem"):
        assert name in summary
    stats = rec.stats()
    assert stats["add"]["count"] == 4 and stats["add"]["calls"] == 8
    assert stats["read_mem"]["bytes"] == x.nbytes
    assert stats["write_mem"]["bytes"] == x.nbytes + 64


@pytest.mark.asyncio
async def test_cancelled_and_failed_requests(aio_lib):
    async with aioveo.open_proc(0) as proc:
        lib = await proc.load_library(aio_lib)
        sleep_ms = declare(lib, "sleep_ms", ["long"])
        crash = declare(lib, "crash", [])
        async with proc.open_context() as ctx:
            with aioveo.trace.record() as rec:
                task = asyncio.create_task(ctx.call(sleep_ms, 300))
                await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert rec.requests[0].end is None          # the VE is still running it
                assert "1 in flight" in rec.summary()
                await ctx.synchronize()
                assert await ctx.call(sleep_ms, 0) == 0
                with pytest.raises(aioveo.VeoException):
                    await ctx.call(crash)
            await ctx.close(cancel=True)
    outcomes = [(r.name, r.outcome) for r in rec.finished()]
    assert outcomes == [("sleep_ms", "cancelled"), ("sleep_ms", "ok"), ("crash", "error")]
    assert rec.requests[2].status == aioveo.VEO_COMMAND_EXCEPTION
    assert rec.stats()["sleep_ms"]["cancelled"] == 1
    events = check_trace_event_format(rec.to_chrome_trace())
    assert [e["args"]["outcome"] for e in events if e["ph"] == "X"] == [
        "cancelled", "ok", "error"]


@pytest.mark.asyncio
async def test_start_stop_and_in_flight_requests_finish_into_the_trace(aio_lib):
    async with aioveo.open_proc(0) as proc, proc.open_context() as ctx:
        lib = await proc.load_library(aio_lib)
        sleep_ms = declare(lib, "sleep_ms", ["long"])
        rec = aioveo.trace.start()
        fut = await ctx.submit(sleep_ms, 10)
        assert aioveo.trace.stop() is rec
        assert aioveo.trace.stop() is None
        await fut
        assert [r.outcome for r in rec.finished()] == ["ok"]
        # a new recorder replaces the active one
        r1 = aioveo.trace.start()
        r2 = aioveo.trace.start()
        assert aioveo.trace.active() is r2 and r1.stopped is not None
        await ctx.call(sleep_ms, 0)
        r2.stop()
        assert len(r1.requests) == 0 and len(r2.requests) == 1


def test_plot(aio_lib, tmp_path):
    rec = aioveo.trace.Recorder()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="matplotlib"):
            rec.plot(tmp_path / "t.png")
        return

    async def main():
        async with aioveo.open_proc(0) as proc, proc.open_context() as ctx:
            lib = await proc.load_library(aio_lib)
            add = declare(lib, "add", ["long", "long"])
            with aioveo.trace.record() as rec:
                for i in range(5):
                    await ctx.call(add, i, i)
            return rec

    rec = asyncio.run(main())
    rec.plot(tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- logging ----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_debug_log_of_life_cycle(aio_lib, caplog):
    caplog.set_level(logging.DEBUG, logger="aioveo")
    async with aioveo.open_proc(0) as proc:
        async with proc.open_context() as ctx:
            handle = ctx.sync.handle
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "aioveo")
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "aioveo")
    assert "opened proc" in text and "node 0" in text
    assert f"opened context 0x{handle:x}" in text
    assert f"closed context 0x{handle:x}" in text
    assert "closed proc" in text


@pytest.mark.asyncio
async def test_debug_log_of_failures(aio_lib, caplog):
    caplog.set_level(logging.DEBUG, logger="aioveo")
    async with aioveo.open_proc(0) as proc:
        lib = await proc.load_library(aio_lib)
        crash = declare(lib, "crash", [])
        async with proc.open_context() as ctx:
            with pytest.raises(aioveo.VeoException):
                await ctx.call(crash)
            await ctx.close(cancel=True)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "aioveo")
    assert "failed" in text and "VE process died" in text


def test_silent_by_default(aio_lib, tmp_path):
    """Nothing reaches stderr at the default level (the package adds a NullHandler),
    even when a request fails."""
    script = tmp_path / "quiet.py"
    script.write_text(f"""
import asyncio, aioveo, logging
assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("aioveo").handlers)
async def main():
    async with aioveo.open_proc(0) as proc:
        lib = await proc.load_library({aio_lib!r})
        sleep_ms = lib.find_function("long sleep_ms(long)")
        ctx = await proc.open_context()
        fut = await ctx.submit(sleep_ms, 50)
        await ctx.close(cancel=True)            # fails the request: a debug record
        try:
            await fut
        except aioveo.VeoError:
            pass
        else:
            raise AssertionError("the request should have failed")
asyncio.run(main())
print("done")
""")
    import sys
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "done\n"
    assert r.stderr == ""
