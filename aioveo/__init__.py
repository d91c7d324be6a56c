"""aioveo: drive NEC SX-Aurora Vector Engines from Python, with asyncio.

Three faces, one core:

- the asyncio API (``open_proc``, ``AsyncProc``, ``AsyncContext``, ``open_pool``),
- the PyVEO API (``VeoProc``, ``VeoLibrary``, ``VeoFunction``, ``VeoCtxt``,
  ``VeoRequest``, ``VEMemPtr``, ``OnStack``, ``VeBuild``, init hooks): a PyVEO
  program ports by changing ``import veo`` into ``import aioveo as veo``,
- the host emulator, used when no Vector Engine is present (see ``backend()``).
"""
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
from .aio import (
    AsyncContext, AsyncProc, InFlightLimitError, Pool, PoolFunction, VEArray,
    open_pool, open_proc, open_procs,
)
from . import settings, trace

__version__ = "0.1.0"

# Silent unless the application configures logging: debug records for proc and
# context life cycles and failed requests go to the "aioveo" logger.
_logging.getLogger("aioveo").addHandler(_logging.NullHandler())

__all__ = [name for name in dir() if not name.startswith("_")]
