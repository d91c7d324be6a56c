/*
 * agent.c -- host work at a context's FIFO position: the jobs (copies to and
 * from host buffers, VH calls, heap alloc/free, stack-argument write-back),
 * the per-proc agent thread that serves the contexts' agent slots, and the
 * copies between host and VE memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "emu_host.h"
#include "emu_sync.h"

/* ---- jobs -------------------------------------------------------------------- */
struct job *emu_job_new(int kind) {
  struct job *j = calloc(1, sizeof(*j));
  if (j) j->kind = kind;
  else emu_set_error("out of host memory");
  return j;
}

void emu_job_free(struct job *j) {
  if (!j) return;
  free(j->stack);
  free(j->stack_off);
  free(j);
}

/* Stack arguments live in VE memory for the call: allocate and fill them now
 * (the IN snapshot); JOB_STACK_POST copies OUT ones back and frees them. */
struct job *emu_stack_job_new(struct veo_proc_handle *p, struct veo_args *a) {
  struct job *j = emu_job_new(JOB_STACK_POST);
  if (!j) return NULL;
  j->nstack = a->nstack;
  j->stack = malloc(sizeof(*j->stack) * (size_t)a->nstack);
  j->stack_off = malloc(sizeof(*j->stack_off) * (size_t)a->nstack);
  if (!j->stack || !j->stack_off) {
    emu_job_free(j);
    emu_set_error("out of host memory");
    return NULL;
  }
  for (int i = 0; i < a->nstack; i++) {
    struct emu_stack_arg *s = &a->stack[i];
    uint64_t off = heap_alloc(&p->heap, s->len ? s->len : 8);
    if (off == UINT64_MAX) {
      for (int k = 0; k < i; k++) heap_free(&p->heap, j->stack_off[k]);
      emu_job_free(j);
      emu_set_error("veo_call_async: no VE memory for a %zu-byte stack argument", s->len);
      return NULL;
    }
    j->stack[i] = *s;
    j->stack_off[i] = off;
    char *hp = p->heap.host_base + off;
    if (s->intent == VEO_INTENT_OUT) memset(hp, 0, s->len);
    else if (s->len) memcpy(hp, s->buf, s->len); /* the IN snapshot, taken now */
  }
  return j;
}

/* For a call that was not submitted. */
void emu_stack_job_drop(struct veo_proc_handle *p, struct job *j) {
  for (int k = 0; k < j->nstack; k++) heap_free(&p->heap, j->stack_off[k]);
  emu_job_free(j);
}

/* ---- copies between host and VE memory ---------------------------------------- */
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
    emu_copy(hp, src, n);
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
    emu_copy(dst, hp, n);
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

/* ---- serving agent slots -------------------------------------------------------- */
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
      uint64_t off = UINT64_MAX;
      if (!emu_fault_nomem(p, c->index, j->len)) { /* (injected: status OK, result 0) */
        off = heap_alloc(&p->heap, j->len);
        if (off != UINT64_MAX) {
          heap_poison(&p->heap, off, j->len);
          emu_fault_allocated(p, c->index, j->len);
        }
      }
      *value = off == UINT64_MAX ? 0 : p->heap.ve_base + off;
      if (*value) emu_run_hook((void *)veo_alloc_mem_async, HOOK_ALLOC, c, *value, j->len);
      return VEO_COMMAND_OK;
    }
    case JOB_FREE:
      /* AVEO's VE frees with free() and always answers OK with 0 (a free()
       * of memory that is not allocated usually aborts a VE process, which
       * the emulator does not do to you: it says so instead). */
      *value = 0;
      if (j->ve_addr < p->heap.ve_base || heap_free(&p->heap, j->ve_addr - p->heap.ve_base)) {
        if (!atomic_exchange(&p->free_reported, 1))
          fprintf(stderr, "aioveo emulator: veo_free_mem_async(0x%llx): that VE memory is not "
                  "allocated (freed twice?); answered OK with result 0 as AVEO answers every "
                  "free, but on a VE this free() usually aborts the VE process\n",
                  (unsigned long long)j->ve_addr);
        return VEO_COMMAND_OK;
      }
      emu_run_hook((void *)veo_free_mem_async, HOOK_FREE, c, j->ve_addr, 0);
      return VEO_COMMAND_OK;
  }
  return VEO_COMMAND_ERROR;
}

/* Serve the agent slot of one context if it has a request.  VH functions run
 * only on the agent thread (allow_vh), as AVEO runs them on its progress
 * thread; copies may be done by any host thread that is polling. */
int emu_serve_agent_slot(struct veo_thr_ctxt *c, int allow_vh) {
  struct emu_agent_slot *s = &c->r->ctl.agent;
  if (atomic_load(&s->state) != EMU_AGENT_READY) return 0;
  /* Look up and claim under the context's lock, which every claimer takes:
   * there a READY slot stays READY, with its seq, until it is claimed (the
   * helper only posts to an IDLE slot).  Looked up before the lock, the job
   * could be one served since, and the slot re-posted for the next request:
   * the claim would then run the old job as the new one's answer. */
  pthread_mutex_lock(&c->lock);
  struct job *j = NULL;
  int claimed = atomic_load(&s->state) == EMU_AGENT_READY;
  if (claimed) {
    struct u64map_entry *e = u64map_get(&c->reqs, s->seq);
    j = e ? e->p : NULL;
    claimed = !(j && j->kind == JOB_VH && !allow_vh);
    if (claimed) atomic_store(&s->state, EMU_AGENT_BUSY);
  }
  pthread_mutex_unlock(&c->lock);
  if (!claimed) return 0;
  uint64_t value = s->value;
  uint32_t status = VEO_COMMAND_ERROR;
  if (j) status = run_job(c, j, &value);
  s->value = value;
  s->status = status;
  atomic_store(&s->state, EMU_AGENT_DONE);
  emu_futex_wake(&s->state);
  return 1;
}

static int serve_agent(struct veo_proc_handle *p) {
  int n = 0;
  for (int i = 0; i < EMU_MAX_CONTEXTS; i++) {
    struct veo_thr_ctxt *c = emu_proc_ctx(p, i);
    if (c) n += emu_serve_agent_slot(c, 1);
  }
  return n;
}

/* ---- the agent thread ------------------------------------------------------------ */
/* Serves agent slots (spinning, then sleeping in poll on the life socket,
 * which the helper writes to when it posts to a sleeping agent) until the
 * life socket's EOF says the helper is gone. */
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
      emu_spin_step(p->hdr->spin_yield);
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
      emu_helper_gone(p);
      return NULL;
    }
    last = emu_now_ns();
  }
}

int emu_agent_start(struct veo_proc_handle *p) {
  return pthread_create(&p->agent, NULL, agent_main, p);
}
