/*
 * veorun.c -- aioveo-veorun, the helper process that plays a VE process.
 *
 * Started by veo_proc_create() with the proc's shared memory at fd 3, its VE
 * memory at fd 4 and a socket to the host at fd 5.  Each context is a thread
 * that executes its command ring in order: kernel calls through libffi with
 * the recorded argument types, library loads, symbol lookups.  Work on host
 * buffers is handed to the host's agent through the context's agent slot.
 *
 * A fault in a kernel (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) marks the
 * proc dead and ends the process, as a VE process would; the running request
 * completes with VEO_COMMAND_EXCEPTION (result = signal number) if it ran on
 * the main context, else with VEO_COMMAND_ERROR (AVEO reports the exception
 * on the main context's channel only).  The helper
 * exits when the host process dies (EOF on the socket).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <ffi.h>
#include <fnmatch.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "emu_proto.h"
#include "emu_sync.h"
#include "ve_offload.h"

/* Kernels linked into a "static helper" are listed here (see emu_proto.h);
 * the bundled helper has an empty table. */
__attribute__((weak)) const struct veo_emu_static_sym _veo_static_symtable[] = {{0, 0}};

static void *g_shm;
static struct emu_header *g_hdr;

static __thread struct emu_ctx_region *t_region;
static __thread int t_index; /* the context this thread serves (0: the main one) */
static __thread uint64_t t_seq;
static __thread volatile int t_running; /* executing request t_seq */
static __thread uint64_t t_model_end; /* the timing profile: when the last command ended */

/* Libraries loaded through the API, with their load counts, so a bad handle
 * is an error and not a crash in dlclose/dlsym. */
static pthread_mutex_t g_libs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { void *h; int refs; } g_libs[1024];
static int g_nlibs;

static void set_msg(struct emu_ctx_region *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->ctl.msg, EMU_MSG_LEN, fmt, ap);
  va_end(ap);
}

/* ---- faults ---------------------------------------------------------------- */
static void write_str(const char *s) {
  ssize_t r = write(2, s, strlen(s));
  (void)r;
}

static void on_fault(int sig, siginfo_t *si, void *uc) {
  (void)si;
  (void)uc;
  struct emu_ctx_region *r = t_region;
  /* Dead first: the host must not accept more work once it sees the result. */
  if (g_hdr) atomic_store(&g_hdr->dead, (uint32_t)sig);
  if (r && t_running) {
    /* As AVEO: the VE side reports the exception (with the signal) on the
     * main context only; a request of another context sees its VE process
     * die, which is VEO_COMMAND_ERROR without a result. */
    struct emu_result *res = &r->results[t_seq % EMU_RES_RING_SLOTS];
    res->retval = t_index == 0 ? (uint64_t)sig : 0;
    res->status = t_index == 0 ? VEO_COMMAND_EXCEPTION : VEO_COMMAND_ERROR;
    atomic_store(&r->ctl.done, t_seq + 1);
  }
  /* Only now may the host fail the remaining requests: the faulting one has
   * its EXCEPTION result. */
  if (g_hdr) atomic_store(&g_hdr->settled, 1);
  if (r) emu_futex_wake(&r->ctl.done);
  char msg[128] = "aioveo-veorun: kernel raised signal ";
  size_t n = strlen(msg);
  if (sig >= 10) msg[n++] = (char)('0' + sig / 10 % 10);
  msg[n++] = (char)('0' + sig % 10);
  msg[n] = 0;
  write_str(msg);
  write_str(" (");
  write_str(strsignal(sig) ? strsignal(sig) : "?");
  write_str("); the emulated VE process ends\n");
  _exit(sig);
}

static void install_fault_handlers(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
  for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) sigaction(sigs[i], &sa, NULL);
}

/* Each context thread gets an alternate signal stack so a stack overflow in a
 * kernel is still reported. */
static void *setup_altstack(void) {
  size_t sz = 64 * 1024;
  void *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  stack_t ss = {.ss_sp = p, .ss_size = sz, .ss_flags = 0};
  sigaltstack(&ss, NULL);
  return p;
}

/* ---- injected faults (VEO_EMU_FAULTS, veo_emu_inject; see faults.c) ---------- */
static _Atomic unsigned g_libs_gen; /* bumped at each unload: symbol names may change */
static __thread uint64_t t_sym_addr;
static __thread unsigned t_sym_gen;
static __thread char t_sym_name[EMU_FAULT_SYM_LEN];

/* The symbol of a kernel address ("" if none). */
static const char *sym_name(uint64_t addr) {
  unsigned gen = atomic_load(&g_libs_gen);
  if (addr == t_sym_addr && gen == t_sym_gen) return t_sym_name;
  Dl_info info;
  t_sym_name[0] = 0;
  if (dladdr((void *)(uintptr_t)addr, &info) && info.dli_sname &&
      (uint64_t)(uintptr_t)info.dli_saddr == addr)
    snprintf(t_sym_name, sizeof(t_sym_name), "%s", info.dli_sname);
  for (const struct veo_emu_static_sym *s = _veo_static_symtable; !t_sym_name[0] && s->name; s++)
    if ((uint64_t)(uintptr_t)s->addr == addr)
      snprintf(t_sym_name, sizeof(t_sym_name), "%s", s->name);
  t_sym_addr = addr;
  t_sym_gen = gen;
  return t_sym_name;
}

struct call_faults {
  uint64_t delay_ns;
  struct emu_fault *crash, *hang, *die;
  uint64_t k; /* the call's number for the fault that acts */
};

static void announce(struct emu_fault *f, const char *what, uint64_t addr, uint64_t k) {
  char m[512];
  const char *name = addr ? sym_name(addr) : "";
  if (k)
    snprintf(m, sizeof(m), "aioveo-veorun: injected fault '%s': %s (call %llu%s%s, context %d)\n",
             f->text, what, (unsigned long long)k, *name ? " of " : "", name, t_index);
  else
    snprintf(m, sizeof(m), "aioveo-veorun: injected fault '%s': %s\n", f->text, what);
  write_str(m);
}

/* The faults that act on this kernel call (each matching fault counts it). */
static void check_faults(struct emu_cmd *c, struct call_faults *cf) {
  memset(cf, 0, sizeof(*cf));
  uint32_t n = atomic_load(&g_hdr->nfaults);
  struct emu_fault *fs = emu_faults(g_shm);
  for (uint32_t i = 0; i < n && i < EMU_MAX_FAULTS; i++) {
    struct emu_fault *f = &fs[i];
    if (!atomic_load(&f->active) || f->kind == EMU_FAULT_NOMEM) continue;
    if (f->kind == EMU_FAULT_DIE && !f->after_calls) continue; /* a time: life_watch */
    if (f->ctx >= 0 && f->ctx != t_index) continue;
    if (f->sym[0] && fnmatch(f->sym, sym_name(c->addr), 0) != 0) continue;
    uint64_t k = atomic_fetch_add(&f->seen, 1) + 1;
    int hit = f->kind == EMU_FAULT_DIE ? k == f->after_calls
              : f->call               ? k == f->call
              : f->rate               ? emu_fault_roll(f, k)
                                      : 1;
    if (!hit) continue;
    atomic_fetch_add(&f->fired, 1);
    if (f->kind == EMU_FAULT_DELAY) {
      cf->delay_ns += f->delay_ns;
    } else if (f->kind == EMU_FAULT_CRASH && !cf->crash) {
      cf->crash = f;
      cf->k = k;
    } else if (f->kind == EMU_FAULT_HANG && !cf->hang) {
      cf->hang = f;
      if (!cf->crash) cf->k = k;
    } else if (f->kind == EMU_FAULT_DIE && !cf->die) {
      cf->die = f;
    }
  }
}

/* The VE process dies: killed, as VEOS kills a VE process (no exception). */
static void die_now(void) {
  fflush(NULL);
  kill(getpid(), SIGKILL);
  for (;;) pause();
}

/* The earliest deadline of an armed "die after a time" (0: none). */
static uint64_t next_death(void) {
  uint64_t best = 0;
  uint32_t n = atomic_load(&g_hdr->nfaults);
  struct emu_fault *fs = emu_faults(g_shm);
  for (uint32_t i = 0; i < n && i < EMU_MAX_FAULTS; i++) {
    struct emu_fault *f = &fs[i];
    if (f->kind == EMU_FAULT_DIE && f->deadline_ns && atomic_load(&f->active) &&
        (!best || f->deadline_ns < best))
      best = f->deadline_ns;
  }
  return best;
}

static void die_if_due(void) {
  uint64_t now = emu_now_ns();
  uint32_t n = atomic_load(&g_hdr->nfaults);
  struct emu_fault *fs = emu_faults(g_shm);
  for (uint32_t i = 0; i < n && i < EMU_MAX_FAULTS; i++) {
    struct emu_fault *f = &fs[i];
    if (f->kind == EMU_FAULT_DIE && f->deadline_ns && atomic_load(&f->active) &&
        f->deadline_ns <= now) {
      atomic_fetch_add(&f->fired, 1);
      announce(f, "the VE process dies", 0, 0);
      die_now();
    }
  }
}

/* ---- the host agent ---------------------------------------------------------- */
static void wake_agent(void) {
  atomic_fetch_add(&g_hdr->agent_posts, 1);
  if (atomic_load(&g_hdr->agent_sleeping)) {
    ssize_t r = write(EMU_FD_LIFE, "w", 1); /* EAGAIN: it is due to wake anyway */
    (void)r;
  }
}

/* Hand request `seq` to the host agent and wait for its answer. */
static uint32_t agent_call(struct emu_ctx_region *r, uint64_t seq, uint64_t *value) {
  struct emu_agent_slot *s = &r->ctl.agent;
  s->seq = seq;
  s->value = *value;
  s->status = VEO_COMMAND_ERROR;
  atomic_store(&s->state, EMU_AGENT_READY);
  wake_agent();
  uint64_t spin_end = emu_now_ns() + (uint64_t)g_hdr->spin_us * 1000u;
  for (unsigned i = 0;; i++) {
    uint32_t st = atomic_load(&s->state);
    if (st == EMU_AGENT_DONE) break;
    if (emu_now_ns() < spin_end) {
      emu_spin_step(g_hdr->spin_yield);
      continue;
    }
    emu_futex_wait(&s->state, st, 100000000ull);
  }
  *value = s->value;
  uint32_t status = s->status;
  atomic_store(&s->state, EMU_AGENT_IDLE);
  return status;
}

/* ---- commands ---------------------------------------------------------------- */
static ffi_type *ffi_of(int t) {
  switch (t) {
    case EMU_T_I8: return &ffi_type_sint8;
    case EMU_T_U8: return &ffi_type_uint8;
    case EMU_T_I16: return &ffi_type_sint16;
    case EMU_T_U16: return &ffi_type_uint16;
    case EMU_T_I32: return &ffi_type_sint32;
    case EMU_T_U32: return &ffi_type_uint32;
    case EMU_T_I64: return &ffi_type_sint64;
    case EMU_T_FLOAT: return &ffi_type_float;
    case EMU_T_DOUBLE: return &ffi_type_double;
    default: return &ffi_type_uint64; /* U64 and stack pointers */
  }
}

static ffi_type *ffi_ret_of(int t) {
  switch (t) {
    case VEO_EMU_TYPE_VOID: return &ffi_type_void;
    case VEO_EMU_TYPE_I8: return &ffi_type_sint8;
    case VEO_EMU_TYPE_U8: return &ffi_type_uint8;
    case VEO_EMU_TYPE_I16: return &ffi_type_sint16;
    case VEO_EMU_TYPE_U16: return &ffi_type_uint16;
    case VEO_EMU_TYPE_I32: return &ffi_type_sint32;
    case VEO_EMU_TYPE_U32: return &ffi_type_uint32;
    case VEO_EMU_TYPE_I64: return &ffi_type_sint64;
    case VEO_EMU_TYPE_FLOAT: return &ffi_type_float;
    case VEO_EMU_TYPE_DOUBLE: return &ffi_type_double;
    default: return &ffi_type_uint64;
  }
}

/* The last call signature of a context, so repeated calls skip ffi_prep_cif. */
struct cif_cache {
  ffi_cif cif;
  int valid, nargs, ret;
  uint8_t types[EMU_MAX_ARGS];
  ffi_type *atypes[EMU_MAX_ARGS];
};

static uint64_t convert_ret(int ret, const uint64_t *raw) {
  switch (ret) {
    case VEO_EMU_TYPE_VOID: return 0;
    case VEO_EMU_TYPE_I8: case VEO_EMU_TYPE_I16: case VEO_EMU_TYPE_I32:
      return (uint64_t)(int64_t)(ffi_sarg)*raw;
    case VEO_EMU_TYPE_FLOAT: {
      uint32_t bits;
      memcpy(&bits, raw, sizeof(bits));
      return (uint64_t)bits << 32; /* the VE puts a float in the upper half */
    }
    default: return *raw;
  }
}

static uint32_t do_call(struct emu_ctx_region *r, struct emu_cmd *c, struct cif_cache *cc,
                        uint64_t *retval) {
  uint32_t n = c->nargs;
  uint8_t *types = (uint8_t *)(c + 1);
  uint64_t *vals = (uint64_t *)(types + ((n + 7) & ~7u));
  struct emu_stack_desc *sd = (struct emu_stack_desc *)(vals + n);
  for (uint32_t i = 0; i < c->nstack; i++)
    if (sd[i].argnum < n) vals[sd[i].argnum] = g_hdr->heap_base + sd[i].heap_off;

  int ret = (int)c->arg0;
  if (!cc->valid || cc->nargs != (int)n || cc->ret != ret || memcmp(cc->types, types, n)) {
    for (uint32_t i = 0; i < n; i++) cc->atypes[i] = ffi_of(types[i]);
    if (ffi_prep_cif(&cc->cif, FFI_DEFAULT_ABI, n, ffi_ret_of(ret), cc->atypes) != FFI_OK) {
      cc->valid = 0;
      set_msg(r, "ffi_prep_cif failed for %u arguments", n);
      return VEO_COMMAND_ERROR;
    }
    memcpy(cc->types, types, n);
    cc->nargs = (int)n;
    cc->ret = ret;
    cc->valid = 1;
  }
  void *avalues[EMU_MAX_ARGS];
  for (uint32_t i = 0; i < n; i++) avalues[i] = &vals[i];
  uint64_t raw[2] = {0, 0};
  ffi_call(&cc->cif, FFI_FN((uintptr_t)c->addr), raw, avalues);
  *retval = convert_ret(ret, raw);
  return VEO_COMMAND_OK;
}

static int lib_find(void *h) { /* call with g_libs_lock held */
  for (int i = 0; i < g_nlibs; i++)
    if (g_libs[i].h == h) return i;
  return -1;
}

static int lib_known(void *h) {
  pthread_mutex_lock(&g_libs_lock);
  int i = lib_find(h);
  pthread_mutex_unlock(&g_libs_lock);
  return i >= 0;
}

static uint64_t static_sym(const char *name) {
  for (const struct veo_emu_static_sym *s = _veo_static_symtable; s->name; s++)
    if (strcmp(s->name, name) == 0) return (uint64_t)(uintptr_t)s->addr;
  return 0;
}

static uint64_t do_load(struct emu_ctx_region *r, const char *name) {
  void *h = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
  if (!h) {
    const char *e = dlerror();
    set_msg(r, "%s", e ? e : "dlopen failed");
    return 0;
  }
  pthread_mutex_lock(&g_libs_lock);
  int i = lib_find(h);
  if (i < 0 && g_nlibs < (int)(sizeof(g_libs) / sizeof(g_libs[0]))) {
    i = g_nlibs++;
    g_libs[i].h = h;
    g_libs[i].refs = 0;
  }
  if (i >= 0) g_libs[i].refs++;
  pthread_mutex_unlock(&g_libs_lock);
  if (i < 0) {
    dlclose(h);
    set_msg(r, "too many libraries loaded");
    return 0;
  }
  return (uint64_t)(uintptr_t)h;
}

static uint64_t do_unload(struct emu_ctx_region *r, void *h) {
  pthread_mutex_lock(&g_libs_lock);
  int i = lib_find(h);
  int rc = -1;
  if (i < 0) {
    set_msg(r, "unknown library handle %p", h);
  } else {
    rc = dlclose(h);
    atomic_fetch_add(&g_libs_gen, 1);
    if (rc == 0 && --g_libs[i].refs == 0) g_libs[i] = g_libs[--g_nlibs];
    if (rc) set_msg(r, "%s", dlerror());
  }
  pthread_mutex_unlock(&g_libs_lock);
  return (uint64_t)(int64_t)rc;
}

static uint64_t do_get_sym(struct emu_ctx_region *r, uint64_t handle, const char *name) {
  uint64_t addr = 0;
  if (handle) {
    if (!lib_known((void *)(uintptr_t)handle)) {
      set_msg(r, "unknown library handle 0x%llx", (unsigned long long)handle);
      return 0;
    }
    dlerror();
    addr = (uint64_t)(uintptr_t)dlsym((void *)(uintptr_t)handle, name);
  }
  uint64_t s = static_sym(name);
  if (s) addr = s;
  if (!addr) set_msg(r, "symbol '%s' not found", name);
  return addr;
}

/* A copy inside the helper that reports bad addresses instead of faulting. */
static uint64_t do_memcpy(struct emu_ctx_region *r, uint64_t dst, uint64_t src, uint64_t n) {
  struct iovec l = {(void *)(uintptr_t)dst, n}, rm = {(void *)(uintptr_t)src, n};
  if (n == 0) return 0;
  if (process_vm_readv(getpid(), &l, 1, &rm, 1, 0) == (ssize_t)n) return 0;
  set_msg(r, "VE memcpy of %llu bytes failed: %s", (unsigned long long)n, strerror(errno));
  return (uint64_t)-1;
}

/* free() of memory a kernel malloc'ed.  An address that cannot be a malloc
 * block (misaligned, or its chunk header unreadable) is refused instead of
 * crashing the process; anything else is up to malloc, as on a VE. */
static uint32_t do_free(struct emu_ctx_region *r, uint64_t addr, int async) {
  static int reported;
  if (addr == 0) return VEO_COMMAND_OK;
  char hdr[16];
  struct iovec l = {hdr, sizeof(hdr)}, rm = {(void *)(uintptr_t)(addr - sizeof(hdr)), sizeof(hdr)};
  if (addr % 16 != 0 || addr < sizeof(hdr) ||
      process_vm_readv(getpid(), &l, 1, &rm, 1, 0) != (ssize_t)sizeof(hdr)) {
    set_msg(r, "free: 0x%llx is not memory allocated in the VE process", (unsigned long long)addr);
    if (!async) return VEO_COMMAND_ERROR;
    /* veo_free_mem_async: AVEO's VE calls free() and answers OK with 0
     * (free() of such an address usually aborts a VE process) */
    if (!__atomic_exchange_n(&reported, 1, __ATOMIC_RELAXED)) {
      char m[256];
      snprintf(m, sizeof(m), "aioveo emulator: veo_free_mem_async(0x%llx): not memory "
               "allocated in the VE process; answered OK with result 0 as AVEO answers every "
               "free, but on a VE this free() usually aborts the VE process\n",
               (unsigned long long)addr);
      write_str(m);
    }
    r->ctl.msg[0] = 0;
    return VEO_COMMAND_OK;
  }
  free((void *)(uintptr_t)addr);
  return VEO_COMMAND_OK;
}

struct ctx_thread_arg {
  int index;
};

static void serve(int index);

static void *ctx_thread_main(void *p) {
  struct ctx_thread_arg a = *(struct ctx_thread_arg *)p;
  free(p);
  serve(a.index);
  return NULL;
}

static uint64_t do_open_ctx(struct emu_ctx_region *r, int index, uint64_t stacksize) {
  if (index <= 0 || index >= EMU_MAX_CONTEXTS) {
    set_msg(r, "bad context index %d", index);
    return (uint64_t)-1;
  }
  struct ctx_thread_arg *a = malloc(sizeof(*a));
  if (!a) return (uint64_t)-1;
  a->index = index;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (stacksize) pthread_attr_setstacksize(&attr, stacksize);
  pthread_t t;
  int rc = pthread_create(&t, &attr, ctx_thread_main, a);
  pthread_attr_destroy(&attr);
  if (rc) {
    free(a);
    set_msg(r, "cannot start context thread: %s", strerror(rc));
    return (uint64_t)-1;
  }
  return 0;
}

/* Wait for the next command: spin briefly, then sleep on the ring head. */
static uint64_t wait_command(struct emu_ctx_ctl *ctl, uint64_t tail) {
  uint64_t head = atomic_load(&ctl->cmd_head);
  if (head != tail) return head;
  uint64_t spin_end = emu_now_ns() + (uint64_t)g_hdr->spin_us * 1000u;
  for (;;) {
    for (int i = 0; i < 64; i++) {
      head = atomic_load(&ctl->cmd_head);
      if (head != tail) return head;
      if (g_hdr->spin_yield) {
        sched_yield();
        break;
      }
      emu_cpu_relax();
    }
    if (emu_now_ns() >= spin_end) break;
  }
  for (;;) {
    atomic_store(&ctl->helper_sleeping, 1);
    head = atomic_load(&ctl->cmd_head);
    if (head != tail) break;
    emu_futex_wait(&ctl->cmd_head, (uint32_t)head, 0);
    head = atomic_load(&ctl->cmd_head);
    if (head != tail) break;
  }
  atomic_store(&ctl->helper_sleeping, 0);
  return head;
}

static void complete(struct emu_ctx_region *r, uint64_t seq, uint32_t status, uint64_t retval) {
  struct emu_result *res = &r->results[seq % EMU_RES_RING_SLOTS];
  res->retval = retval;
  res->status = status;
  atomic_store(&r->ctl.done, seq + 1);
  if (atomic_load(&r->ctl.host_waiters)) emu_futex_wake(&r->ctl.done);
}

static void serve(int index) {
  struct emu_ctx_region *r = emu_ctx_region(g_shm, index);
  struct emu_ctx_ctl *ctl = &r->ctl;
  struct cif_cache *cc = calloc(1, sizeof(*cc));
  void *altstack = setup_altstack();
  uint64_t tail = atomic_load(&ctl->cmd_tail);
  t_region = r;
  t_index = index;
  atomic_store(&ctl->state, VEO_STATE_RUNNING);
  int running = cc != NULL;
  while (running) {
    wait_command(ctl, tail);
    struct emu_cmd *c = (struct emu_cmd *)(r->ring + tail % EMU_CMD_RING_BYTES);
    uint64_t size = c->size;
    if (c->type == 0) { /* padding up to the end of the ring */
      tail += size;
      atomic_store(&ctl->cmd_tail, tail);
      continue;
    }
    uint64_t retval = 0;
    uint32_t status = VEO_COMMAND_OK;
    struct emu_fault *die = NULL;
    /* The timing profile: the VE starts the command once it is out of
     * transit (t_ready) and done with the previous one (its modelled end,
     * so the emulator's own costs in between are absorbed). */
    uint64_t start = 0, w0 = 0;
    if (c->t_ready) {
      start = c->t_ready > t_model_end ? c->t_ready : t_model_end;
      emu_delay_until(start);
      w0 = emu_now_ns();
    }
    t_seq = c->seq;
    t_running = 1;
    switch (c->type) {
      case EMU_CMD_NOP: break;
      case EMU_CMD_CALL: {
        struct call_faults cf;
        check_faults(c, &cf);
        if (cf.delay_ns) emu_delay_until(emu_now_ns() + cf.delay_ns);
        if (cf.hang) {
          announce(cf.hang, "the kernel never returns", c->addr, cf.k);
          for (;;) pause();
        }
        if (cf.crash) {
          announce(cf.crash, "the kernel raises a signal", c->addr, cf.k);
          raise(cf.crash->signal); /* on_fault reports it as a kernel's fault */
        }
        status = do_call(r, c, cc, &retval);
        die = cf.die;
        break;
      }
      case EMU_CMD_LOAD_LIB: retval = do_load(r, (const char *)(c + 1)); break;
      case EMU_CMD_UNLOAD_LIB: retval = do_unload(r, (void *)(uintptr_t)c->addr); break;
      case EMU_CMD_GET_SYM: retval = do_get_sym(r, c->addr, (const char *)(c + 1)); break;
      case EMU_CMD_FREE: status = do_free(r, c->addr, c->arg0 == 1); break;
      case EMU_CMD_MEMCPY: retval = do_memcpy(r, c->addr, c->arg0, c->arg1); break;
      case EMU_CMD_OPEN_CTX: retval = do_open_ctx(r, (int)c->arg0, c->arg1); break;
      case EMU_CMD_EXIT: running = 0; break;
      case EMU_CMD_AGENT: status = agent_call(r, c->seq, &retval); break;
      default:
        set_msg(r, "unknown command %u", (unsigned)c->type);
        status = VEO_COMMAND_ERROR;
    }
    if (status == VEO_COMMAND_OK && (c->flags & EMU_F_AGENT_AFTER))
      status = agent_call(r, c->seq, &retval);
    if (start) { /* the VE's time; a kernel's own time (host speed) adds to it */
      uint64_t end = start + c->service_ns + (c->type == EMU_CMD_CALL ? emu_now_ns() - w0 : 0);
      emu_delay_until(end);
      t_model_end = end;
    }
    t_running = 0;
    uint64_t seq = c->seq;
    tail += size;
    atomic_store(&ctl->cmd_tail, tail);
    if (!running) {
      atomic_store(&ctl->state, VEO_STATE_EXIT);
      fflush(NULL);
    }
    complete(r, seq, status, retval);
    if (die) {
      announce(die, "the VE process dies after this call", 0, 0);
      die_now();
    }
  }
  t_region = NULL;
  free(cc);
  if (altstack) {
    stack_t ss = {.ss_flags = SS_DISABLE};
    sigaltstack(&ss, NULL);
    munmap(altstack, 64 * 1024);
  }
}

/* Ends the helper when the host process goes away, however it dies.  (The
 * socket is non-blocking: the helper also writes agent wake-ups to it.) */
static void *life_watch(void *unused) {
  (void)unused;
  char b[64];
  for (;;) {
    /* (the host writes to the socket when it arms a "die after a time") */
    uint64_t death = next_death(), now = emu_now_ns();
    int timeout = -1;
    if (death) timeout = death <= now ? 0 : (int)((death - now + 999999) / 1000000);
    struct pollfd pf = {EMU_FD_LIFE, POLLIN, 0};
    int rc = poll(&pf, 1, timeout);
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) {
      die_if_due();
      continue;
    }
    ssize_t n = read(EMU_FD_LIFE, b, sizeof(b));
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) _exit(0);
  }
  return NULL;
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  void *shm = mmap(NULL, EMU_SHM_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, EMU_FD_SHM, 0);
  if (shm == MAP_FAILED) {
    fprintf(stderr, "aioveo-veorun: must be started by libveo (no shared memory at fd %d)\n",
            EMU_FD_SHM);
    return 2;
  }
  struct emu_header *h = shm;
  if (h->magic != EMU_MAGIC || h->version != EMU_PROTO_VERSION) {
    fprintf(stderr, "aioveo-veorun: protocol mismatch with libveo\n");
    return 2;
  }
  void *heap = mmap(NULL, h->heap_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                    EMU_FD_HEAP, 0);
  if (heap == MAP_FAILED) {
    perror("aioveo-veorun: mapping VE memory");
    return 2;
  }
  g_shm = shm;
  g_hdr = h;
  h->heap_base = (uint64_t)(uintptr_t)heap;
  setvbuf(stdout, NULL, _IOLBF, 0);
  install_fault_handlers();
  pthread_t w;
  if (pthread_create(&w, NULL, life_watch, NULL) != 0) return 2;
  pthread_detach(w);
  atomic_store(&h->ready, 1);
  emu_futex_wake(&h->ready);
  serve(0);
  fflush(NULL);
  _exit(0);
}
