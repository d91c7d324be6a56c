/*
 * ve_offload.h -- the VEO C API (API version 16), as implemented by the
 * aioveo host emulator.
 *
 * Written for aioveo: the names, enums, constants and signatures follow the
 * VEO API so that VEO programs compile unchanged.  The emulator runs "VE
 * kernels" that were compiled for the host in a helper process per proc.
 *
 * The block at the end declares emulator-only extensions (prefix veo_emu_);
 * the vendor libveo does not have them, so portable code looks them up with
 * dlsym or guards them with VEO_EMULATOR.
 */
#ifndef _VE_OFFLOAD_H_
#define _VE_OFFLOAD_H_

#define VEO_API_VERSION 16
#define VEO_SYMNAME_LEN_MAX (255)
#define VEO_LOG_CATEGORY "veos.veo.veo"
#define VEO_MAX_NUM_ARGS (256)
#define VEO_REQUEST_ID_INVALID (~0UL)

#include <stdint.h>
#include <stddef.h>
#include <unistd.h>
#include <sys/types.h>
#include "veo_hmem.h"

#ifdef __cplusplus
extern "C" {
#endif

enum veo_context_state {
  VEO_STATE_UNKNOWN = 0,
  VEO_STATE_RUNNING,
  VEO_STATE_SYSCALL,
  VEO_STATE_BLOCKED,
  VEO_STATE_EXIT,
};

enum veo_command_state {
  VEO_COMMAND_OK = 0,
  VEO_COMMAND_EXCEPTION,
  VEO_COMMAND_ERROR,
  VEO_COMMAND_UNFINISHED,
};

enum veo_queue_state {
  VEO_QUEUE_READY = 0,
  VEO_QUEUE_CLOSED,
};

enum veo_args_intent {
  VEO_INTENT_IN = 0,
  VEO_INTENT_INOUT,
  VEO_INTENT_OUT,
};

struct veo_args;
struct veo_proc_handle;
struct veo_thr_ctxt;
struct veo_thr_ctxt_attr;

void veo_register_hook(void *func, void (*hook)(void *, ...), void *payload);
void *veo_get_hook(void *func);
void veo_unregister_hook(void *func);

struct veo_proc_handle *veo_proc_create(int);
struct veo_proc_handle *veo_proc_create_static(int, char *);
int veo_proc_destroy(struct veo_proc_handle *);
int veo_proc_identifier(struct veo_proc_handle *);
void *veo_set_proc_identifier(void *addr, int proc_ident);
uint64_t veo_load_library(struct veo_proc_handle *, const char *);
int veo_unload_library(struct veo_proc_handle *, const uint64_t);
uint64_t veo_get_sym(struct veo_proc_handle *, uint64_t, const char *);
int veo_alloc_mem(struct veo_proc_handle *, uint64_t *, const size_t);
int veo_free_mem(struct veo_proc_handle *, uint64_t);
int veo_read_mem(struct veo_proc_handle *, void *, uint64_t, size_t);
int veo_write_mem(struct veo_proc_handle *, uint64_t, const void *, size_t);
struct veo_proc_handle *veo_get_proc_handle_from_hmem(const void *);
pid_t veo_get_pid_from_hmem(const void *);
int veo_num_contexts(struct veo_proc_handle *);
struct veo_thr_ctxt *veo_get_context(struct veo_proc_handle *, int);

struct veo_thr_ctxt *veo_context_open(struct veo_proc_handle *);
int veo_context_close(struct veo_thr_ctxt *);
int veo_get_context_state(struct veo_thr_ctxt *);
void veo_context_sync(struct veo_thr_ctxt *);

struct veo_args *veo_args_alloc(void);
int veo_args_set_i64(struct veo_args *, int, int64_t);
int veo_args_set_u64(struct veo_args *, int, uint64_t);
int veo_args_set_i32(struct veo_args *, int, int32_t);
int veo_args_set_u32(struct veo_args *, int, uint32_t);
int veo_args_set_i16(struct veo_args *, int, int16_t);
int veo_args_set_u16(struct veo_args *, int, uint16_t);
int veo_args_set_i8(struct veo_args *, int, int8_t);
int veo_args_set_u8(struct veo_args *, int, uint8_t);
int veo_args_set_double(struct veo_args *, int, double);
int veo_args_set_float(struct veo_args *, int, float);
int veo_args_set_stack(struct veo_args *, enum veo_args_intent, int, char *,
                       size_t);
void veo_args_clear(struct veo_args *);
void veo_args_free(struct veo_args *);

int veo_call_sync(struct veo_proc_handle *h, uint64_t addr,
                  struct veo_args *ca, uint64_t *result);
uint64_t veo_call_async(struct veo_thr_ctxt *, uint64_t, struct veo_args *);
uint64_t veo_call_async_by_name(struct veo_thr_ctxt *, uint64_t, const char *,
                                struct veo_args *);
uint64_t veo_call_async_vh(struct veo_thr_ctxt *, uint64_t (*)(void *),
                           void *);
int veo_call_peek_result(struct veo_thr_ctxt *, uint64_t, uint64_t *);
int veo_call_wait_result(struct veo_thr_ctxt *, uint64_t, uint64_t *);

uint64_t veo_alloc_mem_async(struct veo_thr_ctxt *ctx, const size_t size);
uint64_t veo_free_mem_async(struct veo_thr_ctxt *ctx, uint64_t addr);
uint64_t veo_async_read_mem(struct veo_thr_ctxt *, void *, uint64_t, size_t);
uint64_t veo_async_write_mem(struct veo_thr_ctxt *, uint64_t, const void *,
                             size_t);
void veo_req_block_begin(struct veo_thr_ctxt *ctx);
void veo_req_block_end(struct veo_thr_ctxt *ctx);

struct veo_thr_ctxt *veo_context_open_with_attr(struct veo_proc_handle *,
                                                struct veo_thr_ctxt_attr *);
struct veo_thr_ctxt_attr *veo_alloc_thr_ctxt_attr(void);
int veo_free_thr_ctxt_attr(struct veo_thr_ctxt_attr *);
int veo_set_thr_ctxt_stacksize(struct veo_thr_ctxt_attr *, size_t);
int veo_get_thr_ctxt_stacksize(struct veo_thr_ctxt_attr *, size_t *);

const char *veo_version_string(void);
int veo_api_version(void);

int veo_alloc_hmem(struct veo_proc_handle *, void **, const size_t);
int veo_free_hmem(void *);
int veo_hmemcpy(void *, const void *, size_t);
int veo_args_set_hmem(struct veo_args *, int, void *);

int veo_get_venum_from_hmem(const void *);
int veo_get_ve_arch(int ve_node_number);

void veo_register_hmem_hook_functions(void (*)(void *, size_t),
                                      void (*)(uint64_t));
void veo_unregister_hmem_hook_functions(void);

/* ---- aioveo emulator extensions (absent from the vendor libveo) -------- */
#define VEO_EMULATOR 1

/* Return types for veo_emu_args_set_ret_type().  Without a declared return
 * type a call's result is the 64-bit integer return register, as on a VE. */
enum veo_emu_type {
  VEO_EMU_TYPE_U64 = 0, /* default: the whole integer return register */
  VEO_EMU_TYPE_VOID,
  VEO_EMU_TYPE_I8,
  VEO_EMU_TYPE_U8,
  VEO_EMU_TYPE_I16,
  VEO_EMU_TYPE_U16,
  VEO_EMU_TYPE_I32,
  VEO_EMU_TYPE_U32,
  VEO_EMU_TYPE_I64,
  VEO_EMU_TYPE_FLOAT,  /* result: float bits in bits 63:32, like a VE */
  VEO_EMU_TYPE_DOUBLE, /* result: the IEEE-754 bits of the double */
};

/* Declare the kernel's return type for calls made with these arguments.
 * Returns 0, or -1 (errno EINVAL) for a bad type. */
int veo_emu_args_set_ret_type(struct veo_args *, int type);

/* A message describing the last failure in this thread ("" if none). */
const char *veo_emu_last_error(void);

/* The helper program started by veo_proc_create() (after VEORUN_BIN). */
const char *veo_emu_helper_path(void);

/* Number of emulated VE nodes and the memory of each, in bytes. */
int veo_emu_num_nodes(void);
uint64_t veo_emu_node_memory(void);

/* Process id of a proc's helper process, or -1. */
pid_t veo_emu_proc_pid(struct veo_proc_handle *);

/* The procs alive on emulated node `node` (returned) and the VE memory they
 * hold (*used, bytes; each proc's heap is sized to the node's memory).
 * Returns -1 for a node that does not exist. */
int veo_emu_node_usage(int node, uint64_t *used);

/* Faults on purpose (the grammar of VEO_EMU_FAULTS, e.g.
 * "crash:sym=axpy,call=1000; die:after=2s,node=1"; see the emulator's
 * documentation).  On a proc: armed at once (its node= and proc= must match
 * it); on NULL: armed on every proc created from now on, as VEO_EMU_FAULTS
 * is.  Returns 0, or -1 (errno EINVAL, veo_emu_last_error says why). */
int veo_emu_inject(struct veo_proc_handle *, const char *spec);
/* Disarm a proc's faults (NULL: forget those injected for new procs; a
 * VEO_EMU_FAULTS of the environment still applies). 0, or -1. */
int veo_emu_clear_faults(struct veo_proc_handle *);
/* The faults, one per line as written: a proc's armed ones followed by a
 * tab and "(seen N, fired M)"; NULL: those a new proc gets.  NULL on error
 * (a wrong VEO_EMU_FAULTS).  Valid until the thread's next call of it. */
const char *veo_emu_faults(struct veo_proc_handle *);
/* The timing profile new procs get (VEO_EMU_PROFILE), described in one
 * line; "" without one, NULL (and the error) if it is wrong. */
const char *veo_emu_profile(void);

#ifdef __cplusplus
} /* extern "C" */
#endif
#endif /* _VE_OFFLOAD_H_ */
