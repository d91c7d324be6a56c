/*
 * proc.c -- procs and contexts: the proc table (identifiers), handle checks,
 * creating and destroying a proc, opening and closing contexts, and the
 * per-proc symbol cache.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "emu_host.h"
#include "emu_sync.h"

/* ---- the proc table (proc identifiers) ---------------------------------------- */
static pthread_mutex_t g_procs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct veo_proc_handle **g_procs;
static int g_nprocs, g_procs_cap;
/* Destroyed procs (and through them their contexts) are never freed, so a
 * stale handle fails cleanly instead of being a use after free; they are
 * kept on this list so that they stay reachable (LeakSanitizer, valgrind).
 * What remains of one is small: its structs (about 2 KiB).  Its shared
 * memory (128 MiB of address space, whose pages are given back at destroy)
 * stays mapped while a thread may still be inside a call on it, and is
 * unmapped by the next veo_proc_create or veo_proc_destroy once no thread
 * is and a grace time has passed (see bury_dead_procs). */
static struct veo_proc_handle *g_graveyard;
#define GRACE_NS 200000000ull /* 0.2 s */

int emu_proc_enter(struct veo_proc_handle *p, const char *fn) {
  emu_proc_users_inc(p);
  if (atomic_load(&p->destroyed)) {
    emu_proc_leave(p);
    emu_set_error("%s: the proc was destroyed", fn);
    errno = EINVAL;
    return 0;
  }
  return 1;
}

/* Unmap the shared memory of destroyed procs nobody is using (the table
 * lock held).  A thread that touches it counts itself in p->users first,
 * then checks the proc's and context's flags (which destroy set): once the
 * count is seen at 0 after destroy finished, no thread can reach the memory
 * again; the grace time covers reads of the header that follow a flag
 * check without counting (veo_get_context_state's kind). */
static void bury_dead_procs(void) {
  uint64_t now = emu_now_ns();
  for (struct veo_proc_handle *p = g_graveyard; p; p = p->grave_next) {
    if (!p->shm || !p->buried_ns || now - p->buried_ns < GRACE_NS) continue;
    if (atomic_load(&p->users) != 0) continue;
    munmap(p->shm, EMU_SHM_BYTES);
    p->shm = NULL;
  }
}

static int table_insert(struct veo_proc_handle *p) {
  pthread_mutex_lock(&g_procs_lock);
  int slot = -1;
  for (int i = 0; i < g_nprocs; i++)
    if (!g_procs[i]) {
      slot = i;
      break;
    }
  if (slot < 0) {
    if (g_nprocs == g_procs_cap) {
      int ncap = g_procs_cap ? g_procs_cap * 2 : 16;
      void *n = realloc(g_procs, (size_t)ncap * sizeof(*g_procs));
      if (!n) {
        pthread_mutex_unlock(&g_procs_lock);
        return -1;
      }
      g_procs = n;
      g_procs_cap = ncap;
    }
    slot = g_nprocs++;
  }
  g_procs[slot] = p;
  p->ident = slot;
  pthread_mutex_unlock(&g_procs_lock);
  return slot;
}

struct veo_proc_handle *emu_proc_by_ident(int ident) {
  struct veo_proc_handle *p = NULL;
  pthread_mutex_lock(&g_procs_lock);
  if (ident >= 0 && ident < g_nprocs) p = g_procs[ident];
  pthread_mutex_unlock(&g_procs_lock);
  return p;
}

/* veo_proc_identifier: AVEO's looks the proc up under the table lock. */
int emu_proc_ident(struct veo_proc_handle *p) {
  pthread_mutex_lock(&g_procs_lock);
  int ident = atomic_load(&p->destroyed) ? -1 : p->ident;
  pthread_mutex_unlock(&g_procs_lock);
  return ident;
}

int emu_proc_table_size(void) {
  pthread_mutex_lock(&g_procs_lock);
  int n = g_nprocs;
  pthread_mutex_unlock(&g_procs_lock);
  return n;
}

/* Live procs on a node and the VE memory they hold (device records).  A
 * proc leaves the table before its heap is destroyed, so holding the table
 * lock keeps every listed heap alive. */
EXPORT int veo_emu_node_usage(int node, uint64_t *used) {
  emu_clear_error();
  uint64_t total = 0;
  int procs = 0;
  if (node < 0 || node >= veo_emu_num_nodes()) {
    emu_set_error("veo_emu_node_usage: no node %d (VEO_EMU_NODES=%d)", node, veo_emu_num_nodes());
    if (used) *used = 0;
    return -1;
  }
  pthread_mutex_lock(&g_procs_lock);
  for (int i = 0; i < g_nprocs; i++) {
    struct veo_proc_handle *p = g_procs[i];
    if (!p || p->node != node || atomic_load(&p->destroyed)) continue;
    procs++;
    pthread_mutex_lock(&p->heap.lock);
    total += p->heap.used;
    pthread_mutex_unlock(&p->heap.lock);
  }
  pthread_mutex_unlock(&g_procs_lock);
  if (used) *used = total;
  return procs;
}

/* At unload (process exit) no helper may survive: kill what is left. */
__attribute__((destructor)) static void emu_cleanup_procs(void) {
  pthread_mutex_lock(&g_procs_lock);
  for (int i = 0; i < g_nprocs; i++) emu_helper_kill_at_exit(g_procs[i]);
  pthread_mutex_unlock(&g_procs_lock);
}

/* ---- handle checks --------------------------------------------------------------- */
int emu_proc_valid(struct veo_proc_handle *p, const char *fn) {
  if (!p || p->magic != PROC_MAGIC) {
    emu_set_error("%s: invalid proc handle", fn);
    errno = EINVAL;
    return 0;
  }
  if (atomic_load(&p->destroyed)) {
    emu_set_error("%s: the proc was destroyed", fn);
    errno = EINVAL;
    return 0;
  }
  return 1;
}

int emu_proc_ok(struct veo_proc_handle *p) {
  if (!emu_proc_valid(p, "veo")) return 0;
  if (emu_proc_dead(p)) {
    emu_set_error("the VE process of this proc has died");
    return 0;
  }
  return 1;
}

int emu_ctx_valid(struct veo_thr_ctxt *c, const char *fn) {
  if (!c || c->magic != CTX_MAGIC) {
    emu_set_error("%s: invalid context handle", fn);
    errno = EINVAL;
    return 0;
  }
  if (atomic_load(&c->closed)) {
    emu_set_error("%s: the context is closed", fn);
    errno = EINVAL;
    emu_report_stale(c, fn);
    return 0;
  }
  return emu_proc_valid(c->proc, fn);
}

void emu_report_stale(struct veo_thr_ctxt *c, const char *fn) {
  if (c->index == 0 || atomic_exchange(&c->stale_reported, 1)) return;
  fprintf(stderr, "aioveo emulator: %s on context %p after it was closed; AVEO frees a "
          "context (other than the main one) at veo_context_close or veo_proc_destroy, so "
          "this is a use after free there\n", fn, (void *)c);
}

/* ---- contexts --------------------------------------------------------------------------- */
static struct veo_thr_ctxt *ctx_new(struct veo_proc_handle *p, int index) {
  struct veo_thr_ctxt *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->magic = CTX_MAGIC;
  c->index = index;
  c->proc = p;
  c->r = emu_ctx_region(p->shm, index);
  memset(&c->r->ctl, 0, sizeof(c->r->ctl));
  atomic_store(&c->state, VEO_STATE_RUNNING);
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&c->submit_lock, &ma);
  pthread_mutexattr_destroy(&ma);
  pthread_mutex_init(&c->lock, NULL);
  return c;
}

/* Forget a context's requests; the struct itself stays (stale handles fail). */
static void ctx_retire(struct veo_thr_ctxt *c) {
  pthread_mutex_lock(&c->lock);
  atomic_store(&c->closed, 1);
  atomic_store(&c->state, VEO_STATE_EXIT);
  for (size_t i = 0; i < c->reqs.cap; i++)
    if (c->reqs.tab[i].used == 1) emu_job_free(c->reqs.tab[i].p);
  u64map_free(&c->reqs);
  pthread_mutex_unlock(&c->lock);
}

/* AVEO (ProcHandle::openContext) refuses a second context unless the host
 * process's VE_OMP_NUM_THREADS is exactly 1, read with std::stoi: leading
 * blanks and trailing junk are accepted ("1x" is 1), a value with no number
 * throws an exception nobody catches and aborts the host process.  The
 * emulator returns an error for that case instead (see the README). */
static int omp_threads_ok(void) {
  const char *e = getenv("VE_OMP_NUM_THREADS");
  if (!e) {
    emu_set_error("veo_context_open: a second context needs VE_OMP_NUM_THREADS=1 in the "
                  "environment (AVEO refuses it otherwise; it is unset)");
    errno = EINVAL;
    return 0;
  }
  const char *s = e;
  while (*s == ' ' || (*s >= '\t' && *s <= '\r')) s++;
  const char *d = s + (*s == '+' || *s == '-');
  if (*d < '0' || *d > '9') {
    emu_set_error("veo_context_open: VE_OMP_NUM_THREADS='%s' is not a number (AVEO aborts the "
                  "host process here: std::invalid_argument)", e);
    errno = EINVAL;
    return 0;
  }
  errno = 0;
  long v = strtol(s, NULL, 10);
  if (errno == ERANGE || v > INT_MAX || v < INT_MIN) {
    emu_set_error("veo_context_open: VE_OMP_NUM_THREADS='%s' is out of range (AVEO aborts the "
                  "host process here: std::out_of_range)", e);
    errno = EINVAL;
    return 0;
  }
  if (v != 1) {
    emu_set_error("veo_context_open: a second context needs VE_OMP_NUM_THREADS=1 in the "
                  "environment (AVEO refuses it otherwise; it is '%s')", e);
    errno = EINVAL;
    return 0;
  }
  return 1;
}

/* As AVEO's openContext: the proc's context list is locked (p->lock, AVEO's
 * ctx_mutex) and the main context's submit lock held while the main context
 * is synchronized, so opening a context waits for the main context's queued
 * work, and veo_num_contexts/veo_get_context wait for the open.  (The submit
 * lock is tried with p->lock released in between: a thread inside
 * veo_req_block_begin(main) that needs p->lock deadlocks AVEO, not the
 * emulator.) */
static int lock_for_open(struct veo_proc_handle *p) {
  struct veo_thr_ctxt *m = p->ctx[0];
  for (;;) {
    pthread_mutex_lock(&p->lock);
    if (pthread_mutex_trylock(&m->submit_lock) == 0) break;
    pthread_mutex_unlock(&p->lock);
    usleep(200);
  }
  if (emu_drain_main_locked(p)) {
    pthread_mutex_unlock(&m->submit_lock);
    pthread_mutex_unlock(&p->lock);
    return -1;
  }
  return 0;
}

struct veo_thr_ctxt *emu_context_open(struct veo_proc_handle *p, size_t stacksize) {
  if (!emu_proc_valid(p, "veo_context_open")) return NULL;
  if (emu_proc_dead(p)) {
    emu_set_error("veo_context_open: the VE process of this proc has died");
    return NULL;
  }
  if (lock_for_open(p)) return NULL;
  struct veo_thr_ctxt *m = p->ctx[0], *c = NULL;
  if (p->nopen == 0) { /* the first open returns the main context */
    c = m;
    p->open_list[p->nopen++] = c;
    goto out;
  }
  if (!omp_threads_ok()) goto out;
  int idx = -1;
  for (int i = 1; i < EMU_MAX_CONTEXTS && idx < 0; i++)
    if (!p->ctx[i]) idx = i;
  if (idx < 0) {
    emu_set_error("veo_context_open: at most %d contexts per proc", EMU_MAX_CONTEXTS);
    goto out;
  }
  c = ctx_new(p, idx);
  if (!c) goto out;
  __atomic_store_n(&p->ctx[idx], c, __ATOMIC_RELEASE); /* the slot is ours */
  uint64_t rv = 1;
  int st = emu_main_call(p, EMU_CMD_OPEN_CTX, 0, (uint64_t)idx, stacksize, NULL, &rv);
  if (st != VEO_COMMAND_OK || rv != 0) {
    emu_set_error("veo_context_open: the helper could not start the context thread");
    __atomic_store_n(&p->ctx[idx], NULL, __ATOMIC_RELEASE);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->submit_lock);
    free(c);
    c = NULL;
    goto out;
  }
  p->open_list[p->nopen++] = c;
out:
  pthread_mutex_unlock(&m->submit_lock);
  pthread_mutex_unlock(&p->lock);
  return c;
}

static int context_close(struct veo_thr_ctxt *c);

int emu_context_close(struct veo_thr_ctxt *c) {
  if (!c || c->magic != CTX_MAGIC) {
    emu_set_error("veo_context_close: invalid context handle");
    errno = EINVAL;
    return -1;
  }
  struct veo_proc_handle *p = c->proc;
  emu_proc_users_inc(p);
  int rc = context_close(c);
  emu_proc_leave(p);
  return rc;
}

static int context_close(struct veo_thr_ctxt *c) {
  struct veo_proc_handle *p = c->proc;
  if (c->index == 0 || atomic_load(&c->closed) || atomic_load(&p->destroyed)) return 0;
  /* EXIT is queued behind the context's work, so closing drains it. */
  uint64_t id = emu_submit(c, EMU_CMD_EXIT, 0, 0, 0, NULL, NULL);
  uint64_t rv;
  if (id != VEO_REQUEST_ID_INVALID) emu_wait_result(c, id, &rv);
  pthread_mutex_lock(&p->lock);
  for (int i = 0; i < p->nopen; i++)
    if (p->open_list[i] == c) {
      memmove(&p->open_list[i], &p->open_list[i + 1], (size_t)(p->nopen - i - 1) * sizeof(c));
      p->nopen--;
      break;
    }
  __atomic_store_n(&p->ctx[c->index], NULL, __ATOMIC_RELEASE);
  c->next_closed = p->closed_list;
  p->closed_list = c;
  pthread_mutex_unlock(&p->lock);
  /* Waiters of requests that just completed are on their way out. */
  int waiting = atomic_load(&c->waiters);
  for (int i = 0; i < 50 && waiting > 0; i++) {
    usleep(1000);
    waiting = atomic_load(&c->waiters);
  }
  if (waiting > 0)
    fprintf(stderr, "aioveo emulator: veo_context_close: %d thread(s) still wait in "
            "veo_call_wait_result on context %p; AVEO frees the context now, so they would "
            "use freed memory (here they return VEO_COMMAND_ERROR)\n", waiting, (void *)c);
  pthread_mutex_lock(&c->submit_lock);
  ctx_retire(c);
  pthread_mutex_unlock(&c->submit_lock);
  emu_futex_wake(&c->r->ctl.done);
  return 0;
}

/* ---- procs -------------------------------------------------------------------------------- */
static void proc_free_resources(struct veo_proc_handle *p) {
  if (p->shm) munmap(p->shm, EMU_SHM_BYTES);
  p->shm = NULL;
  heap_destroy(&p->heap);
  if (p->life_fd >= 0) close(p->life_fd);
  p->life_fd = -1;
  if (p->shm_fd >= 0) close(p->shm_fd);
  p->shm_fd = -1;
}

/* Settings that must be right before a proc is created: the profile and the
 * faults (a mistake there is reported on stderr too: a C program may not
 * read veo_emu_last_error). */
static int settings_ok(struct emu_profile *prof) {
  if (emu_profile_load(prof) == 0 && emu_faults_check_env() == 0) return 1;
  fprintf(stderr, "aioveo emulator: veo_proc_create: %s\n", veo_emu_last_error());
  errno = EINVAL;
  return 0;
}

struct veo_proc_handle *emu_proc_create(int venode, const char *bin) {
  pthread_mutex_lock(&g_procs_lock);
  bury_dead_procs();
  pthread_mutex_unlock(&g_procs_lock);
  struct emu_profile prof;
  if (!settings_ok(&prof)) return NULL;
  int node = emu_resolve_node(venode);
  if (node < 0) {
    emu_set_error("veo_proc_create: VE node %d does not exist (the emulator has %d nodes, "
                  "see VEO_EMU_NODES, VE_NODE_NUMBER, _VENODELIST)", venode, veo_emu_num_nodes());
    errno = ENODEV;
    return NULL;
  }
  if (!bin || access(bin, X_OK) != 0) {
    emu_set_error("veo_proc_create: helper program '%s' is not executable", bin ? bin : "(null)");
    errno = ENOENT;
    return NULL;
  }
  struct veo_proc_handle *p = calloc(1, sizeof(*p));
  if (!p) return NULL;
  p->node = node;
  p->life_fd = -1;
  p->heap.fd = -1;
  p->prof = prof;
  pthread_mutex_init(&p->fault_lock, NULL);
  pthread_mutex_init(&p->lock, NULL);
  pthread_mutex_init(&p->reap_lock, NULL);
  pthread_mutex_init(&p->sym_lock, NULL);
  int shm_fd = memfd_create("aioveo-veo-shm", MFD_CLOEXEC), sv[2] = {-1, -1};
  p->shm_fd = shm_fd;
  if (shm_fd < 0 || ftruncate(shm_fd, (off_t)EMU_SHM_BYTES) != 0) {
    emu_set_error("veo_proc_create: cannot create the shared memory: %s", strerror(errno));
    goto fail;
  }
  p->shm = mmap(NULL, EMU_SHM_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, shm_fd, 0);
  if (p->shm == MAP_FAILED) {
    emu_set_error("veo_proc_create: cannot map the shared memory: %s", strerror(errno));
    p->shm = NULL;
    goto fail;
  }
  p->hdr = p->shm;
  if (heap_init(&p->heap, veo_emu_node_memory())) {
    emu_set_error("veo_proc_create: cannot set up %llu bytes of VE memory (VEO_EMU_NODE_MEMORY): "
                  "%s", (unsigned long long)veo_emu_node_memory(), strerror(errno));
    goto fail;
  }
  p->hdr->magic = EMU_MAGIC;
  p->hdr->version = EMU_PROTO_VERSION;
  p->hdr->node = (uint32_t)node;
  p->hdr->heap_size = p->heap.size;
  p->hdr->spin_us = emu_spin_us();
  p->hdr->spin_yield = p->prof.on; /* waits are microseconds long: share the cores */
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
    emu_set_error("veo_proc_create: socketpair: %s", strerror(errno));
    goto fail;
  }
  p->life_fd = sv[0];
  fcntl(sv[0], F_SETFL, O_NONBLOCK);
  fcntl(sv[1], F_SETFL, O_NONBLOCK);
  p->ctx[0] = ctx_new(p, 0);
  if (!p->ctx[0]) goto fail;
  int started = emu_helper_start(p, bin, sv[1]); /* closes sv[1] */
  sv[1] = -1;
  if (started != 0) goto fail;
  p->heap.ve_base = p->hdr->heap_base;
  if (emu_agent_start(p)) {
    emu_helper_kill(p);
    goto fail;
  }
  p->agent_started = 1;
  p->magic = PROC_MAGIC;
  if (table_insert(p) < 0) {
    p->magic = 0;
    kill(p->pid, SIGKILL);
    pthread_join(p->agent, NULL);
    goto fail;
  }
  /* VEO_EMU_FAULTS and veo_emu_inject(NULL, ...) (a proc= scope needs the
   * identifier, known now) */
  if (emu_faults_arm_new(p))
    fprintf(stderr, "aioveo emulator: veo_proc_create: %s\n", veo_emu_last_error());
  return p;
fail:
  if (sv[1] >= 0) close(sv[1]);
  if (p->pid > 0 && !p->reaped_child) emu_helper_kill(p);
  if (p->ctx[0]) {
    pthread_mutex_destroy(&p->ctx[0]->lock);
    pthread_mutex_destroy(&p->ctx[0]->submit_lock);
    free(p->ctx[0]);
  }
  proc_free_resources(p);
  pthread_mutex_destroy(&p->lock);
  pthread_mutex_destroy(&p->reap_lock);
  pthread_mutex_destroy(&p->sym_lock);
  pthread_mutex_destroy(&p->fault_lock);
  free(p);
  return NULL;
}

int emu_proc_destroy(struct veo_proc_handle *p) {
  int expect = 0;
  if (!atomic_compare_exchange_strong(&p->destroyed, &expect, 1)) return 0;
  /* As AVEO's exitProc, the whole destroy holds the global proc table lock:
   * veo_proc_identifier, veo_get_proc_handle_from_hmem (and so
   * veo_get_pid_from_hmem, veo_free_hmem, veo_hmemcpy) and veo_proc_create
   * wait for it, for every proc. */
  pthread_mutex_lock(&g_procs_lock);
  /* EXIT goes behind each context's queued work: the VE drains, then ends. */
  if (!emu_proc_dead(p)) {
    for (int i = EMU_MAX_CONTEXTS - 1; i >= 0; i--) {
      struct veo_thr_ctxt *c = emu_proc_ctx(p, i);
      if (c && !atomic_load(&c->closed)) emu_submit(c, EMU_CMD_EXIT, 0, 0, 0, NULL, NULL);
    }
  }
  emu_helper_end(p);
  if (p->ident >= 0 && p->ident < g_nprocs && g_procs[p->ident] == p) g_procs[p->ident] = NULL;
  p->grave_next = g_graveyard;
  g_graveyard = p;
  pthread_mutex_unlock(&g_procs_lock);
  pthread_mutex_lock(&p->lock);
  for (int i = 0; i < EMU_MAX_CONTEXTS; i++) {
    struct veo_thr_ctxt *c = emu_proc_ctx(p, i);
    if (!c) continue;
    ctx_retire(c);
    c->next_closed = p->closed_list;
    p->closed_list = c;
    __atomic_store_n(&p->ctx[i], NULL, __ATOMIC_RELEASE);
  }
  p->nopen = 0;
  pthread_mutex_unlock(&p->lock);
  pthread_mutex_lock(&p->sym_lock);
  for (struct sym_cache_entry *s = p->syms, *n; s; s = n) {
    n = s->next;
    free(s);
  }
  p->syms = NULL;
  pthread_mutex_unlock(&p->sym_lock);
  /* Keep the shared memory mapped, since a thread still inside wait/peek on
   * one of the proc's contexts may read it, but give its pages back. */
  fallocate(p->shm_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)EMU_SHM_BYTES);
  void *shm = p->shm;
  p->shm = NULL;
  proc_free_resources(p);
  pthread_mutex_lock(&g_procs_lock);
  p->shm = shm;
  p->buried_ns = emu_now_ns();
  bury_dead_procs();
  pthread_mutex_unlock(&g_procs_lock);
  return 0;
}

/* ---- the symbol cache ------------------------------------------------------------------ */
int emu_sym_cached(struct veo_proc_handle *p, uint64_t lib, const char *name, uint64_t *addr) {
  pthread_mutex_lock(&p->sym_lock);
  for (struct sym_cache_entry *s = p->syms; s; s = s->next)
    if (s->lib == lib && strcmp(s->name, name) == 0) {
      *addr = s->addr;
      pthread_mutex_unlock(&p->sym_lock);
      return 1;
    }
  pthread_mutex_unlock(&p->sym_lock);
  return 0;
}

void emu_sym_remember(struct veo_proc_handle *p, uint64_t lib, const char *name, uint64_t addr) {
  size_t len = strlen(name);
  struct sym_cache_entry *s = malloc(sizeof(*s) + len + 1);
  if (s) {
    s->lib = lib;
    s->addr = addr;
    memcpy(s->name, name, len + 1);
    pthread_mutex_lock(&p->sym_lock);
    s->next = p->syms;
    p->syms = s;
    pthread_mutex_unlock(&p->sym_lock);
  }
}

void emu_sym_forget_lib(struct veo_proc_handle *p, uint64_t lib) {
  pthread_mutex_lock(&p->sym_lock);
  for (struct sym_cache_entry **pp = &p->syms; *pp;) {
    if ((*pp)->lib == lib) {
      struct sym_cache_entry *dead = *pp;
      *pp = dead->next;
      free(dead);
    } else {
      pp = &(*pp)->next;
    }
  }
  pthread_mutex_unlock(&p->sym_lock);
}
