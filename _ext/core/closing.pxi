# Ending VE processes: the one closing policy of every backend.
#
# veo_proc_destroy lets a VE process finish its queued work.  Where the caller
# gives a grace (the asyncio layer closing by an exception: 0; interpreter
# exit: settings.exit_grace), a VE process still busy after it is ended by
# force.  On the emulator that is killing its helper process, which
# veo_proc_destroy then reaps; the vendor libveo gives no handle on its VE
# process here yet, so there the grace cannot be enforced.

cdef void _kill(int pid) noexcept:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_pid(pid):
    _kill(pid)


cdef object _end_after(VeoProc proc, double grace):
    """End `proc`'s VE process by force after `grace` seconds (0: now); returns
    a timer to cancel once it ended by itself, or None."""
    pid = proc.helper_pid
    if not pid:
        return None
    if grace <= 0:
        log.debug("aioveo: ending the VE process of %r by force", proc)
        _kill(pid)
        return None
    timer = threading.Timer(grace, _kill_pid, (pid,))
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
