# The completion engine of the asyncio layer (engine.c): C threads that find
# finished requests without the GIL and hand them to an event loop through
# an eventfd, in batches.  The engine holds a reference to each watched
# request (its token is the request object itself), so the request is the
# one record of a request in flight.

cdef extern from "engine.h" nogil:
    struct engine:
        pass
    struct engine_completion:
        uint64_t token
        uint64_t retval
        int status
    ctypedef int (*engine_peek_fn)(void *ctx, uint64_t id, uint64_t *ret)
    enum:
        ENGINE_POLL
        ENGINE_WAIT
        ENGINE_FORGOTTEN
    engine *engine_new(int mode, engine_peek_fn peek, engine_peek_fn wait,
                       unsigned spin_us, unsigned max_sleep_us)
    int engine_stop(engine *e, unsigned timeout_ms)
    void engine_free(engine *e)
    int engine_fd(engine *e)
    int engine_watch(engine *e, void *ctx, uint64_t id, uint64_t token, int wake)
    void engine_wake(engine *e)
    int engine_drain(engine *e, engine_completion *out, int max)
    int engine_forget(engine *e, void *ctx, int status, unsigned timeout_ms)
    int engine_tokens(engine *e, void *ctx, uint64_t *out, int max)

ENGINE_MODES = {"poll": ENGINE_POLL, "wait": ENGINE_WAIT}

#: The status a drained request has when its context was forgotten (closing):
#: the VE has not finished it, so it must be dropped, not finished.
FORGOTTEN = ENGINE_FORGOTTEN

cdef enum:
    DRAIN_MAX = 1024


cdef class Engine:
    """Completion detection off the event loop: ``watch(request)``, then
    ``dispatch()`` the finished ones when ``fileno()`` is readable."""
    cdef engine *_e
    cdef engine_completion _buf[DRAIN_MAX]
    cdef readonly str mode
    cdef object __weakref__
    cdef object _loop_ref     # defer_wakes: a weak reference to the loop, else None
    cdef bint _wake_due

    def __cinit__(self, str mode="poll", unsigned spin_us=50, unsigned max_sleep_us=5000):
        _ensure_api()
        if mode not in ENGINE_MODES:
            raise ValueError(f"engine mode must be one of {sorted(ENGINE_MODES)}, not {mode!r}")
        self.mode = mode
        cdef int m = ENGINE_MODES[mode]
        with nogil:
            self._e = engine_new(m, <engine_peek_fn>api.call_peek_result,
                                 <engine_peek_fn>api.call_wait_result, spin_us, max_sleep_us)
        if self._e == NULL:
            raise OSError("cannot start the completion engine")
        _live_engines.add(self)

    def fileno(self):
        if self._e == NULL:
            raise ClosedError("the completion engine is closed")
        return engine_fd(self._e)

    def defer_wakes(self, loop_ref):
        """Wake the poll thread once per turn of the event loop (`loop_ref`,
        a weak reference) instead of at every watch: a completion can only
        be taken when the loop turns anyway, and a burst of submissions
        then does not pay a futex wake (and, on a busy machine, a context
        switch) per request."""
        if self.mode == "poll":
            self._loop_ref = loop_ref

    cpdef watch(self, _Request request):
        """Hand `request` to dispatch() when the VE has finished it."""
        if request is None:
            raise TypeError("watch() needs a request, not None")
        if self._e == NULL:
            raise ClosedError("the completion engine is closed")
        cdef veo_thr_ctxt *h = request.ctx._live_handle()
        if request.claim != CLAIM_NONE:
            raise VeoError(f"request {request._last_id()} is already waited for",
                           req_id=request._last_id())
        Py_INCREF(request)   # the engine's reference, given back by dispatch()
        cdef object loop = None
        if self._loop_ref is not None and not self._wake_due:
            loop = self._loop_ref()
        cdef bint deferred = self._wake_due or loop is not None
        if engine_watch(self._e, <void *>h, request._last_id(),
                        <uint64_t><uintptr_t><PyObject *>request, not deferred) != 0:
            Py_DECREF(request)
            raise MemoryError("engine_watch")
        request.claim = CLAIM_ENGINE   # the engine is its one waiter
        if loop is not None:
            try:
                loop.call_soon(_wake_engine, self)
                self._wake_due = True
            except BaseException:   # (a closed loop) wake it now
                with nogil:
                    engine_wake(self._e)

    def dispatch(self):
        """Hand every finished request (at most 1024 per call) to the object
        that owns it: ``request.owner._complete(request, status, retval)``.
        Returns ``(request, exception)`` for each owner that raised; the
        others are done.  The asyncio layer's drain, without a record per
        request."""
        if self._e == NULL:
            return []
        cdef int n, i
        with nogil:
            n = engine_drain(self._e, self._buf, DRAIN_MAX)
        cdef list failed = []
        cdef _Request request
        cdef int status
        for i in range(n):
            request = <_Request><PyObject *><uintptr_t>self._buf[i].token
            Py_DECREF(request)   # `request` holds it now
            status = self._buf[i].status
            if status != ENGINE_FORGOTTEN:
                request.claim = CLAIM_NONE   # (see _take)
            try:
                request.owner._complete(request, status, self._buf[i].retval)
            except Exception as exc:  # noqa: BLE001 - reported by the caller
                failed.append((request, exc))
        return failed

    cdef list _take(self, int n):
        cdef list out = []
        cdef object request
        for i in range(n):
            request = <object><PyObject *><uintptr_t>self._buf[i].token
            Py_DECREF(request)   # the list holds it now
            if self._buf[i].status != ENGINE_FORGOTTEN:
                # (a forgotten one stays claimed: an engine thread may still
                # wait for it, so nobody else may)
                (<_Request>request).claim = CLAIM_NONE
            out.append((request, self._buf[i].status, self._buf[i].retval))
        return out

    def watched(self, VeoCtxt ctx not None):
        """The requests of `ctx` the engine watches now (they stay watched)."""
        if self._e == NULL or ctx.handle_ == NULL:
            return []
        cdef int n, i, cap = 64
        cdef uint64_t *tokens = NULL
        cdef list out = []
        while True:
            PyMem_Free(tokens)
            tokens = <uint64_t *>PyMem_Malloc(cap * sizeof(uint64_t))
            if tokens == NULL:
                raise MemoryError()
            n = engine_tokens(self._e, <void *>ctx.handle_, tokens, cap)
            if n <= cap:
                break
            cap = n + 64
        try:
            # (the engine holds a reference to each, and drops it only in
            # _take, under the GIL: they are alive)
            for i in range(n):
                out.append(<object><PyObject *><uintptr_t>tokens[i])
        finally:
            PyMem_Free(tokens)
        return out

    def forget(self, VeoCtxt ctx not None, unsigned timeout_ms=5000):
        """Stop watching `ctx`: its requests come out of the next dispatch() with
        status FORGOTTEN.  False when an engine thread was still inside
        libveo for it after `timeout_ms` (then the context must not be freed)."""
        if self._e == NULL or ctx.handle_ == NULL:
            return True
        cdef void *h = <void *>ctx.handle_
        cdef int rc
        with nogil:
            rc = engine_forget(self._e, h, ENGINE_FORGOTTEN, timeout_ms)
        return rc >= 0

    def close(self, unsigned timeout_ms=5000):
        """Stop the engine's threads; requests still watched are dropped
        unfinished (the core keeps their buffers until the VE is done)."""
        self._shutdown(timeout_ms)

    cdef void _shutdown(self, unsigned timeout_ms):
        cdef engine *e = self._e
        if e == NULL:
            return
        self._e = NULL
        cdef int leaked, n
        with nogil:
            leaked = engine_stop(e, timeout_ms)
        while True:
            with nogil:
                n = engine_drain(e, self._buf, DRAIN_MAX)
            if n == 0:
                break
            for request, _, _ in self._take(n):   # dropped unfinished: cut its links
                (<_Request>request).future = None
                (<_Request>request).owner = None
        if not leaked:  # else a detached waiter thread may still touch it
            engine_free(e)

    def __dealloc__(self):
        self._shutdown(1000)


def _wake_engine(Engine engine):
    """The deferred wake of Engine.defer_wakes, run by the event loop."""
    engine._wake_due = False
    if engine._e != NULL:
        with nogil:
            engine_wake(engine._e)
