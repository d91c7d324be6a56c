"""Typed device arrays: a VEArray is checked wherever it is used, as a
VEMemPtr is (bounds, proc, freed), and against the declared pointee type of
the kernel parameter it is passed to."""
from __future__ import annotations

import numpy as np
import pytest
import pytest_asyncio

import aioveo


class K:
    def __init__(self, lib):
        self.dsum = lib.find_function("double dsum(const double *x, long n)")
        self.fsum = lib.find_function("float fsum(const float *x, int n)")
        self.scale = lib.find_function("long scale(double *x, long n, double f)")
        self.fill = lib.find_function("void fill(char *p, long n, int c)")
        self.echo_ptr = lib.find_function("void *echo_ptr(void *x)")
        self.slow_fill = lib.find_function("long slow_fill(long ms, long *out, long n)")
        self.ulong_fill = lib.find_function("long slow_fill(long ms, unsigned long *out, long n)")


@pytest_asyncio.fixture
async def env(aio_lib):
    async with aioveo.open_proc(0) as proc, proc.open_context() as ctx:
        yield proc, ctx, K(await proc.load_library(aio_lib))


@pytest.mark.asyncio
async def test_transfers_are_bounded_by_the_array(env):
    proc, ctx, k = env
    v = await ctx.empty(4, np.float64)                       # 32 bytes
    neighbour = await ctx.to_ve(np.arange(4.0))
    with pytest.raises(ValueError, match="96 bytes do not fit the 32-byte"):
        await ctx.write_mem(v, np.full(12, -1.0))            # small: copied inline
    with pytest.raises(ValueError, match="do not fit"):
        await (await ctx.submit_write_mem(v, np.full(12, -1.0)))   # queued
    with pytest.raises(ValueError, match="128 bytes do not fit"):
        await ctx.read_mem(np.zeros(16), v)
    with pytest.raises(ValueError, match="do not fit"):
        await proc.write_mem(v, np.full(12, -1.0))
    np.testing.assert_array_equal(await ctx.from_ve(neighbour), np.arange(4.0))  # untouched
    await ctx.write_mem(v, np.full(4, 7.0))                  # exactly its size is fine
    np.testing.assert_array_equal(await ctx.from_ve(v), np.full(4, 7.0))


@pytest.mark.asyncio
async def test_another_procs_array_is_refused(aio_lib):
    async with aioveo.open_proc(0) as p0, aioveo.open_proc(1) as p1:
        c0, c1 = await p0.open_context(), await p1.open_context()
        k1 = K(await p1.load_library(aio_lib))
        v0 = await c0.to_ve(np.arange(8.0))
        with pytest.raises(ValueError, match="belongs to another proc"):
            await c1.call(k1.dsum, v0, 8)
        with pytest.raises(ValueError, match="belongs to another proc"):
            await c1.read_mem(np.zeros(8), v0)
        with pytest.raises(ValueError, match="belongs to another proc"):
            await c1.write_mem(v0, np.zeros(8))
        assert await c0.call(K(await p0.load_library(aio_lib)).dsum, v0, 8) == 28.0
        v0.free()


@pytest.mark.asyncio
async def test_dtype_must_match_the_declared_pointee(env):
    proc, ctx, k = env
    f = await ctx.to_ve(np.arange(8, dtype=np.float32))
    with pytest.raises(TypeError, match=r"dsum\(\) argument 1 \(double \*\): a VEArray of "
                                        r"float32 .* needs float64.*view\(numpy.float64\)"):
        await ctx.call(k.dsum, f, 4)
    assert await ctx.call(k.fsum, f, 8) == 28.0              # the right type
    # explicit reinterpretation: the same 32 bytes as 4 doubles, or the untyped address
    assert f.view(np.float64).shape == (4,)
    assert isinstance(await ctx.call(k.dsum, f.view(np.float64), 4), float)
    assert isinstance(await ctx.call(k.dsum, f.ptr, 4), float)
    # void * and char * take any dtype (opaque or byte-wise access)
    assert await ctx.call(k.echo_ptr, f) == f.ptr
    await ctx.call(k.fill, f, 32, 0)
    np.testing.assert_array_equal(await ctx.from_ve(f), np.zeros(8, np.float32))
    # signedness counts: long * takes int64, unsigned long * takes uint64
    i = await ctx.empty(4, np.int64)
    assert await ctx.call(k.slow_fill, 0, i, 4) == 4
    with pytest.raises(TypeError, match="needs uint64"):
        await ctx.call(k.ulong_fill, 0, i, 4)
    assert await ctx.call(k.ulong_fill, 0, i.view(np.uint64), 4) == 4
    np.testing.assert_array_equal(await ctx.from_ve(i), np.arange(4) * 3)


@pytest.mark.asyncio
async def test_from_ve_and_to_ve_check_dtype_and_size(env):
    proc, ctx, k = env
    v = await ctx.to_ve(np.arange(8.0))
    with pytest.raises(TypeError, match="dtype float32, the VEArray float64"):
        await ctx.from_ve(v, np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="out has 4 items, the VEArray 8"):
        await ctx.from_ve(v, np.zeros(4))
    with pytest.raises(ValueError, match="out has 16 items"):
        await ctx.from_ve(v, np.zeros(16))
    out = np.zeros((2, 4))                                   # same size, other shape: fine
    await ctx.from_ve(v, out)
    np.testing.assert_array_equal(out.ravel(), np.arange(8.0))
    with pytest.raises(TypeError, match="from_ve copies a VEArray"):
        await ctx.from_ve(v.ptr)                             # type: ignore[arg-type]
    for bad in (np.array([object(), 1]), np.array(["text"]), np.array([b"bytes"]),
                np.array(["2024-01-01"], dtype="datetime64[D]")):
        with pytest.raises(TypeError, match="cannot hold dtype"):
            await ctx.to_ve(bad)
    rec = np.zeros(3, dtype=[("x", np.int32), ("w", np.float64)])
    rec["w"] = [1, 2, 3]
    back = await ctx.from_ve(await ctx.to_ve(rec))           # structs of numbers are fine
    np.testing.assert_array_equal(back["w"], [1, 2, 3])
    c = await ctx.to_ve(np.array([1 + 2j, 3 - 4j]))
    np.testing.assert_array_equal(await ctx.from_ve(c), [1 + 2j, 3 - 4j])


@pytest.mark.asyncio
async def test_views_and_slices_keep_the_checks(env):
    proc, ctx, k = env
    v = await ctx.to_ve(np.arange(10.0))
    part = v[2:5]
    assert part.shape == (3,) and part.base is v and part.addr == v.addr + 16
    assert await ctx.call(k.dsum, part, 3) == 2 + 3 + 4
    assert await ctx.call(k.dsum, v[-3:], 3) == 7 + 8 + 9
    with pytest.raises(ValueError, match="do not fit the 24-byte"):
        await ctx.write_mem(part, np.zeros(4))                # bounded by the view
    await ctx.write_mem(part, np.full(3, -1.0))
    np.testing.assert_array_equal(await ctx.from_ve(v),
                                  [0, 1, -1, -1, -1, 5, 6, 7, 8, 9])
    with pytest.raises(ValueError, match="step 1"):
        v[::2]
    with pytest.raises(IndexError, match="out of bounds"):
        v[10]
    assert v[3:3].nbytes == 0 and v[8:100].shape == (2,)
    m = v.reshape(2, 5)
    assert m[1].shape == (5,) and m[1].addr == v.addr + 40
    assert await ctx.call(k.dsum, m[1], 5) == 5 + 6 + 7 + 8 + 9
    assert v.reshape(-1, 2).shape == (5, 2)
    with pytest.raises(ValueError, match="cannot reshape"):
        v.reshape(3, 3)
    with pytest.raises(ValueError, match="a view cannot be freed"):
        part.free()
    assert not part.freed
    v.free()
    assert v.freed and part.freed and m[1].freed              # views go with their base
    with pytest.raises(aioveo.ClosedError, match="was freed"):
        await ctx.call(k.dsum, part, 3)
    with pytest.raises(aioveo.ClosedError, match="was freed"):
        await ctx.read_mem(np.zeros(3), part)
    with pytest.raises(aioveo.ClosedError, match="was freed"):
        await ctx.from_ve(v)
    with pytest.raises(aioveo.ClosedError, match="already freed"):
        v.free()


@pytest.mark.asyncio
async def test_free_never_waits_and_the_awaited_form_still_works(env):
    proc, ctx, k = env
    v = await ctx.to_ve(np.arange(4.0))
    await v.free()                                           # the old, awaited form
    assert v.freed
    ptr = await ctx.alloc_mem(64)
    assert ptr.block is not None and ptr.size == 64
    with pytest.raises(ValueError, match="memory-pool memory"):
        proc.sync.free_mem(ptr)                              # not a raw VEO allocation
    await ctx.free_mem(ptr)
    assert ptr.block.freed
    with pytest.raises(aioveo.ClosedError):
        await ctx.write_mem(ptr, b"x" * 8)


@pytest.mark.asyncio
async def test_vearray_over_raw_memory(env):
    """The public constructor still wraps raw VEO memory (checked the same way)."""
    proc, ctx, k = env
    raw = proc.sync.alloc_mem(32)
    v = aioveo.VEArray(ctx, raw, (4,), np.float64)
    await ctx.write_mem(v, np.arange(4.0))
    assert await ctx.call(k.dsum, v, 4) == 6.0
    with pytest.raises(ValueError, match="needs 64 bytes, more than the 32-byte"):
        aioveo.VEArray(ctx, raw, (8,), np.float64)
    await v.free()                                           # raw: freed through the context
    assert raw.freed
