# The PyVEO object model: VeoFunction, VeoLibrary, VeoCtxt, VeoProc.

cdef class VeoFunction:
    """A VE function: declare its types with ``args_type``/``ret_type`` (or find
    it by prototype), then ``fn(ctx, *args)`` submits a call."""
    cdef readonly VeoLibrary lib
    cdef readonly uint64_t addr
    cdef readonly str name
    cdef readonly tuple _args_type
    cdef readonly object _ret_type
    cdef int nargs           # -1 until args_type() is called
    cdef int ret_type_code   # value code of the result
    cdef int *codes          # value code of each argument
    cdef int64_t *lo         # range of each integer argument (from aioveo._ctype)
    cdef uint64_t *hi
    cdef char *pkind         # the dtype a VEArray argument needs (see _pointee), 0: any
    cdef int *psize
    cdef tuple ctypes

    def __cinit__(self):
        self.nargs = -1
        self.ret_type_code = VEO_EMU_TYPE_I32  # PyVEO's default return type is "int"

    def __init__(self, VeoLibrary lib, uint64_t addr, name):
        self.lib = lib
        self.addr = addr
        self.name = name.decode() if isinstance(name, bytes) else str(name)
        self._ret_type = "int"

    def __dealloc__(self):
        PyMem_Free(self.codes)
        PyMem_Free(self.lo)
        PyMem_Free(self.hi)
        PyMem_Free(self.pkind)
        PyMem_Free(self.psize)

    def args_type(self, *types):
        """Declare the C types of the arguments (``"int"``, ``"double"``, ``"char *"``, ...)."""
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
        cdef size_t n = max(len(parsed), 1)
        cdef int *codes = <int *>PyMem_Malloc(n * sizeof(int))
        cdef int64_t *lo = <int64_t *>PyMem_Malloc(n * sizeof(int64_t))
        cdef uint64_t *hi = <uint64_t *>PyMem_Malloc(n * sizeof(uint64_t))
        cdef char *pkind = <char *>PyMem_Malloc(n * sizeof(char))
        cdef int *psize = <int *>PyMem_Malloc(n * sizeof(int))
        if codes == NULL or lo == NULL or hi == NULL or pkind == NULL or psize == NULL:
            PyMem_Free(codes)
            PyMem_Free(lo)
            PyMem_Free(hi)
            PyMem_Free(pkind)
            PyMem_Free(psize)
            raise MemoryError()
        for i, t in enumerate(parsed):
            codes[i] = _code_of(t)
            lo[i] = t.min if t.min is not None else 0
            hi[i] = t.max if t.max is not None else 0
            _pointee(t, &pkind[i], &psize[i])
        PyMem_Free(self.codes)
        PyMem_Free(self.lo)
        PyMem_Free(self.hi)
        PyMem_Free(self.pkind)
        PyMem_Free(self.psize)
        self.codes, self.lo, self.hi = codes, lo, hi
        self.pkind, self.psize = pkind, psize
        self.nargs = len(parsed)
        self.ctypes = tuple(parsed)
        self._args_type = tuple(types)

    def ret_type(self, rettype):
        """Declare the C return type; floating point works on the emulator too."""
        from ._ctype import parse_type
        self.ret_type_code = _code_of(parse_type(rettype))
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
        cdef int code = self.ret_type_code
        if _is_emu and api.emu_args_set_ret_type == NULL and \
                (code == VEO_EMU_TYPE_FLOAT or code == VEO_EMU_TYPE_DOUBLE):
            # On a VE the 64-bit result holds a double (a float in bits
            # 63:32); on the host it comes back in another register, which
            # only the emulator's extension can fetch.
            raise MissingFunctionError(
                f"{self.name}: a {self._ret_type} result needs the emulator's "
                f"veo_emu_args_set_ret_type, which this libveo ({_backend.path}) lacks",
                func="veo_emu_args_set_ret_type")
        cdef veo_args *a = api.args_alloc()
        if a == NULL:
            raise MemoryError("veo_args_alloc failed")
        cdef int i
        cdef object proc = self.lib.proc
        cdef size_t image = 176 + 8 * <size_t>self.nargs  # AVEO's stack image (see below)
        try:
            for i in range(self.nargs):
                x = args[i]
                if type(x) is OnStack:
                    keep.append(x)
                    image += ((<OnStack>x)._size + 7) & ~(<size_t>7)
                    _set_stack(a, i, <OnStack>x)
                else:
                    _set_arg(a, i, self, x, proc)
            image = (image + 15) & ~(<size_t>15)
            if image > STACK_IMAGE_MAX:
                raise ValueError(
                    f"{self.name}: its OnStack arguments make a {image}-byte stack image, more "
                    f"than the {STACK_IMAGE_MAX} bytes (63 MiB) a VE context's stack takes "
                    f"(AVEO refuses the call); pass large arrays in VE memory instead "
                    f"(alloc_mem + write_mem, or `await ctx.to_ve(array)`)")
            # Only the emulator needs the declared return type (the host ABI
            # returns floating point in another register than integers).
            if _is_emu and code != VEO_EMU_TYPE_U64 and code != VEO_EMU_TYPE_I64 \
                    and api.emu_args_set_ret_type != NULL:
                api.emu_args_set_ret_type(a, VEO_EMU_TYPE_U64 if code == T_PTR else code)
        except BaseException:
            api.args_free(a)
            raise
        return a

    cdef inline uint64_t _submit(self, veo_thr_ctxt *h, veo_args *a) noexcept:
        cdef uint64_t rid, addr = self.addr
        with nogil:  # waits when the context's command queue is full
            rid = api.call_async(h, addr, a)
        return rid

    def __call__(self, VeoCtxt ctx not None, *args):
        """Submit ``self(*args)`` on `ctx`; returns a VeoRequest."""
        return self._request(ctx, args)

    def _call_within(self, VeoCtxt ctx not None, tuple args, double max_us):
        """Submit ``self(*args)`` on `ctx` and peek for up to `max_us`
        microseconds: the converted result (collected) if the VE finished the
        call by then, else its VeoRequest.  The asyncio layer's fast path in
        one native step; a call done on the spot with nothing on the stack
        needs no request object at all."""
        cdef list keep = []
        cdef veo_args *a = NULL
        cdef uint64_t rid = self._submitted(ctx, args, keep, &a)
        cdef uint64_t ret = 0
        cdef int rc = _spot_raw(ctx.handle_, rid, max_us, &ret)
        if rc == VEO_COMMAND_OK and not keep:
            api.args_free(a)
            return _convert_result(self.ret_type_code, ret, ctx.proc)
        cdef VeoRequest r = self._wrap(ctx, rid, a, keep)
        if rc == VEO_COMMAND_UNFINISHED:
            return r
        return r.finish(rc, ret)

    def _submit_watched(self, VeoCtxt ctx not None, tuple args, future, owner,
                       Engine engine not None):
        """Submit ``self(*args)`` on `ctx`, with its ``future`` and ``owner``
        set, and hand it to `engine`: the asyncio layer's submission with
        many in flight, in one native step.  Returns the request."""
        cdef VeoRequest r = self._request(ctx, args)
        r.future = future
        r.owner = owner
        engine.watch(r)
        return r

    cdef VeoRequest _request(self, VeoCtxt ctx, tuple args):
        cdef list keep = []
        cdef veo_args *a = NULL
        cdef uint64_t rid = self._submitted(ctx, args, keep, &a)
        return self._wrap(ctx, rid, a, keep)

    cdef uint64_t _submitted(self, VeoCtxt ctx, tuple args, list keep,
                             veo_args **args_out) except? 0:
        """``self(*args)`` converted and submitted on `ctx`: its request id;
        the veo_args (``*args_out``) and the OnStack buffers (`keep`) are the
        caller's to hand to a request, or to free."""
        self._check_call(ctx, len(args))
        cdef veo_thr_ctxt *h = ctx._live_handle()
        cdef veo_args *a = self._build_args(args, keep)
        cdef uint64_t rid = self._submit(h, a)
        if rid == VEO_REQUEST_ID_INVALID:
            api.args_free(a)
            hint = ""
            if keep:
                hint = (" (with OnStack arguments: on a VE the stack image's limit is below "
                        "63 MiB by however far the context's stack pointer sits below its "
                        "64 MiB-aligned region's end)")
            _fail(f"{self.name}: veo_call_async failed{hint}", "veo_call_async", None, None, ctx)
        args_out[0] = a
        return rid

    cdef VeoRequest _wrap(self, VeoCtxt ctx, uint64_t rid, veo_args *a, list keep):
        cdef VeoRequest r = VeoRequest.__new__(VeoRequest)
        r.ctx = ctx
        r.req = rid
        r.ret_type_code = self.ret_type_code
        r.is_call = True
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
        b.is_call = True
        b.ret_type_code = self.ret_type_code
        b.ids = <uint64_t *>PyMem_Malloc(n * sizeof(uint64_t))
        b.args = <veo_args **>PyMem_Malloc(n * sizeof(veo_args *))
        if b.ids == NULL or b.args == NULL:
            raise MemoryError()
        cdef list keep = []
        cdef Py_ssize_t built = 0, sent = 0
        for i in range(n):   # every call's arguments first, with the GIL
            t = todo[i]
            try:
                if type(t) is not tuple:
                    t = tuple(t)
                self._check_call(ctx, len(<tuple>t))
                b.args[i] = self._build_args(<tuple>t, keep)
            except BaseException as e:
                e.add_note(f"{self.name}: in call {i} of the batch, arguments {t!r:.200}; "
                           f"no call of the batch was submitted")
                for i in range(built):
                    api.args_free(b.args[i])
                raise
            built += 1
        cdef uint64_t addr = self.addr
        with nogil:          # then all submissions in one go, without it
            while sent < n:
                b.ids[sent] = api.call_async(h, addr, b.args[sent])
                if b.ids[sent] == VEO_REQUEST_ID_INVALID:
                    break
                sent += 1
        b.n = sent
        b.keep = keep if keep else None
        if sent < n:
            for i in range(sent, n):
                api.args_free(b.args[i])
            _fail(f"{self.name}: veo_call_async failed (call {sent} of the batch)",
                  "veo_call_async", None, None, ctx)
        return b


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
        cdef bytes b = symname.encode()
        cdef const char *cname = b
        cdef uint64_t handle = self.lib_handle, addr
        with nogil:  # a round trip to the VE process
            addr = api.get_sym(h, handle, cname)
        if addr == 0:
            if self.proc._is_dead():
                _fail(f"looking up {symname!r}", "veo_get_sym", 0, self.proc)
            hint = ""
            from ._elf import close_matches
            near = close_matches(symname, self.name)
            if near:
                hint = f"; did you mean {' or '.join(repr(n) for n in near)}?"
            raise SymbolNotFoundError(f"symbol {symname!r} not found in {self.name}{hint}",
                                      func="veo_get_sym", code=0, node=self.proc.nodeid)
        return addr

    def get_symbol(self, symname):
        """The VE address of a symbol (a global variable, say) as a VEMemPtr."""
        if isinstance(symname, bytes):
            symname = symname.decode()
        ptr = VEMemPtr(self.proc, self._lookup(symname), 0)
        self.symbol[symname] = ptr
        return ptr

    def find_function(self, name):
        """The VeoFunction `name`; given a C prototype (``"double dot(double *a,
        double *b, long n)"``) its argument and return types are set too."""
        if isinstance(name, bytes):   # PyVEO programs pass bytes too
            name = name.decode()
        if not isinstance(name, str):
            raise TypeError(f"a function name or C prototype must be a str, not "
                            f"{type(name).__name__}")
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


#: AVEO's limit on a call's stack image (stack arguments included): its
#: documented "63MB"; on a VE it is lower by however far the context's stack
#: pointer sits below the end of its 64 MiB-aligned region.
cdef size_t STACK_IMAGE_MAX = 63 << 20
STACK_ARGS_LIMIT = STACK_IMAGE_MAX

_C_SPACE = " \t\n\v\f\r"


def _stoi(value):
    """VE_OMP_NUM_THREADS as AVEO reads it (std::stoi): leading blanks and a
    sign, then digits, anything after them ignored.  None when std::stoi
    would throw (no digits, or out of an int's range): AVEO aborts the
    process then."""
    if value is None:
        return None
    s = value.lstrip(_C_SPACE)
    n = 1 if s[:1] in ("+", "-") else 0
    while n < len(s) and "0" <= s[n] <= "9":
        n += 1
    digits = s[:n]
    if not digits.lstrip("+-"):
        return None
    v = int(digits)
    return v if -2**31 <= v < 2**31 else None


def second_context_problem():
    """Why AVEO would refuse to open a second context of a proc now (it needs
    VE_OMP_NUM_THREADS=1 in the host's environment, ProcHandle::openContext),
    or None.  A value that is not a number would make AVEO abort the process."""
    raw = os.environ.get("VE_OMP_NUM_THREADS")
    value = _stoi(raw)
    if value == 1:
        return None
    if raw is None:
        now = "it is not set"
    elif value is None:
        now = (f"it is {raw!r}, which is not a number: AVEO would abort the whole process "
               f"(an uncaught std::invalid_argument), so aioveo did not call it")
    else:
        now = f"it is {raw!r}"
    return (f"a second context of a proc needs VE_OMP_NUM_THREADS=1 in the environment "
            f"(AVEO refuses it otherwise); {now}.  Set it before the proc is created, e.g. "
            f"os.environ['VE_OMP_NUM_THREADS'] = '1' (the VE process inherits it: each kernel "
            f"then runs one OpenMP thread).  The first context of a proc is its main context, "
            f"which stays until the proc is destroyed, so a context opened after closing it is "
            f"a second one too")


cdef int _check_second_context(VeoProc proc) except -1:
    """Check before calling libveo, and say how to fix it."""
    problem = second_context_problem()
    if problem is not None:
        raise VeoError(problem + _where(proc, None), func=None, node=proc.nodeid,
                       proc=proc.ident)
    raw = os.environ.get("VE_OMP_NUM_THREADS")
    if raw != proc.omp_threads_at_create:
        log.warning("aioveo: VE_OMP_NUM_THREADS is %r now but was %r when proc %d was "
                    "created: its VE process keeps the value it was started with",
                    raw, proc.omp_threads_at_create, proc.ident)
    return 0


cdef class VeoCtxt:
    """A context: a worker thread of the VE process with a FIFO queue.  The
    first one opened on a proc is the proc's main context (``is_main``): the
    one the proc's synchronous calls (memory, libraries) queue behind."""
    cdef veo_thr_ctxt *handle_
    cdef readonly uintptr_t handle_was  # the raw handle, kept for error reports
    cdef readonly VeoProc proc
    cdef readonly bint is_main
    cdef readonly int index            # 0 for the main context, then 1, 2, ... as opened
    cdef public bint death_reported    # see _request_error
    cdef int users                     # our threads inside a blocking libveo call on it
    cdef bint closing                  # a thread is in _close: it alone closes the handle
    cdef list _orphans        # (req id, veo_args *, keep, can_wait) of dropped requests
    cdef object __weakref__

    def __init__(self, VeoProc proc not None):
        cdef veo_proc_handle *ph = proc._live_handle()
        if proc._opened > 0 or proc.main_ != NULL:
            _check_second_context(proc)
        cdef int ticket = proc._opened
        proc._opened += 1
        cdef veo_thr_ctxt *h
        cdef veo_thr_ctxt *main
        with nogil:
            h = api.context_open(ph)
            main = api.get_context(ph, 0) if h != NULL else NULL
        if h == NULL:
            _fail("veo_context_open failed", "veo_context_open", None, proc)
        self.handle_ = h
        self.handle_was = <uintptr_t>h
        self.proc = proc
        self.is_main = h == main
        if self.is_main:
            proc.main_ = h
        self.index = 0 if self.is_main else max(ticket, 1)
        self._orphans = []

    @property
    def handle(self):
        """The raw ``veo_thr_ctxt *`` (0 once closed)."""
        return <uintptr_t>self.handle_

    @property
    def closed(self):
        """Closed by its owner (or its proc destroyed); see ``alive``."""
        return self.handle_ == NULL

    @property
    def alive(self):
        """Open and its VE process running (False once closed or dead)."""
        return self.handle_ != NULL and not _ctx_dead(self) and not self.proc._is_dead()

    cdef veo_thr_ctxt *_live_handle(self) except NULL:
        # (a proc being destroyed has its handle cleared first: its contexts
        # take no new use from then on, as AVEO frees them in the destroy)
        cdef bint proc_gone = self.proc is not None and self.proc.handle_ == NULL
        if self.handle_ == NULL or proc_gone:
            where = _where(self.proc, self)
            if proc_gone:
                raise ClosedError(f"the proc of this context was destroyed{where}",
                                  **_where_attrs(self.proc, self))
            raise ClosedError(f"the context is closed{where}", **_where_attrs(self.proc, self))
        if self.closing:   # no new use may start: the closer frees it soon
            raise ClosedError(f"the context is closing{_where(self.proc, self)}",
                              **_where_attrs(self.proc, self))
        return self.handle_

    def state(self):
        """veo_get_context_state: one of the VEO_STATE_* values."""
        if self.handle_ == NULL:
            return VEO_STATE_EXIT
        return api.get_context_state(self.handle_)

    def _adopt(self, uint64_t req, uintptr_t args, keep, bint can_wait=True):
        if self._orphans is None:   # (cannot be: no_gc_clear) never raise in a dealloc
            return
        self._orphans.append((req, args, keep, can_wait))
        if len(self._orphans) > 64:
            self._reap_orphans()

    cdef _reap_orphans(self, bint wait=False):
        """Collect dropped requests the VE is done with (they complete in order).
        An orphan is taken off the list before the GIL is released, so two
        threads reaping at once never free the same one.  An orphan an engine
        thread may still wait for (``can_wait`` False) is never waited for
        here: one waiter per request id."""
        cdef uint64_t ret, rid
        cdef int rc
        cdef veo_thr_ctxt *h
        while self._orphans:
            h = self.handle_
            if h != NULL and not (wait and self._orphans[0][3]):
                rid = self._orphans[0][0]
                if api.call_peek_result(h, rid, &ret) == VEO_COMMAND_UNFINISHED:
                    return
            req, args, keep, can_wait = self._orphans.pop(0)
            if h != NULL and wait and can_wait:
                rid = req
                self.users += 1
                with nogil:
                    rc = api.call_wait_result(h, rid, &ret)
                self.users -= 1
            if args:
                api.args_free(<veo_args *><uintptr_t>args)
            _release_all(keep)

    cdef VeoRequest _transfer(self, bint to_ve, object host, object ve_addr, object size):
        """Queue a copy between the host buffer `host` and VE memory `ve_addr`."""
        cdef veo_thr_ctxt *h = self._live_handle()
        arg_name = "src" if to_ve else "dst"
        cdef _HostBuffer buf = _HostBuffer.get(host, not to_ve, arg_name)
        cdef size_t n = _transfer_size(buf, size, arg_name)
        cdef uint64_t addr = _ve_addr(self.proc, ve_addr, "dst" if to_ve else "src", n)
        cdef uint64_t rid
        cdef void *p = buf.view.buf
        with nogil:
            if to_ve:
                rid = api.async_write_mem(h, addr, p, n)
            else:
                rid = api.async_read_mem(h, p, addr, n)
        func = "veo_async_write_mem" if to_ve else "veo_async_read_mem"
        if rid == VEO_REQUEST_ID_INVALID:
            buf.release()
            _fail(f"{func} failed", func, None, None, self)
        cdef VeoRequest r = VeoRequest.__new__(VeoRequest)
        r.ctx = self
        r.req = rid
        r.ret_type_code = VEO_EMU_TYPE_I32
        r.keep = [buf]
        return r

    def async_read_mem(self, dst, src, size=None):
        """Queue a copy of VE memory `src` into the host buffer `dst`; returns a
        VeoRequest holding `dst` until it completes."""
        return self._transfer(False, dst, src, size)

    def async_write_mem(self, dst, src, size=None):
        """Queue a copy of the host buffer `src` to VE memory `dst`; returns a
        VeoRequest holding `src` until it completes."""
        return self._transfer(True, src, dst, size)

    def context_sync(self):
        """Wait until everything queued on this context so far is done."""
        cdef veo_thr_ctxt *h = self._live_handle()
        self.users += 1
        try:
            with nogil:
                api.context_sync(h)
        finally:
            self.users -= 1
        self._reap_orphans(True)

    cdef int _wait_no_users(self) except -1:
        """Wait until none of our threads is inside a blocking libveo call on
        this context (AVEO frees a context at close and at proc destroy)."""
        while self.users > 0:
            with nogil:
                _sleep_ns(1000000)
        return 0

    cdef int _wait_closer(self) except -1:
        """Wait until a thread closing this context has closed it."""
        while self.closing and self.handle_ != NULL:
            with nogil:
                _sleep_ns(1000000)
        return 0

    cdef int _wait_detached(self) except -1:
        """Wait until the destroy of this context's proc has released it."""
        while self.handle_ != NULL:
            with nogil:
                _sleep_ns(1000000)
        return 0

    cdef void _detach(self):
        """The proc was destroyed: forget the handle, release dropped requests."""
        self.handle_ = NULL
        self._reap_orphans()

    cdef int _close(self) except -1:
        cdef veo_thr_ctxt *h = self.handle_
        if h == NULL:
            return 0
        if self.closing:   # another thread closes it: wait until it has
            return self._wait_closer()
        if self.proc.handle_ == NULL:   # its proc is being destroyed, which frees it
            return self._wait_detached()
        self.closing = True
        # AVEO frees a context (other than the main one) at close: drain it
        # first, let our threads waiting on it leave, collect what was dropped;
        # only then close it.
        self.users += 1
        try:
            with nogil:
                api.context_sync(h)
        finally:
            self.users -= 1
        self._wait_no_users()
        self._reap_orphans(True)
        cdef int rc
        self.handle_ = NULL
        with nogil:
            rc = api.context_close(h)   # the main context's close does nothing
        if rc != 0:
            _fail("veo_context_close failed", "veo_context_close", rc, self.proc)
        return 0

    def __repr__(self):
        state = "closed" if self.handle_ == NULL else f"0x{<uintptr_t>self.handle_:x}"
        main = " main" if self.is_main else ""
        return f"<VeoCtxt{main} {self.index} {state} of {self.proc!r}>"


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
    `veorun_bin`, a helper with statically linked kernels (veo_proc_create_static).

    Its identifier and the VE process's pid are read once, at creation: on
    AVEO both calls take a global lock that destroying any proc holds."""
    cdef veo_proc_handle *handle_
    cdef readonly int nodeid
    cdef readonly list context
    cdef readonly dict lib
    cdef readonly object veorun_bin
    cdef readonly int ident            # veo_proc_identifier at creation
    cdef int pid_                      # the VE process's pid at creation (-1: unknown)
    cdef veo_thr_ctxt *main_           # the main context, once opened
    cdef int _opened                   # contexts opened so far
    cdef readonly object omp_threads_at_create   # $VE_OMP_NUM_THREADS then
    cdef readonly bint killed          # ended by force (kill(), a grace that ran out)
    cdef bint _reaped                  # veo_proc_destroy returned: the pid is not ours
    cdef object __weakref__

    def __init__(self, int nodeid=-1, veorun_bin=None):
        _ensure_api()
        self.nodeid = nodeid
        self.context = []
        self.lib = {}
        self.ident = -1
        self.pid_ = -1
        cdef bytes path
        cdef char *cpath
        self.omp_threads_at_create = os.environ.get("VE_OMP_NUM_THREADS")
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
            detail = _emu_message()
            raise VeoError(f"cannot create a VE process on node {nodeid}"
                           + (f" ({detail})" if detail else ""),
                           func="veo_proc_create_static" if veorun_bin is not None
                           else "veo_proc_create", node=nodeid)
        cdef int ident, pid = -1
        cdef veo_proc_handle *h = self.handle_
        with nogil:
            ident = api.proc_identifier(h)
            if 0 <= ident < 16:   # the hmem encoding holds 16 identifiers
                pid = api.get_pid_from_hmem(api.set_proc_identifier(NULL, ident))
        self.ident = ident
        self.pid_ = pid
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
    def alive(self):
        """Not destroyed, and its VE process runs (False after a fault or a kill)."""
        return self.handle_ != NULL and not self._is_dead()

    @property
    def pid(self):
        """The VE process's pid (from AVEO's API, at creation): None once the
        proc is destroyed or dead, or when the libveo did not tell."""
        if self.handle_ == NULL or self.pid_ <= 0 or self._is_dead():
            return None
        return self.pid_

    @property
    def helper_pid(self):
        """The emulator helper's pid: ``pid`` on the emulator, None on a VE."""
        return self.pid if _is_emu else None

    cdef veo_proc_handle *_live_handle(self) except NULL:
        if self.handle_ == NULL:
            raise ClosedError(f"the proc was destroyed{_where(self, None)}",
                              **_where_attrs(self, None))
        return self.handle_

    def _is_dead(self):
        """Whether the VE process died: its main context (or one of ours)
        reports VEO_STATE_EXIT.  Reads context states only (no lock in AVEO);
        before any context was opened, veo_get_context runs without the GIL."""
        cdef veo_proc_handle *h = self.handle_
        cdef veo_thr_ctxt *main = self.main_
        if h == NULL:
            return False
        if self.killed:
            return True
        if main == NULL and self._opened == 0:
            with nogil:
                main = api.get_context(h, 0)
        if main != NULL and api.get_context_state(main) == VEO_STATE_EXIT:
            return True
        for c in self.context:
            if _ctx_dead(<VeoCtxt>c):
                return True
        return False

    def proc_identifier(self):
        """This proc's identifier (0, 1, 2, ... in creation order), read at creation."""
        self._live_handle()
        return self.ident

    def kill(self):
        """End the VE process by force, now (SIGKILL to its pid, on both
        backends): its requests fail with ProcDeadError; ``destroy()`` then
        returns at once.  Returns False when the pid is unknown."""
        if self._reaped or self.pid_ <= 0:
            return False
        self.killed = True
        log.debug("aioveo: ending the VE process of %r by force", self)
        _kill(self.pid_)
        return True

    # -- libraries
    def load_library(self, libname):
        """Load a shared object into the VE process; returns a VeoLibrary.
        The path is resolved as dlopen resolves it: a bare name is searched
        in the library path, not in the current directory."""
        cdef veo_proc_handle *h = self._live_handle()
        name = os.fsdecode(os.fspath(libname))
        cdef bytes path = os.fsencode(name)
        if b"\0" in path:
            raise ValueError("library path contains a NUL byte")
        cdef uint64_t handle
        cdef const char *cpath = path
        with nogil:
            handle = api.load_library(h, cpath)
        if handle == 0:
            if "/" not in name and os.path.exists(name):
                raise VeoError(f"cannot load library {name!r}: a bare name is searched in the "
                               f"library path, not in the current directory, as dlopen does; "
                               f"pass './{name}' or an absolute path",
                               func="veo_load_library", code=0, node=self.nodeid)
            if not os.path.exists(name):
                raise VeoError(f"cannot load library {name!r}: no such file",
                               func="veo_load_library", code=0, node=self.nodeid)
            _fail(f"cannot load library {name!r}", "veo_load_library", 0, self)
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
            _fail(f"cannot unload {l.name!r}", "veo_unload_library", rc, self)
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
            _fail(f"cannot allocate {size} bytes of VE memory", "veo_alloc_mem", rc, self)
        return VEMemPtr(self, addr, n)

    def free_mem(self, ptr):
        """Free VE memory allocated with alloc_mem."""
        cdef veo_proc_handle *h = self._live_handle()
        if type(ptr) is VEMemPtr and (<VEMemPtr>ptr).block is not None:
            raise ValueError(f"{ptr!r} is memory-pool memory (from the asyncio API): give it "
                             f"back with `await ctx.free_mem(ptr)` or ptr.block.free()")
        cdef uint64_t addr = _ve_addr(self, ptr, "ptr", 0)
        cdef int rc
        with nogil:
            rc = api.free_mem(h, addr)
        if rc != 0:
            _fail(f"cannot free VE memory at 0x{addr:x}", "veo_free_mem", rc, self)
        if type(ptr) is VEMemPtr:
            (<VEMemPtr>ptr).freed_ = True

    cdef int _copy(self, bint to_ve, object host, object ve_addr, object size) except -1:
        """Copy between the host buffer `host` and VE memory, synchronously."""
        cdef veo_proc_handle *h = self._live_handle()
        arg_name = "src" if to_ve else "dst"
        cdef _HostBuffer buf = _HostBuffer.get(host, not to_ve, arg_name)
        cdef size_t n = _transfer_size(buf, size, arg_name)
        cdef uint64_t addr = _ve_addr(self, ve_addr, "dst" if to_ve else "src", n)
        cdef int rc
        cdef void *p = buf.view.buf
        with nogil:
            if to_ve:
                rc = api.write_mem(h, addr, p, n)
            else:
                rc = api.read_mem(h, p, addr, n)
        buf.release()
        if rc != 0:
            if to_ve:
                _fail(f"cannot write {n} bytes to VE address 0x{addr:x}", "veo_write_mem", rc, self)
            _fail(f"cannot read {n} bytes from VE address 0x{addr:x}", "veo_read_mem", rc, self)
        return 0

    def read_mem(self, dst, src, size=None):
        """Copy `size` bytes (default: all of `dst`) of VE memory `src` into the
        host buffer `dst` (any writable buffer: bytearray, numpy array, ...)."""
        self._copy(False, dst, src, size)

    def write_mem(self, dst, src, size=None):
        """Copy `size` bytes (default: all of `src`) of the host buffer `src` to
        VE memory `dst`."""
        self._copy(True, src, dst, size)

    def alloc_hmem(self, size):
        """Allocate VE memory as a heterogeneous-memory address (veo_alloc_hmem)."""
        cdef veo_proc_handle *h = self._live_handle()
        _need(<void *>api.alloc_hmem, "veo_alloc_hmem")
        if size <= 0:
            raise ValueError(f"size must be > 0, not {size}")
        cdef size_t n = size
        cdef void *p = NULL
        cdef int rc
        with nogil:
            rc = api.alloc_hmem(h, &p, n)
        if rc != 0:
            _fail(f"cannot allocate {size} bytes of hmem", "veo_alloc_hmem", rc, self)
        return VEMemPtr(self, <uint64_t><uintptr_t>p, n)

    def free_hmem(self, ptr):
        """Free memory from alloc_hmem."""
        self._live_handle()
        _need(<void *>api.free_hmem, "veo_free_hmem")
        if type(ptr) is VEMemPtr and (<VEMemPtr>ptr).proc is not self:
            raise ValueError(f"{ptr!r} belongs to another proc")
        cdef uint64_t addr = int(ptr)
        if not addr & HMEM_FLAG:
            raise ValueError(f"0x{addr:x} is not an hmem address of a VE")
        cdef int rc
        with nogil:   # a free on the main context: it queues behind its work
            rc = api.free_hmem(<void *><uintptr_t>addr)
        if rc != 0:
            _fail(f"cannot free hmem 0x{addr:x}", "veo_free_hmem", rc, self)

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
    def destroy(self, grace=None):
        """End the VE process and with it every context (idempotent).

        veo_proc_destroy lets queued work finish, with no time limit on AVEO.
        A VE process still busy after `grace` seconds (default: the
        ``exit_grace`` setting, 5 s) is ended by force (see closing.pxi), so
        a kernel that never returns cannot hang the caller; ``grace=0`` ends
        it at once."""
        if self.handle_ == NULL:
            return
        if grace is None:
            from .settings import current
            grace = current().exit_grace
        watchdog = _end_after(self, grace)
        cdef veo_proc_handle *h = self.handle_
        self.handle_ = NULL
        _live_procs.discard(self)
        cdef int rc
        try:
            # AVEO frees the contexts: our threads waiting on them leave first
            # (their requests finish, or fail once the grace ends the VE).
            for c in self.context:
                (<VeoCtxt>c)._wait_no_users()
                (<VeoCtxt>c)._wait_closer()
            with nogil:
                rc = api.proc_destroy(h)
        finally:
            self._reaped = True
            if watchdog is not None:
                watchdog.cancel()
        for c in self.context:  # the VE is gone: their buffers may be released
            (<VeoCtxt>c)._detach()
        self.context.clear()
        self.main_ = NULL
        log.debug("aioveo: destroyed proc %d on node %d", self.ident, self.nodeid)
        if rc != 0:
            raise VeoError("veo_proc_destroy failed", func="veo_proc_destroy", code=rc,
                           node=self.nodeid, proc=self.ident)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()

    def __dealloc__(self):
        cdef veo_proc_handle *h = self.handle_
        if h != NULL:  # dropped without destroy(): end the VE process
            self.handle_ = NULL
            if self.pid_ > 0:    # (a dropped proc's kernels have nobody to report to)
                _kill(self.pid_)
            with nogil:
                api.proc_destroy(h)

    def __repr__(self):
        state = "destroyed" if self.handle_ == NULL else f"0x{<uintptr_t>self.handle_:x}"
        if self.handle_ != NULL and self._is_dead():
            state += " dead"
        return f"<VeoProc {self.ident} node {self.nodeid} {state}>"
