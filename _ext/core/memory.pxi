# Host buffers, VE addresses and stack arguments: what a transfer or a call
# may point the VE at, checked before libveo sees it.

cdef uint64_t HMEM_FLAG = 1ULL << 63
cdef uint64_t HMEM_MASK = 0xF8ULL << 56   # bit 63 + the 4-bit proc identifier


@cython.final
cdef class _HostBuffer:
    """A Python buffer held (and so kept alive and unmovable) until released."""
    cdef Py_buffer view
    cdef bint held

    @staticmethod
    cdef _HostBuffer get(object obj, bint writable, str arg_name):
        cdef _HostBuffer b = _HostBuffer.__new__(_HostBuffer)
        cdef int flags = PyBUF_ANY_CONTIGUOUS | (PyBUF_WRITABLE if writable else 0)
        try:
            PyObject_GetBuffer(obj, &b.view, flags)
        except (TypeError, BufferError, ValueError) as e:
            # not a buffer at all: TypeError; a read-only or strided one: BufferError
            need = "a writable contiguous buffer" if writable else "a contiguous buffer"
            kind = TypeError if isinstance(e, TypeError) else BufferError
            raise kind(f"{arg_name} must be {need} (bytearray, numpy array, ...), "
                       f"got {type(obj).__name__}: {e}") from None
        b.held = True
        return b

    cdef inline void release(self):
        if self.held:
            self.held = False
            PyBuffer_Release(&self.view)

    def __dealloc__(self):
        self.release()


cdef size_t _transfer_size(_HostBuffer buf, object size, str arg_name) except? 0:
    if size is None:
        return <size_t>buf.view.len
    if size < 0:
        raise ValueError(f"size must be >= 0, not {size}")
    if size > buf.view.len:
        raise ValueError(f"{arg_name} holds {buf.view.len} bytes, fewer than size={size}")
    return <size_t>size


@cython.freelist(32)
cdef class VEMemPtr:
    """A VE address (``addr``) of ``proc``, with the allocation's ``size`` when known.

    Usable wherever an address is accepted (``int(ptr)``, arithmetic ``ptr + n``)."""
    cdef readonly uint64_t addr
    cdef readonly size_t size
    cdef readonly object proc
    cdef bint freed_             # set by free_mem: using it again is an error
    cdef readonly object block   # the memory pool's PoolBlock it lies in, or None

    def __init__(self, proc, uint64_t addr, size_t size=0):
        self.proc = proc
        self.addr = addr
        self.size = size

    @property
    def freed(self):
        """Freed (``free_mem``, or its pool block was freed): using it raises ClosedError."""
        return _ptr_freed(self)

    def __index__(self):
        return self.addr

    def __int__(self):
        return self.addr

    def __add__(self, offset):
        off = operator.index(offset)
        if off < 0 or (self.size and off > self.size):
            raise ValueError(f"offset {off} is outside the {self.size}-byte allocation")
        cdef VEMemPtr r = VEMemPtr(self.proc, self.addr + off, self.size - off if self.size else 0)
        r.block = self.block
        r.freed_ = self.freed_
        return r

    def __radd__(self, offset):
        return self.__add__(offset)

    def __eq__(self, other):
        if isinstance(other, VEMemPtr):
            return (<VEMemPtr>other).addr == self.addr and (<VEMemPtr>other).proc is self.proc
        return NotImplemented

    def __hash__(self):
        return hash((self.addr, id(self.proc)))

    def __repr__(self):
        size = f", size {self.size}" if self.size else ""
        pool = " (memory pool)" if self.block is not None else ""
        return f"<VEMemPtr 0x{self.addr:x}{size}{pool} of {self.proc!r}>"


cdef inline bint _ptr_freed(VEMemPtr p) noexcept:
    """Freed itself (free_mem), or its pool block was freed (or its proc's pool closed)."""
    return p.freed_ or (p.block is not None and (<PoolBlock>p.block)._dead())


cdef uint64_t _ve_addr(object proc, object ptr, str arg_name, size_t need) except? 0:
    """The VE address `ptr` (a VEMemPtr of `proc` or an int) names, hmem flags
    cleared; `arg_name` names the argument in errors."""
    cdef uint64_t addr
    cdef VEMemPtr p
    cdef VEArray a
    if type(ptr) is VEMemPtr:
        p = <VEMemPtr>ptr
        if _ptr_freed(p):
            raise ClosedError(f"{arg_name} {p!r} was freed")
        if p.proc is not proc:
            raise ValueError(f"{arg_name} {p!r} belongs to another proc")
        if p.size and need > p.size:
            raise ValueError(f"{arg_name}: {need} bytes do not fit the {p.size}-byte VE allocation")
        addr = p.addr
    elif type(ptr) is VEArray:
        a = <VEArray>ptr
        _check_array(a, proc, arg_name)
        if need > a.nbytes_:
            raise ValueError(f"{arg_name}: {need} bytes do not fit the {a.nbytes_}-byte {a!r}")
        addr = a.ptr.addr
    else:
        try:
            value = operator.index(ptr)
        except TypeError:
            raise TypeError(f"{arg_name} must be a VEMemPtr or an int address, "
                            f"not {type(ptr).__name__}") from None
        if value < 0 or value >= 2**64:
            raise OverflowError(f"{arg_name} {value} is not a 64-bit VE address")
        addr = value
    if addr & HMEM_FLAG:
        addr &= ~HMEM_MASK
    return addr


cdef class OnStack:
    """A host buffer passed by reference: copied to the VE stack before the call
    (IN, INOUT) and back into the buffer when the request completes (OUT, INOUT)."""
    cdef _HostBuffer _buf
    cdef readonly object buff
    cdef size_t _size
    cdef int _inout

    def __init__(self, buff, size=None, inout=VEO_INTENT_IN):
        if inout not in (VEO_INTENT_IN, VEO_INTENT_INOUT, VEO_INTENT_OUT):
            raise ValueError(f"inout must be VEO_INTENT_IN, _INOUT or _OUT, not {inout!r}")
        self._buf = _HostBuffer.get(buff, inout != VEO_INTENT_IN, "OnStack buffer")
        if size is not None and size <= 0:
            raise ValueError(f"OnStack size must be > 0, not {size}")
        self._size = _transfer_size(self._buf, size, "OnStack buffer")
        if self._size == 0:
            raise ValueError("OnStack buffer is empty")
        self.buff = buff
        self._inout = inout

    def c_pointer(self):
        return <uintptr_t>self._buf.view.buf

    def scope(self):
        return self._inout

    def size(self):
        return self._size

    def __repr__(self):
        intent = ("IN", "INOUT", "OUT")[self._inout]
        return f"<OnStack {self._size} bytes {intent}>"
