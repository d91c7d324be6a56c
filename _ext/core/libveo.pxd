# The VEO C API as the core sees it: types and constants from ve_offload.h
# (the emulator's copy, identical in names and values to the vendor header),
# and one function-pointer table filled with dlsym at run time, so one build
# runs on the vendor libveo and on the emulator.
from libc.stdint cimport uint64_t, int64_t, int32_t, uint32_t, int16_t, uint16_t, int8_t, uint8_t

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


ctypedef struct Api:
    # required: present in every libveo since API version 4
    veo_proc_handle *(*proc_create)(int) noexcept nogil
    veo_proc_handle *(*proc_create_static)(int, char *) noexcept nogil
    int (*proc_destroy)(veo_proc_handle *) noexcept nogil
    uint64_t (*load_library)(veo_proc_handle *, const char *) noexcept nogil
    int (*unload_library)(veo_proc_handle *, const uint64_t) noexcept nogil
    uint64_t (*get_sym)(veo_proc_handle *, uint64_t, const char *) noexcept nogil
    int (*alloc_mem)(veo_proc_handle *, uint64_t *, const size_t) noexcept nogil
    int (*free_mem)(veo_proc_handle *, uint64_t) noexcept nogil
    int (*read_mem)(veo_proc_handle *, void *, uint64_t, size_t) noexcept nogil
    int (*write_mem)(veo_proc_handle *, uint64_t, const void *, size_t) noexcept nogil
    veo_thr_ctxt *(*context_open)(veo_proc_handle *) noexcept nogil
    int (*context_close)(veo_thr_ctxt *) noexcept nogil
    int (*get_context_state)(veo_thr_ctxt *) noexcept nogil
    veo_args *(*args_alloc)() noexcept nogil
    void (*args_free)(veo_args *) noexcept nogil
    int (*args_set_i64)(veo_args *, int, int64_t) noexcept nogil
    int (*args_set_u64)(veo_args *, int, uint64_t) noexcept nogil
    int (*args_set_i32)(veo_args *, int, int32_t) noexcept nogil
    int (*args_set_u32)(veo_args *, int, uint32_t) noexcept nogil
    int (*args_set_i16)(veo_args *, int, int16_t) noexcept nogil
    int (*args_set_u16)(veo_args *, int, uint16_t) noexcept nogil
    int (*args_set_i8)(veo_args *, int, int8_t) noexcept nogil
    int (*args_set_u8)(veo_args *, int, uint8_t) noexcept nogil
    int (*args_set_double)(veo_args *, int, double) noexcept nogil
    int (*args_set_float)(veo_args *, int, float) noexcept nogil
    int (*args_set_stack)(veo_args *, veo_args_intent, int, char *, size_t) noexcept nogil
    uint64_t (*call_async)(veo_thr_ctxt *, uint64_t, veo_args *) noexcept nogil
    int (*call_peek_result)(veo_thr_ctxt *, uint64_t, uint64_t *) noexcept nogil
    int (*call_wait_result)(veo_thr_ctxt *, uint64_t, uint64_t *) noexcept nogil
    uint64_t (*async_read_mem)(veo_thr_ctxt *, void *, uint64_t, size_t) noexcept nogil
    uint64_t (*async_write_mem)(veo_thr_ctxt *, uint64_t, const void *, size_t) noexcept nogil
    # optional: newer API versions or emulator extensions; NULL when missing
    void (*context_sync)(veo_thr_ctxt *) noexcept nogil
    veo_thr_ctxt *(*get_context)(veo_proc_handle *, int) noexcept nogil
    int (*proc_identifier)(veo_proc_handle *) noexcept nogil
    const char *(*version_string)() noexcept nogil
    int (*api_version)() noexcept nogil
    int (*alloc_hmem)(veo_proc_handle *, void **, const size_t) noexcept nogil
    int (*free_hmem)(void *) noexcept nogil
    int (*emu_args_set_ret_type)(veo_args *, int) noexcept nogil
    const char *(*emu_last_error)() noexcept nogil
    int (*emu_proc_pid)(veo_proc_handle *) noexcept nogil
    const char *(*emu_helper_path)() noexcept nogil
    int (*emu_num_nodes)() noexcept nogil
    uint64_t (*emu_node_memory)() noexcept nogil
