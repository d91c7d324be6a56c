/*
 * libveo.c -- the host side of the aioveo VE emulator: procs, contexts,
 * requests, memory.  See emu_proto.h for the protocol with the helper.
 *
 * Where AVEO crashes or is quirky, the emulator returns an error instead:
 * NULL, closed or destroyed handles, unmapped VE addresses, double frees,
 * argument holes.  A faulting kernel completes its request with
 * VEO_COMMAND_EXCEPTION on whichever context it ran.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

EXPORT const char *veo_emu_last_error(void) { return t_err; }

/* ---- configuration from the environment -------------------------------------- */
static uint64_t parse_size(const char *s, uint64_t dflt) {
  if (!s || !*s) return dflt;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s) return dflt;
  switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    case 't': case 'T': v <<= 40; end++; break;
    default: break;
  }
  if (*end == 'i' || *end == 'I') end++;
  if (*end == 'b' || *end == 'B') end++;
  return *end ? dflt : (uint64_t)v;
}

static long env_long(const char *name, long dflt, long lo, long hi) {
  const char *s = getenv(name);
  if (!s || !*s) return dflt;
  char *end;
  long v = strtol(s, &end, 10);
  if (*end || v < lo || v > hi) return dflt;
  return v;
}

EXPORT int veo_emu_num_nodes(void) { return (int)env_long("VEO_EMU_NODES", 8, 1, 4096); }

EXPORT uint64_t veo_emu_node_memory(void) {
  return parse_size(getenv("VEO_EMU_NODE_MEMORY"), 48ull << 30);
}

static uint32_t spin_us(void) { return (uint32_t)env_long("VEO_EMU_SPIN_US", 50, 0, 100000); }

EXPORT const char *veo_emu_helper_path(void) {
  static char path[PATH_MAX];
  const char *env = getenv("VEORUN_BIN");
  if (env && *env) return env;
  if (!path[0]) {
    Dl_info info;
    char tmp[PATH_MAX] = "";
    if (dladdr((void *)veo_emu_helper_path, &info) && info.dli_fname)
      snprintf(tmp, sizeof(tmp), "%s", info.dli_fname);
    char *slash = strrchr(tmp, '/');
    if (slash) *slash = 0;
    else snprintf(tmp, sizeof(tmp), ".");
    snprintf(path, sizeof(path), "%.*s/aioveo-veorun", (int)(sizeof(path) - 16), tmp);
  }
  return path;
}

/* Physical node for a VEO node argument (-1 = default), or -1 on error. */
static int resolve_node(int venode) {
  if (venode < -1) return -1;
  const char *list = getenv("_VENODELIST");
  const char *dflt = getenv("VE_NODE_NUMBER");
  int node = -1;
  if (list && *list) {
    int nodes[256], n = 0;
    char *end;
    for (const char *s = list; *s && n < 256;) {
      long v = strtol(s, &end, 10);
      if (end == s) return -1;
      nodes[n++] = (int)v;
      s = end;
      while (*s == ' ') s++;
    }
    if (venode == -1) {
      if (dflt && *dflt) {
        long want = strtol(dflt, &end, 10);
        if (*end) return -1;
        for (int i = 0; i < n; i++)
          if (nodes[i] == want) node = (int)want;
      } else if (n > 0) {
        node = nodes[0];
      }
    } else if (venode < n) {
      node = nodes[venode];
    }
  } else if (venode == -1) {
    node = 0;
    if (dflt && *dflt) {
      char *end;
      long v = strtol(dflt, &end, 10);
      node = *end ? -1 : (int)v;
    }
  } else {
    node = venode;
  }
  if (node < 0 || node >= veo_emu_num_nodes()) return -1;
  return node;
}

/* ---- the proc table (proc identifiers) ---------------------------------------- */
static pthread_mutex_t g_procs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct veo_proc_handle **g_procs;
static int g_nprocs, g_procs_cap;
/* Destroyed procs (and through them their contexts) are never freed, so a
 * stale handle fails cleanly instead of being a use after free; they are
 * kept on this list so that they stay reachable (LeakSanitizer, valgrind).
 * What remains of one is small: the structs and the address range of its
 * shared memory, whose pages were given back. */
static struct veo_proc_handle *g_graveyard;

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

int emu_proc_table_size(void);
int emu_proc_table_size(void) {
  pthread_mutex_lock(&g_procs_lock);
  int n = g_nprocs;
  pthread_mutex_unlock(&g_procs_lock);
  return n;
}

/* The proc is dead once the helper said so (a fault) or went away. */
static int proc_dead(struct veo_proc_handle *p) {
  return atomic_load(&p->dead) || (p->hdr && atomic_load(&p->hdr->dead));
}

/* ---- handle checks --------------------------------------------------------------- */
static int proc_valid(struct veo_proc_handle *p, const char *fn) {
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
  if (!proc_valid(p, "veo")) return 0;
  if (proc_dead(p)) {
    emu_set_error("the VE process of this proc has died");
    return 0;
  }
  return 1;
}

static int ctx_valid(struct veo_thr_ctxt *c, const char *fn) {
  if (!c || c->magic != CTX_MAGIC) {
    emu_set_error("%s: invalid context handle", fn);
    errno = EINVAL;
    return 0;
  }
  if (atomic_load(&c->closed)) {
    emu_set_error("%s: the context is closed", fn);
    errno = EINVAL;
    return 0;
  }
  return proc_valid(c->proc, fn);
}

/* ---- requests: reaping and collecting --------------------------------------------- */
static void job_free(struct job *j) {
  if (!j) return;
  free(j->stack);
  free(j->stack_off);
  free(j);
}

/* Nothing more will complete: the helper is gone, or it faulted and has
 * published the faulting request's result (hdr->dead alone is set before). */
static int proc_settled(struct veo_proc_handle *p) {
  return atomic_load(&p->dead) || (p->hdr && atomic_load(&p->hdr->settled));
}

/* Move finished results from the ring into the request map (c->lock held). */
static void reap(struct veo_thr_ctxt *c) {
  int settled = proc_settled(c->proc); /* before reading done: see veorun's on_fault */
  uint64_t done = atomic_load(&c->r->ctl.done);
  while (c->reaped < done) {
    struct emu_result *res = &c->r->results[c->reaped % EMU_RES_RING_SLOTS];
    struct u64map_entry *e = u64map_get(&c->reqs, c->reaped);
    if (e && e->c == REC_PENDING) {
      e->a = res->retval;
      e->b = res->status;
      e->c = REC_DONE;
    }
    c->reaped++;
  }
  if (settled && c->reaped < c->next_id) {
    /* The VE process is gone: nothing else will complete. */
    for (size_t i = 0; i < c->reqs.cap; i++) {
      struct u64map_entry *e = &c->reqs.tab[i];
      if (e->used == 1 && e->c == REC_PENDING) {
        e->a = 0;
        e->b = VEO_COMMAND_ERROR;
        e->c = REC_DONE;
      }
    }
    c->reaped = c->next_id;
  }
}

static void collect(struct veo_thr_ctxt *c, struct u64map_entry *e, uint64_t *retp, int *status) {
  *status = (int)e->b;
  if (retp) *retp = e->a;
  job_free(e->p);
  u64map_del(&c->reqs, e);
}

/* ---- the agent: host work at a context's FIFO position ----------------------------- */
int emu_copy_to_ve(struct veo_proc_handle *p, uint64_t dst, const void *src, size_t n) {
  if (n == 0) return 0;
  void *hp;
  int in_heap = heap_lookup(&p->heap, dst, n, &hp);
  if (in_heap < 0) {
    emu_set_error("write of %zu bytes to VE address 0x%llx: that memory is not allocated "
                  "(freed?)", n, (unsigned long long)dst);
    return -1;
  }
  if (in_heap) {
    memcpy(hp, src, n);
    return 0;
  }
  size_t off = 0;
  while (off < n) {
    struct iovec l = {(char *)src + off, n - off}, r = {(void *)(uintptr_t)(dst + off), n - off};
    ssize_t k = process_vm_writev(p->pid, &l, 1, &r, 1, 0);
    if (k <= 0) {
      emu_set_error("write of %zu bytes to VE address 0x%llx failed: %s", n,
                    (unsigned long long)dst, k < 0 ? strerror(errno) : "short write");
      return -1;
    }
    off += (size_t)k;
  }
  return 0;
}

int emu_copy_from_ve(struct veo_proc_handle *p, void *dst, uint64_t src, size_t n) {
  if (n == 0) return 0;
  void *hp;
  int in_heap = heap_lookup(&p->heap, src, n, &hp);
  if (in_heap < 0) {
    emu_set_error("read of %zu bytes from VE address 0x%llx: that memory is not allocated "
                  "(freed?)", n, (unsigned long long)src);
    return -1;
  }
  if (in_heap) {
    memcpy(dst, hp, n);
    return 0;
  }
  size_t off = 0;
  while (off < n) {
    struct iovec l = {(char *)dst + off, n - off}, r = {(void *)(uintptr_t)(src + off), n - off};
    ssize_t k = process_vm_readv(p->pid, &l, 1, &r, 1, 0);
    if (k <= 0) {
      emu_set_error("read of %zu bytes from VE address 0x%llx failed: %s", n,
                    (unsigned long long)src, k < 0 ? strerror(errno) : "short read");
      return -1;
    }
    off += (size_t)k;
  }
  return 0;
}

static uint32_t run_job(struct veo_thr_ctxt *c, struct job *j, uint64_t *value) {
  struct veo_proc_handle *p = c->proc;
  switch (j->kind) {
    case JOB_WRITE:
      return emu_copy_to_ve(p, j->ve_addr, j->host, j->len) ? VEO_COMMAND_ERROR : VEO_COMMAND_OK;
    case JOB_READ:
      return emu_copy_from_ve(p, j->host, j->ve_addr, j->len) ? VEO_COMMAND_ERROR : VEO_COMMAND_OK;
    case JOB_STACK_POST:
      for (int i = 0; i < j->nstack; i++) {
        struct emu_stack_arg *s = &j->stack[i];
        if (s->intent != VEO_INTENT_IN && s->len)
          memcpy(s->buf, p->heap.host_base + j->stack_off[i], s->len);
        heap_free(&p->heap, j->stack_off[i]);
      }
      return VEO_COMMAND_OK;
    case JOB_VH:
      *value = j->vh_func(j->vh_arg);
      return VEO_COMMAND_OK;
    case JOB_ALLOC: {
      uint64_t off = heap_alloc(&p->heap, j->len);
      *value = off == UINT64_MAX ? 0 : p->heap.ve_base + off;
      if (*value) emu_run_hook((void *)veo_alloc_mem_async, HOOK_ALLOC, c, *value, j->len);
      return VEO_COMMAND_OK;
    }
    case JOB_FREE:
      if (j->ve_addr < p->heap.ve_base || heap_free(&p->heap, j->ve_addr - p->heap.ve_base)) {
        *value = (uint64_t)-1;
        return VEO_COMMAND_OK;
      }
      *value = 0;
      emu_run_hook((void *)veo_free_mem_async, HOOK_FREE, c, j->ve_addr, 0);
      return VEO_COMMAND_OK;
  }
  return VEO_COMMAND_ERROR;
}

/* Serve the agent slot of one context if it has a request.  VH functions run
 * only on the agent thread (allow_vh), as AVEO runs them on its progress
 * thread; copies may be done by any host thread that is polling. */
static int serve_agent_slot(struct veo_thr_ctxt *c, int allow_vh) {
  struct emu_agent_slot *s = &c->r->ctl.agent;
  if (atomic_load(&s->state) != EMU_AGENT_READY) return 0;
  pthread_mutex_lock(&c->lock);
  struct u64map_entry *e = u64map_get(&c->reqs, s->seq);
  struct job *j = e ? e->p : NULL;
  pthread_mutex_unlock(&c->lock);
  if (j && j->kind == JOB_VH && !allow_vh) return 0;
  uint32_t expect = EMU_AGENT_READY;
  if (!atomic_compare_exchange_strong(&s->state, &expect, EMU_AGENT_BUSY)) return 0;
  uint64_t value = s->value;
  uint32_t status = VEO_COMMAND_ERROR;
  if (j) status = run_job(c, j, &value);
  s->value = value;
  s->status = status;
  atomic_store(&s->state, EMU_AGENT_DONE);
  emu_futex_wake(&s->state);
  return 1;
}

static struct veo_thr_ctxt *proc_ctx(struct veo_proc_handle *p, int i) {
  return __atomic_load_n(&p->ctx[i], __ATOMIC_ACQUIRE);
}

static int serve_agent(struct veo_proc_handle *p) {
  int n = 0;
  for (int i = 0; i < EMU_MAX_CONTEXTS; i++) {
    struct veo_thr_ctxt *c = proc_ctx(p, i);
    if (c) n += serve_agent_slot(c, 1);
  }
  return n;
}

static void wake_all_waiters(struct veo_proc_handle *p) {
  for (int i = 0; i < EMU_MAX_CONTEXTS; i++) {
    struct emu_ctx_region *r = emu_ctx_region(p->shm, i);
    emu_futex_wake(&r->ctl.done);
  }
}

/* The helper is gone (normal exit, fault or kill): reap it, fail its work. */
static void helper_gone(struct veo_proc_handle *p) {
  int st = 0;
  pthread_mutex_lock(&p->reap_lock);
  if (!p->reaped_child && waitpid(p->pid, &st, 0) == p->pid) {
    p->reaped_child = 1;
    p->exit_status = st;
  }
  pthread_mutex_unlock(&p->reap_lock);
  uint32_t zero = 0;
  atomic_compare_exchange_strong(&p->hdr->dead, &zero, 255u);
  atomic_store(&p->dead, 1);
  for (int i = 0; i < EMU_MAX_CONTEXTS; i++) {
    struct veo_thr_ctxt *c = proc_ctx(p, i);
    if (c) atomic_store(&c->state, VEO_STATE_EXIT);
  }
  wake_all_waiters(p);
}

static void *agent_main(void *arg) {
  struct veo_proc_handle *p = arg;
  uint64_t spin_ns = (uint64_t)p->hdr->spin_us * 1000u, last = emu_now_ns();
  char buf[256];
  for (;;) {
    if (serve_agent(p)) {
      last = emu_now_ns();
      continue;
    }
    if (emu_now_ns() - last < spin_ns) {
      emu_cpu_relax();
      continue;
    }
    atomic_store(&p->hdr->agent_sleeping, 1);
    if (serve_agent(p)) {
      atomic_store(&p->hdr->agent_sleeping, 0);
      last = emu_now_ns();
      continue;
    }
    struct pollfd pf = {p->life_fd, POLLIN, 0};
    int rc = poll(&pf, 1, -1);
    atomic_store(&p->hdr->agent_sleeping, 0);
    if (rc < 0) continue;
    ssize_t n = read(p->life_fd, buf, sizeof(buf));
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      serve_agent(p);
      helper_gone(p);
      return NULL;
    }
    last = emu_now_ns();
  }
}

/* ---- submitting commands ------------------------------------------------------------- */
static void wait_progress(struct veo_thr_ctxt *c, uint64_t seen_done) {
  struct emu_ctx_ctl *ctl = &c->r->ctl;
  atomic_fetch_add(&ctl->host_waiters, 1);
  if (atomic_load(&ctl->done) == seen_done && !proc_settled(c->proc))
    emu_futex_wait(&ctl->done, (uint32_t)seen_done, 20000000ull);
  atomic_fetch_sub(&ctl->host_waiters, 1);
}

/* Reserve `size` bytes in the command ring (caller holds submit_lock).
 * NULL if the proc died while waiting for space. */
static struct emu_cmd *ring_reserve(struct veo_thr_ctxt *c, uint32_t size) {
  struct emu_ctx_ctl *ctl = &c->r->ctl;
  for (;;) {
    if (proc_dead(c->proc)) return NULL;
    uint64_t pos = c->head % EMU_CMD_RING_BYTES;
    uint64_t pad = pos + size > EMU_CMD_RING_BYTES ? EMU_CMD_RING_BYTES - pos : 0;
    uint64_t tail = atomic_load(&ctl->cmd_tail);
    int ring_ok = c->head + pad + size - tail <= EMU_CMD_RING_BYTES;
    pthread_mutex_lock(&c->lock);
    if (c->next_id - c->reaped >= EMU_RES_RING_SLOTS) reap(c);
    int slot_ok = c->next_id - c->reaped < EMU_RES_RING_SLOTS;
    pthread_mutex_unlock(&c->lock);
    if (ring_ok && slot_ok) {
      if (pad) {
        struct emu_cmd *padc = (struct emu_cmd *)(c->r->ring + pos);
        padc->size = (uint32_t)pad;
        padc->type = 0;
        c->head += pad;
      }
      return (struct emu_cmd *)(c->r->ring + c->head % EMU_CMD_RING_BYTES);
    }
    serve_agent_slot(c, 0);
    wait_progress(c, atomic_load(&ctl->done));
  }
}

/* Publish a reserved command; returns its request id. */
static uint64_t ring_commit(struct veo_thr_ctxt *c, struct emu_cmd *cmd, struct job *job) {
  struct emu_ctx_ctl *ctl = &c->r->ctl;
  pthread_mutex_lock(&c->lock);
  struct u64map_entry *e = u64map_put(&c->reqs, c->next_id);
  if (!e) {
    pthread_mutex_unlock(&c->lock);
    emu_set_error("out of host memory");
    return VEO_REQUEST_ID_INVALID;
  }
  e->c = REC_PENDING;
  e->p = job;
  uint64_t id = c->next_id++;
  pthread_mutex_unlock(&c->lock);
  cmd->seq = id;
  c->head += cmd->size;
  atomic_store(&ctl->cmd_head, c->head);
  if (atomic_load(&ctl->helper_sleeping)) emu_futex_wake(&ctl->cmd_head);
  return id;
}

static int ctx_alive(struct veo_thr_ctxt *c) {
  return !atomic_load(&c->closed) && !proc_dead(c->proc) &&
         atomic_load(&c->state) == VEO_STATE_RUNNING;
}

/* Submit a simple command with an optional string payload. */
static uint64_t submit_simple(struct veo_thr_ctxt *c, int type, uint64_t addr, uint64_t arg0,
                              uint64_t arg1, const char *str, struct job *job) {
  size_t slen = str ? strlen(str) + 1 : 0;
  uint32_t size = (uint32_t)((sizeof(struct emu_cmd) + slen + 7) & ~(size_t)7);
  pthread_mutex_lock(&c->submit_lock);
  uint64_t id = VEO_REQUEST_ID_INVALID;
  if (!ctx_alive(c) && type != EMU_CMD_EXIT) {
    emu_set_error("the context is not running (closed, or its VE process died)");
  } else {
    struct emu_cmd *cmd = ring_reserve(c, size);
    if (cmd) {
      *cmd = (struct emu_cmd){.size = size, .type = (uint16_t)type, .addr = addr, .arg0 = arg0,
                              .arg1 = arg1};
      if (slen) memcpy(cmd + 1, str, slen);
      id = ring_commit(c, cmd, job);
    } else {
      emu_set_error("the VE process of this proc has died");
    }
  }
  pthread_mutex_unlock(&c->submit_lock);
  return id;
}

static uint64_t submit_agent(struct veo_thr_ctxt *c, struct job *job) {
  uint64_t id = submit_simple(c, EMU_CMD_AGENT, 0, 0, 0, NULL, job);
  if (id == VEO_REQUEST_ID_INVALID) job_free(job);
  return id;
}

/* ---- waiting for results ---------------------------------------------------------------- */
static int peek(struct veo_thr_ctxt *c, uint64_t id, uint64_t *retp) {
  int status = VEO_COMMAND_UNFINISHED;
  pthread_mutex_lock(&c->lock);
  if (atomic_load(&c->closed)) {
    pthread_mutex_unlock(&c->lock);
    emu_set_error("the context is closed");
    return VEO_COMMAND_ERROR;
  }
  reap(c);
  struct u64map_entry *e = u64map_get(&c->reqs, id);
  if (!e) {
    emu_set_error("request %llu is unknown on this context or already collected",
                  (unsigned long long)id);
    status = VEO_COMMAND_ERROR;
  } else if (e->c == REC_DONE) {
    collect(c, e, retp, &status);
  }
  pthread_mutex_unlock(&c->lock);
  return status;
}

static int wait_result(struct veo_thr_ctxt *c, uint64_t id, uint64_t *retp) {
  struct emu_ctx_ctl *ctl = &c->r->ctl;
  uint64_t spin_end = emu_now_ns() + (uint64_t)c->proc->hdr->spin_us * 1000u;
  for (;;) {
    int st = peek(c, id, retp);
    if (st != VEO_COMMAND_UNFINISHED) return st;
    for (;;) { /* until request id is done: contexts complete in order */
      uint64_t done = atomic_load(&ctl->done);
      if (done > id || proc_settled(c->proc) || atomic_load(&c->closed)) break;
      if (serve_agent_slot(c, 0)) continue;
      if (emu_now_ns() < spin_end) {
        for (int i = 0; i < 32; i++) emu_cpu_relax();
        continue;
      }
      wait_progress(c, done);
    }
  }
}

/* Run a command on the main context and wait for it (the sync proc API). */
static int main_call(struct veo_proc_handle *p, int type, uint64_t addr, uint64_t arg0,
                     uint64_t arg1, const char *str, uint64_t *retval) {
  struct veo_thr_ctxt *c = p->ctx[0];
  uint64_t id = submit_simple(c, type, addr, arg0, arg1, str, NULL);
  if (id == VEO_REQUEST_ID_INVALID) return VEO_COMMAND_ERROR;
  int st = wait_result(c, id, retval);
  if (c->r->ctl.msg[0] && (st != VEO_COMMAND_OK || !*retval)) emu_set_error("%s", c->r->ctl.msg);
  c->r->ctl.msg[0] = 0;
  return st;
}

/* Wait until every request submitted to the main context so far completed
 * (the sync proc API queues behind them).  Returns with submit_lock held. */
static int drain_main(struct veo_proc_handle *p) {
  struct veo_thr_ctxt *c = p->ctx[0];
  pthread_mutex_lock(&c->submit_lock);
  for (;;) {
    if (proc_dead(p)) {
      emu_set_error("the VE process of this proc has died");
      return -1;
    }
    uint64_t done = atomic_load(&c->r->ctl.done);
    if (done >= c->next_id) return 0;
    if (!serve_agent_slot(c, 0)) wait_progress(c, done);
  }
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
    if (c->reqs.tab[i].used == 1) job_free(c->reqs.tab[i].p);
  u64map_free(&c->reqs);
  pthread_mutex_unlock(&c->lock);
}

struct veo_thr_ctxt_attr {
  uint32_t magic;
  size_t stacksize;
};
#define ATTR_MAGIC 0x41545452u
#define STACK_MIN (4u << 20)
#define STACK_DEFAULT (128u << 20)

static struct veo_thr_ctxt *context_open(struct veo_proc_handle *p, size_t stacksize) {
  if (!proc_valid(p, "veo_context_open")) return NULL;
  if (proc_dead(p)) {
    emu_set_error("veo_context_open: the VE process of this proc has died");
    return NULL;
  }
  pthread_mutex_lock(&p->lock);
  struct veo_thr_ctxt *c = NULL;
  if (p->nopen == 0) { /* the first open returns the main context */
    c = p->ctx[0];
    p->open_list[p->nopen++] = c;
    pthread_mutex_unlock(&p->lock);
    return c;
  }
  int idx = -1;
  for (int i = 1; i < EMU_MAX_CONTEXTS && idx < 0; i++)
    if (!p->ctx[i]) idx = i;
  if (idx < 0) {
    emu_set_error("veo_context_open: at most %d contexts per proc", EMU_MAX_CONTEXTS);
    pthread_mutex_unlock(&p->lock);
    return NULL;
  }
  c = ctx_new(p, idx);
  if (!c) {
    pthread_mutex_unlock(&p->lock);
    return NULL;
  }
  __atomic_store_n(&p->ctx[idx], c, __ATOMIC_RELEASE); /* the slot is ours */
  /* Not under p->lock: main_call takes the main context's submit lock, which
   * a thread inside veo_req_block_begin(main) may hold while it needs p->lock
   * (veo_num_contexts, another veo_context_open). */
  pthread_mutex_unlock(&p->lock);
  uint64_t rv = 1;
  int st = main_call(p, EMU_CMD_OPEN_CTX, 0, (uint64_t)idx, stacksize, NULL, &rv);
  pthread_mutex_lock(&p->lock);
  int ours = proc_ctx(p, idx) == c; /* else veo_proc_destroy retired it meanwhile */
  if (st != VEO_COMMAND_OK || rv != 0 || !ours) {
    emu_set_error("veo_context_open: the helper could not start the context thread");
    if (ours) {
      __atomic_store_n(&p->ctx[idx], NULL, __ATOMIC_RELEASE);
      pthread_mutex_destroy(&c->lock);
      pthread_mutex_destroy(&c->submit_lock);
      free(c);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
  }
  p->open_list[p->nopen++] = c;
  pthread_mutex_unlock(&p->lock);
  return c;
}

EXPORT struct veo_thr_ctxt *veo_context_open(struct veo_proc_handle *p) {
  return context_open(p, STACK_DEFAULT);
}

EXPORT struct veo_thr_ctxt *veo_context_open_with_attr(struct veo_proc_handle *p,
                                                       struct veo_thr_ctxt_attr *a) {
  if (!p || !a || a->magic != ATTR_MAGIC) {
    errno = EINVAL;
    emu_set_error("veo_context_open_with_attr: NULL proc or attribute");
    return NULL;
  }
  return context_open(p, a->stacksize);
}

EXPORT int veo_context_close(struct veo_thr_ctxt *c) {
  if (!c || c->magic != CTX_MAGIC) {
    emu_set_error("veo_context_close: invalid context handle");
    errno = EINVAL;
    return -1;
  }
  struct veo_proc_handle *p = c->proc;
  if (c->index == 0 || atomic_load(&c->closed) || atomic_load(&p->destroyed)) return 0;
  /* EXIT is queued behind the context's work, so closing drains it. */
  uint64_t id = submit_simple(c, EMU_CMD_EXIT, 0, 0, 0, NULL, NULL);
  uint64_t rv;
  if (id != VEO_REQUEST_ID_INVALID) wait_result(c, id, &rv);
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
  pthread_mutex_lock(&c->submit_lock);
  ctx_retire(c);
  pthread_mutex_unlock(&c->submit_lock);
  return 0;
}

EXPORT int veo_get_context_state(struct veo_thr_ctxt *c) {
  if (!c || c->magic != CTX_MAGIC) return VEO_STATE_UNKNOWN;
  if (atomic_load(&c->closed) || atomic_load(&c->proc->destroyed) || proc_dead(c->proc))
    return VEO_STATE_EXIT;
  return atomic_load(&c->state);
}

EXPORT void veo_context_sync(struct veo_thr_ctxt *c) {
  if (!ctx_valid(c, "veo_context_sync")) return;
  uint64_t id = submit_simple(c, EMU_CMD_NOP, 0, 0, 0, NULL, NULL);
  uint64_t rv;
  if (id != VEO_REQUEST_ID_INVALID) wait_result(c, id, &rv);
}

EXPORT int veo_num_contexts(struct veo_proc_handle *p) {
  if (!proc_valid(p, "veo_num_contexts")) return -1;
  pthread_mutex_lock(&p->lock);
  int n = p->nopen;
  pthread_mutex_unlock(&p->lock);
  return n;
}

EXPORT struct veo_thr_ctxt *veo_get_context(struct veo_proc_handle *p, int idx) {
  if (!proc_valid(p, "veo_get_context")) return NULL;
  pthread_mutex_lock(&p->lock);
  struct veo_thr_ctxt *c = idx >= 0 && idx < p->nopen ? p->open_list[idx] : NULL;
  pthread_mutex_unlock(&p->lock);
  return c;
}

EXPORT struct veo_thr_ctxt_attr *veo_alloc_thr_ctxt_attr(void) {
  struct veo_thr_ctxt_attr *a = calloc(1, sizeof(*a));
  if (a) {
    a->magic = ATTR_MAGIC;
    a->stacksize = STACK_DEFAULT;
  }
  return a;
}

EXPORT int veo_free_thr_ctxt_attr(struct veo_thr_ctxt_attr *a) {
  if (!a || a->magic != ATTR_MAGIC) {
    errno = EINVAL;
    return -1;
  }
  a->magic = 0;
  free(a);
  return 0;
}

EXPORT int veo_set_thr_ctxt_stacksize(struct veo_thr_ctxt_attr *a, size_t sz) {
  if (!a || a->magic != ATTR_MAGIC || sz < STACK_MIN) {
    errno = EINVAL;
    emu_set_error("veo_set_thr_ctxt_stacksize: stack size must be at least %u bytes", STACK_MIN);
    return -1;
  }
  a->stacksize = sz;
  return 0;
}

EXPORT int veo_get_thr_ctxt_stacksize(struct veo_thr_ctxt_attr *a, size_t *sz) {
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
  if (!ctx_valid(c, "veo_req_block_begin")) return;
  pthread_mutex_lock(&c->submit_lock);
  c->block_owner = pthread_self();
  c->block_depth++;
}

EXPORT void veo_req_block_end(struct veo_thr_ctxt *c) {
  if (!c || c->magic != CTX_MAGIC) return;
  if (pthread_mutex_trylock(&c->submit_lock) != 0) return; /* held by another thread */
  if (c->block_depth > 0 && pthread_equal(c->block_owner, pthread_self())) {
    c->block_depth--;
    pthread_mutex_unlock(&c->submit_lock); /* the block's level */
  }
  pthread_mutex_unlock(&c->submit_lock); /* the trylock's level */
}

/* ---- procs -------------------------------------------------------------------------------- */
static int move_fd_high(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 10); }

/* Close every fd >= lo (async-signal-safe: called between vfork and exec). */
static void close_fds_from(int lo) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, (unsigned)lo, ~0u, 0u) == 0) return;
#endif
  long max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > 65536) max = 65536;
  for (int fd = lo; fd < max; fd++) close(fd);
}

static pid_t spawn_helper(const char *bin, int shm_fd, int heap_fd, int life_fd) {
  /* Put the fds above the target numbers first, so dup2 never meets itself
   * (dup2 onto the same number would keep FD_CLOEXEC). */
  int fds[3] = {move_fd_high(shm_fd), move_fd_high(heap_fd), move_fd_high(life_fd)};
  pid_t pid = -1;
  if (fds[0] >= 0 && fds[1] >= 0 && fds[2] >= 0) {
    char *argv[] = {(char *)bin, NULL};
    pid = vfork();
    if (pid == 0) {
      if (dup2(fds[0], EMU_FD_SHM) < 0 || dup2(fds[1], EMU_FD_HEAP) < 0 ||
          dup2(fds[2], EMU_FD_LIFE) < 0)
        _exit(127);
      /* The helper keeps only stdio and its three fds: an inherited pipe or
       * socket of the host must not stay open in it. */
      close_fds_from(EMU_FD_LIFE + 1);
      signal(SIGINT, SIG_IGN); /* Ctrl-C is for the host; the helper follows it */
      signal(SIGPIPE, SIG_IGN);
      execv(bin, argv);
      _exit(127);
    }
  }
  for (int i = 0; i < 3; i++)
    if (fds[i] >= 0) close(fds[i]);
  return pid;
}

static void proc_free_resources(struct veo_proc_handle *p) {
  if (p->shm) munmap(p->shm, EMU_SHM_BYTES);
  p->shm = NULL;
  heap_destroy(&p->heap);
  if (p->life_fd >= 0) close(p->life_fd);
  p->life_fd = -1;
  if (p->shm_fd >= 0) close(p->shm_fd);
  p->shm_fd = -1;
}

static struct veo_proc_handle *proc_create(int venode, const char *bin) {
  int node = resolve_node(venode);
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
  p->hdr->spin_us = spin_us();
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
    emu_set_error("veo_proc_create: socketpair: %s", strerror(errno));
    goto fail;
  }
  p->life_fd = sv[0];
  fcntl(sv[0], F_SETFL, O_NONBLOCK);
  fcntl(sv[1], F_SETFL, O_NONBLOCK);
  p->ctx[0] = ctx_new(p, 0);
  if (!p->ctx[0]) goto fail;
  p->owner = getpid();
  p->pid = spawn_helper(bin, shm_fd, p->heap.fd, sv[1]);
  close(sv[1]);
  sv[1] = -1;
  if (p->pid <= 0) {
    emu_set_error("veo_proc_create: cannot start the helper: %s", strerror(errno));
    goto fail;
  }
  uint64_t deadline = emu_now_ns() + 30ull * 1000000000ull;
  while (!atomic_load(&p->hdr->ready)) {
    int st;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
      p->reaped_child = 1;
      emu_set_error("veo_proc_create: helper '%s' exited at start (status %d)", bin, st);
      goto fail;
    }
    if (emu_now_ns() > deadline) {
      emu_set_error("veo_proc_create: helper '%s' did not start in time", bin);
      kill(p->pid, SIGKILL);
      waitpid(p->pid, NULL, 0);
      p->reaped_child = 1;
      goto fail;
    }
    emu_futex_wait(&p->hdr->ready, 0, 10000000ull);
  }
  p->heap.ve_base = p->hdr->heap_base;
  if (pthread_create(&p->agent, NULL, agent_main, p)) {
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->reaped_child = 1;
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
  return p;
fail:
  if (sv[1] >= 0) close(sv[1]);
  if (p->pid > 0 && !p->reaped_child) {
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
  }
  if (p->ctx[0]) {
    pthread_mutex_destroy(&p->ctx[0]->lock);
    pthread_mutex_destroy(&p->ctx[0]->submit_lock);
    free(p->ctx[0]);
  }
  proc_free_resources(p);
  pthread_mutex_destroy(&p->lock);
  pthread_mutex_destroy(&p->reap_lock);
  pthread_mutex_destroy(&p->sym_lock);
  free(p);
  return NULL;
}

EXPORT struct veo_proc_handle *veo_proc_create(int venode) {
  return proc_create(venode, veo_emu_helper_path());
}

EXPORT struct veo_proc_handle *veo_proc_create_static(int venode, char *bin) {
  if (!bin) {
    emu_set_error("veo_proc_create_static: NULL helper path");
    errno = EINVAL;
    return NULL;
  }
  return proc_create(venode, bin);
}

static double exit_timeout_s(void) {
  return (double)env_long("VEO_EMU_EXIT_TIMEOUT", 30, 0, 86400);
}

EXPORT int veo_proc_destroy(struct veo_proc_handle *p) {
  if (!p || p->magic != PROC_MAGIC) {
    emu_set_error("veo_proc_destroy: invalid proc handle");
    errno = EINVAL;
    return -1;
  }
  int expect = 0;
  if (!atomic_compare_exchange_strong(&p->destroyed, &expect, 1)) return 0;
  /* EXIT goes behind each context's queued work: the VE drains, then ends. */
  if (!proc_dead(p)) {
    for (int i = EMU_MAX_CONTEXTS - 1; i >= 0; i--) {
      struct veo_thr_ctxt *c = proc_ctx(p, i);
      if (c && !atomic_load(&c->closed)) submit_simple(c, EMU_CMD_EXIT, 0, 0, 0, NULL, NULL);
    }
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  double t = exit_timeout_s();
  ts.tv_sec += (time_t)t;
  if (pthread_timedjoin_np(p->agent, NULL, &ts) != 0) {
    pthread_mutex_lock(&p->reap_lock); /* (never kill a reaped, maybe reused, pid) */
    if (!p->reaped_child) kill(p->pid, SIGKILL); /* a kernel that does not return */
    pthread_mutex_unlock(&p->reap_lock);
    pthread_join(p->agent, NULL);
  }
  pthread_mutex_lock(&p->reap_lock);
  if (!p->reaped_child) waitpid(p->pid, NULL, 0);
  p->reaped_child = 1;
  pthread_mutex_unlock(&p->reap_lock);
  atomic_store(&p->dead, 1);
  pthread_mutex_lock(&g_procs_lock);
  if (p->ident >= 0 && p->ident < g_nprocs && g_procs[p->ident] == p) g_procs[p->ident] = NULL;
  p->grave_next = g_graveyard;
  g_graveyard = p;
  pthread_mutex_unlock(&g_procs_lock);
  pthread_mutex_lock(&p->lock);
  for (int i = 0; i < EMU_MAX_CONTEXTS; i++) {
    struct veo_thr_ctxt *c = proc_ctx(p, i);
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
  p->shm = shm;
  return 0;
}

EXPORT int veo_proc_identifier(struct veo_proc_handle *p) {
  if (!p || p->magic != PROC_MAGIC || atomic_load(&p->destroyed)) return -1;
  return p->ident;
}

EXPORT pid_t veo_emu_proc_pid(struct veo_proc_handle *p) {
  if (!p || p->magic != PROC_MAGIC || atomic_load(&p->destroyed)) return -1;
  return p->pid;
}

pid_t emu_proc_pid(struct veo_proc_handle *p);
pid_t emu_proc_pid(struct veo_proc_handle *p) { return p->pid; }

/* At unload (process exit) no helper may survive: kill what is left. */
__attribute__((destructor)) static void emu_cleanup_procs(void) {
  pthread_mutex_lock(&g_procs_lock);
  for (int i = 0; i < g_nprocs; i++) {
    struct veo_proc_handle *p = g_procs[i];
    /* (not in a forked child: the helpers are its parent's) */
    if (!p || p->pid <= 0 || p->owner != getpid()) continue;
    pthread_mutex_lock(&p->reap_lock);
    if (!p->reaped_child) kill(p->pid, SIGKILL);
    pthread_mutex_unlock(&p->reap_lock);
  }
  pthread_mutex_unlock(&g_procs_lock);
}

/* ---- libraries and symbols ------------------------------------------------------------------ */
EXPORT uint64_t veo_load_library(struct veo_proc_handle *p, const char *name) {
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
  if (main_call(p, EMU_CMD_LOAD_LIB, 0, 0, 0, path, &h) != VEO_COMMAND_OK) return 0;
  return h;
}

EXPORT int veo_unload_library(struct veo_proc_handle *p, const uint64_t handle) {
  if (!emu_proc_ok(p)) return -1;
  pthread_mutex_lock(&p->sym_lock);
  for (struct sym_cache_entry **pp = &p->syms; *pp;) {
    if ((*pp)->lib == handle) {
      struct sym_cache_entry *dead = *pp;
      *pp = dead->next;
      free(dead);
    } else {
      pp = &(*pp)->next;
    }
  }
  pthread_mutex_unlock(&p->sym_lock);
  uint64_t rv = (uint64_t)-1;
  if (main_call(p, EMU_CMD_UNLOAD_LIB, handle, 0, 0, NULL, &rv) != VEO_COMMAND_OK) return -1;
  return (int)(int64_t)rv;
}

EXPORT uint64_t veo_get_sym(struct veo_proc_handle *p, uint64_t lib, const char *name) {
  if (!proc_valid(p, "veo_get_sym")) return 0;
  if (!name) {
    emu_set_error("veo_get_sym: NULL symbol name");
    errno = EINVAL;
    return 0;
  }
  size_t len = strlen(name);
  if (len > VEO_SYMNAME_LEN_MAX) {
    emu_set_error("veo_get_sym: name longer than %d characters", VEO_SYMNAME_LEN_MAX);
    errno = ENAMETOOLONG;
    return 0;
  }
  pthread_mutex_lock(&p->sym_lock);
  for (struct sym_cache_entry *s = p->syms; s; s = s->next)
    if (s->lib == lib && strcmp(s->name, name) == 0) {
      uint64_t a = s->addr;
      pthread_mutex_unlock(&p->sym_lock);
      return a;
    }
  pthread_mutex_unlock(&p->sym_lock);
  if (!emu_proc_ok(p)) return 0;
  uint64_t addr = 0;
  if (main_call(p, EMU_CMD_GET_SYM, lib, 0, 0, name, &addr) != VEO_COMMAND_OK || !addr) return 0;
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
  return addr;
}

/* ---- synchronous memory -------------------------------------------------------------------------- */
EXPORT int veo_alloc_mem(struct veo_proc_handle *p, uint64_t *addr, const size_t size) {
  if (addr) *addr = 0;
  if (!emu_proc_ok(p) || !addr) return -1;
  if (size == 0) {
    emu_set_error("veo_alloc_mem: size 0");
    errno = EINVAL;
    return -1;
  }
  uint64_t off = heap_alloc(&p->heap, size);
  if (off == UINT64_MAX) {
    emu_set_error("veo_alloc_mem: cannot allocate %zu bytes (node memory %llu bytes, %llu in use)",
                  size, (unsigned long long)p->heap.size, (unsigned long long)p->heap.used);
    errno = ENOMEM;
    return -1;
  }
  *addr = p->heap.ve_base + off;
  emu_run_hook((void *)veo_alloc_mem, HOOK_ALLOC, p, (uint64_t)(uintptr_t)addr, size);
  return 0;
}

EXPORT int veo_free_mem(struct veo_proc_handle *p, uint64_t addr) {
  if (!emu_proc_ok(p)) return -1;
  if (drain_main(p)) {
    pthread_mutex_unlock(&p->ctx[0]->submit_lock);
    return -1;
  }
  int rc;
  if (addr >= p->heap.ve_base && addr < p->heap.ve_base + p->heap.size) {
    rc = heap_free(&p->heap, addr - p->heap.ve_base);
    if (rc) {
      emu_set_error("veo_free_mem: 0x%llx is not an allocated VE address (freed twice?)",
                    (unsigned long long)addr);
      errno = EINVAL;
    }
    pthread_mutex_unlock(&p->ctx[0]->submit_lock);
  } else {
    /* memory a kernel malloc'ed: free it in the VE process, as AVEO does */
    pthread_mutex_unlock(&p->ctx[0]->submit_lock);
    uint64_t rv = 0;
    rc = main_call(p, EMU_CMD_FREE, addr, 0, 0, NULL, &rv) == VEO_COMMAND_OK ? 0 : -1;
  }
  if (rc == 0) emu_run_hook((void *)veo_free_mem, HOOK_FREE, p, addr, 0);
  return rc;
}

EXPORT int veo_read_mem(struct veo_proc_handle *p, void *dst, uint64_t src, size_t n) {
  if (!emu_proc_ok(p)) return -1;
  if (n && !dst) {
    emu_set_error("veo_read_mem: NULL destination");
    return -1;
  }
  if (n == 0) return 0;
  int rc = drain_main(p) ? -1 : emu_copy_from_ve(p, dst, src, n);
  pthread_mutex_unlock(&p->ctx[0]->submit_lock);
  return rc;
}

EXPORT int veo_write_mem(struct veo_proc_handle *p, uint64_t dst, const void *src, size_t n) {
  if (!emu_proc_ok(p)) return -1;
  if (n && !src) {
    emu_set_error("veo_write_mem: NULL source");
    return -1;
  }
  if (n == 0) return 0;
  int rc = drain_main(p) ? -1 : emu_copy_to_ve(p, dst, src, n);
  pthread_mutex_unlock(&p->ctx[0]->submit_lock);
  return rc;
}

/* Copy inside one proc (veo_hmemcpy VE to VE). */
int emu_ve_memcpy(struct veo_proc_handle *p, uint64_t dst, uint64_t src, size_t n);
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
    if (drain_main(p)) {
      pthread_mutex_unlock(&p->ctx[0]->submit_lock);
      return -1;
    }
    memmove(hd, hs, n);
    pthread_mutex_unlock(&p->ctx[0]->submit_lock);
    return 0;
  }
  uint64_t rv = 1;
  if (main_call(p, EMU_CMD_MEMCPY, dst, src, n, NULL, &rv) != VEO_COMMAND_OK) return -1;
  return rv == 0 ? 0 : -1;
}

/* ---- asynchronous memory -------------------------------------------------------------------------- */
static struct job *job_new(int kind) {
  struct job *j = calloc(1, sizeof(*j));
  if (j) j->kind = kind;
  else emu_set_error("out of host memory");
  return j;
}

EXPORT uint64_t veo_async_read_mem(struct veo_thr_ctxt *c, void *dst, uint64_t src, size_t n) {
  if (!ctx_valid(c, "veo_async_read_mem")) return VEO_REQUEST_ID_INVALID;
  if (n && !dst) {
    emu_set_error("veo_async_read_mem: NULL destination");
    return VEO_REQUEST_ID_INVALID;
  }
  if (n == 0) return submit_simple(c, EMU_CMD_NOP, 0, 0, 0, NULL, NULL);
  struct job *j = job_new(JOB_READ);
  if (!j) return VEO_REQUEST_ID_INVALID;
  j->host = dst;
  j->ve_addr = src;
  j->len = n;
  return submit_agent(c, j);
}

EXPORT uint64_t veo_async_write_mem(struct veo_thr_ctxt *c, uint64_t dst, const void *src,
                                    size_t n) {
  if (!ctx_valid(c, "veo_async_write_mem")) return VEO_REQUEST_ID_INVALID;
  if (n && !src) {
    emu_set_error("veo_async_write_mem: NULL source");
    return VEO_REQUEST_ID_INVALID;
  }
  if (n == 0) return submit_simple(c, EMU_CMD_NOP, 0, 0, 0, NULL, NULL);
  struct job *j = job_new(JOB_WRITE);
  if (!j) return VEO_REQUEST_ID_INVALID;
  j->host = (void *)src;
  j->ve_addr = dst;
  j->len = n;
  return submit_agent(c, j);
}

EXPORT uint64_t veo_alloc_mem_async(struct veo_thr_ctxt *c, const size_t size) {
  if (!ctx_valid(c, "veo_alloc_mem_async")) return VEO_REQUEST_ID_INVALID;
  struct job *j = job_new(JOB_ALLOC);
  if (!j) return VEO_REQUEST_ID_INVALID;
  j->len = size;
  return submit_agent(c, j);
}

EXPORT uint64_t veo_free_mem_async(struct veo_thr_ctxt *c, uint64_t addr) {
  if (!ctx_valid(c, "veo_free_mem_async")) return VEO_REQUEST_ID_INVALID;
  struct veo_proc_handle *p = c->proc;
  if (addr < p->heap.ve_base || addr >= p->heap.ve_base + p->heap.size)
    return submit_simple(c, EMU_CMD_FREE, addr, 0, 0, NULL, NULL);
  struct job *j = job_new(JOB_FREE);
  if (!j) return VEO_REQUEST_ID_INVALID;
  j->ve_addr = addr;
  return submit_agent(c, j);
}

/* ---- calls ----------------------------------------------------------------------------------------- */
EXPORT uint64_t veo_call_async(struct veo_thr_ctxt *c, uint64_t addr, struct veo_args *a) {
  if (!ctx_valid(c, "veo_call_async")) return VEO_REQUEST_ID_INVALID;
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
  struct veo_proc_handle *p = c->proc;
  struct job *j = NULL;
  if (a->nstack) { /* stack arguments live in VE memory for the call */
    j = job_new(JOB_STACK_POST);
    if (!j) return VEO_REQUEST_ID_INVALID;
    j->nstack = a->nstack;
    j->stack = malloc(sizeof(*j->stack) * (size_t)a->nstack);
    j->stack_off = malloc(sizeof(*j->stack_off) * (size_t)a->nstack);
    if (!j->stack || !j->stack_off) {
      job_free(j);
      emu_set_error("out of host memory");
      return VEO_REQUEST_ID_INVALID;
    }
    for (int i = 0; i < a->nstack; i++) {
      struct emu_stack_arg *s = &a->stack[i];
      uint64_t off = heap_alloc(&p->heap, s->len ? s->len : 8);
      if (off == UINT64_MAX) {
        for (int k = 0; k < i; k++) heap_free(&p->heap, j->stack_off[k]);
        job_free(j);
        emu_set_error("veo_call_async: no VE memory for a %zu-byte stack argument", s->len);
        return VEO_REQUEST_ID_INVALID;
      }
      j->stack[i] = *s;
      j->stack_off[i] = off;
      char *hp = p->heap.host_base + off;
      if (s->intent == VEO_INTENT_OUT) memset(hp, 0, s->len);
      else if (s->len) memcpy(hp, s->buf, s->len); /* the IN snapshot, taken now */
    }
  }
  uint32_t size = (uint32_t)(sizeof(struct emu_cmd) + ((n + 7) & ~7u) + 8u * n +
                             sizeof(struct emu_stack_desc) * (uint32_t)a->nstack);
  uint64_t id = VEO_REQUEST_ID_INVALID;
  pthread_mutex_lock(&c->submit_lock);
  if (ctx_alive(c)) {
    struct emu_cmd *cmd = ring_reserve(c, size);
    if (cmd) {
      *cmd = (struct emu_cmd){.size = size, .type = EMU_CMD_CALL,
                              .flags = (uint16_t)(j ? EMU_F_AGENT_AFTER : 0), .addr = addr,
                              .arg0 = (uint64_t)a->ret_type, .nargs = n,
                              .nstack = (uint32_t)a->nstack};
      uint8_t *types = (uint8_t *)(cmd + 1);
      memcpy(types, a->types, n);
      uint64_t *vals = (uint64_t *)(types + ((n + 7) & ~7u));
      memcpy(vals, a->vals, 8u * n);
      struct emu_stack_desc *sd = (struct emu_stack_desc *)(vals + n);
      for (int i = 0; i < a->nstack; i++)
        sd[i] = (struct emu_stack_desc){j->stack_off[i], a->stack[i].len,
                                        (uint32_t)a->stack[i].argnum,
                                        (uint32_t)a->stack[i].intent};
      id = ring_commit(c, cmd, j);
    }
  } else {
    emu_set_error("veo_call_async: the context is not running");
  }
  pthread_mutex_unlock(&c->submit_lock);
  if (id == VEO_REQUEST_ID_INVALID && j) {
    for (int k = 0; k < j->nstack; k++) heap_free(&p->heap, j->stack_off[k]);
    job_free(j);
  }
  return id;
}

EXPORT uint64_t veo_call_async_by_name(struct veo_thr_ctxt *c, uint64_t lib, const char *name,
                                       struct veo_args *a) {
  if (!ctx_valid(c, "veo_call_async_by_name")) return VEO_REQUEST_ID_INVALID;
  uint64_t addr = veo_get_sym(c->proc, lib, name);
  if (!addr) return VEO_REQUEST_ID_INVALID;
  return veo_call_async(c, addr, a);
}

EXPORT uint64_t veo_call_async_vh(struct veo_thr_ctxt *c, uint64_t (*func)(void *), void *arg) {
  if (!ctx_valid(c, "veo_call_async_vh")) return VEO_REQUEST_ID_INVALID;
  if (!func) {
    emu_set_error("veo_call_async_vh: NULL function");
    return VEO_REQUEST_ID_INVALID;
  }
  struct job *j = job_new(JOB_VH);
  if (!j) return VEO_REQUEST_ID_INVALID;
  j->vh_func = func;
  j->vh_arg = arg;
  return submit_agent(c, j);
}

EXPORT int veo_call_peek_result(struct veo_thr_ctxt *c, uint64_t id, uint64_t *retp) {
  if (!ctx_valid(c, "veo_call_peek_result")) return VEO_COMMAND_ERROR;
  serve_agent_slot(c, 0);
  return peek(c, id, retp);
}

EXPORT int veo_call_wait_result(struct veo_thr_ctxt *c, uint64_t id, uint64_t *retp) {
  if (!ctx_valid(c, "veo_call_wait_result")) return VEO_COMMAND_ERROR;
  return wait_result(c, id, retp);
}

EXPORT int veo_call_sync(struct veo_proc_handle *p, uint64_t addr, struct veo_args *a,
                         uint64_t *result) {
  if (!emu_proc_ok(p)) return -1;
  uint64_t rv = 0;
  uint64_t id = veo_call_async(p->ctx[0], addr, a);
  if (id == VEO_REQUEST_ID_INVALID) return -1;
  int st = wait_result(p->ctx[0], id, &rv);
  if (result) *result = rv;
  return st == VEO_COMMAND_OK ? 0 : -1;
}

/* ---- version and architecture ------------------------------------------------------------------------ */
EXPORT int veo_api_version(void) { return VEO_API_VERSION; }

EXPORT const char *veo_version_string(void) { return EMU_VERSION_STRING; }

/* An emulated node is not a VE: its architecture is reported as 0. */
EXPORT int veo_get_ve_arch(int venode) {
  if (venode < -1) return 0;
  return resolve_node(venode) < 0 ? -1 : 0;
}
