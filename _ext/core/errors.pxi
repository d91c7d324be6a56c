# The exceptions, and the one way a failed libveo call or request becomes one.
#
# Names follow trio's split: ClosedError (you closed it) vs ProcDeadError (it
# died under you), under one base VeoError that carries what is known: the
# libveo function, its return code or the request's status, the request id,
# the proc's node and the context.

# The C API's constants for Python, under PyVEO's names (with and without the
# VEO_ prefix), and the value codes (veo_emu_type) that aioveo._ctype uses.
_CONSTANTS = dict(
    VEO_INTENT_IN=VEO_INTENT_IN, VEO_INTENT_INOUT=VEO_INTENT_INOUT, VEO_INTENT_OUT=VEO_INTENT_OUT,
    VEO_COMMAND_OK=VEO_COMMAND_OK, VEO_COMMAND_EXCEPTION=VEO_COMMAND_EXCEPTION,
    VEO_COMMAND_ERROR=VEO_COMMAND_ERROR, VEO_COMMAND_UNFINISHED=VEO_COMMAND_UNFINISHED,
    VEO_STATE_UNKNOWN=VEO_STATE_UNKNOWN, VEO_STATE_RUNNING=VEO_STATE_RUNNING,
    VEO_STATE_SYSCALL=VEO_STATE_SYSCALL, VEO_STATE_BLOCKED=VEO_STATE_BLOCKED,
    VEO_STATE_EXIT=VEO_STATE_EXIT)
globals().update(_CONSTANTS)
globals().update({name[4:]: value for name, value in _CONSTANTS.items()})
TYPE_CODES = dict(U64=VEO_EMU_TYPE_U64, VOID=VEO_EMU_TYPE_VOID, I8=VEO_EMU_TYPE_I8,
                  U8=VEO_EMU_TYPE_U8, I16=VEO_EMU_TYPE_I16, U16=VEO_EMU_TYPE_U16,
                  I32=VEO_EMU_TYPE_I32, U32=VEO_EMU_TYPE_U32, I64=VEO_EMU_TYPE_I64,
                  FLOAT=VEO_EMU_TYPE_FLOAT, DOUBLE=VEO_EMU_TYPE_DOUBLE)


class VeoError(RuntimeError):
    """A VEO operation failed (PyVEO raised RuntimeError: this is one).

    ``func``: the libveo function that failed (None when the failure was found
    before calling libveo); ``code``: its return code, or the request's
    VEO_COMMAND_* status; ``req_id``, ``node``, ``proc`` (the proc's
    identifier) and ``context`` (the raw context handle) when known."""

    def __init__(self, message, *, func=None, code=None, req_id=None, node=None, context=None,
                 proc=None):
        super().__init__(message)
        self.func, self.code, self.req_id = func, code, req_id
        self.node, self.context, self.proc = node, context, proc


class VeoException(VeoError, ArithmeticError):
    """The kernel raised an exception on the VE (a fault, a trap or an abort);
    PyVEO raised ArithmeticError.  ``signal`` is the signal number when known."""

    def __init__(self, message, signal=None, **where):
        super().__init__(message, **where)
        self.signal = signal


class Unfinished(VeoError, NameError):
    """``peek_result()`` on a request the VE has not finished (PyVEO: NameError)."""


class ClosedError(VeoError):
    """The proc was destroyed, the context closed or the VE memory freed."""


class ProcDeadError(VeoError):
    """The VE process died (a kernel crashed or the process was killed)."""


class KernelDiedError(ProcDeadError):
    """The VE process died while this call ran on a context other than the
    main one.  AVEO reports a kernel fault with its signal on the main context
    only: a kernel that faults on another context, and every kernel running
    at that moment on the other contexts, just see their VE process die
    (VEO_COMMAND_ERROR, no signal), so this call's kernel may have faulted, or
    another one; nobody can tell which.  (On the main context a fault raises
    VeoException with the signal.)"""


class SymbolNotFoundError(VeoError, AttributeError):
    """A symbol is not in the library (an AttributeError too, so ``hasattr``
    and ``getattr(lib, name, None)`` work)."""


class MissingFunctionError(VeoError, NotImplementedError):
    """The loaded libveo lacks an optional function (an older VEO API, or an
    emulator extension on the vendor library)."""


cdef int _need(const void *fn, str name) except -1:
    """Raise MissingFunctionError unless the optional function `name` was found."""
    if fn == NULL:
        raise MissingFunctionError(
            f"{name} is not in the loaded libveo ({_backend.path}, VEO API version "
            f"{_backend.api_version}): it needs a newer libveo", func=name)
    return 0


cdef str _emu_message():
    """The emulator's explanation of this thread's last failure ('' on vendor libveo)."""
    cdef const char *msg
    if api.emu_last_error != NULL:
        msg = api.emu_last_error()
        if msg != NULL and msg[0] != 0:
            return msg.decode(errors="replace")
    return ""


cdef str _where(VeoProc proc, VeoCtxt ctx):
    """" [proc 2 on node 0, context 1]": which proc and context a message is about."""
    parts = []
    if proc is not None:
        parts.append(f"proc {proc.ident} on node {proc.nodeid}")
    if ctx is not None:
        parts.append(f"{'main ' if ctx.is_main else ''}context {ctx.index}")
    return f" [{', '.join(parts)}]" if parts else ""


cdef dict _where_attrs(VeoProc proc, VeoCtxt ctx):
    return dict(node=proc.nodeid if proc is not None else None,
                context=<uintptr_t>ctx.handle_ if ctx is not None and ctx.handle_ != NULL
                else (ctx.handle_was if ctx is not None else None),
                proc=proc.ident if proc is not None else None)


cdef object _error(str message, str func, object code=None, VeoProc proc=None,
                   VeoCtxt ctx=None, object req_id=None, bint explain=True):
    """The exception for a failure of `func`: ClosedError when the proc or
    context is gone, ProcDeadError when the VE process died, else VeoError.
    `explain` appends the emulator's message (only right for a call that just
    failed in this thread, not for a request that completed with an error).
    The message names the proc, its node and the context."""
    if proc is None and ctx is not None:
        proc = ctx.proc
    where = _where_attrs(proc, ctx)
    where.update(func=func, code=code, req_id=req_id)
    suffix = _where(proc, ctx)
    if (ctx is not None and ctx.handle_ == NULL) or (proc is not None and proc.handle_ == NULL):
        gone = "the context is closed" if ctx is not None and ctx.handle_ == NULL \
            and (proc is None or proc.handle_ != NULL) else "the proc was destroyed"
        return ClosedError(f"{message}: {gone}{suffix}", **where)
    cls = VeoError
    if (ctx is not None and _ctx_dead(ctx)) or (proc is not None and proc._is_dead()):
        cls = ProcDeadError
        message = f"{message}: the VE process is dead"
    if explain:
        detail = _emu_message()
        if detail and detail not in message:
            message = f"{message} ({detail})"
    return cls(message + suffix, **where)


cdef int _fail(str message, str func, object code=None, VeoProc proc=None,
               VeoCtxt ctx=None, object req_id=None) except -1:
    """Raise the exception for a libveo call that just failed (see _error)."""
    raise _error(message, func, code, proc, ctx, req_id, True)


cdef object _request_error(int status, uint64_t retval, VeoCtxt ctx, uint64_t req_id, str label,
                           bint is_call=False):
    """The exception for a request that completed with `status` (not OK).
    A call that was running on a non-main context when its VE process died
    (the first to fail on its context: contexts complete in order) gets
    KernelDiedError: on AVEO that is all a fault there reports."""
    log.debug("aioveo: %s on context 0x%x failed with status %d", label,
              <uintptr_t>ctx.handle_, status)
    cdef VeoProc proc = ctx.proc
    where = _where_attrs(proc, ctx)
    where.update(func="veo_call_wait_result", code=status, req_id=req_id)
    suffix = _where(proc, ctx)
    if status == VEO_COMMAND_EXCEPTION:
        log.debug("aioveo: the VE process died (kernel exception, signal %d)", retval)
        ctx.death_reported = True
        return VeoException(f"{label}: the kernel raised an exception on the VE (signal "
                            f"{retval}); the VE process is dead{suffix}", <int>retval, **where)
    if is_call and status == VEO_COMMAND_ERROR and not ctx.is_main and ctx.handle_ != NULL \
            and not ctx.death_reported and (_ctx_dead(ctx) or proc._is_dead()) \
            and not proc.killed:
        ctx.death_reported = True
        return KernelDiedError(
            f"{label}: the VE process died while this call ran on a context other than the "
            f"main one: this kernel, or another one running at the same time, may have "
            f"faulted (AVEO reports a fault with its signal on the main context only){suffix}",
            **where)
    return _error(f"{label} failed", "veo_call_wait_result", status, None, ctx, req_id, False)


cdef inline bint _ctx_dead(VeoCtxt ctx) noexcept:
    return ctx.handle_ != NULL and api.get_context_state(ctx.handle_) == VEO_STATE_EXIT
