"""The mistakes a newcomer makes first, each met by an error that names the
mistake and the fix; NumPy scalars passed as the numbers they stand for."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import aioveo
from aioveo import OnStack


# ---- NumPy scalars are the numbers they stand for -----------------------------------
@pytest.mark.parametrize("proto, value, want", [
    ("float echo_float(float)", np.float32(1.5), 1.5),
    ("float echo_float(float)", np.float64(2.25), 2.25),
    ("double echo_double(double)", np.int64(3), 3.0),
    ("double echo_double(double)", np.float32(0.5), 0.5),
    ("double echo_double(double)", np.uint8(7), 7.0),
    ("int64_t echo_i64(int64_t)", np.bool_(True), 1),
    ("int64_t echo_i64(int64_t)", np.int32(-5), -5),
    ("uint64_t echo_u64(uint64_t)", np.uint64(2**64 - 1), 2**64 - 1),
    ("int8_t echo_i8(int8_t)", np.int16(-128), -128),
])
def test_numpy_scalars_convert_like_python_numbers(lib, ctx, proto, value, want):
    fn = lib.find_function(proto)
    assert fn(ctx, value).wait_result() == want


def test_an_element_of_a_float32_array_passes_without_float(lib, ctx):
    x = np.arange(4, dtype=np.float32) / 4
    fn = lib.find_function("float echo_float(float)")
    assert [fn(ctx, v).wait_result() for v in x] == [0.0, 0.25, 0.5, 0.75]


@pytest.mark.parametrize("proto, value, error, text", [
    ("int8_t echo_i8(int8_t)", np.int64(200), OverflowError, r"200 is out of range \[-128, 127\]"),
    ("uint32_t echo_u32(uint32_t)", np.int64(-1), OverflowError, r"out of range \[0, 4294967295\]"),
    ("double echo_double(double)", np.bool_(True), TypeError, "must be a number, not bool"),
    ("double echo_double(double)", True, TypeError, "must be a number, not bool"),
    ("float echo_float(float)", np.float64(1e300), OverflowError, "out of range"),
    ("double echo_double(double)", "1.0", TypeError, "must be a number, not str"),
])
def test_numpy_scalars_get_the_same_checks(lib, ctx, proto, value, error, text):
    with pytest.raises(error, match=text):
        lib.find_function(proto)(ctx, value)


def test_bool_parameter_range_is_the_types(lib, ctx):
    fn = lib.find_function("uint8_t echo_u8(bool)")
    assert fn(ctx, True).wait_result() == 1 and fn(ctx, np.bool_(False)).wait_result() == 0
    with pytest.raises(OverflowError, match=r"\[0, 1\]"):
        fn(ctx, 2)


# ---- one message per first mistake ----------------------------------------------------
def test_host_array_for_a_pointer_says_how_to_get_it_to_the_ve(lib, ctx):
    dsum = lib.find_function("double dsum(double *x, long n)")
    with pytest.raises(TypeError) as info:
        dsum(ctx, np.arange(4.0), 4)
    msg = str(info.value)
    assert "host buffer" in msg and "ctx.to_ve" in msg and "OnStack" in msg
    assert dsum(ctx, OnStack(np.arange(4.0)), 4).wait_result() == 6.0


def test_find_function_takes_bytes_as_pyveo_programs_pass_them(lib, ctx):
    fn = lib.find_function(b"add")
    fn.args_type("long", "long")
    fn.ret_type("long")
    assert fn(ctx, 1, 2).wait_result() == 3
    assert lib.find_function(b"long add(long, long)")(ctx, 3, 4).wait_result() == 7
    with pytest.raises(TypeError, match="must be a str, not int"):
        lib.find_function(42)


def test_an_unawaited_coroutine_as_an_argument_asks_about_await(lib, ctx):
    async def value():
        return 1
    coro = value()
    try:
        with pytest.raises(TypeError, match="did you forget `await`"):
            lib.find_function("long ident(long)")(ctx, coro)
    finally:
        coro.close()


def test_a_symbol_typo_suggests_the_name_once(lib):
    with pytest.raises(aioveo.SymbolNotFoundError) as info:
        lib.find_function("ad")
    msg = str(info.value)
    assert "did you mean 'add'" in msg
    assert msg.count("not found") == 1, msg


def test_a_bare_library_name_in_the_current_directory_hints_dot_slash(proc, kernels,
                                                                       tmp_path, monkeypatch):
    shutil.copy(kernels, tmp_path / "libmine.so")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(aioveo.VeoError, match=r"pass './libmine.so'"):
        proc.load_library("libmine.so")
    assert proc.load_library("./libmine.so").find_function("long add(long, long)")


@pytest.mark.asyncio
async def test_a_map_type_error_names_the_call_and_its_arguments(kernels):
    async with aioveo.open_proc(0) as p:
        add = (await p.load_library(kernels)).find_function("long add(long, long)")
        async with p.open_context() as c:
            with pytest.raises(TypeError) as info:
                await c.map(add, [(1, 2), (3, "x"), (5, 6)])
            notes = "\n".join(getattr(info.value, "__notes__", []))
            assert "call 1 of the batch" in notes and "(3, 'x')" in notes
            assert await c.map(add, [(1, 2)]) == [3]   # the context is still usable


