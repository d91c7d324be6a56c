# Submitted work.  One base (_Request) holds what every request shares: its
# context, how its result converts, the host buffers the VE may still touch,
# the collect-once rule, and the two fields the asyncio layer needs (the
# awaiting future and the owner whose in-flight slots it holds), so one
# object is the whole record of a request in flight.  VeoRequest is one call
# or transfer; VeoBatch is many calls of one function submitted together.

cdef inline uint64_t _now_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <uint64_t>t.tv_sec * 1000000000ULL + <uint64_t>t.tv_nsec


cdef inline void _sleep_ns(uint64_t ns) noexcept nogil:
    cdef timespec t
    t.tv_sec = <long>(ns // 1000000000ULL)
    t.tv_nsec = <long>(ns % 1000000000ULL)
    nanosleep(&t, NULL)


# Who collects a request from libveo: one waiter per request id.  On AVEO a
# second waiter (or a peek) of an id another thread waits for takes the
# completion or sleeps for ever (Context::callWaitResult checks the id, then
# sleeps until its completion arrives), so the core lets one thread (or the
# completion engine) call libveo for a request; the others wait for it.
cdef enum:
    CLAIM_NONE = 0
    CLAIM_WAITER = 1     # a thread is in veo_call_wait_result (or polling) for it
    CLAIM_ENGINE = 2     # the completion engine watches it


cdef int _peek_until(veo_thr_ctxt *h, uint64_t rid, uint64_t *ret, uint64_t start,
                     uint64_t until) noexcept nogil:
    """Peek at `rid` until it is done or the clock reaches `until`: spin for
    the first 50 us after `start`, then sleep between peeks for 1/8 of the
    time waited since `start` (at least 2 us, at most 20 ms): a result is seen
    within ~12% of its wait, and a long wait costs a few wake-ups a second, as
    the engine's back-off does.  UNFINISHED if not done."""
    cdef uint64_t now, pause
    cdef int rc
    while True:
        rc = api.call_peek_result(h, rid, ret)
        if rc != VEO_COMMAND_UNFINISHED:
            return rc
        now = _now_ns()
        if now >= until:
            return VEO_COMMAND_UNFINISHED
        if now - start > 50000:
            pause = (now - start) // 8
            if pause > 20000000:
                pause = 20000000
            _sleep_ns(pause)


cdef int _spot_raw(veo_thr_ctxt *h, uint64_t rid, double max_us, uint64_t *ret) noexcept:
    """Peek at `rid` (GIL held, never blocking) for up to `max_us`
    microseconds: its status once the VE is done, else UNFINISHED."""
    cdef uint64_t end
    cdef int rc
    if h == NULL:
        return VEO_COMMAND_UNFINISHED
    end = _now_ns() + <uint64_t>(max_us * 1000.0)
    while True:
        rc = api.call_peek_result(h, rid, ret)
        if rc != VEO_COMMAND_UNFINISHED:
            return rc
        if _now_ns() >= end:
            return VEO_COMMAND_UNFINISHED


cdef int _wait_raw(VeoCtxt ctx, veo_thr_ctxt *h, uint64_t rid, uint64_t *ret) except -2:
    """veo_call_wait_result, interruptible in the main thread: there it peeks
    in slices of 50 ms and lets Python run its signal handlers in between,
    so Ctrl-C raises KeyboardInterrupt (the request stays uncollected)."""
    cdef int rc
    cdef uint64_t start
    ctx.users += 1
    try:
        if threading.current_thread() is not threading.main_thread():
            with nogil:
                rc = api.call_wait_result(h, rid, ret)
            return rc
        start = _now_ns()
        while True:
            with nogil:
                rc = _peek_until(h, rid, ret, start, _now_ns() + 50000000)
            if rc != VEO_COMMAND_UNFINISHED:
                return rc
            PyErr_CheckSignals()
    finally:
        ctx.users -= 1


cdef void _release_all(object keep):
    """Release the host buffers a finished request held."""
    if keep is not None:
        for b in keep:
            if type(b) is _HostBuffer:
                (<_HostBuffer>b).release()


# Requests are outside the cyclic GC (no_gc): a deep pipeline makes hundreds
# of thousands a second, and tracking them cost the submit form ~10% of its
# throughput in collections.  The only links that could close a cycle through
# a request are `future` (its awaiting task's frame may hold the request) and
# `owner`; the asyncio layer cuts both on every way a request ends (completed,
# forgotten, dropped by a closing engine).  tests/test_aio.py checks it.
@cython.no_gc
cdef class _Request:
    """What single requests and batches share (not created directly)."""
    cdef readonly VeoCtxt ctx
    cdef int ret_type_code     # how the result converts (a value code)
    cdef object keep           # host buffers the VE may still touch, or None
    cdef readonly bint collected
    cdef public object future  # the asyncio layer's awaiting future, or None
    cdef public object owner   # the asyncio layer's AsyncContext holding its slots
    cdef int claim             # CLAIM_*: who may call libveo for it
    cdef bint is_call          # a kernel call (not a transfer): see KernelDiedError

    cdef uint64_t _last_id(self):
        raise NotImplementedError

    cdef object _finish(self, int status, uint64_t retval):
        raise NotImplementedError

    @property
    def req_id(self):
        """The id of the (last) call: the one a waiter watches."""
        return self._last_id()

    @property
    def slots(self):
        """How many in-flight requests this is (a batch: its calls)."""
        return 1

    cdef inline int _take(self) except -1:
        if self.collected:
            raise VeoError(f"the result of request {self._last_id()} was already collected",
                           req_id=self._last_id())
        self.collected = True
        return 0

    cpdef finish(self, int status, uint64_t retval):
        """Turn a raw (status, retval) from libveo into the result or the
        exception, releasing what the request held exactly once."""
        self._take()
        self.claim = CLAIM_NONE
        return self._finish(status, retval)

    cdef int _check_not_engine(self) except -1:
        if self.claim == CLAIM_ENGINE:
            raise VeoError(f"request {self._last_id()} is awaited through the asyncio layer, "
                           f"which collects it: await its future instead",
                           req_id=self._last_id())
        return 0

    def wait_result(self):
        """Block (without the GIL) until the VE is done; the converted result.
        Ctrl-C interrupts it in the main thread (the request stays
        uncollected).  Another thread already waiting for this request is
        waited for, never joined in libveo (one waiter per request id); the
        later waiter then finds the result collected."""
        if self.collected:
            self._take()
        self._check_not_engine()
        while self.claim == CLAIM_WAITER:
            with nogil:
                _sleep_ns(1000000)
            PyErr_CheckSignals()
            if self.collected:
                self._take()
            self._check_not_engine()
        cdef veo_thr_ctxt *h = self.ctx._live_handle()
        cdef uint64_t rid = self._last_id(), ret = 0
        cdef int rc
        self.claim = CLAIM_WAITER
        try:
            rc = _wait_raw(self.ctx, h, rid, &ret)
        except BaseException:
            self.claim = CLAIM_NONE
            raise
        return self.finish(rc, ret)

    def peek_result(self):
        """The converted result if the VE is done, else raise ``Unfinished``
        (also while another thread waits for it: that thread collects it)."""
        if self.collected:
            self._take()
        self._check_not_engine()
        cdef uint64_t ret = 0
        cdef int rc = VEO_COMMAND_UNFINISHED
        cdef veo_thr_ctxt *h = self.ctx._live_handle()
        if self.claim == CLAIM_NONE:
            rc = api.call_peek_result(h, self._last_id(), &ret)
        if rc == VEO_COMMAND_UNFINISHED:
            raise Unfinished(f"request {self._last_id()} is not finished"
                             + (" (another thread waits for it)" if self.claim else ""),
                             func="veo_call_peek_result", code=rc, req_id=self._last_id())
        return self.finish(rc, ret)

    cdef int _spot(self, double max_us, uint64_t *ret):
        """Peek (GIL held, never blocking) for up to `max_us` microseconds: the
        request's status once the VE is done, else UNFINISHED."""
        if self.claim != CLAIM_NONE:
            return VEO_COMMAND_UNFINISHED
        return _spot_raw(self.ctx.handle_, self._last_id(), max_us, ret)

    def spot(self, double max_us):
        """Peek (GIL held, never blocking) for up to `max_us` microseconds: the
        raw (status, retval) once the VE is done, else None.  The asyncio
        layer's fast path: a call that finishes at once needs no hand-off
        between threads."""
        cdef uint64_t ret = 0
        cdef int rc = self._spot(max_us, &ret)
        return None if rc == VEO_COMMAND_UNFINISHED else (rc, ret)


@cython.final
@cython.no_gc
@cython.freelist(64)
cdef class VeoRequest(_Request):
    """A submitted call or transfer.  ``wait_result()`` blocks (without the GIL)
    and returns the converted result; ``peek_result()`` raises ``Unfinished``
    until the VE is done.  A result is collected once."""
    cdef readonly uint64_t req
    cdef veo_args *args

    cdef uint64_t _last_id(self):
        return self.req

    def __repr__(self):
        return f"<VeoRequest {self.req} on {self.ctx!r}{' collected' if self.collected else ''}>"

    cdef object _finish(self, int status, uint64_t retval):
        if self.args != NULL:
            api.args_free(self.args)
            self.args = NULL
        _release_all(self.keep)
        self.keep = None
        if status == VEO_COMMAND_OK:
            return _convert_result(self.ret_type_code, retval, self.ctx.proc)
        raise _request_error(status, retval, self.ctx, self.req, f"request {self.req}",
                             self.is_call)

    def __dealloc__(self):
        # Dropped before its result was collected: the VE may still read or
        # write its buffers, so the context keeps them until it is done.
        if not self.collected and self.ctx is not None and (self.args != NULL or self.keep is not None):
            self.ctx._adopt(self.req, <uintptr_t>self.args, self.keep,
                            self.claim != CLAIM_ENGINE)
        else:
            if self.args != NULL:
                api.args_free(self.args)
            _release_all(self.keep)
        self.args = NULL
        self.keep = None


@cython.final
@cython.no_gc
cdef class VeoBatch(_Request):
    """Calls of one function submitted together (``VeoFunction.submit_batch``).
    They complete in order, so the batch is done when its last call is:
    ``req_id`` is the last call's id, which is all a waiter has to watch."""
    cdef uint64_t *ids
    cdef veo_args **args
    cdef readonly Py_ssize_t n

    cdef uint64_t _last_id(self):
        return self.ids[self.n - 1]

    @property
    def slots(self):
        return self.n

    def __len__(self):
        return self.n

    def __repr__(self):
        return f"<VeoBatch of {self.n} calls on {self.ctx!r}>"

    cdef object _finish(self, int status, uint64_t retval):
        """Collect every call (the last one's raw result is given): the list of
        results, or the first call's exception."""
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
                rc = VEO_COMMAND_ERROR
            else:
                rc = api.call_peek_result(h, self.ids[i], &ret)
                if rc == VEO_COMMAND_UNFINISHED:  # cannot be: a later call finished
                    with nogil:
                        rc = api.call_wait_result(h, self.ids[i], &ret)
            api.args_free(self.args[i])
            self.args[i] = NULL
            if rc == VEO_COMMAND_OK:
                results.append(_convert_result(self.ret_type_code, ret, self.ctx.proc))
            elif error is None:
                error = _request_error(rc, ret, self.ctx, self.ids[i], f"call {i} of the batch",
                                       True)
        _release_all(self.keep)
        self.keep = None
        if error is not None:
            raise error
        return results

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.ids != NULL and self.args != NULL:
            for i in range(self.n):
                if self.args[i] == NULL:
                    continue
                if self.ctx is not None and not self.collected:   # still on the VE
                    self.ctx._adopt(self.ids[i], <uintptr_t>self.args[i],
                                    self.keep if i == self.n - 1 else None,
                                    self.claim != CLAIM_ENGINE or i != self.n - 1)
                else:
                    api.args_free(self.args[i])
        PyMem_Free(self.ids)
        PyMem_Free(self.args)
