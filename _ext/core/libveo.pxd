# The VEO C API's types and constants, as ve_offload.h (the emulator's copy,
# identical in names and values to the vendor header) declares them.  The one
# source of these numbers: the core, the engine, the asyncio layer and tracing
# all take them from here.  The functions are in the run-time table (api.pxi).
from libc.stdint cimport uint64_t

cdef extern from "ve_offload.h" nogil:
    struct veo_proc_handle:
        pass
    struct veo_thr_ctxt:
        pass
    struct veo_args:
        pass

    enum:
        VEO_MAX_NUM_ARGS
    uint64_t VEO_REQUEST_ID_INVALID

    enum veo_context_state:
        VEO_STATE_UNKNOWN
        VEO_STATE_RUNNING
        VEO_STATE_SYSCALL
        VEO_STATE_BLOCKED
        VEO_STATE_EXIT

    enum veo_command_state:
        VEO_COMMAND_OK
        VEO_COMMAND_EXCEPTION
        VEO_COMMAND_ERROR
        VEO_COMMAND_UNFINISHED

    enum veo_args_intent:
        VEO_INTENT_IN
        VEO_INTENT_INOUT
        VEO_INTENT_OUT

    # the emulator's return-type codes (veo_emu_args_set_ret_type); the core
    # uses them as its value codes for arguments and results too
    enum veo_emu_type:
        VEO_EMU_TYPE_U64
        VEO_EMU_TYPE_VOID
        VEO_EMU_TYPE_I8
        VEO_EMU_TYPE_U8
        VEO_EMU_TYPE_I16
        VEO_EMU_TYPE_U16
        VEO_EMU_TYPE_I32
        VEO_EMU_TYPE_U32
        VEO_EMU_TYPE_I64
        VEO_EMU_TYPE_FLOAT
        VEO_EMU_TYPE_DOUBLE
