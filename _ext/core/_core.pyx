# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True
"""aioveo's native core: the VEO C API and the PyVEO object model on it.

libveo is opened at run time (see ``aioveo._paths.select_libveo``), so the same
build drives the vendor library on a machine with Vector Engines and the bundled
emulator everywhere else.  Every blocking libveo call runs without the GIL.

Object model (PyVEO's, same names): a ``VeoProc`` owns its ``VeoLibrary``s
(``proc.lib``) and ``VeoCtxt``s (``proc.context``); ``VeoFunction(ctx, *args)``
submits a call and returns a ``VeoRequest``; ``VEMemPtr`` is a VE address.

Lifetime rules that keep the interpreter safe:
- a request owns its ``veo_args`` and every host buffer the VE may still touch
  (stack arguments, async transfer buffers) until its result is collected; a
  request dropped before that hands them to its context, which frees them once
  the VE is done (contexts complete in order);
- a destroyed proc or closed context turns every later use into ClosedError,
  never into a call on a stale handle.
"""
import atexit
import logging
import operator
import os
import signal
import threading
import weakref

cimport cython
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_ANY_CONTIGUOUS,
                             PyBUF_WRITABLE)
from libc.stdint cimport (uint64_t, int64_t, uint32_t, int32_t, uint16_t, int16_t, uint8_t,
                          int8_t, uintptr_t)
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.string cimport memcpy
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from libveo cimport (Api, veo_proc_handle, veo_thr_ctxt, veo_args, veo_args_intent,
                     VEO_MAX_NUM_ARGS, VEO_REQUEST_ID_INVALID,
                     VEO_COMMAND_OK as C_OK, VEO_COMMAND_EXCEPTION as C_EXCEPTION,
                     VEO_COMMAND_UNFINISHED as C_UNFINISHED, VEO_STATE_EXIT as C_STATE_EXIT)

log = logging.getLogger("aioveo")

cdef class VeoProc
cdef class VeoCtxt
cdef class VeoLibrary

from posix.dlfcn cimport dlopen, dlsym, dlerror, RTLD_NOW, RTLD_GLOBAL


# ---- constants (PyVEO's names) ---------------------------------------------------
VEO_INTENT_IN = 0
VEO_INTENT_INOUT = 1
VEO_INTENT_OUT = 2
INTENT_IN, INTENT_INOUT, INTENT_OUT = VEO_INTENT_IN, VEO_INTENT_INOUT, VEO_INTENT_OUT

VEO_COMMAND_OK = 0
VEO_COMMAND_EXCEPTION = 1
VEO_COMMAND_ERROR = 2
VEO_COMMAND_UNFINISHED = 3
COMMAND_OK, COMMAND_EXCEPTION, COMMAND_ERROR, COMMAND_UNFINISHED = 0, 1, 2, 3

VEO_STATE_UNKNOWN, VEO_STATE_RUNNING, VEO_STATE_SYSCALL, VEO_STATE_BLOCKED, VEO_STATE_EXIT = range(5)
STATE_UNKNOWN, STATE_RUNNING, STATE_SYSCALL, STATE_BLOCKED, STATE_EXIT = range(5)

# Value codes: the emulator's return-type enum (veo_emu_type), plus pointers.
cdef enum:
    T_U64 = 0
    T_VOID = 1
    T_I8 = 2
    T_U8 = 3
    T_I16 = 4
    T_U16 = 5
    T_I32 = 6
    T_U32 = 7
    T_I64 = 8
    T_FLOAT = 9
    T_DOUBLE = 10
    T_PTR = 11     # passed as u64; a returned pointer becomes a VEMemPtr

cdef uint64_t HMEM_FLAG = 1ULL << 63
cdef uint64_t HMEM_MASK = 0xF8ULL << 56   # bit 63 + the 4-bit proc identifier


# ---- exceptions ------------------------------------------------------------------
class VeoError(RuntimeError):
    """A VEO operation failed (PyVEO raised RuntimeError: this is one)."""


class VeoException(VeoError, ArithmeticError):
    """The kernel raised an exception on the VE (a fault, a trap or an abort);
    PyVEO raised ArithmeticError.  ``signal`` is the signal number when known."""

    def __init__(self, message, signal=None):
        super().__init__(message)
        self.signal = signal


class Unfinished(VeoError, NameError):
    """``peek_result()`` on a request the VE has not finished (PyVEO: NameError)."""


class ClosedError(VeoError):
    """The proc was destroyed, the context closed or the VE memory freed."""


class ProcDeadError(VeoError):
    """The VE process died (a kernel crashed or the process was killed)."""


class SymbolNotFoundError(VeoError, AttributeError):
    """A symbol is not in the library (an AttributeError too, so ``hasattr``
    and ``getattr(lib, name, None)`` work)."""


# ---- the library -----------------------------------------------------------------
cdef Api api
cdef bint api_loaded = False
cdef object _backend = None
_load_lock = threading.Lock()


cdef void *_sym(void *h, const char *name, bint required) except? NULL:
    cdef void *f = dlsym(h, name)
    if f == NULL and required:
        raise ImportError(f"libveo lacks the required function {name.decode()}")
    return f


class Backend:
    """Which libveo aioveo drives: ``kind`` is "emulator" or "vendor"."""

    __slots__ = ("kind", "path", "version", "api_version", "reason")

    def __init__(self, kind, path, version, api_version, reason):
        self.kind, self.path, self.version = kind, path, version
        self.api_version, self.reason = api_version, reason

    @property
    def is_emulator(self):
        return self.kind == "emulator"

    def __repr__(self):
        return (f"Backend(kind={self.kind!r}, path={self.path!r}, version={self.version!r}, "
                f"api_version={self.api_version})")


cdef int _ensure_api() except -1:
    global api_loaded, _backend
    if api_loaded:
        return 0
    with _load_lock:
        if api_loaded:
            return 0
        from ._paths import select_libveo
        path, reason = select_libveo()
        bpath = os.fsencode(path)
        h = dlopen(bpath, RTLD_NOW | RTLD_GLOBAL)
        if h == NULL:
            raise ImportError(f"cannot load libveo {path} ({reason}): {dlerror().decode()}")
        _fill_api(h)
        version = api.version_string().decode() if api.version_string != NULL else "unknown"
        api_ver = api.api_version() if api.api_version != NULL else 0
        kind = "emulator" if api.emu_helper_path != NULL else "vendor"
        _backend = Backend(kind, os.fspath(path), version, api_ver, reason)
        api_loaded = True
        log.debug("aioveo: loaded %r", _backend)
    return 0


cdef int _fill_api(void *h) except -1:
    api.proc_create = <veo_proc_handle *(*)(int) noexcept nogil>_sym(h, b"veo_proc_create", True)
    api.proc_create_static = <veo_proc_handle *(*)(int, char *) noexcept nogil>_sym(h, b"veo_proc_create_static", True)
    api.proc_destroy = <int (*)(veo_proc_handle *) noexcept nogil>_sym(h, b"veo_proc_destroy", True)
    api.load_library = <uint64_t (*)(veo_proc_handle *, const char *) noexcept nogil>_sym(h, b"veo_load_library", True)
    api.unload_library = <int (*)(veo_proc_handle *, const uint64_t) noexcept nogil>_sym(h, b"veo_unload_library", True)
    api.get_sym = <uint64_t (*)(veo_proc_handle *, uint64_t, const char *) noexcept nogil>_sym(h, b"veo_get_sym", True)
    api.alloc_mem = <int (*)(veo_proc_handle *, uint64_t *, const size_t) noexcept nogil>_sym(h, b"veo_alloc_mem", True)
    api.free_mem = <int (*)(veo_proc_handle *, uint64_t) noexcept nogil>_sym(h, b"veo_free_mem", True)
    api.read_mem = <int (*)(veo_proc_handle *, void *, uint64_t, size_t) noexcept nogil>_sym(h, b"veo_read_mem", True)
    api.write_mem = <int (*)(veo_proc_handle *, uint64_t, const void *, size_t) noexcept nogil>_sym(h, b"veo_write_mem", True)
    api.context_open = <veo_thr_ctxt *(*)(veo_proc_handle *) noexcept nogil>_sym(h, b"veo_context_open", True)
    api.context_close = <int (*)(veo_thr_ctxt *) noexcept nogil>_sym(h, b"veo_context_close", True)
    api.get_context_state = <int (*)(veo_thr_ctxt *) noexcept nogil>_sym(h, b"veo_get_context_state", True)
    api.args_alloc = <veo_args *(*)() noexcept nogil>_sym(h, b"veo_args_alloc", True)
    api.args_free = <void (*)(veo_args *) noexcept nogil>_sym(h, b"veo_args_free", True)
    api.args_set_i64 = <int (*)(veo_args *, int, int64_t) noexcept nogil>_sym(h, b"veo_args_set_i64", True)
    api.args_set_u64 = <int (*)(veo_args *, int, uint64_t) noexcept nogil>_sym(h, b"veo_args_set_u64", True)
    api.args_set_i32 = <int (*)(veo_args *, int, int32_t) noexcept nogil>_sym(h, b"veo_args_set_i32", True)
    api.args_set_u32 = <int (*)(veo_args *, int, uint32_t) noexcept nogil>_sym(h, b"veo_args_set_u32", True)
    api.args_set_i16 = <int (*)(veo_args *, int, int16_t) noexcept nogil>_sym(h, b"veo_args_set_i16", True)
    api.args_set_u16 = <int (*)(veo_args *, int, uint16_t) noexcept nogil>_sym(h, b"veo_args_set_u16", True)
    api.args_set_i8 = <int (*)(veo_args *, int, int8_t) noexcept nogil>_sym(h, b"veo_args_set_i8", True)
    api.args_set_u8 = <int (*)(veo_args *, int, uint8_t) noexcept nogil>_sym(h, b"veo_args_set_u8", True)
    api.args_set_double = <int (*)(veo_args *, int, double) noexcept nogil>_sym(h, b"veo_args_set_double", True)
    api.args_set_float = <int (*)(veo_args *, int, float) noexcept nogil>_sym(h, b"veo_args_set_float", True)
    api.args_set_stack = <int (*)(veo_args *, veo_args_intent, int, char *, size_t) noexcept nogil>_sym(h, b"veo_args_set_stack", True)
    api.call_async = <uint64_t (*)(veo_thr_ctxt *, uint64_t, veo_args *) noexcept nogil>_sym(h, b"veo_call_async", True)
    api.call_peek_result = <int (*)(veo_thr_ctxt *, uint64_t, uint64_t *) noexcept nogil>_sym(h, b"veo_call_peek_result", True)
    api.call_wait_result = <int (*)(veo_thr_ctxt *, uint64_t, uint64_t *) noexcept nogil>_sym(h, b"veo_call_wait_result", True)
    api.async_read_mem = <uint64_t (*)(veo_thr_ctxt *, void *, uint64_t, size_t) noexcept nogil>_sym(h, b"veo_async_read_mem", True)
    api.async_write_mem = <uint64_t (*)(veo_thr_ctxt *, uint64_t, const void *, size_t) noexcept nogil>_sym(h, b"veo_async_write_mem", True)
    api.context_sync = <void (*)(veo_thr_ctxt *) noexcept nogil>_sym(h, b"veo_context_sync", False)
    api.get_context = <veo_thr_ctxt *(*)(veo_proc_handle *, int) noexcept nogil>_sym(h, b"veo_get_context", False)
    api.proc_identifier = <int (*)(veo_proc_handle *) noexcept nogil>_sym(h, b"veo_proc_identifier", False)
    api.version_string = <const char *(*)() noexcept nogil>_sym(h, b"veo_version_string", False)
    api.api_version = <int (*)() noexcept nogil>_sym(h, b"veo_api_version", False)
    api.alloc_hmem = <int (*)(veo_proc_handle *, void **, const size_t) noexcept nogil>_sym(h, b"veo_alloc_hmem", False)
    api.free_hmem = <int (*)(void *) noexcept nogil>_sym(h, b"veo_free_hmem", False)
    api.emu_args_set_ret_type = <int (*)(veo_args *, int) noexcept nogil>_sym(h, b"veo_emu_args_set_ret_type", False)
    api.emu_last_error = <const char *(*)() noexcept nogil>_sym(h, b"veo_emu_last_error", False)
    api.emu_proc_pid = <int (*)(veo_proc_handle *) noexcept nogil>_sym(h, b"veo_emu_proc_pid", False)
    api.emu_helper_path = <const char *(*)() noexcept nogil>_sym(h, b"veo_emu_helper_path", False)
    api.emu_num_nodes = <int (*)() noexcept nogil>_sym(h, b"veo_emu_num_nodes", False)
    api.emu_node_memory = <uint64_t (*)() noexcept nogil>_sym(h, b"veo_emu_node_memory", False)
    return 0


def backend():
    """The loaded libveo (loading it on first use): a ``Backend``."""
    _ensure_api()
    return _backend


def emulator_info():
    """The emulator's nodes, memory per node and helper path (None on vendor libveo)."""
    _ensure_api()
    if api.emu_helper_path == NULL:
        return None
    return {"nodes": api.emu_num_nodes(), "node_memory": api.emu_node_memory(),
            "helper": api.emu_helper_path().decode()}


cdef str _why(str what):
    """`what`, plus the emulator's own explanation of the last failure."""
    cdef const char *msg
    if api.emu_last_error != NULL:
        msg = api.emu_last_error()
        if msg != NULL and msg[0] != 0:
            return f"{what}: {msg.decode(errors='replace')}"
    return what


# ---- host buffers ----------------------------------------------------------------
@cython.final
cdef class _HostBuffer:
    """A Python buffer held (and so kept alive and unmovable) until released."""
    cdef Py_buffer view
    cdef bint held

    @staticmethod
    cdef _HostBuffer get(object obj, bint writable, str what):
        cdef _HostBuffer b = _HostBuffer.__new__(_HostBuffer)
        cdef int flags = PyBUF_ANY_CONTIGUOUS | (PyBUF_WRITABLE if writable else 0)
        try:
            PyObject_GetBuffer(obj, &b.view, flags)
        except (TypeError, BufferError, ValueError) as e:
            # not a buffer at all: TypeError; a read-only or strided one: BufferError
            need = "a writable contiguous buffer" if writable else "a contiguous buffer"
            kind = TypeError if isinstance(e, TypeError) else BufferError
            raise kind(f"{what} must be {need} (bytearray, numpy array, ...), "
                       f"got {type(obj).__name__}: {e}") from None
        b.held = True
        return b

    cdef inline void release(self):
        if self.held:
            self.held = False
            PyBuffer_Release(&self.view)

    def __dealloc__(self):
        self.release()


cdef size_t _transfer_size(_HostBuffer buf, object size, str what) except? 0:
    if size is None:
        return <size_t>buf.view.len
    if size < 0:
        raise ValueError(f"size must be >= 0, not {size}")
    if size > buf.view.len:
        raise ValueError(f"{what} holds {buf.view.len} bytes, fewer than size={size}")
    return <size_t>size


# ---- VE addresses ----------------------------------------------------------------
@cython.freelist(32)
cdef class VEMemPtr:
    """A VE address (``addr``) of ``proc``, with the allocation's ``size`` when known.

    Usable wherever an address is accepted (``int(ptr)``, arithmetic ``ptr + n``)."""
    cdef readonly uint64_t addr
    cdef readonly size_t size
    cdef readonly object proc
    cdef readonly bint freed     # set by free_mem: using it again is an error

    def __init__(self, proc, uint64_t addr, size_t size=0):
        self.proc = proc
        self.addr = addr
        self.size = size

    def __index__(self):
        return self.addr

    def __int__(self):
        return self.addr

    def __add__(self, offset):
        off = operator.index(offset)
        if off < 0 or (self.size and off > self.size):
            raise ValueError(f"offset {off} is outside the {self.size}-byte allocation")
        return VEMemPtr(self.proc, self.addr + off, self.size - off if self.size else 0)

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
        return f"<VEMemPtr 0x{self.addr:x}{size} of {self.proc!r}>"


cdef uint64_t _ve_addr(object proc, object ptr, str what, size_t need) except? 0:
    """The VE address `ptr` (a VEMemPtr of `proc` or an int) names, hmem flags cleared."""
    cdef uint64_t addr
    cdef VEMemPtr p
    if type(ptr) is VEMemPtr:
        p = <VEMemPtr>ptr
        if p.freed:
            raise ClosedError(f"{what} {p!r} was freed")
        if p.proc is not proc:
            raise ValueError(f"{what} {p!r} belongs to another proc")
        if p.size and need > p.size:
            raise ValueError(f"{what}: {need} bytes do not fit the {p.size}-byte VE allocation")
        addr = p.addr
    else:
        try:
            value = operator.index(ptr)
        except TypeError:
            raise TypeError(f"{what} must be a VEMemPtr or an int address, "
                            f"not {type(ptr).__name__}") from None
        if value < 0 or value >= 2**64:
            raise OverflowError(f"{what} {value} is not a 64-bit VE address")
        addr = value
    if addr & HMEM_FLAG:
        addr &= ~HMEM_MASK
    return addr


# ---- stack arguments ---------------------------------------------------------------
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


cdef inline uint64_t _now_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <uint64_t>t.tv_sec * 1000000000ULL + <uint64_t>t.tv_nsec


cdef object _spot(VeoCtxt ctx, uint64_t req, double max_us):
    cdef uint64_t ret = 0
    cdef int rc, i
    cdef veo_thr_ctxt *h = ctx.handle_
    if h == NULL:
        return None
    cdef uint64_t end = _now_ns() + <uint64_t>(max_us * 1000.0)
    while True:
        for i in range(8):
            rc = api.call_peek_result(h, req, &ret)
            if rc != C_UNFINISHED:
                return rc, ret
        if _now_ns() >= end:
            return None


cdef void _release_all(object keep):
    """Release the host buffers a finished request held."""
    if keep is not None:
        for b in keep:
            if type(b) is _HostBuffer:
                (<_HostBuffer>b).release()


# ---- requests --------------------------------------------------------------------
@cython.final
@cython.no_gc_clear
@cython.freelist(64)
cdef class VeoRequest:
    """A submitted call or transfer.  ``wait_result()`` blocks (without the GIL)
    and returns the converted result; ``peek_result()`` raises ``Unfinished``
    until the VE is done.  A result is collected once."""
    cdef readonly VeoCtxt ctx
    cdef readonly uint64_t req
    cdef int ret_code
    cdef veo_args *args
    cdef object keep          # buffers the VE may still touch, or None
    cdef readonly bint collected

    @property
    def req_id(self):
        return self.req

    @property
    def ctx_handle(self):
        return <uintptr_t>self.ctx.handle

    def __repr__(self):
        return f"<VeoRequest {self.req} on {self.ctx!r}{' collected' if self.collected else ''}>"

    cdef inline void _release(self):
        if self.args != NULL:
            api.args_free(self.args)
            self.args = NULL
        _release_all(self.keep)
        self.keep = None

    cpdef finish(self, int status, uint64_t retval):
        """Turn a raw (status, retval) from libveo into the result or exception,
        releasing what the request held exactly once."""
        if self.collected:
            raise VeoError(f"the result of request {self.req} was already collected")
        self.collected = True
        self._release()
        if status == C_OK:
            return _convert_result(self.ret_code, retval, self.ctx.proc)
        if status == C_EXCEPTION:
            raise VeoException(f"request {self.req}: the kernel raised an exception on the VE "
                               f"(signal {retval}); the VE process is dead", <int>retval)
        self.ctx._raise_failed(f"request {self.req} failed", True)

    def wait_result(self):
        """Block until the VE is done and return the converted result."""
        if self.collected:
            raise VeoError(f"the result of request {self.req} was already collected")
        cdef veo_thr_ctxt *h = self.ctx._live_handle()
        cdef uint64_t ret = 0
        cdef int rc
        with nogil:
            rc = api.call_wait_result(h, self.req, &ret)
        return self.finish(rc, ret)

    def spot(self, double max_us):
        """Peek (without blocking, GIL held) for up to `max_us` microseconds:
        the raw (status, retval) once the VE is done, else None.  For callers
        that spin briefly before handing a request to a waiter thread."""
        return _spot(self.ctx, self.req, max_us)

    def peek_result(self):
        """The converted result if the VE is done, else raise ``Unfinished``."""
        if self.collected:
            raise VeoError(f"the result of request {self.req} was already collected")
        cdef uint64_t ret = 0
        cdef int rc = api.call_peek_result(self.ctx._live_handle(), self.req, &ret)
        if rc == C_UNFINISHED:
            raise Unfinished(f"request {self.req} is not finished")
        return self.finish(rc, ret)

    def __dealloc__(self):
        # Dropped before its result was collected: the VE may still read or
        # write its buffers, so the context keeps them until it is done.
        if not self.collected and self.ctx is not None and (self.args != NULL or self.keep is not None):
            self.ctx._adopt(self.req, <uintptr_t>self.args, self.keep)
            self.args = NULL
            self.keep = None
        else:
            self._release()


@cython.final
@cython.no_gc_clear
cdef class VeoBatch:
    """Calls of one function submitted together (``VeoFunction.submit_batch``).
    They complete in order, so the batch is done when its last call is:
    ``req_id`` is the last call's id, which is all a waiter has to watch."""
    cdef readonly VeoCtxt ctx
    cdef uint64_t *ids
    cdef veo_args **args
    cdef readonly Py_ssize_t n
    cdef int ret_code
    cdef object keep
    cdef readonly bint collected

    @property
    def req_id(self):
        return self.ids[self.n - 1]

    @property
    def ctx_handle(self):
        return <uintptr_t>self.ctx.handle

    def __len__(self):
        return self.n

    def __repr__(self):
        return f"<VeoBatch of {self.n} calls on {self.ctx!r}>"

    cpdef finish(self, int status, uint64_t retval):
        """Collect every call (the last one's raw result is given): the list of
        results, or the first call's exception."""
        if self.collected:
            raise VeoError("the results of this batch were already collected")
        self.collected = True
        cdef list results = []
        cdef Py_ssize_t i
        cdef uint64_t ret
        cdef int rc
        cdef veo_thr_ctxt *h = self.ctx.handle_
        error = None
        for i in range(self.n):
            if i == self.n - 1:
                rc, ret = status, retval
            elif h == NULL:
                rc = -1
            else:
                rc = api.call_peek_result(h, self.ids[i], &ret)
                if rc == C_UNFINISHED:  # cannot be: a later call finished
                    with nogil:
                        rc = api.call_wait_result(h, self.ids[i], &ret)
            api.args_free(self.args[i])
            self.args[i] = NULL
            if rc == C_OK:
                results.append(_convert_result(self.ret_code, ret, self.ctx.proc))
            elif error is None:
                try:
                    if rc == C_EXCEPTION:
                        raise VeoException(f"call {i} of the batch: the kernel raised an "
                                           f"exception on the VE (signal {ret}); the VE "
                                           f"process is dead", <int>ret)
                    self.ctx._raise_failed(f"call {i} of the batch failed", True)
                except VeoError as e:
                    error = e
        _release_all(self.keep)
        self.keep = None
        if error is not None:
            raise error
        return results

    def spot(self, double max_us):
        """Like VeoRequest.spot, for the batch's last call."""
        return _spot(self.ctx, self.ids[self.n - 1], max_us)

    def wait_result(self):
        """Block until every call is done; the list of their results."""
        if self.collected:
            raise VeoError("the results of this batch were already collected")
        cdef veo_thr_ctxt *h = self.ctx._live_handle()
        cdef uint64_t ret = 0, last = self.ids[self.n - 1]
        cdef int rc
        with nogil:
            rc = api.call_wait_result(h, last, &ret)
        return self.finish(rc, ret)

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.ids != NULL and self.args != NULL:
            for i in range(self.n):
                if self.args[i] == NULL:
                    continue
                if self.ctx is not None and not self.collected:   # still on the VE
                    self.ctx._adopt(self.ids[i], <uintptr_t>self.args[i],
                                    self.keep if i == self.n - 1 else None)
                else:
                    api.args_free(self.args[i])
        PyMem_Free(self.ids)
        PyMem_Free(self.args)


cdef object _convert_result(int code, uint64_t r, object proc):
    cdef double d
    cdef float f
    cdef uint32_t hi
    if code == T_I32:
        return <int32_t>r
    if code == T_I64:
        return <int64_t>r
    if code == T_U64:
        return r
    if code == T_DOUBLE:
        memcpy(&d, &r, 8)
        return d
    if code == T_FLOAT:  # a float comes back in the upper 32 bits (VE ABI)
        hi = <uint32_t>(r >> 32)
        memcpy(&f, &hi, 4)
        return f
    if code == T_VOID:
        return None
    if code == T_PTR:
        return VEMemPtr(proc, r, 0)
    if code == T_U32:
        return <uint32_t>r
    if code == T_I16:
        return <int16_t>r
    if code == T_U16:
        return <uint16_t>r
    if code == T_I8:
        return <int8_t>r
    if code == T_U8:
        return <uint8_t>r
    raise AssertionError(code)


# ---- type codes from C type strings ------------------------------------------------
cdef int _code_of(ctype) except -1:
    if ctype.kind == "pointer":
        return T_PTR
    return ctype.emu_code


# Integer ranges by code (T_U64..T_I64).
cdef object _INT_MIN = {T_I8: -2**7, T_U8: 0, T_I16: -2**15, T_U16: 0, T_I32: -2**31,
                        T_U32: 0, T_I64: -2**63, T_U64: 0, T_PTR: 0}
cdef object _INT_MAX = {T_I8: 2**7 - 1, T_U8: 2**8 - 1, T_I16: 2**15 - 1, T_U16: 2**16 - 1,
                        T_I32: 2**31 - 1, T_U32: 2**32 - 1, T_I64: 2**63 - 1, T_U64: 2**64 - 1,
                        T_PTR: 2**64 - 1}


# ---- functions -------------------------------------------------------------------
cdef class VeoFunction:
    """A VE function: declare its types with ``args_type``/``ret_type`` (or find
    it by prototype), then ``fn(ctx, *args)`` submits a call."""
    cdef readonly VeoLibrary lib
    cdef readonly uint64_t addr
    cdef readonly str name
    cdef readonly tuple _args_type
    cdef readonly object _ret_type
    cdef int nargs          # -1 until args_type() is called
    cdef int ret_code
    cdef int *codes         # one value code per argument
    cdef tuple ctypes

    def __cinit__(self):
        self.nargs = -1
        self.ret_code = T_I32  # PyVEO's default return type is "int"
        self.codes = NULL

    def __init__(self, VeoLibrary lib, uint64_t addr, name):
        self.lib = lib
        self.addr = addr
        self.name = name.decode() if isinstance(name, bytes) else str(name)
        self._ret_type = "int"

    def __dealloc__(self):
        if self.codes != NULL:
            PyMem_Free(self.codes)

    def args_type(self, *types):
        """Declare the C types of the arguments ("int", "double", "char *", ...)."""
        from ._ctype import parse_type
        parsed = [parse_type(t) for t in types]
        if len(parsed) == 1 and parsed[0].kind == "void":
            parsed = []
        for i, t in enumerate(parsed):
            if t.kind == "void":
                raise ValueError(f"{self.name}: argument {i + 1} cannot be void")
        if len(parsed) > VEO_MAX_NUM_ARGS:
            raise ValueError(f"{self.name}: {len(parsed)} arguments, more than VEO's "
                             f"maximum of {VEO_MAX_NUM_ARGS}")
        cdef int *codes = <int *>PyMem_Malloc(max(len(parsed), 1) * sizeof(int))
        if codes == NULL:
            raise MemoryError()
        for i, t in enumerate(parsed):
            codes[i] = _code_of(t)
        if self.codes != NULL:
            PyMem_Free(self.codes)
        self.codes = codes
        self.nargs = len(parsed)
        self.ctypes = tuple(parsed)
        self._args_type = tuple(types)

    def ret_type(self, rettype):
        """Declare the C return type; floating point works on the emulator too."""
        from ._ctype import parse_type
        self.ret_code = _code_of(parse_type(rettype))
        self._ret_type = rettype

    def __repr__(self):
        args = ", ".join(t.name for t in self.ctypes) if self.nargs >= 0 else "?"
        return f"<VeoFunction {self._ret_type} {self.name}({args}) at 0x{self.addr:x}>"

    cdef int _check_call(self, VeoCtxt ctx, Py_ssize_t nargs) except -1:
        if self.nargs < 0:
            raise VeoError(f"{self.name}: declare the argument types first, with "
                           f"args_type(...) or lib.find_function('<C prototype>')")
        if nargs != self.nargs:
            raise TypeError(f"{self.name}() takes {self.nargs} argument"
                            f"{'' if self.nargs == 1 else 's'} ({nargs} given)")
        if ctx.proc is not self.lib.proc:
            raise ValueError(f"{self.name}: the context belongs to another proc than the library")
        return 0

    cdef veo_args *_build_args(self, tuple args, list keep) except NULL:
        """A veo_args for one call; OnStack arguments are appended to `keep`."""
        cdef veo_args *a = api.args_alloc()
        if a == NULL:
            raise MemoryError("veo_args_alloc failed")
        cdef int i
        cdef object proc = self.lib.proc
        try:
            for i in range(self.nargs):
                x = args[i]
                if type(x) is OnStack:
                    keep.append(x)
                    _set_stack(a, i, <OnStack>x)
                else:
                    _set_arg(a, i, self.codes[i], x, proc, self)
            if self.ret_code != T_U64 and self.ret_code != T_I64 and api.emu_args_set_ret_type != NULL:
                api.emu_args_set_ret_type(a, T_U64 if self.ret_code == T_PTR else self.ret_code)
        except BaseException:
            api.args_free(a)
            raise
        return a

    def __call__(self, VeoCtxt ctx not None, *args):
        """Submit ``self(*args)`` on `ctx`; returns a VeoRequest."""
        self._check_call(ctx, len(args))
        cdef veo_thr_ctxt *h = ctx._live_handle()
        cdef list keep = []
        cdef veo_args *a = self._build_args(args, keep)
        cdef uint64_t rid = api.call_async(h, self.addr, a)
        if rid == VEO_REQUEST_ID_INVALID:
            api.args_free(a)
            ctx._raise_failed(f"{self.name}: veo_call_async failed")
        cdef VeoRequest r = VeoRequest.__new__(VeoRequest)
        r.ctx = ctx
        r.req = rid
        r.ret_code = self.ret_code
        r.args = a
        r.keep = keep if keep else None
        return r

    def submit_batch(self, VeoCtxt ctx not None, arg_tuples):
        """Submit one call per argument tuple in one go; returns a VeoBatch whose
        ``wait_result()`` gives the results in order.  The per-call Python cost
        is a fraction of ``fn(ctx, *args)``'s: no request object per call."""
        cdef list todo = arg_tuples if type(arg_tuples) is list else list(arg_tuples)
        cdef Py_ssize_t n = len(todo), i
        if n == 0:
            raise ValueError(f"{self.name}: submit_batch needs at least one call")
        cdef veo_thr_ctxt *h = ctx._live_handle()
        cdef VeoBatch b = VeoBatch.__new__(VeoBatch)
        b.ctx = ctx
        b.ret_code = self.ret_code
        b.ids = <uint64_t *>PyMem_Malloc(n * sizeof(uint64_t))
        b.args = <veo_args **>PyMem_Malloc(n * sizeof(veo_args *))
        if b.ids == NULL or b.args == NULL:
            raise MemoryError()
        cdef list keep = []
        cdef veo_args *a
        cdef uint64_t rid
        for i in range(n):
            t = todo[i]
            if type(t) is not tuple:
                t = tuple(t)
            try:
                self._check_call(ctx, len(<tuple>t))
                a = self._build_args(<tuple>t, keep)
            except BaseException as e:
                b.keep = keep
                if i and hasattr(e, "add_note"):  # Python >= 3.11
                    e.add_note(f"{self.name}: call {i} of the batch; the {i} calls before "
                               f"it were submitted")
                raise   # b, dropped, hands the submitted calls to the context
            rid = api.call_async(h, self.addr, a)
            if rid == VEO_REQUEST_ID_INVALID:
                api.args_free(a)
                b.keep = keep
                ctx._raise_failed(f"{self.name}: veo_call_async failed (call {i} of the batch)")
            b.ids[i] = rid
            b.args[i] = a
            b.n = i + 1
        b.keep = keep if keep else None
        return b


cdef int _set_stack(veo_args *a, int i, OnStack s) except -1:
    if api.args_set_stack(a, <veo_args_intent>s._inout, i, <char *>s._buf.view.buf, s._size) != 0:
        raise VeoError(_why(f"veo_args_set_stack failed for argument {i + 1}"))
    return 0


cdef int _set_arg(veo_args *a, int i, int code, object x, object proc, VeoFunction fn) except -1:
    cdef int rc
    if code == T_DOUBLE or code == T_FLOAT:
        if not isinstance(x, (float, int)) or isinstance(x, bool):
            raise TypeError(f"{fn.name}() argument {i + 1} ({fn.ctypes[i].name}) must be a "
                            f"number, not {type(x).__name__}")
        if code == T_DOUBLE:
            rc = api.args_set_double(a, i, <double>x)
        else:
            v = float(x)
            if v == v and abs(v) != float("inf") and abs(v) > 3.4028234663852886e38:
                raise OverflowError(f"{fn.name}() argument {i + 1} (float): {x!r} is out of range")
            rc = api.args_set_float(a, i, <float>v)
    else:
        if code == T_PTR:
            if type(x) is VEMemPtr:
                if (<VEMemPtr>x).freed:
                    raise ClosedError(f"{fn.name}() argument {i + 1}: {x!r} was freed")
                if (<VEMemPtr>x).proc is not proc:
                    raise ValueError(f"{fn.name}() argument {i + 1}: {x!r} belongs to another proc")
                x = (<VEMemPtr>x).addr
            elif x is None:
                x = 0
        if not isinstance(x, int):
            try:
                x = x.__index__()
            except AttributeError:
                hint = " (pass host buffers as OnStack(buf))" if code == T_PTR else ""
                raise TypeError(f"{fn.name}() argument {i + 1} ({fn.ctypes[i].name}) must be "
                                f"an int, not {type(x).__name__}{hint}") from None
        if x < _INT_MIN[code] or x > _INT_MAX[code]:
            raise OverflowError(f"{fn.name}() argument {i + 1} ({fn.ctypes[i].name}): {x} is out "
                                f"of range [{_INT_MIN[code]}, {_INT_MAX[code]}]")
        if code == T_I64:
            rc = api.args_set_i64(a, i, <int64_t>x)
        elif code == T_U64 or code == T_PTR:
            rc = api.args_set_u64(a, i, <uint64_t>x)
        elif code == T_I32:
            rc = api.args_set_i32(a, i, <int32_t>x)
        elif code == T_U32:
            rc = api.args_set_u32(a, i, <uint32_t>x)
        elif code == T_I16:
            rc = api.args_set_i16(a, i, <int16_t>x)
        elif code == T_U16:
            rc = api.args_set_u16(a, i, <uint16_t>x)
        elif code == T_I8:
            rc = api.args_set_i8(a, i, <int8_t>x)
        else:
            rc = api.args_set_u8(a, i, <uint8_t>x)
    if rc != 0:
        raise VeoError(_why(f"{fn.name}(): setting argument {i + 1} failed"))
    return 0


# ---- libraries -------------------------------------------------------------------
cdef class VeoLibrary:
    """A library loaded in a proc (or the proc's static symbols: ``__static__``).
    ``lib.foo`` finds and caches the function ``foo``."""
    cdef readonly VeoProc proc
    cdef readonly str name
    cdef readonly uint64_t lib_handle
    cdef readonly dict func
    cdef readonly dict symbol
    cdef object __weakref__

    def __init__(self, VeoProc proc, name, uint64_t handle):
        self.proc = proc
        self.name = os.fspath(name)
        self.lib_handle = handle
        self.func = {}
        self.symbol = {}

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        f = self.func.get(name)
        if f is not None:
            return f
        s = self.symbol.get(name)
        if s is not None:
            return s
        return self.find_function(name)

    cdef uint64_t _lookup(self, str symname) except? 0:
        cdef veo_proc_handle *h = self.proc._live_handle()
        if "\0" in symname:
            raise ValueError(f"symbol name {symname!r} contains a NUL byte")
        b = symname.encode()
        cdef uint64_t addr = api.get_sym(h, self.lib_handle, b)
        if addr == 0:
            if self.proc._is_dead():
                raise ProcDeadError(_why(f"looking up {symname!r}: the VE process is dead"))
            raise SymbolNotFoundError(_why(f"symbol {symname!r} not found in {self.name}"))
        return addr

    def get_symbol(self, symname):
        """The VE address of a symbol (a global variable, say) as a VEMemPtr."""
        ptr = VEMemPtr(self.proc, self._lookup(symname), 0)
        self.symbol[symname] = ptr
        return ptr

    def find_function(self, name):
        """The VeoFunction `name`; given a C prototype (``"double dot(double *a,
        double *b, long n)"``) its argument and return types are set too."""
        proto = None
        if "(" in name:
            from ._ctype import parse_prototype
            proto = parse_prototype(name)
            name = proto.name
        func = VeoFunction(self, self._lookup(name), name)
        if proto is not None:
            func.args_type(*proto.args)
            func.ret_type(proto.ret)
        self.func[name] = func
        return func

    def __repr__(self):
        return f"<VeoLibrary {self.name!r} of {self.proc!r}>"


# ---- contexts --------------------------------------------------------------------
cdef class VeoCtxt:
    """A context: a worker thread of the VE process with a FIFO queue."""
    cdef veo_thr_ctxt *handle_
    cdef readonly VeoProc proc
    cdef list _orphans        # (req id, veo_args *, keep) of dropped requests
    cdef object __weakref__

    def __init__(self, VeoProc proc not None):
        cdef veo_proc_handle *ph = proc._live_handle()
        with nogil:
            self.handle_ = api.context_open(ph)
        if self.handle_ == NULL:
            proc._raise_failed("veo_context_open failed")
        self.proc = proc
        self._orphans = []

    @property
    def handle(self):
        """The raw ``veo_thr_ctxt *`` (0 once closed)."""
        return <uintptr_t>self.handle_

    @property
    def closed(self):
        return self.handle_ == NULL

    cdef veo_thr_ctxt *_live_handle(self) except NULL:
        if self.handle_ == NULL:
            if self.proc is not None and self.proc.handle_ == NULL:
                raise ClosedError("the proc of this context was destroyed")
            raise ClosedError("the context is closed")
        return self.handle_

    def _raise_failed(self, str what, bint submitted=False):
        """Raise the precise exception for a failed submission, or (submitted)
        for a request that completed with an error: the emulator's message
        then describes some earlier call of this thread, not this request."""
        if self.handle_ == NULL:
            raise ClosedError(f"{what}: the context is closed")
        if api.get_context_state(self.handle_) == C_STATE_EXIT:
            what = f"{what}: the VE process is dead"
            raise ProcDeadError(what if submitted else _why(what))
        raise VeoError(what if submitted else _why(what))

    def state(self):
        """veo_get_context_state: one of the VEO_STATE_* values."""
        if self.handle_ == NULL:
            return VEO_STATE_EXIT
        return api.get_context_state(self.handle_)

    def _adopt(self, uint64_t req, uintptr_t args, keep):
        self._orphans.append((req, args, keep))
        if len(self._orphans) > 64:
            self._reap_orphans()

    cdef _reap_orphans(self, bint wait=False):
        """Collect dropped requests the VE is done with (they complete in order).
        An orphan is taken off the list before the GIL is released, so two
        threads reaping at once never free the same one."""
        cdef uint64_t ret, rid
        cdef int rc
        cdef veo_thr_ctxt *h
        while self._orphans:
            h = self.handle_
            if h != NULL and not wait:
                rid = self._orphans[0][0]
                if api.call_peek_result(h, rid, &ret) == C_UNFINISHED:
                    return
            req, args, keep = self._orphans.pop(0)
            if h != NULL and wait:
                rid = req
                with nogil:
                    rc = api.call_wait_result(h, rid, &ret)
            if args:
                api.args_free(<veo_args *><uintptr_t>args)
            _release_all(keep)

    cdef VeoRequest _mem_request(self, uint64_t rid, _HostBuffer buf, str what):
        if rid == VEO_REQUEST_ID_INVALID:
            buf.release()
            self._raise_failed(what)
        cdef VeoRequest r = VeoRequest.__new__(VeoRequest)
        r.ctx = self
        r.req = rid
        r.ret_code = T_I32
        r.keep = [buf]
        return r

    def async_read_mem(self, dst, src, size=None):
        """Queue a copy of VE memory `src` into the host buffer `dst`; returns a
        VeoRequest holding `dst` until it completes."""
        cdef veo_thr_ctxt *h = self._live_handle()
        cdef _HostBuffer buf = _HostBuffer.get(dst, True, "dst")
        cdef size_t n = _transfer_size(buf, size, "dst")
        cdef uint64_t addr = _ve_addr(self.proc, src, "src", n)
        return self._mem_request(api.async_read_mem(h, buf.view.buf, addr, n), buf,
                                 "veo_async_read_mem failed")

    def async_write_mem(self, dst, src, size=None):
        """Queue a copy of the host buffer `src` to VE memory `dst`; returns a
        VeoRequest holding `src` until it completes."""
        cdef veo_thr_ctxt *h = self._live_handle()
        cdef _HostBuffer buf = _HostBuffer.get(src, False, "src")
        cdef size_t n = _transfer_size(buf, size, "src")
        cdef uint64_t addr = _ve_addr(self.proc, dst, "dst", n)
        return self._mem_request(api.async_write_mem(h, addr, buf.view.buf, n), buf,
                                 "veo_async_write_mem failed")

    def context_sync(self):
        """Wait until everything queued on this context so far is done."""
        cdef veo_thr_ctxt *h = self._live_handle()
        if api.context_sync != NULL:
            with nogil:
                api.context_sync(h)
        self._reap_orphans(True)

    cdef void _detach(self):
        """The proc was destroyed: forget the handle, release dropped requests."""
        self.handle_ = NULL
        self._reap_orphans()

    cdef int _close(self) except -1:
        cdef veo_thr_ctxt *h = self.handle_
        if h == NULL:
            return 0
        cdef int rc
        with nogil:
            rc = api.context_close(h)  # drains the queue first
        self._reap_orphans(True)
        self.handle_ = NULL
        self._orphans.clear()  # the VE is done with them: buffers may go
        if rc != 0:
            raise VeoError(_why("veo_context_close failed"))
        return 0

    def __repr__(self):
        state = "closed" if self.handle_ == NULL else f"0x{<uintptr_t>self.handle_:x}"
        return f"<VeoCtxt {state} of {self.proc!r}>"


# ---- procs -----------------------------------------------------------------------
_proc_init_hooks = []
_live_procs = weakref.WeakSet()


def set_proc_init_hook(hook):
    """Call ``hook(proc)`` at the end of every VeoProc's creation."""
    _proc_init_hooks.append(hook)


def del_proc_init_hook(hook):
    """Remove a hook added with set_proc_init_hook."""
    _proc_init_hooks.remove(hook)


cdef class VeoProc:
    """A VE process on node `nodeid` (-1: $VE_NODE_NUMBER, else 0).  With
    `veorun_bin`, a helper with statically linked kernels (veo_proc_create_static)."""
    cdef veo_proc_handle *handle_
    cdef readonly int nodeid
    cdef readonly list context
    cdef readonly dict lib
    cdef readonly object veorun_bin
    cdef object __weakref__

    def __init__(self, int nodeid=-1, veorun_bin=None):
        _ensure_api()
        self.nodeid = nodeid
        self.context = []
        self.lib = {}
        cdef bytes path
        cdef char *cpath
        if veorun_bin is not None:
            path = os.fsencode(veorun_bin)
            if not os.access(path, os.X_OK):
                raise FileNotFoundError(f"veorun_bin {os.fsdecode(path)!r} is not an executable file")
            self.veorun_bin = os.fsdecode(path)
            cpath = path
            with nogil:
                self.handle_ = api.proc_create_static(nodeid, cpath)
        else:
            with nogil:
                self.handle_ = api.proc_create(nodeid)
        if self.handle_ == NULL:
            raise VeoError(_why(f"cannot create a VE process on node {nodeid}"))
        _live_procs.add(self)
        log.debug("aioveo: created %r", self)
        try:
            for hook in list(_proc_init_hooks):
                hook(self)
        except BaseException:
            self.destroy()
            raise

    @property
    def handle(self):
        """The raw ``veo_proc_handle *`` (0 once destroyed)."""
        return <uintptr_t>self.handle_

    @property
    def destroyed(self):
        return self.handle_ == NULL

    @property
    def helper_pid(self):
        """The emulator helper's pid (None on a real VE or once destroyed)."""
        if self.handle_ == NULL or api.emu_proc_pid == NULL:
            return None
        return api.emu_proc_pid(self.handle_)

    cdef veo_proc_handle *_live_handle(self) except NULL:
        if self.handle_ == NULL:
            raise ClosedError("the proc was destroyed")
        return self.handle_

    def _is_dead(self):
        """Whether the VE process died: its main context (or one of ours)
        reports VEO_STATE_EXIT."""
        cdef veo_thr_ctxt *main
        if self.handle_ != NULL and api.get_context != NULL:
            main = api.get_context(self.handle_, 0)
            if main != NULL and api.get_context_state(main) == C_STATE_EXIT:
                return True
        for c in self.context:
            if (<VeoCtxt>c).handle_ != NULL and \
                    api.get_context_state((<VeoCtxt>c).handle_) == C_STATE_EXIT:
                return True
        return False

    def _raise_failed(self, str what):
        if self.handle_ == NULL:
            raise ClosedError(f"{what}: the proc was destroyed")
        if self._is_dead():
            raise ProcDeadError(_why(f"{what}: the VE process is dead"))
        raise VeoError(_why(what))

    def proc_identifier(self):
        """This proc's identifier (0, 1, 2, ... in creation order)."""
        cdef veo_proc_handle *h = self._live_handle()
        if api.proc_identifier == NULL:
            raise VeoError("this libveo has no veo_proc_identifier")
        return api.proc_identifier(h)

    # -- libraries
    def load_library(self, libname):
        """Load a shared object into the VE process; returns a VeoLibrary."""
        cdef veo_proc_handle *h = self._live_handle()
        name = os.fspath(libname)
        cdef bytes path = os.fsencode(name)
        if b"\0" in path:
            raise ValueError("library path contains a NUL byte")
        cdef uint64_t handle
        cdef const char *cpath = path
        with nogil:
            handle = api.load_library(h, cpath)
        if handle == 0:
            if not os.path.exists(path):
                raise VeoError(f"cannot load library {name!r}: no such file")
            self._raise_failed(f"cannot load library {name!r}")
        lib = VeoLibrary(self, name, handle)
        self.lib[name] = lib
        return lib

    def unload_library(self, lib):
        """Unload a library (a VeoLibrary or the name it was loaded with)."""
        cdef veo_proc_handle *h = self._live_handle()
        cdef VeoLibrary l = lib if isinstance(lib, VeoLibrary) else self.lib.get(os.fspath(lib))
        if l is None or l.proc is not self:
            raise ValueError(f"{lib!r} is not a library of this proc")
        if l.lib_handle == 0:
            raise ValueError("the static library cannot be unloaded")
        cdef int rc
        with nogil:
            rc = api.unload_library(h, l.lib_handle)
        if rc != 0:
            self._raise_failed(f"cannot unload {l.name!r}")
        self.lib.pop(l.name, None)

    def static_library(self):
        """The symbols linked into the helper program itself (handle 0)."""
        self._live_handle()
        lib = self.lib.get("__static__")
        if lib is None:
            lib = self.lib["__static__"] = VeoLibrary(self, "__static__", 0)
        return lib

    def get_function(self, name):
        """A function already found in one of the loaded libraries, else None."""
        for lib in self.lib.values():
            f = (<VeoLibrary>lib).func.get(name)
            if f is not None:
                return f
        return None

    def i64_to_memptr(self, int64_t x):
        return VEMemPtr(self, <uint64_t>x, 0)

    # -- memory
    def alloc_mem(self, size):
        """Allocate `size` bytes of VE memory; returns a VEMemPtr."""
        cdef veo_proc_handle *h = self._live_handle()
        if size <= 0:
            raise ValueError(f"size must be > 0, not {size}")
        cdef size_t n = size
        cdef uint64_t addr = 0
        cdef int rc
        with nogil:
            rc = api.alloc_mem(h, &addr, n)
        if rc != 0:
            self._raise_failed(f"cannot allocate {size} bytes of VE memory")
        return VEMemPtr(self, addr, n)

    def free_mem(self, ptr):
        """Free VE memory allocated with alloc_mem."""
        cdef veo_proc_handle *h = self._live_handle()
        cdef uint64_t addr = _ve_addr(self, ptr, "ptr", 0)
        cdef int rc
        with nogil:
            rc = api.free_mem(h, addr)
        if rc != 0:
            self._raise_failed(f"cannot free VE memory at 0x{addr:x}")
        if type(ptr) is VEMemPtr:
            (<VEMemPtr>ptr).freed = True

    def read_mem(self, dst, src, size=None):
        """Copy `size` bytes (default: all of `dst`) of VE memory `src` into the
        host buffer `dst` (any writable buffer: bytearray, numpy array, ...)."""
        cdef veo_proc_handle *h = self._live_handle()
        cdef _HostBuffer buf = _HostBuffer.get(dst, True, "dst")
        cdef size_t n = _transfer_size(buf, size, "dst")
        cdef uint64_t addr = _ve_addr(self, src, "src", n)
        cdef int rc
        with nogil:
            rc = api.read_mem(h, buf.view.buf, addr, n)
        buf.release()
        if rc != 0:
            self._raise_failed(f"cannot read {n} bytes from VE address 0x{addr:x}")

    def write_mem(self, dst, src, size=None):
        """Copy `size` bytes (default: all of `src`) of the host buffer `src` to
        VE memory `dst`."""
        cdef veo_proc_handle *h = self._live_handle()
        cdef _HostBuffer buf = _HostBuffer.get(src, False, "src")
        cdef size_t n = _transfer_size(buf, size, "src")
        cdef uint64_t addr = _ve_addr(self, dst, "dst", n)
        cdef int rc
        with nogil:
            rc = api.write_mem(h, addr, buf.view.buf, n)
        buf.release()
        if rc != 0:
            self._raise_failed(f"cannot write {n} bytes to VE address 0x{addr:x}")

    def alloc_hmem(self, size):
        """Allocate VE memory as a heterogeneous-memory address (veo_alloc_hmem)."""
        cdef veo_proc_handle *h = self._live_handle()
        if api.alloc_hmem == NULL:
            raise VeoError("this libveo has no veo_alloc_hmem")
        if size <= 0:
            raise ValueError(f"size must be > 0, not {size}")
        cdef size_t n = size
        cdef void *p = NULL
        cdef int rc
        with nogil:
            rc = api.alloc_hmem(h, &p, n)
        if rc != 0:
            self._raise_failed(f"cannot allocate {size} bytes of hmem")
        return VEMemPtr(self, <uint64_t><uintptr_t>p, n)

    def free_hmem(self, ptr):
        """Free memory from alloc_hmem."""
        self._live_handle()
        if api.free_hmem == NULL:
            raise VeoError("this libveo has no veo_free_hmem")
        if type(ptr) is VEMemPtr and (<VEMemPtr>ptr).proc is not self:
            raise ValueError(f"{ptr!r} belongs to another proc")
        cdef uint64_t addr = int(ptr)
        if not addr & HMEM_FLAG:
            raise ValueError(f"0x{addr:x} is not an hmem address of a VE")
        if api.free_hmem(<void *><uintptr_t>addr) != 0:
            self._raise_failed(f"cannot free hmem 0x{addr:x}")

    # -- contexts
    def open_context(self):
        """Open a new context (a VE worker thread); returns a VeoCtxt."""
        c = VeoCtxt(self)
        self.context.append(c)
        return c

    def close_context(self, VeoCtxt ctx not None):
        """Close a context after its queued work is done."""
        if ctx.proc is not self:
            raise ValueError(f"{ctx!r} is not a context of this proc")
        ctx._close()
        if ctx in self.context:
            self.context.remove(ctx)

    # -- life cycle
    def destroy(self):
        """End the VE process and with it every context (idempotent).
        veo_proc_destroy lets queued work finish, within the library's limit
        (the emulator's VEO_EMU_EXIT_TIMEOUT), so a kernel that never returns
        cannot hang it; closing each context first could."""
        if self.handle_ == NULL:
            return
        cdef veo_proc_handle *h = self.handle_
        self.handle_ = NULL
        _live_procs.discard(self)
        cdef int rc
        with nogil:
            rc = api.proc_destroy(h)
        for c in self.context:  # the VE is gone: their buffers may be released
            (<VeoCtxt>c)._detach()
        self.context.clear()
        log.debug("aioveo: destroyed proc on node %d", self.nodeid)
        if rc != 0:
            raise VeoError(_why("veo_proc_destroy failed"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()

    def __dealloc__(self):
        cdef veo_proc_handle *h = self.handle_
        if h != NULL:  # dropped without destroy(): end the VE process
            self.handle_ = NULL
            with nogil:
                api.proc_destroy(h)

    def __repr__(self):
        state = "destroyed" if self.handle_ == NULL else f"0x{<uintptr_t>self.handle_:x}"
        return f"<VeoProc node {self.nodeid} {state}>"


@atexit.register
def _destroy_live_procs():
    """At interpreter exit, end every VE process still alive.  An emulated VE
    still busy after AIOVEO_EXIT_GRACE seconds is killed, so exit never hangs."""
    from .settings import current
    grace = current().exit_grace
    for p in list(_live_procs):
        pid = p.helper_pid
        timer = None
        if pid:
            timer = threading.Timer(grace, os.kill, (pid, signal.SIGKILL))
            timer.daemon = True
            timer.start()
        try:
            p.destroy()
        except Exception as e:  # noqa: BLE001 - exiting anyway
            log.debug("aioveo: destroying %r at exit: %s", p, e)
        finally:
            if timer is not None:
                timer.cancel()
