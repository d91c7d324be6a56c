# cython: language_level=3, boundscheck=False, wraparound=False
"""The completion engine of the asyncio layer (see engine.h).

The engine finds ``veo_call_peek_result`` and ``veo_call_wait_result`` in the
loaded libveo itself (dlopen of the same path returns the loaded library), so
it only needs raw context handles and request ids from the core.
"""
from libc.stdint cimport uint64_t, uintptr_t

from posix.dlfcn cimport dlopen, dlsym, dlerror, RTLD_NOW, RTLD_GLOBAL

cdef extern from "engine.h" nogil:
    struct engine:
        pass
    struct engine_completion:
        uint64_t token
        uint64_t retval
        int status
    ctypedef int (*engine_peek_fn)(void *ctx, uint64_t id, uint64_t *ret)
    engine *engine_new(int mode, engine_peek_fn peek, engine_peek_fn wait,
                       unsigned spin_us, unsigned max_sleep_us)
    void engine_free(engine *e, unsigned timeout_ms)
    int engine_fd(engine *e)
    int engine_watch(engine *e, void *ctx, uint64_t id, uint64_t token)
    int engine_drain(engine *e, engine_completion *out, int max)
    int engine_forget(engine *e, void *ctx, int status, unsigned timeout_ms)
    long engine_pending(engine *e)
    void engine_stats(engine *e, uint64_t *wakeups, uint64_t *rounds, uint64_t *peeks)

POLL = 0
WAIT = 1
cdef enum:
    DRAIN_MAX = 1024

cdef engine_peek_fn _lookup(bytes path, const char *name) except NULL:
    cdef void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL)
    if h == NULL:
        raise OSError(f"cannot open {path.decode()}: {dlerror().decode()}")
    cdef void *f = dlsym(h, name)
    if f == NULL:
        raise OSError(f"{name.decode()} not found in {path.decode()}")
    return <engine_peek_fn>f


cdef class Engine:
    """Completion detection off the event loop, handed back through an eventfd."""
    cdef engine *_e
    cdef engine_completion _buf[DRAIN_MAX]
    cdef readonly int mode

    def __cinit__(self, str lib_path, int mode=POLL, unsigned spin_us=50,
                  unsigned max_sleep_us=1000):
        path = lib_path.encode()
        cdef engine_peek_fn peek = _lookup(path, b"veo_call_peek_result")
        cdef engine_peek_fn wait = _lookup(path, b"veo_call_wait_result")
        self.mode = mode
        with nogil:
            self._e = engine_new(mode, peek, wait, spin_us, max_sleep_us)
        if self._e == NULL:
            raise OSError("cannot start the completion engine")

    def fileno(self):
        self._check()
        return engine_fd(self._e)

    cdef inline _check(self):
        if self._e == NULL:
            raise RuntimeError("the completion engine is closed")

    def watch(self, uintptr_t ctx, uint64_t req_id, uint64_t token):
        """Report request `req_id` of context `ctx` under `token` when done."""
        self._check()
        if engine_watch(self._e, <void *>ctx, req_id, token) != 0:
            raise MemoryError("engine_watch")

    def drain(self):
        """Completed (token, status, retval) records, at most 1024 per call."""
        if self._e == NULL:
            return []
        cdef int n, i
        with nogil:
            n = engine_drain(self._e, self._buf, DRAIN_MAX)
        return [(self._buf[i].token, self._buf[i].status, self._buf[i].retval)
                for i in range(n)]

    def forget(self, uintptr_t ctx, int status=2, unsigned timeout_ms=5000):
        """Fail every request watched on `ctx` with `status` and stop watching it."""
        if self._e == NULL:
            return 0
        cdef int n
        with nogil:
            n = engine_forget(self._e, <void *>ctx, status, timeout_ms)
        return n

    @property
    def pending(self):
        return 0 if self._e == NULL else engine_pending(self._e)

    def stats(self):
        cdef uint64_t w = 0, r = 0, p = 0
        if self._e != NULL:
            engine_stats(self._e, &w, &r, &p)
        return {"wakeups": w, "rounds": r, "peeks": p}

    def close(self, unsigned timeout_ms=5000):
        cdef engine *e = self._e
        self._e = NULL
        if e != NULL:
            with nogil:
                engine_free(e, timeout_ms)

    def __dealloc__(self):
        if self._e != NULL:
            engine_free(self._e, 1000)
            self._e = NULL
