"""The PyVEO API (aioveo's synchronous core) on the emulator."""
from __future__ import annotations

import gc
import os
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import aioveo as veo
from aioveo import OnStack, VEO_INTENT_IN, VEO_INTENT_INOUT, VEO_INTENT_OUT


def test_backend_is_the_bundled_emulator():
    b = veo.backend()
    assert b.kind == "emulator" and b.is_emulator
    assert os.path.exists(b.path) and b.api_version == 16
    assert "emulator" in b.version
    info = veo.emulator_info()
    assert info["nodes"] >= 1 and info["node_memory"] > 0 and os.path.exists(info["helper"])


# ---- procs, libraries, functions ---------------------------------------------------
def test_proc_attributes(proc, lib, ctx, kernels):
    assert proc.nodeid == 0
    assert ctx in proc.context
    assert proc.lib[kernels] is lib
    assert lib.name == kernels and lib.proc is proc
    assert isinstance(proc.proc_identifier(), int)
    assert proc.helper_pid > 0


def test_pyveo_style_declaration(lib, ctx):
    add = lib.find_function("add")
    add.args_type("long", "long")
    add.ret_type("long")
    assert add(ctx, 40, 2).wait_result() == 42
    assert lib.func["add"] is add
    assert add.lib is lib and add.name == "add"


def test_prototype_declaration_and_attribute_access(lib, ctx, proc):
    dsum = lib.find_function("double dsum(const double *x, long n)")
    x = np.arange(100, dtype=np.float64)
    assert dsum(ctx, OnStack(x), len(x)).wait_result() == x.sum()
    assert lib.dsum is dsum                     # cached in lib.func
    assert proc.get_function("dsum") is dsum
    assert proc.get_function("no_such_function") is None


def test_function_needs_types_before_call(lib, ctx):
    f = lib.find_function("nop")
    with pytest.raises(veo.VeoError, match="args_type"):
        f(ctx)


def test_missing_symbol_and_library(proc, lib, tmp_path):
    with pytest.raises(veo.SymbolNotFoundError, match="nonexistent"):
        lib.find_function("nonexistent")
    with pytest.raises(RuntimeError):           # PyVEO code catches RuntimeError
        lib.get_symbol("nonexistent")
    assert not hasattr(lib, "nonexistent2")
    with pytest.raises(veo.VeoError, match="no such file"):
        proc.load_library(tmp_path / "missing.so")
    text = tmp_path / "notso.so"
    text.write_text("not a shared object")
    with pytest.raises(veo.VeoError, match="notso.so"):
        proc.load_library(text)


def test_relative_library_path_is_resolved_against_cwd(proc, kernels, monkeypatch):
    monkeypatch.chdir(os.path.dirname(kernels))
    lib = proc.load_library("./" + os.path.basename(kernels))
    f = lib.find_function("long add(long, long)")
    c = proc.open_context()
    try:
        assert f(c, 1, 2).wait_result() == 3
    finally:
        proc.close_context(c)
    proc.unload_library(lib)
    assert "./" + os.path.basename(kernels) not in proc.lib


def test_global_variable_via_get_symbol(proc, lib, ctx):
    counter = lib.get_symbol("counter")
    assert lib.symbol["counter"] is counter
    buf = np.zeros(1, np.int64)
    proc.read_mem(buf, counter, 8)
    assert buf[0] == 42
    proc.write_mem(counter, np.array([7], np.int64), 8)
    assert lib.find_function("long get_counter(void)")(ctx).wait_result() == 7


# ---- arguments and results ---------------------------------------------------------
LIMITS = {
    "int8_t": (-2**7, 2**7 - 1), "uint8_t": (0, 2**8 - 1),
    "int16_t": (-2**15, 2**15 - 1), "uint16_t": (0, 2**16 - 1),
    "int32_t": (-2**31, 2**31 - 1), "uint32_t": (0, 2**32 - 1),
    "int64_t": (-2**63, 2**63 - 1), "uint64_t": (0, 2**64 - 1),
}
ECHO = {"int8_t": "i8", "uint8_t": "u8", "int16_t": "i16", "uint16_t": "u16",
        "int32_t": "i32", "uint32_t": "u32", "int64_t": "i64", "uint64_t": "u64"}


@pytest.mark.parametrize("ctype", sorted(LIMITS))
def test_integer_round_trip_at_limits(lib, ctx, ctype):
    lo, hi = LIMITS[ctype]
    f = lib.find_function(f"{ctype} echo_{ECHO[ctype]}({ctype} x)")
    for v in (lo, hi, 0, 1, lo + 1, hi - 1):
        assert f(ctx, v).wait_result() == v
    for bad in (lo - 1, hi + 1):
        with pytest.raises(OverflowError, match=f"argument 1 .*{bad}"):
            f(ctx, bad)


@pytest.mark.parametrize("alias,ctype", [("char", "int8_t"), ("unsigned char", "uint8_t"),
                                         ("short", "int16_t"), ("unsigned short", "uint16_t"),
                                         ("int", "int32_t"), ("unsigned int", "uint32_t"),
                                         ("long", "int64_t"), ("unsigned long", "uint64_t")])
def test_pyveo_type_names(lib, ctx, alias, ctype):
    f = lib.find_function(f"echo_{ECHO[ctype]}")
    f.args_type(alias)
    f.ret_type(alias)
    lo, hi = LIMITS[ctype]
    assert f(ctx, lo).wait_result() == lo
    assert f(ctx, hi).wait_result() == hi


@settings(max_examples=60, deadline=None)
@given(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False, width=32),
       st.floats(allow_nan=False))
def test_round_trip_property(lib, ctx, i, f32, f64):
    assert lib.find_function("int64_t echo_i64(int64_t)")(ctx, i).wait_result() == i
    assert lib.find_function("float echo_float(float)")(ctx, f32).wait_result() == f32
    assert lib.find_function("double echo_double(double)")(ctx, f64).wait_result() == f64


def test_float_and_double_returns(lib, ctx):
    fsum = lib.find_function("float fsum(const float *x, int n)")
    x = np.full(8, 0.5, np.float32)
    assert fsum(ctx, OnStack(x), 8).wait_result() == 4.0
    ed = lib.find_function("double echo_double(double)")
    assert ed(ctx, -1.5e300).wait_result() == -1.5e300
    assert np.isnan(ed(ctx, float("nan")).wait_result())
    ef = lib.find_function("float echo_float(float)")
    assert ef(ctx, float("inf")).wait_result() == float("inf")
    with pytest.raises(OverflowError):
        ef(ctx, 1e39)
    with pytest.raises(TypeError, match="number"):
        ed(ctx, "1.0")


def test_many_arguments_mixed_types(lib, ctx):
    many = lib.find_function(
        "double many(int8_t a, uint8_t b, int16_t c, uint16_t d, int32_t e, uint32_t f,"
        " int64_t g, uint64_t h, float i, double j, long k, long l)")
    args = (-1, 2, -3, 4, -5, 6, -7, 8, 0.5, 0.25, 1000, 2000)
    assert many(ctx, *args).wait_result() == pytest.approx(sum(args))


def test_argument_count_and_type_errors(lib, ctx):
    add = lib.find_function("long add(long, long)")
    with pytest.raises(TypeError, match=r"add\(\) takes 2 arguments \(1 given\)"):
        add(ctx, 1)
    with pytest.raises(TypeError, match="argument 2"):
        add(ctx, 1, "two")
    with pytest.raises(TypeError, match="argument 1"):
        add(ctx, 1.5, 2)
    assert add(ctx, np.int32(5), np.int64(6)).wait_result() == 11   # __index__ works
    with pytest.raises(veo.CTypeError):
        add.args_type("long", "lnog")
    with pytest.raises(veo.CTypeError):
        lib.find_function("long add(long, long")


def test_pointer_results_are_vemem_pointers(proc, lib, ctx):
    ve_malloc = lib.find_function("void *ve_malloc(long n)")
    fill = lib.find_function("void fill(char *p, long n, int c)")
    p = ve_malloc(ctx, 64).wait_result()
    assert isinstance(p, veo.VEMemPtr) and p.proc is proc and p.addr != 0
    assert fill(ctx, p, 64, 0x5A).wait_result() is None
    out = bytearray(64)
    proc.read_mem(out, p, 64)                # memory a kernel malloc'ed is readable
    assert out == b"\x5a" * 64
    echo = lib.find_function("void *echo_ptr(void *)")
    assert echo(ctx, p).wait_result().addr == p.addr
    assert echo(ctx, None).wait_result().addr == 0
    with pytest.raises(TypeError, match="OnStack"):
        echo(ctx, bytearray(4))


# ---- stack arguments ---------------------------------------------------------------
def test_onstack_in_out_inout(lib, ctx):
    strcopy = lib.find_function("long strcopy(char *dst, const char *src, long cap)")
    dst = bytearray(32)
    n = strcopy(ctx, OnStack(dst, inout=VEO_INTENT_OUT), OnStack(b"hello VE\0"), 32).wait_result()
    assert n == 8 and dst[:9] == b"hello VE\0"

    point = bytearray(struct.pack("iid", 3, 4, 1.5))
    scale_point = lib.find_function("long scale_point(void *p)")
    assert scale_point(ctx, OnStack(point, inout=VEO_INTENT_INOUT)).wait_result() == 14
    assert struct.unpack("iid", point) == (6, 8, 3.0)

    x = np.arange(5, dtype=np.float64)          # numpy arrays without copies
    scale = lib.find_function("void scale(double *x, long n, double f)")
    scale(ctx, OnStack(x, inout=VEO_INTENT_INOUT), 5, 2.0).wait_result()
    assert list(x) == [0, 2, 4, 6, 8]
    x_in = np.arange(5, dtype=np.float64)
    scale(ctx, OnStack(x_in, inout=VEO_INTENT_IN), 5, 2.0).wait_result()
    assert list(x_in) == [0, 1, 2, 3, 4]         # IN: not copied back


def test_onstack_rejects_bad_buffers():
    with pytest.raises(TypeError):
        OnStack("a str is not a buffer")
    with pytest.raises(BufferError, match="writable"):
        OnStack(b"read-only", inout=VEO_INTENT_OUT)
    with pytest.raises(BufferError):
        OnStack(np.arange(10.0)[::2])            # not contiguous
    with pytest.raises(ValueError, match="fewer than size"):
        OnStack(bytearray(4), 8)
    with pytest.raises(ValueError):
        OnStack(bytearray(4), inout=7)
    s = OnStack(bytearray(16), 8, VEO_INTENT_OUT)
    assert s.size() == 8 and s.scope() == VEO_INTENT_OUT and s.c_pointer() != 0


def test_dropped_request_keeps_its_buffers_until_the_ve_is_done(lib, ctx):
    sleep_ms = lib.find_function("long sleep_ms(long)")
    strcopy = lib.find_function("long strcopy(char *dst, const char *src, long cap)")
    sleep_ms(ctx, 50)                              # dropped: no wait
    dst = bytearray(16)
    strcopy(ctx, OnStack(dst, inout=VEO_INTENT_OUT), OnStack(b"late\0"), 16)  # dropped too
    gc.collect()
    ctx.context_sync()
    assert dst[:5] == b"late\0"


# ---- requests ----------------------------------------------------------------------
def test_peek_then_collect_once(lib, ctx):
    sleep_ms = lib.find_function("long sleep_ms(long)")
    r = sleep_ms(ctx, 100)
    with pytest.raises(NameError):              # PyVEO: NameError when unfinished
        r.peek_result()
    with pytest.raises(veo.Unfinished):
        r.peek_result()
    assert r.wait_result() == 100
    assert r.collected
    with pytest.raises(veo.VeoError, match="already collected"):
        r.wait_result()
    with pytest.raises(veo.VeoError, match="already collected"):
        r.peek_result()


def test_fifo_order_within_a_context(proc, lib):
    c = proc.open_context()
    try:
        sleep_ms = lib.find_function("long sleep_ms(long)")
        reqs = [sleep_ms(c, ms) for ms in (30, 0, 10, 0)]
        assert [r.wait_result() for r in reversed(reqs)] == [0, 10, 0, 30]
    finally:
        proc.close_context(c)


# ---- memory ------------------------------------------------------------------------
def test_memory_round_trip_and_async_transfers(proc, ctx, lib):
    n = 1 << 16
    src = np.random.default_rng(1).random(n)
    ptr = proc.alloc_mem(src.nbytes)
    assert ptr.size == src.nbytes and ptr.proc is proc
    proc.write_mem(ptr, src, src.nbytes)        # PyVEO argument order: (dst, src, size)
    back = np.empty_like(src)
    proc.read_mem(back, ptr, src.nbytes)
    assert np.array_equal(src, back)
    # async forms on a context, in its FIFO order with calls
    x = np.ones(n)
    w = ctx.async_write_mem(ptr, x)
    scale = lib.find_function("void scale(double *x, long n, double f)")
    s = scale(ctx, ptr, n, 3.0)
    out = np.zeros(n)
    r = ctx.async_read_mem(out, ptr)
    del x                                        # the request keeps the buffer alive
    assert w.wait_result() == 0 and s.wait_result() is None and r.wait_result() == 0
    assert (out == 3.0).all()
    # offsets
    proc.write_mem(ptr + 8, np.array([9.0]))
    one = np.zeros(1)
    proc.read_mem(one, ptr + 8)
    assert one[0] == 9.0
    proc.free_mem(ptr)


def test_memory_errors(proc, tmp_path):
    with pytest.raises(ValueError, match="> 0"):
        proc.alloc_mem(0)
    with pytest.raises(ValueError):
        proc.alloc_mem(-5)
    with pytest.raises(veo.VeoError):
        proc.alloc_mem(veo.emulator_info()["node_memory"] * 2)
    ptr = proc.alloc_mem(64)
    with pytest.raises(ValueError, match="fewer than size"):
        proc.write_mem(ptr, bytearray(8), 16)
    with pytest.raises(ValueError, match="size must be >= 0"):
        proc.write_mem(ptr, bytearray(8), -1)
    with pytest.raises(ValueError, match="64-byte VE allocation"):
        proc.write_mem(ptr, bytearray(128))
    with pytest.raises(BufferError, match="writable"):
        proc.read_mem(b"immutable", ptr, 4)
    with pytest.raises(TypeError):
        proc.read_mem(bytearray(4), "not an address", 4)
    with pytest.raises(veo.VeoError):
        proc.read_mem(bytearray(4), 0x10, 4)      # unmapped VE address
    proc.free_mem(ptr)
    with pytest.raises(veo.VeoError):
        proc.free_mem(ptr)                        # freed twice


def test_address_of_another_proc_is_rejected(proc):
    other = veo.VeoProc(1)
    try:
        ptr = other.alloc_mem(16)
        with pytest.raises(ValueError, match="another proc"):
            proc.read_mem(bytearray(16), ptr)
    finally:
        other.destroy()


def test_hmem(proc):
    h = proc.alloc_hmem(128)
    assert h.addr >> 63 == 1                     # an hmem address has bit 63 set
    data = bytes(range(128))
    proc.write_mem(h, data)                       # accepted where an address is
    out = bytearray(128)
    proc.read_mem(out, h)
    assert out == data
    proc.free_hmem(h)


# ---- faults, closed objects --------------------------------------------------------
def test_crashing_kernel_kills_only_its_proc(kernels):
    p = veo.VeoProc(0)
    other = veo.VeoProc(0)
    try:
        lib = p.load_library(kernels)
        c = p.open_context()
        sleep_ms = lib.find_function("long sleep_ms(long)")
        crash = lib.find_function("long crash(void)")
        r = crash(c)
        with pytest.raises(ArithmeticError) as ei:   # PyVEO: ArithmeticError
            r.wait_result()
        assert isinstance(ei.value, veo.VeoException) and ei.value.signal == 11
        with pytest.raises(veo.ProcDeadError):
            sleep_ms(c, 1)
        with pytest.raises(veo.ProcDeadError):
            p.open_context()
        # the other proc is untouched
        olib = other.load_library(kernels)
        oc = other.open_context()
        assert olib.find_function("long add(long, long)")(oc, 1, 1).wait_result() == 2
    finally:
        p.destroy()
        other.destroy()


def test_closed_context_and_destroyed_proc_raise_cleanly(kernels):
    p = veo.VeoProc(0)
    lib = p.load_library(kernels)
    add = lib.find_function("long add(long, long)")
    c = p.open_context()
    r = add(c, 1, 2)
    p.close_context(c)
    assert c not in p.context and c.closed
    with pytest.raises(veo.ClosedError):
        add(c, 1, 2)
    with pytest.raises(veo.ClosedError):
        r.wait_result()
    ptr = p.alloc_mem(8)
    c2 = p.open_context()
    p.destroy()
    p.destroy()                                  # idempotent
    for op in (lambda: add(c2, 1, 2), lambda: p.alloc_mem(8), lambda: p.read_mem(bytearray(8), ptr),
               lambda: p.load_library(kernels), lambda: p.open_context(),
               lambda: c2.async_write_mem(ptr, b"x"), lambda: lib.find_function("add")):
        with pytest.raises(veo.ClosedError):
            op()


# ---- hooks, threads, several procs -----------------------------------------------
def test_proc_init_hooks(kernels):
    seen = []

    def hook(p):
        seen.append(p)
        p.load_library(kernels).find_function("long add(long, long)")

    veo.set_proc_init_hook(hook)
    try:
        p = veo.VeoProc(0)
    finally:
        veo.del_proc_init_hook(hook)
    try:
        assert seen == [p]
        c = p.open_context()
        assert p.get_function("add")(c, 2, 2).wait_result() == 4
    finally:
        p.destroy()
    q = veo.VeoProc(0)                            # hook removed
    q.destroy()
    assert len(seen) == 1


def test_failing_init_hook_destroys_the_proc():
    procs = []

    def bad(p):
        procs.append(p)
        raise RuntimeError("hook failed")

    veo.set_proc_init_hook(bad)
    try:
        with pytest.raises(RuntimeError, match="hook failed"):
            veo.VeoProc(0)
    finally:
        veo.del_proc_init_hook(bad)
    assert procs[0].destroyed


def test_threads_share_a_proc_and_a_context(proc, lib, ctx):
    add = lib.find_function("long add(long, long)")
    errors = []

    def work(k):
        try:
            c = proc.open_context() if k % 2 else ctx
            for i in range(300):
                assert add(c, i, k).wait_result() == i + k
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_wait_result_releases_the_gil(lib, ctx):
    sleep_ms = lib.find_function("long sleep_ms(long)")
    ticks = []
    r = sleep_ms(ctx, 200)
    t = threading.Thread(target=lambda: [ticks.append(time.sleep(0.01)) for _ in range(10)])
    t.start()
    r.wait_result()
    t.join()
    assert len(ticks) == 10


def test_two_procs_at_once(kernels):
    procs = [veo.VeoProc(n) for n in (0, 1)]
    try:
        ids = {p.proc_identifier() for p in procs}
        assert len(ids) == 2
        for k, p in enumerate(procs):
            c = p.open_context()
            f = p.load_library(kernels).find_function("long add(long, long)")
            assert f(c, k, 100).wait_result() == 100 + k
    finally:
        for p in procs:
            p.destroy()


def test_pyveo_program_ports_by_changing_the_import(kernels, tmp_path):
    prog = tmp_path / "pyveo_prog.py"
    prog.write_text(f"""
import aioveo as veo
import numpy as np
proc = veo.VeoProc(0)
lib = proc.load_library({kernels!r})
ctx = proc.open_context()
f = lib.find_function("dsum")
f.args_type("double *", "long")
f.ret_type("double")
a = np.arange(10, dtype=np.float64)
print(f(ctx, veo.OnStack(a), 10).wait_result())
hello = lib.hello
hello.args_type()
hello(ctx).wait_result()
proc.close_context(ctx)
# no destroy: the interpreter must end the VE process at exit, without a crash
""")
    out = subprocess.run([sys.executable, str(prog)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["45.0", "hello", "from", "the", "VE"]


def test_exit_with_live_procs_and_running_kernels(kernels, tmp_path):
    prog = tmp_path / "exit_busy.py"
    prog.write_text(f"""
import aioveo as veo
procs = [veo.VeoProc(0) for _ in range(2)]
for p in procs:
    f = p.load_library({kernels!r}).find_function("long sleep_ms(long)")
    f(p.open_context(), 100000)      # a kernel that outlives the program
print("bye")
""")
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, str(prog)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, env={**os.environ, "AIOVEO_EXIT_GRACE": "0.5"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "bye"
    assert time.monotonic() - t0 < 20


# ---- batches -----------------------------------------------------------------------
def test_submit_batch_results_in_order(lib, ctx):
    add = lib.find_function("long add(long, long)")
    b = add.submit_batch(ctx, [(i, i) for i in range(1000)])
    assert len(b) == 1000 and isinstance(b, veo.VeoBatch)
    assert b.wait_result() == [2 * i for i in range(1000)]
    with pytest.raises(veo.VeoError, match="already collected"):
        b.wait_result()
    dsum = lib.find_function("double dsum(const double *x, long n)")
    arrays = [np.full(4, float(i)) for i in range(10)]
    batch = dsum.submit_batch(ctx, ((OnStack(a), 4) for a in arrays))
    assert batch.wait_result() == [4.0 * i for i in range(10)]


def test_submit_batch_bad_call_keeps_the_context_usable(lib, ctx):
    add = lib.find_function("long add(long, long)")
    with pytest.raises(OverflowError):
        add.submit_batch(ctx, [(1, 2), (3, 4), (2**70, 1)])
    with pytest.raises(TypeError, match="takes 2 arguments"):
        add.submit_batch(ctx, [(1, 2), (3,)])
    with pytest.raises(ValueError, match="at least one"):
        add.submit_batch(ctx, [])
    ctx.context_sync()                       # the submitted calls drain, nothing leaks
    assert add(ctx, 1, 1).wait_result() == 2


def test_submit_batch_fault(kernels):
    p = veo.VeoProc(0)
    try:
        c = p.open_context()
        crash = p.load_library(kernels).find_function("long crash(void)")
        # the first call kills the VE: the batch's submission stops at a dead
        # proc, or (if all three were queued in time) waiting raises the fault
        with pytest.raises((veo.VeoException, veo.ProcDeadError)):
            crash.submit_batch(c, [()] * 3).wait_result()
        with pytest.raises(veo.ProcDeadError):
            crash(c)
    finally:
        p.destroy()


def test_dropped_requests_reaped_by_two_threads_at_once(lib, ctx):
    strcopy = lib.find_function("long strcopy(char *dst, const char *src, long cap)")
    errors = []

    def work():
        try:
            for _ in range(300):
                dst = bytearray(16)
                strcopy(ctx, OnStack(dst, inout=VEO_INTENT_OUT), OnStack(b"x\0"), 16)  # dropped
                if _ % 7 == 0:
                    ctx.context_sync()          # reaps while the other thread drops more
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctx.context_sync()
    assert not errors
    assert lib.find_function("long add(long, long)")(ctx, 2, 2).wait_result() == 4


# ---- which libveo ------------------------------------------------------------------
def _backend_in_subprocess(tmp_path, value):
    code = ("import aioveo\ntry:\n    b = aioveo.backend()\n    print(b, b.reason)\n"
            "except ImportError as e:\n    print('ImportError:', e)\n")
    env = {**os.environ, "AIOVEO_LIBVEO": value}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_libveo_selection_by_environment(tmp_path):
    assert "kind='emulator'" in _backend_in_subprocess(tmp_path, "emulator")
    out = _backend_in_subprocess(tmp_path, str(tmp_path / "no-such-libveo.so"))
    assert out.startswith("ImportError:") and "no-such-libveo.so" in out and "AIOVEO_LIBVEO" in out
    explicit = _backend_in_subprocess(tmp_path, veo.backend().path)   # an explicit path works
    assert "kind='emulator'" in explicit and explicit.strip().endswith("AIOVEO_LIBVEO")
