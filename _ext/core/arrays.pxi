# Typed device arrays.  A VEArray is VE memory with a proc, a size, a shape
# and a dtype, checked wherever it is used, as a VEMemPtr is: a transfer
# must fit it, it works only in its own proc, and a kernel parameter whose
# declared pointee type disagrees with its dtype refuses it (reinterpret
# explicitly with ``arr.view(dtype)``, or pass the untyped ``arr.ptr``).
# Views (``arr[i]``, ``arr[a:b]``, ``arr.view``, ``arr.reshape``) share the
# memory and keep the checks; only the array that owns it frees it.

cdef object _np = None
cdef dict _dtype_cache = {}


cdef object _numpy():
    global _np
    if _np is None:
        import numpy
        _np = numpy
    return _np


cdef object _as_dtype(object dtype):
    cdef object d = None
    try:
        d = _dtype_cache.get(dtype)
    except TypeError:          # an unhashable dtype description
        pass
    if d is None:
        d = _numpy().dtype(dtype)
        if len(_dtype_cache) < 256:
            try:
                _dtype_cache[dtype] = d
            except TypeError:
                pass
    return d


cdef tuple _as_shape(object shape):
    if isinstance(shape, int) or hasattr(shape, "__index__"):
        shape = (shape,)
    cdef list out = []
    for n in shape:
        n = operator.index(n)
        if n < 0:
            raise ValueError(f"negative dimension {n} in shape {tuple(shape)!r}")
        out.append(n)
    return tuple(out)


cdef Py_ssize_t _prod(tuple shape):
    cdef Py_ssize_t n = 1
    for d in shape:
        n *= <Py_ssize_t>d
    return n


def _array_layout(shape, dtype):
    """(shape tuple, numpy dtype, nbytes) of an array to allocate, checked:
    numeric dtypes only (bool, integers, floats, complex, plain structs)."""
    cdef tuple s = _as_shape(shape)
    d = _as_dtype(dtype)
    _check_numeric(d, "a VEArray")
    return s, d, _prod(s) * d.itemsize


cdef int _check_numeric(object d, str what) except -1:
    if d.hasobject or d.kind not in "biufcV" or (d.kind == "V" and d.names is None):
        raise TypeError(f"{what} cannot hold dtype {d}: VE memory holds numbers (bool, "
                        f"integers, floats, complex, structs of them), not Python objects, "
                        f"strings or raw bytes; convert first (arr.astype(...), or "
                        f"arr.view(numpy.uint8) for bytes)")
    return 0


class _Done:
    """What ``VEArray.free()`` returns: freeing never waits, but the awaited
    form ``await arr.free()`` keeps working."""
    __slots__ = ()

    def __await__(self):
        return iter(())

    def __repr__(self):
        return "<done>"


_DONE = _Done()


@cython.final
cdef class VEArray:
    """A numpy-shaped array in VE memory: ``ptr`` (a VEMemPtr of its proc,
    sized to the array), ``shape``, ``dtype``, ``ctx`` (the AsyncContext
    that made it) and ``base`` (the array a view looks into, else None).

    Made by ``ctx.to_ve(array)`` and ``ctx.empty(shape, dtype)`` from the
    proc's memory pool; passed to kernels as their pointer arguments
    (checked against the declared pointee type); freed with ``arr.free()``
    (never waits) or when the last reference to its memory goes."""
    cdef readonly VEMemPtr ptr
    cdef readonly tuple shape
    cdef readonly object dtype
    cdef readonly object ctx
    cdef readonly object base
    cdef readonly Py_ssize_t size
    cdef size_t nbytes_
    cdef char kind
    cdef int itemsize_
    cdef object __weakref__

    def __init__(self, ctx, VEMemPtr ptr not None, shape, dtype):
        """Wrap VE memory `ptr` (at least the array's size, when its size is
        known) as an array of `shape` and `dtype`."""
        s, d, nbytes = _array_layout(shape, dtype)
        if ptr.size and <size_t>nbytes > ptr.size:
            raise ValueError(f"a {s} {d} array needs {nbytes} bytes, more than the "
                             f"{ptr.size}-byte VE allocation {ptr!r}")
        _init_array(self, ctx, ptr, s, d, None)

    @staticmethod
    cdef VEArray _make(object ctx, VEMemPtr ptr, tuple shape, object dtype, object base):
        cdef VEArray a = VEArray.__new__(VEArray)
        _init_array(a, ctx, ptr, shape, dtype, base)
        return a

    # -- what it is
    @property
    def nbytes(self):
        return self.nbytes_

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def itemsize(self):
        return self.itemsize_

    @property
    def addr(self):
        return self.ptr.addr

    @property
    def proc(self):
        """The VeoProc whose memory this is."""
        return self.ptr.proc

    @property
    def freed(self):
        """Freed (``free()``, or the memory went with its pool or proc)."""
        return _ptr_freed(self.ptr)

    def __index__(self):
        """A VEArray passes as its VE address where an integer is wanted."""
        return self.ptr.addr

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d VEArray")
        return self.shape[0]

    def __repr__(self):
        state = ", freed" if _ptr_freed(self.ptr) else ""
        view = ", view" if self.base is not None else ""
        return (f"VEArray(shape={self.shape}, dtype={self.dtype}, addr=0x{self.ptr.addr:x}"
                f"{view}{state})")

    # -- views
    cdef VEArray _view(self, size_t offset, tuple shape, object dtype):
        cdef VEMemPtr p = VEMemPtr.__new__(VEMemPtr)
        cdef size_t n = _prod(shape) * dtype.itemsize
        p.proc = self.ptr.proc
        p.addr = self.ptr.addr + offset
        p.size = n
        p.block = self.ptr.block
        p.freed_ = self.ptr.freed_
        return VEArray._make(self.ctx, p, shape, dtype, self.base if self.base is not None else self)

    def __getitem__(self, key):
        """``arr[i]`` (the i-th row) and ``arr[a:b]`` (rows a to b): views of
        the same VE memory, contiguous (step 1 only)."""
        if type(key) is tuple:
            if len(<tuple>key) == 1:
                key = (<tuple>key)[0]
            elif len(<tuple>key) == 0:
                return self
            else:
                raise IndexError("VEArray views index the first axis only (arr[i], arr[a:b])")
        if key is Ellipsis:
            return self
        if not self.shape:
            raise IndexError("a 0-d VEArray cannot be indexed")
        cdef Py_ssize_t n0 = self.shape[0], start, stop, step, i
        cdef tuple rest = self.shape[1:]
        cdef size_t row = _prod(rest) * self.itemsize_
        if isinstance(key, slice):
            start, stop, step = key.indices(n0)
            if step != 1:
                raise ValueError("VEArray views are contiguous: slices with step 1 only "
                                 "(copy strided data on the host)")
            if stop < start:
                stop = start
            return self._view(start * row, (stop - start,) + rest, self.dtype)
        try:
            i = operator.index(key)
        except TypeError:
            raise TypeError(f"VEArray indices must be integers or slices, not "
                            f"{type(key).__name__}") from None
        if i < 0:
            i += n0
        if i < 0 or i >= n0:
            raise IndexError(f"index {key} is out of bounds for axis 0 with size {n0}")
        return self._view(i * row, rest, self.dtype)

    def view(self, dtype):
        """The same bytes as another dtype (numpy's ``view``): the explicit
        reinterpretation a kernel with another pointee type needs."""
        d = _as_dtype(dtype)
        _check_numeric(d, "a VEArray view")
        if d.itemsize == self.itemsize_:
            return self._view(0, self.shape, d)
        if not self.shape:
            raise ValueError(f"a 0-d {self.dtype} VEArray cannot be viewed as {d} "
                             f"(another item size)")
        cdef Py_ssize_t nd = len(self.shape)
        cdef Py_ssize_t last = self.shape[nd - 1] * self.itemsize_
        if last % d.itemsize:
            raise ValueError(f"the last axis ({last} bytes) is not a multiple of {d}'s "
                             f"{d.itemsize} bytes")
        return self._view(0, self.shape[:nd - 1] + (last // d.itemsize,), d)

    def reshape(self, *shape):
        """The same memory in another shape (one dimension may be -1)."""
        if len(shape) == 1 and not isinstance(shape[0], int):
            shape = tuple(shape[0])
        cdef list dims = [operator.index(n) for n in shape]
        if dims.count(-1) > 1:
            raise ValueError("only one dimension can be -1")
        if -1 in dims:
            known = _prod(tuple(n for n in dims if n != -1))
            if known == 0 or self.size % known:
                raise ValueError(f"cannot reshape {self.shape} into {tuple(dims)}")
            dims[dims.index(-1)] = self.size // known
        s = _as_shape(dims)
        if _prod(s) != self.size:
            raise ValueError(f"cannot reshape {self.shape} ({self.size} items) into {s}")
        return self._view(0, s, self.dtype)

    # -- freeing
    def free(self):
        """Give the memory back to the proc's pool at once, without waiting
        for the VE: it is reused only after every request already queued
        with it (aioveo tracks them) is done.  Views cannot free; ``await
        arr.free()`` also works."""
        if self.base is not None:
            raise ValueError("a view cannot be freed: free the array it views (arr.base)")
        blk = self.ptr.block
        if blk is None:   # an array over raw memory (VEArray(ctx, proc.alloc_mem(...), ...))
            if self.ctx is None:
                raise ValueError("this VEArray wraps raw VE memory and has no context: "
                                 "free its ptr with the proc")
            return self.ctx.free_mem(self.ptr)
        (<PoolBlock>blk).free()
        return _DONE


cdef void _init_array(VEArray a, object ctx, VEMemPtr ptr, tuple shape, object dtype, object base):
    a.ctx = ctx
    a.ptr = ptr
    a.shape = shape
    a.dtype = dtype
    a.base = base
    a.size = _prod(shape)
    a.itemsize_ = dtype.itemsize
    a.nbytes_ = a.size * a.itemsize_
    a.kind = ord(dtype.kind)


cdef int _check_array(VEArray a, object proc, str what) except -1:
    """`a` is usable in `proc` (not freed, not another proc's)."""
    if _ptr_freed(a.ptr):
        raise ClosedError(f"{what}: {a!r} was freed")
    if a.ptr.proc is not proc:
        raise ValueError(f"{what}: {a!r} belongs to another proc")
    return 0


# The pointee of a pointer parameter, as the dtype a VEArray passed to it
# must have: a kind ('f', 'i', 'u', 'b'; 'p' for a pointer to pointers, any
# 8-byte integer) and an item size; kind 0 accepts any dtype (void, char,
# unsigned char, structs: byte-wise or opaque access).
cdef int _pointee(object ctype, char *kind, int *size) except -1:
    kind[0] = 0
    size[0] = 0
    if ctype.kind != "pointer":
        return 0
    cdef str full = ctype.name
    name = full[:len(full) - 1].rstrip()
    if name in ("void", "char", "unsigned char") or name.split(" ", 1)[0] in ("struct", "union", "enum"):
        return 0
    from ._ctype import parse_type
    try:
        t = parse_type(name)
    except ValueError:
        return 0
    if t.kind == "pointer":
        kind[0], size[0] = ord("p"), 8
    elif t.kind == "float":
        kind[0], size[0] = ord("f"), t.size
    elif t.kind == "int":
        if t.name == "bool":
            kind[0], size[0] = ord("b"), 1
        else:
            kind[0], size[0] = ord("i") if t.signed else ord("u"), t.size
    return 0


cdef inline bint _fits_pointee(VEArray a, char kind, int size) noexcept:
    if kind == 0:
        return True
    if kind == 112:    # 'p': pointers are 8-byte integers
        return (a.kind == 105 or a.kind == 117) and a.itemsize_ == 8
    return a.kind == kind and a.itemsize_ == size


cdef str _pointee_dtype(char kind, int size):
    if kind == 112:
        return "uint64"
    return {102: "float", 105: "int", 117: "uint", 98: "bool"}[kind] + (
        "" if kind == 98 else str(8 * size))
