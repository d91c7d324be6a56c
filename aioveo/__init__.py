"""aioveo: drive NEC SX-Aurora Vector Engines from Python, with asyncio.

Three faces, one core:

- the asyncio API (``open_proc``, ``AsyncProc``, ``AsyncContext``, ``open_pool``),
- the PyVEO API (``VeoProc``, ``VeoLibrary``, ``VeoFunction``, ``VeoCtxt``,
  ``VeoRequest``, ``VEMemPtr``, ``OnStack``, ``VeBuild``, init hooks): a PyVEO
  program ports by changing ``import veo`` into ``import aioveo as veo``,
- the host emulator, used when no Vector Engine is present (see ``backend()``).
"""
import sys as _sys


def _load_installed_package() -> None:
    """The front door: let the source tree's ``aioveo/`` stand aside for the installed one.

    From a checkout's root, ``python -m aioveo`` and ``python -m pytest`` put the
    current directory first on sys.path, so ``import aioveo`` finds this source
    folder, which has no compiled module (``_core``).  When that
    is the case and a built aioveo is importable from the rest of sys.path,
    execute that one and put it in sys.modules: the import statement then
    returns it, and its submodules (``aioveo._core``, ``aioveo.__main__``, ...)
    come from it.  The rest of this file still runs, in this discarded module,
    and binds the installed package's (already imported) names: harmless.
    Anywhere else (an installed or editable aioveo) this only looks for
    ``_core`` next to this file; with no built aioveo anywhere the import
    below fails as before (No module named 'aioveo._core').
    """
    import importlib.machinery
    import importlib.util
    import os

    def built(folder: str) -> bool:
        return any(os.path.exists(os.path.join(folder, "_core" + suffix))
                   for suffix in importlib.machinery.EXTENSION_SUFFIXES)

    here = os.path.dirname(os.path.realpath(__file__))
    if built(here):
        return
    for entry in _sys.path:
        if not isinstance(entry, str) or os.path.realpath(entry or ".") == os.path.dirname(here):
            continue
        spec = importlib.machinery.PathFinder.find_spec(__name__, [entry])
        if (spec is None or spec.origin is None or spec.loader is None
                or not built(os.path.dirname(spec.origin))):
            continue
        package = importlib.util.module_from_spec(spec)
        _sys.modules[__name__] = package
        spec.loader.exec_module(package)
        return


_load_installed_package()

import logging as _logging

from ._core import (
    COMMAND_ERROR, COMMAND_EXCEPTION, COMMAND_OK, COMMAND_UNFINISHED,
    INTENT_IN, INTENT_INOUT, INTENT_OUT,
    STATE_BLOCKED, STATE_EXIT, STATE_RUNNING, STATE_SYSCALL, STATE_UNKNOWN,
    VEO_COMMAND_ERROR, VEO_COMMAND_EXCEPTION, VEO_COMMAND_OK, VEO_COMMAND_UNFINISHED,
    VEO_INTENT_IN, VEO_INTENT_INOUT, VEO_INTENT_OUT,
    VEO_STATE_BLOCKED, VEO_STATE_EXIT, VEO_STATE_RUNNING, VEO_STATE_SYSCALL, VEO_STATE_UNKNOWN,
    Backend, ClosedError, KernelDiedError, MissingFunctionError, OnStack, ProcDeadError,
    SymbolNotFoundError, Unfinished,
    VEMemPtr, VeoBatch, VeoCtxt, VeoError, VeoException, VeoFunction, VeoLibrary, VeoProc,
    VeoRequest,
    backend, del_proc_init_hook, emulator_info, set_proc_init_hook,
)
from ._ctype import CTypeError
from .build import BuildError, VeBuild
from .aio import AsyncContext, AsyncProc, InFlightLimitError, VEArray, open_proc, open_procs
from .pool import NoProcError, OverloadedError, Pool, PoolFunction, open_pool
from .nodes import NodesUnavailableError
from ._core import PoolBlock
from .memory import MemoryPool, PoolStats, VEOutOfMemoryError
from .devices import Device, devices
from . import nodes, settings, trace

__version__ = "0.1.0"

# Silent unless the application configures logging: debug records for proc and
# context life cycles and failed requests go to the "aioveo" logger.
# (Once: this file may run twice, see _load_installed_package.)
if not any(isinstance(h, _logging.NullHandler) for h in _logging.getLogger("aioveo").handlers):
    _logging.getLogger("aioveo").addHandler(_logging.NullHandler())

__all__ = [name for name in dir() if not name.startswith("_")]
