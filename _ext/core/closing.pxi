# Ending VE processes: the one closing policy of every backend.
#
# veo_proc_destroy lets a VE process finish its queued work, with no time
# limit on AVEO (ProcHandle::exitProc joins each context's progress thread,
# which drains).  Where the caller gives a grace (VeoProc.destroy: the
# exit_grace setting; the asyncio layer closing by an exception: 0;
# interpreter exit: exit_grace), a VE process still busy after it is ended by
# force: SIGKILL to its pid, which AVEO's API gives on both backends
# (veo_get_pid_from_hmem(veo_set_proc_identifier(NULL, ident)), read once at
# creation), and veo_proc_destroy then finds it dead and returns.

cdef void _kill(int pid) noexcept:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_proc(proc):
    if not proc.killed:
        log.debug("aioveo: the grace of %r ran out: ending its VE process by force", proc)
    proc.kill()


cdef object _end_after(VeoProc proc, double grace):
    """End `proc`'s VE process by force after `grace` seconds (0: now); returns
    a timer to cancel once it ended by itself, or None."""
    if proc.pid_ <= 0:
        log.debug("aioveo: %r: the VE process's pid is unknown, so its grace cannot be "
                  "enforced", proc)
        return None
    if grace <= 0:
        proc.kill()
        return None
    timer = threading.Timer(grace, _kill_proc, (proc,))
    timer.daemon = True
    timer.start()
    return timer


_live_engines = weakref.WeakSet()


@atexit.register
def _at_exit():
    """Stop the completion engines (their threads must not outlive the
    interpreter), then end every VE process still alive, each given
    settings.exit_grace seconds to finish its work."""
    for e in list(_live_engines):
        e.close(200)
    from .settings import current
    grace = current().exit_grace
    for p in list(_live_procs):
        try:
            p.destroy(grace)
        except Exception as e:  # noqa: BLE001 - exiting anyway
            log.debug("aioveo: destroying %r at exit: %s", p, e)
