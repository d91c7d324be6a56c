/*
 * api.c -- the exported VEO API of the emulator's libveo.so: procs,
 * contexts, libraries, memory, calls (veo_args is in args.c, hmem and hooks
 * in hmem.c, the veo_emu_ settings in config.c).  The work is done in
 * proc.c, rings.c, agent.c and spawn.c; see emu_proto.h for the protocol
 * with the helper.
 *
 * Where AVEO crashes or is quirky, the emulator returns an error instead:
 * NULL, closed or destroyed handles, unmapped VE addresses, double frees,
 * argument holes.  A faulting kernel completes its request with
 * VEO_COMMAND_EXCEPTION on whichever context it ran.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emu_host.h"
#include "emu_sync.h"

#define EMU_VERSION_STRING "aioveo-emulator 0.1.0 (VEO API 16)"

/* ---- errors ------------------------------------------------------------------ */
static __thread char t_err[512];

void emu_set_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t_err, sizeof(t_err), fmt, ap);
  va_end(ap);
}

void emu_clear_error(void) { t_err[0] = 0; }

/* The message of the last failure of an API call in this thread: cleared
 * when a call that may fail starts (so never an earlier call's), kept by
 * the queries that cannot fail (context state, identifiers, hmem address
 * helpers, hooks, versions, the veo_emu_ settings). */
EXPORT_EMU const char *veo_emu_last_error(void) { return t_err; }

/* ---- contexts --------------------------------------------------------------------------- */
struct veo_thr_ctxt_attr {
  uint32_t magic;
  size_t stacksize;
};
#define ATTR_MAGIC 0x41545452u
#define STACK_MIN (4u << 20)
#define STACK_DEFAULT (128u << 20)

EXPORT struct veo_thr_ctxt *veo_context_open(struct veo_proc_handle *p) {
  emu_clear_error();
  return emu_context_open(p, STACK_DEFAULT);
}

EXPORT struct veo_thr_ctxt *veo_context_open_with_attr(struct veo_proc_handle *p,
                                                       struct veo_thr_ctxt_attr *a) {
  emu_clear_error();
  if (!p || !a || a->magic != ATTR_MAGIC) {
    errno = EINVAL;
    emu_set_error("veo_context_open_with_attr: NULL proc or attribute");
    return NULL;
  }
  return emu_context_open(p, a->stacksize);
}

EXPORT int veo_context_close(struct veo_thr_ctxt *c) {
  emu_clear_error();
  return emu_context_close(c);
}

EXPORT int veo_get_context_state(struct veo_thr_ctxt *c) {
  if (!c || c->magic != CTX_MAGIC) return VEO_STATE_UNKNOWN;
  struct veo_proc_handle *p = c->proc;
  emu_proc_users_inc(p);
  int st = atomic_load(&c->closed) || atomic_load(&p->destroyed) || emu_proc_dead(p)
               ? VEO_STATE_EXIT
               : atomic_load(&c->state);
  emu_proc_leave(p);
  return st;
}

EXPORT void veo_context_sync(struct veo_thr_ctxt *c) {
  emu_clear_error();
  if (!emu_ctx_valid(c, "veo_context_sync")) return;
  uint64_t id = emu_submit(c, EMU_CMD_NOP, 0, 0, 0, NULL, NULL);
  uint64_t rv;
  if (id != VEO_REQUEST_ID_INVALID) emu_wait_result(c, id, &rv);
}

EXPORT int veo_num_contexts(struct veo_proc_handle *p) {
  if (!emu_proc_valid(p, "veo_num_contexts")) return -1;
  pthread_mutex_lock(&p->lock);
  int n = p->nopen;
  pthread_mutex_unlock(&p->lock);
  return n;
}

EXPORT struct veo_thr_ctxt *veo_get_context(struct veo_proc_handle *p, int idx) {
  if (!emu_proc_valid(p, "veo_get_context")) return NULL;
  pthread_mutex_lock(&p->lock);
  struct veo_thr_ctxt *c = idx >= 0 && idx < p->nopen ? p->open_list[idx] : NULL;
  pthread_mutex_unlock(&p->lock);
  return c;
}

EXPORT struct veo_thr_ctxt_attr *veo_alloc_thr_ctxt_attr(void) {
  emu_clear_error();
  struct veo_thr_ctxt_attr *a = calloc(1, sizeof(*a));
  if (a) {
    a->magic = ATTR_MAGIC;
    a->stacksize = STACK_DEFAULT;
  }
  return a;
}

EXPORT int veo_free_thr_ctxt_attr(struct veo_thr_ctxt_attr *a) {
  emu_clear_error();
  if (!a || a->magic != ATTR_MAGIC) {
    errno = EINVAL;
    return -1;
  }
  a->magic = 0;
  free(a);
  return 0;
}

EXPORT int veo_set_thr_ctxt_stacksize(struct veo_thr_ctxt_attr *a, size_t sz) {
  emu_clear_error();
  if (!a || a->magic != ATTR_MAGIC || sz < STACK_MIN) {
    errno = EINVAL;
    emu_set_error("veo_set_thr_ctxt_stacksize: stack size must be at least %u bytes", STACK_MIN);
    return -1;
  }
  a->stacksize = sz;
  return 0;
}

EXPORT int veo_get_thr_ctxt_stacksize(struct veo_thr_ctxt_attr *a, size_t *sz) {
  emu_clear_error();
  if (!a || a->magic != ATTR_MAGIC || !sz) {
    errno = EINVAL;
    return -1;
  }
  *sz = a->stacksize;
  return 0;
}

/* Request blocks hold the context's (recursive) submit lock.  The depth and
 * owner are tracked so that an unmatched veo_req_block_end (or one from
 * another thread, or after the context was closed under a failed begin) is
 * ignored instead of unlocking a mutex the caller does not hold. */
EXPORT void veo_req_block_begin(struct veo_thr_ctxt *c) {
  emu_clear_error();
  if (!emu_ctx_valid(c, "veo_req_block_begin")) return;
  pthread_mutex_lock(&c->submit_lock);
  c->block_owner = pthread_self();
  c->block_depth++;
}

EXPORT void veo_req_block_end(struct veo_thr_ctxt *c) {
  emu_clear_error();
  if (!c || c->magic != CTX_MAGIC) return;
  if (pthread_mutex_trylock(&c->submit_lock) != 0) return; /* held by another thread */
  if (c->block_depth > 0 && pthread_equal(c->block_owner, pthread_self())) {
    c->block_depth--;
    pthread_mutex_unlock(&c->submit_lock); /* the block's level */
  }
  pthread_mutex_unlock(&c->submit_lock); /* the trylock's level */
}

/* ---- procs -------------------------------------------------------------------------------- */
EXPORT struct veo_proc_handle *veo_proc_create(int venode) {
  emu_clear_error();
  return emu_proc_create(venode, veo_emu_helper_path());
}

EXPORT struct veo_proc_handle *veo_proc_create_static(int venode, char *bin) {
  emu_clear_error();
  if (!bin) {
    emu_set_error("veo_proc_create_static: NULL helper path");
    errno = EINVAL;
    return NULL;
  }
  return emu_proc_create(venode, bin);
}

EXPORT int veo_proc_destroy(struct veo_proc_handle *p) {
  emu_clear_error();
  if (!p || p->magic != PROC_MAGIC) {
    emu_set_error("veo_proc_destroy: invalid proc handle");
    errno = EINVAL;
    return -1;
  }
  return emu_proc_destroy(p);
}

EXPORT int veo_proc_identifier(struct veo_proc_handle *p) {
  if (!p || p->magic != PROC_MAGIC) return -1;
  return emu_proc_ident(p);
}

EXPORT_EMU pid_t veo_emu_proc_pid(struct veo_proc_handle *p) {
  if (!p || p->magic != PROC_MAGIC || atomic_load(&p->destroyed)) return -1;
  return p->pid;
}

/* ---- libraries and symbols ------------------------------------------------------------------ */
EXPORT uint64_t veo_load_library(struct veo_proc_handle *p, const char *name) {
  emu_clear_error();
  if (!emu_proc_ok(p)) return 0;
  if (!name) {
    emu_set_error("veo_load_library: NULL library name");
    errno = EINVAL;
    return 0;
  }
  if (strlen(name) > VEO_SYMNAME_LEN_MAX) {
    emu_set_error("veo_load_library: name longer than %d characters", VEO_SYMNAME_LEN_MAX);
    errno = ENAMETOOLONG;
    return 0;
  }
  /* Paths are as the host process sees them: relative to the host's cwd. */
  char abs[PATH_MAX + 1];
  const char *path = name;
  if (strchr(name, '/') && name[0] != '/') {
    if (!realpath(name, abs)) {
      emu_set_error("veo_load_library: %s: %s", name, strerror(errno));
      return 0;
    }
    path = abs;
  }
  uint64_t h = 0;
  if (emu_main_call(p, EMU_CMD_LOAD_LIB, 0, 0, 0, path, &h) != VEO_COMMAND_OK) return 0;
  return h;
}

EXPORT int veo_unload_library(struct veo_proc_handle *p, const uint64_t handle) {
  emu_clear_error();
  if (!emu_proc_ok(p)) return -1;
  emu_sym_forget_lib(p, handle);
  uint64_t rv = (uint64_t)-1;
  if (emu_main_call(p, EMU_CMD_UNLOAD_LIB, handle, 0, 0, NULL, &rv) != VEO_COMMAND_OK) return -1;
  return (int)(int64_t)rv;
}

EXPORT uint64_t veo_get_sym(struct veo_proc_handle *p, uint64_t lib, const char *name) {
  emu_clear_error();
  if (!emu_proc_valid(p, "veo_get_sym")) return 0;
  if (!name) {
    emu_set_error("veo_get_sym: NULL symbol name");
    errno = EINVAL;
    return 0;
  }
  if (strlen(name) > VEO_SYMNAME_LEN_MAX) {
    emu_set_error("veo_get_sym: name longer than %d characters", VEO_SYMNAME_LEN_MAX);
    errno = ENAMETOOLONG;
    return 0;
  }
  uint64_t addr = 0;
  if (emu_sym_cached(p, lib, name, &addr)) return addr;
  if (!emu_proc_ok(p)) return 0;
  if (emu_main_call(p, EMU_CMD_GET_SYM, lib, 0, 0, name, &addr) != VEO_COMMAND_OK || !addr)
    return 0;
  emu_sym_remember(p, lib, name, addr);
  return addr;
}

/* ---- synchronous memory -------------------------------------------------------------------------- */
/* The sync memory API queues behind the main context's work, as on AVEO
 * (see emu_drain_main). */
EXPORT int veo_alloc_mem(struct veo_proc_handle *p, uint64_t *addr, const size_t size) {
  emu_clear_error();
  if (addr) *addr = 0;
  if (!emu_proc_ok(p) || !addr) return -1;
  if (size == 0) {
    emu_set_error("veo_alloc_mem: size 0");
    errno = EINVAL;
    return -1;
  }
  if (emu_drain_main(p)) {
    pthread_mutex_unlock(&p->ctx[0]->submit_lock);
    return -1;
  }
  uint64_t t0 = emu_now_ns(), off = UINT64_MAX;
  int injected = emu_fault_nomem(p, 0, size);
  if (!injected) {
    off = heap_alloc(&p->heap, size);
    if (off != UINT64_MAX) {
      heap_poison(&p->heap, off, size);
      emu_fault_allocated(p, 0, size);
    }
  }
  emu_profile_hold(p, t0, p->prof.alloc, 0, 0);
  pthread_mutex_unlock(&p->ctx[0]->submit_lock);
  if (off == UINT64_MAX) {
    if (!injected)
      emu_set_error("veo_alloc_mem: cannot allocate %zu bytes (node memory %llu bytes, %llu in "
                    "use)", size, (unsigned long long)p->heap.size,
                    (unsigned long long)p->heap.used);
    errno = ENOMEM;
    return -1;
  }
  *addr = p->heap.ve_base + off;
  emu_run_hook((void *)veo_alloc_mem, HOOK_ALLOC, p, (uint64_t)(uintptr_t)addr, size);
  return 0;
}

EXPORT int veo_free_mem(struct veo_proc_handle *p, uint64_t addr) {
  emu_clear_error();
  if (!emu_proc_ok(p)) return -1;
  if (emu_drain_main(p)) {
    pthread_mutex_unlock(&p->ctx[0]->submit_lock);
    return -1;
  }
  int rc;
  if (addr >= p->heap.ve_base && addr < p->heap.ve_base + p->heap.size) {
    uint64_t t0 = emu_now_ns();
    rc = heap_free(&p->heap, addr - p->heap.ve_base);
    if (rc) {
      emu_set_error("veo_free_mem: 0x%llx is not an allocated VE address (freed twice?)",
                    (unsigned long long)addr);
      errno = EINVAL;
    }
    emu_profile_hold(p, t0, p->prof.free, 0, 0);
    pthread_mutex_unlock(&p->ctx[0]->submit_lock);
  } else {
    /* memory a kernel malloc'ed: free it in the VE process, as AVEO does */
    uint64_t rv = 0;
    rc = emu_main_call(p, EMU_CMD_FREE, addr, 0, 0, NULL, &rv) == VEO_COMMAND_OK ? 0 : -1;
    pthread_mutex_unlock(&p->ctx[0]->submit_lock);
  }
  if (rc == 0) emu_run_hook((void *)veo_free_mem, HOOK_FREE, p, addr, 0);
  return rc;
}

EXPORT int veo_read_mem(struct veo_proc_handle *p, void *dst, uint64_t src, size_t n) {
  emu_clear_error();
  if (!emu_proc_ok(p)) return -1;
  if (n && !dst) {
    emu_set_error("veo_read_mem: NULL destination");
    return -1;
  }
  if (n == 0) return 0;
  int rc = -1;
  if (emu_drain_main(p) == 0) {
    uint64_t t0 = emu_now_ns();
    rc = emu_copy_from_ve(p, dst, src, n);
    emu_profile_hold(p, t0, p->prof.read, n, p->prof.read_bps);
  }
  pthread_mutex_unlock(&p->ctx[0]->submit_lock);
  return rc;
}

EXPORT int veo_write_mem(struct veo_proc_handle *p, uint64_t dst, const void *src, size_t n) {
  emu_clear_error();
  if (!emu_proc_ok(p)) return -1;
  if (n && !src) {
    emu_set_error("veo_write_mem: NULL source");
    return -1;
  }
  if (n == 0) return 0;
  int rc = -1;
  if (emu_drain_main(p) == 0) {
    uint64_t t0 = emu_now_ns();
    rc = emu_copy_to_ve(p, dst, src, n);
    emu_profile_hold(p, t0, p->prof.write, n, p->prof.write_bps);
  }
  pthread_mutex_unlock(&p->ctx[0]->submit_lock);
  return rc;
}

/* Not exported: veo_hmemcpy's VE-to-VE copy (hmem.c). */
int emu_ve_memcpy(struct veo_proc_handle *p, uint64_t dst, uint64_t src, size_t n) {
  if (!emu_proc_ok(p)) return -1;
  void *hd, *hs;
  int in_d = heap_lookup(&p->heap, dst, n, &hd), in_s = heap_lookup(&p->heap, src, n, &hs);
  if (in_d < 0 || in_s < 0) {
    emu_set_error("copy of %zu bytes inside the VE: memory at 0x%llx is not allocated (freed?)",
                  n, (unsigned long long)(in_d < 0 ? dst : src));
    return -1;
  }
  if (in_d && in_s) {
    if (emu_drain_main(p)) {
      pthread_mutex_unlock(&p->ctx[0]->submit_lock);
      return -1;
    }
    uint64_t t0 = emu_now_ns();
    memmove(hd, hs, n);
    emu_profile_hold(p, t0, p->prof.roundtrip, 0, 0);
    pthread_mutex_unlock(&p->ctx[0]->submit_lock);
    return 0;
  }
  uint64_t rv = 1;
  if (emu_main_call(p, EMU_CMD_MEMCPY, dst, src, n, NULL, &rv) != VEO_COMMAND_OK) return -1;
  return rv == 0 ? 0 : -1;
}

/* ---- asynchronous memory -------------------------------------------------------------------------- */
EXPORT uint64_t veo_async_read_mem(struct veo_thr_ctxt *c, void *dst, uint64_t src, size_t n) {
  emu_clear_error();
  if (!emu_ctx_valid(c, "veo_async_read_mem")) return VEO_REQUEST_ID_INVALID;
  if (n && !dst) {
    emu_set_error("veo_async_read_mem: NULL destination");
    return VEO_REQUEST_ID_INVALID;
  }
  if (n == 0) return emu_submit(c, EMU_CMD_NOP, 0, 0, 0, NULL, NULL);
  struct job *j = emu_job_new(JOB_READ);
  if (!j) return VEO_REQUEST_ID_INVALID;
  j->host = dst;
  j->ve_addr = src;
  j->len = n;
  return emu_submit_agent(c, j);
}

EXPORT uint64_t veo_async_write_mem(struct veo_thr_ctxt *c, uint64_t dst, const void *src,
                                    size_t n) {
  emu_clear_error();
  if (!emu_ctx_valid(c, "veo_async_write_mem")) return VEO_REQUEST_ID_INVALID;
  if (n && !src) {
    emu_set_error("veo_async_write_mem: NULL source");
    return VEO_REQUEST_ID_INVALID;
  }
  if (n == 0) return emu_submit(c, EMU_CMD_NOP, 0, 0, 0, NULL, NULL);
  struct job *j = emu_job_new(JOB_WRITE);
  if (!j) return VEO_REQUEST_ID_INVALID;
  j->host = (void *)src;
  j->ve_addr = dst;
  j->len = n;
  return emu_submit_agent(c, j);
}

EXPORT uint64_t veo_alloc_mem_async(struct veo_thr_ctxt *c, const size_t size) {
  emu_clear_error();
  if (!emu_ctx_valid(c, "veo_alloc_mem_async")) return VEO_REQUEST_ID_INVALID;
  struct job *j = emu_job_new(JOB_ALLOC);
  if (!j) return VEO_REQUEST_ID_INVALID;
  j->len = size;
  return emu_submit_agent(c, j);
}

EXPORT uint64_t veo_free_mem_async(struct veo_thr_ctxt *c, uint64_t addr) {
  emu_clear_error();
  if (!emu_ctx_valid(c, "veo_free_mem_async")) return VEO_REQUEST_ID_INVALID;
  struct veo_proc_handle *p = c->proc;
  /* (arg0 = 1: an address the VE process cannot free is answered as AVEO's
   * VE answers every free, see the helper's do_free) */
  if (addr < p->heap.ve_base || addr >= p->heap.ve_base + p->heap.size)
    return emu_submit(c, EMU_CMD_FREE, addr, 1, 0, NULL, NULL);
  struct job *j = emu_job_new(JOB_FREE);
  if (!j) return VEO_REQUEST_ID_INVALID;
  j->ve_addr = addr;
  return emu_submit_agent(c, j);
}

/* ---- calls ----------------------------------------------------------------------------------------- */
EXPORT uint64_t veo_call_async(struct veo_thr_ctxt *c, uint64_t addr, struct veo_args *a) {
  emu_clear_error();
  if (!emu_ctx_valid(c, "veo_call_async")) return VEO_REQUEST_ID_INVALID;
  if (!a || a->magic != ARGS_MAGIC) {
    emu_set_error("veo_call_async: invalid veo_args handle");
    return VEO_REQUEST_ID_INVALID;
  }
  if (!addr) {
    emu_set_error("veo_call_async: function address 0");
    return VEO_REQUEST_ID_INVALID;
  }
  uint32_t n = (uint32_t)a->nargs;
  for (uint32_t i = 0; i < n; i++)
    if (a->types[i] == EMU_T_NONE) {
      emu_set_error("veo_call_async: argument %u was never set (arguments 0..%u are needed)", i,
                    n - 1);
      return VEO_REQUEST_ID_INVALID;
    }
  size_t image = emu_stack_image_bytes(a);
  if (image > EMU_STACK_IMAGE_MAX) {
    emu_set_error("veo_call_async: the call's stack image is %zu bytes, more than the %u "
                  "bytes below the context's stack pointer that AVEO allows (its stack "
                  "arguments must fit in ~63 MB)", image, (unsigned)EMU_STACK_IMAGE_MAX);
    errno = E2BIG;
    return VEO_REQUEST_ID_INVALID;
  }
  struct job *j = NULL;
  if (a->nstack) { /* stack arguments live in VE memory for the call */
    j = emu_stack_job_new(c->proc, a);
    if (!j) return VEO_REQUEST_ID_INVALID;
  }
  uint64_t id = emu_submit_call(c, addr, a, j);
  if (id == VEO_REQUEST_ID_INVALID && j) emu_stack_job_drop(c->proc, j);
  return id;
}

EXPORT uint64_t veo_call_async_by_name(struct veo_thr_ctxt *c, uint64_t lib, const char *name,
                                       struct veo_args *a) {
  emu_clear_error();
  if (!emu_ctx_valid(c, "veo_call_async_by_name")) return VEO_REQUEST_ID_INVALID;
  uint64_t addr = veo_get_sym(c->proc, lib, name);
  if (!addr) return VEO_REQUEST_ID_INVALID;
  return veo_call_async(c, addr, a);
}

EXPORT uint64_t veo_call_async_vh(struct veo_thr_ctxt *c, uint64_t (*func)(void *), void *arg) {
  emu_clear_error();
  if (!emu_ctx_valid(c, "veo_call_async_vh")) return VEO_REQUEST_ID_INVALID;
  if (!func) {
    emu_set_error("veo_call_async_vh: NULL function");
    return VEO_REQUEST_ID_INVALID;
  }
  struct job *j = emu_job_new(JOB_VH);
  if (!j) return VEO_REQUEST_ID_INVALID;
  j->vh_func = func;
  j->vh_arg = arg;
  return emu_submit_agent(c, j);
}

EXPORT int veo_call_peek_result(struct veo_thr_ctxt *c, uint64_t id, uint64_t *retp) {
  emu_clear_error();
  if (!c || c->magic != CTX_MAGIC) {
    emu_ctx_valid(c, "veo_call_peek_result"); /* the error message */
    return VEO_COMMAND_ERROR;
  }
  struct veo_proc_handle *p = c->proc;
  emu_proc_users_inc(p);
  int st = VEO_COMMAND_ERROR;
  if (emu_ctx_valid(c, "veo_call_peek_result")) {
    emu_serve_agent_slot(c, 0);
    st = emu_peek(c, id, retp);
  }
  emu_proc_leave(p);
  return st;
}

EXPORT int veo_call_wait_result(struct veo_thr_ctxt *c, uint64_t id, uint64_t *retp) {
  emu_clear_error();
  if (!emu_ctx_valid(c, "veo_call_wait_result")) return VEO_COMMAND_ERROR;
  return emu_wait_result(c, id, retp);
}

EXPORT int veo_call_sync(struct veo_proc_handle *p, uint64_t addr, struct veo_args *a,
                         uint64_t *result) {
  emu_clear_error();
  if (!emu_proc_ok(p)) return -1;
  uint64_t rv = 0;
  emu_t_sync_call = 1; /* the profile's veo_call_sync round trip */
  uint64_t id = veo_call_async(p->ctx[0], addr, a);
  emu_t_sync_call = 0;
  if (id == VEO_REQUEST_ID_INVALID) return -1;
  int st = emu_wait_result(p->ctx[0], id, &rv);
  if (result) *result = rv;
  return st == VEO_COMMAND_OK ? 0 : -1;
}

/* ---- version and architecture ------------------------------------------------------------------------ */
EXPORT int veo_api_version(void) { return VEO_API_VERSION; }

EXPORT const char *veo_version_string(void) { return EMU_VERSION_STRING; }

/* An emulated node is not a VE: its architecture is reported as 0. */
EXPORT int veo_get_ve_arch(int venode) {
  if (venode < -1) return 0;
  return emu_resolve_node(venode) < 0 ? -1 : 0;
}
