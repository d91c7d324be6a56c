# The emulator as a test bench: faults on purpose (veo_emu_inject and
# VEO_EMU_FAULTS) and the timing profile (VEO_EMU_PROFILE).  aioveo.emulator
# is their Python face.

cdef veo_proc_handle *_fault_target(object proc, str func) except? NULL:
    """The handle of `proc` (a VeoProc), or NULL for None (every new proc)."""
    if proc is None:
        return NULL
    if not isinstance(proc, VeoProc):
        raise TypeError(f"{func}: expected a VeoProc (or None: every proc created from now "
                        f"on), not {type(proc).__name__}")
    cdef VeoProc p = <VeoProc>proc
    if p.handle_ == NULL:
        raise ClosedError(f"{func}: the proc was destroyed", func=func, node=p.nodeid,
                          proc=p.ident)
    return p.handle_


def emulator_inject(proc, str spec):
    """Arm the faults of `spec` (VEO_EMU_FAULTS's grammar) on `proc`, or on
    every proc created from now on (None).  ValueError says what is wrong."""
    _ensure_api()
    _need(<const void *>api.emu_inject, "veo_emu_inject")
    cdef veo_proc_handle *h = _fault_target(proc, "veo_emu_inject")
    cdef bytes b = spec.encode()
    cdef const char *s = b
    cdef int rc
    with nogil:
        rc = api.emu_inject(h, s)
    if rc != 0:
        raise ValueError(_emu_message() or f"veo_emu_inject: cannot arm {spec!r}")


def emulator_clear_faults(proc):
    """Disarm the faults of `proc` (None: those injected for new procs)."""
    _ensure_api()
    _need(<const void *>api.emu_clear_faults, "veo_emu_clear_faults")
    cdef veo_proc_handle *h = _fault_target(proc, "veo_emu_clear_faults")
    cdef int rc
    with nogil:
        rc = api.emu_clear_faults(h)
    if rc != 0:
        raise VeoError(_emu_message() or "veo_emu_clear_faults failed",
                       func="veo_emu_clear_faults", code=rc)


def emulator_faults(proc):
    """The faults armed on `proc` as written, each with "(seen N, fired M)";
    for None, those a new proc gets (VEO_EMU_FAULTS, then injections for
    new procs).  ValueError for a wrong VEO_EMU_FAULTS."""
    _ensure_api()
    _need(<const void *>api.emu_faults, "veo_emu_faults")
    cdef veo_proc_handle *h = _fault_target(proc, "veo_emu_faults")
    cdef const char *text
    with nogil:
        text = api.emu_faults(h)
    if text == NULL:
        raise ValueError(_emu_message() or "veo_emu_faults failed")
    return [line for line in text.decode(errors="replace").splitlines() if line]


def emulator_profile():
    """The timing profile new procs get (VEO_EMU_PROFILE), in one line, or
    None without one.  ValueError for a wrong VEO_EMU_PROFILE."""
    _ensure_api()
    _need(<const void *>api.emu_profile, "veo_emu_profile")
    cdef const char *text = api.emu_profile()
    if text == NULL:
        raise ValueError(_emu_message() or "veo_emu_profile failed")
    return text.decode(errors="replace") or None
