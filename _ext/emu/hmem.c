/*
 * hmem.c -- heterogeneous memory addresses and API hooks.
 *
 * An hmem address carries the "VE address" flag in bit 63 and the proc
 * identifier in bits 62:59.  Unlike AVEO, an identifier of a destroyed or
 * unknown proc gives an error instead of a crash, and the hook table is
 * locked.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "emu_host.h"

#define HMEM_FLAG (1ull << 63)
#define HMEM_IDENT_MASK 0x7800000000000000ull
#define HMEM_IDENT_SHIFT 59
#define HMEM_HIGH_MASK 0xF800000000000000ull

EXPORT int veo_is_ve_addr(const void *addr) { return ((uint64_t)(uintptr_t)addr & HMEM_FLAG) != 0; }

EXPORT void *veo_get_hmem_addr(void *addr) {
  uint64_t a = (uint64_t)(uintptr_t)addr;
  return (void *)(uintptr_t)((a & HMEM_FLAG) ? a & ~HMEM_HIGH_MASK : a);
}

EXPORT int veo_get_max_proc_identifier(void) { return VEO_MAX_HMEM_PROCS; }

EXPORT int veo_get_proc_identifier_from_hmem(const void *addr) {
  uint64_t a = (uint64_t)(uintptr_t)addr;
  if (!(a & HMEM_FLAG)) return -1;
  return (int)((a & HMEM_IDENT_MASK) >> HMEM_IDENT_SHIFT);
}

EXPORT void *veo_set_proc_identifier(void *addr, int ident) {
  if (ident < 0 || ident >= VEO_MAX_HMEM_PROCS) return NULL;
  return (void *)(uintptr_t)((uint64_t)(uintptr_t)addr | HMEM_FLAG |
                             ((uint64_t)ident << HMEM_IDENT_SHIFT));
}

EXPORT struct veo_proc_handle *veo_get_proc_handle_from_hmem(const void *addr) {
  int ident = veo_get_proc_identifier_from_hmem(addr);
  return ident < 0 ? NULL : emu_proc_by_ident(ident);
}

EXPORT int veo_get_venum_from_hmem(const void *addr) {
  struct veo_proc_handle *p = veo_get_proc_handle_from_hmem(addr);
  return p ? p->node : -1;
}

EXPORT pid_t veo_get_pid_from_hmem(const void *addr) {
  struct veo_proc_handle *p = veo_get_proc_handle_from_hmem(addr);
  return p ? emu_proc_pid(p) : -1;
}

static uint64_t raw_addr(const void *p) { return (uint64_t)(uintptr_t)p & ~HMEM_HIGH_MASK; }

EXPORT int veo_alloc_hmem(struct veo_proc_handle *p, void **addr, const size_t size) {
  emu_clear_error();
  if (!addr) {
    errno = EINVAL;
    return -1;
  }
  if (!p) {
    *addr = malloc(size);
    return *addr ? 0 : -1;
  }
  if (emu_proc_table_size() > VEO_MAX_HMEM_PROCS) {
    emu_set_error("veo_alloc_hmem: more than %d procs were created", VEO_MAX_HMEM_PROCS);
    return -1;
  }
  uint64_t a = 0;
  int rc = veo_alloc_mem(p, &a, size);
  if (rc) return rc;
  int ident = veo_proc_identifier(p);
  if (ident < 0) return ident;
  *addr = veo_set_proc_identifier((void *)(uintptr_t)a, ident);
  emu_run_hook((void *)veo_alloc_hmem, HOOK_ALLOC, p, (uint64_t)(uintptr_t)*addr, size);
  return 0;
}

EXPORT int veo_free_hmem(void *addr) {
  emu_clear_error();
  if (!veo_is_ve_addr(addr)) {
    free(addr);
    return 0;
  }
  struct veo_proc_handle *p = veo_get_proc_handle_from_hmem(addr);
  if (!p) {
    emu_set_error("veo_free_hmem: no live proc with identifier %d",
                  veo_get_proc_identifier_from_hmem(addr));
    return -1;
  }
  int rc = veo_free_mem(p, raw_addr(addr));
  if (rc == 0) emu_run_hook((void *)veo_free_hmem, HOOK_FREE, p, (uint64_t)(uintptr_t)addr, 0);
  return rc;
}

EXPORT int veo_hmemcpy(void *dst, const void *src, size_t n) {
  emu_clear_error();
  int dve = veo_is_ve_addr(dst), sve = veo_is_ve_addr(src);
  if (!dve && !sve) {
    memmove(dst, src, n);
    return 0;
  }
  struct veo_proc_handle *pd = dve ? veo_get_proc_handle_from_hmem(dst) : NULL;
  struct veo_proc_handle *ps = sve ? veo_get_proc_handle_from_hmem(src) : NULL;
  if ((dve && !pd) || (sve && !ps)) {
    emu_set_error("veo_hmemcpy: address of a proc that does not exist");
    return -1;
  }
  if (dve && sve) {
    if (pd != ps) {
      emu_set_error("veo_hmemcpy: copies between two procs are not supported");
      return -1;
    }
    return emu_ve_memcpy(pd, raw_addr(dst), raw_addr(src), n);
  }
  if (dve) return veo_write_mem(pd, raw_addr(dst), src, n);
  return veo_read_mem(ps, dst, raw_addr(src), n);
}

/* ---- hooks ------------------------------------------------------------------------ */
struct hook {
  void *func;
  void (*hook)(void *, ...);
  void *payload;
};

static pthread_mutex_t g_hooks_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hook g_hooks[32];
static int g_nhooks;

EXPORT void veo_register_hook(void *func, void (*hook)(void *, ...), void *payload) {
  if (!func) return;
  pthread_mutex_lock(&g_hooks_lock);
  int i = 0;
  while (i < g_nhooks && g_hooks[i].func != func) i++;
  if (i == g_nhooks && g_nhooks < (int)(sizeof(g_hooks) / sizeof(g_hooks[0]))) g_nhooks++;
  if (i < g_nhooks) g_hooks[i] = (struct hook){func, hook, payload};
  pthread_mutex_unlock(&g_hooks_lock);
}

EXPORT void *veo_get_hook(void *func) {
  void *h = NULL;
  pthread_mutex_lock(&g_hooks_lock);
  for (int i = 0; i < g_nhooks; i++)
    if (g_hooks[i].func == func) h = (void *)g_hooks[i].hook;
  pthread_mutex_unlock(&g_hooks_lock);
  return h;
}

EXPORT void veo_unregister_hook(void *func) {
  pthread_mutex_lock(&g_hooks_lock);
  for (int i = 0; i < g_nhooks; i++)
    if (g_hooks[i].func == func) {
      g_hooks[i] = g_hooks[--g_nhooks];
      break;
    }
  pthread_mutex_unlock(&g_hooks_lock);
}

/* Argument shapes follow AVEO: veo_alloc_mem passes a pointer to the address;
 * the async forms pass the context; free hooks get no size. */
void emu_run_hook(void *api_func, int kind, void *handle, uint64_t addr, size_t size) {
  struct hook h = {0};
  pthread_mutex_lock(&g_hooks_lock);
  for (int i = 0; i < g_nhooks; i++)
    if (g_hooks[i].func == api_func) h = g_hooks[i];
  pthread_mutex_unlock(&g_hooks_lock);
  if (!h.hook) return;
  if (kind == HOOK_ALLOC)
    h.hook(h.payload, handle, addr, size);
  else
    h.hook(h.payload, handle, addr);
}

/* veo_register_hmem_hook_functions: report allocations as hmem addresses. */
static void (*g_hmem_alloc_cb)(void *, size_t);
static void (*g_hmem_free_cb)(uint64_t);

/* (p->ident, not veo_proc_identifier: a hook may run while veo_proc_destroy
 * holds the table lock; AVEO deadlocks there) */
static void *to_hmem(struct veo_proc_handle *p, uint64_t a) {
  return veo_set_proc_identifier((void *)(uintptr_t)a, p->ident);
}

static void hmem_alloc_hook(void *payload, ...) {
  (void)payload;
  __builtin_va_list ap;
  __builtin_va_start(ap, payload);
  struct veo_proc_handle *p = __builtin_va_arg(ap, struct veo_proc_handle *);
  uint64_t *addrp = __builtin_va_arg(ap, uint64_t *);
  size_t size = __builtin_va_arg(ap, size_t);
  __builtin_va_end(ap);
  if (g_hmem_alloc_cb) g_hmem_alloc_cb(to_hmem(p, *addrp), size);
}

static void hmem_free_hook(void *payload, ...) {
  (void)payload;
  __builtin_va_list ap;
  __builtin_va_start(ap, payload);
  struct veo_proc_handle *p = __builtin_va_arg(ap, struct veo_proc_handle *);
  uint64_t addr = __builtin_va_arg(ap, uint64_t);
  __builtin_va_end(ap);
  if (g_hmem_free_cb) g_hmem_free_cb((uint64_t)(uintptr_t)to_hmem(p, addr));
}

static void hmem_alloc_async_hook(void *payload, ...) {
  (void)payload;
  __builtin_va_list ap;
  __builtin_va_start(ap, payload);
  struct veo_thr_ctxt *c = __builtin_va_arg(ap, struct veo_thr_ctxt *);
  uint64_t addr = __builtin_va_arg(ap, uint64_t);
  size_t size = __builtin_va_arg(ap, size_t);
  __builtin_va_end(ap);
  if (g_hmem_alloc_cb) g_hmem_alloc_cb(to_hmem(c->proc, addr), size);
}

static void hmem_free_async_hook(void *payload, ...) {
  (void)payload;
  __builtin_va_list ap;
  __builtin_va_start(ap, payload);
  struct veo_thr_ctxt *c = __builtin_va_arg(ap, struct veo_thr_ctxt *);
  uint64_t addr = __builtin_va_arg(ap, uint64_t);
  __builtin_va_end(ap);
  if (g_hmem_free_cb) g_hmem_free_cb((uint64_t)(uintptr_t)to_hmem(c->proc, addr));
}

EXPORT void veo_register_hmem_hook_functions(void (*alloc)(void *, size_t),
                                             void (*free_cb)(uint64_t)) {
  g_hmem_alloc_cb = alloc;
  g_hmem_free_cb = free_cb;
  veo_register_hook((void *)veo_alloc_mem, hmem_alloc_hook, NULL);
  veo_register_hook((void *)veo_free_mem, hmem_free_hook, NULL);
  veo_register_hook((void *)veo_alloc_mem_async, hmem_alloc_async_hook, NULL);
  veo_register_hook((void *)veo_free_mem_async, hmem_free_async_hook, NULL);
}

EXPORT void veo_unregister_hmem_hook_functions(void) {
  veo_unregister_hook((void *)veo_alloc_mem);
  veo_unregister_hook((void *)veo_free_mem);
  veo_unregister_hook((void *)veo_alloc_mem_async);
  veo_unregister_hook((void *)veo_free_mem_async);
}
