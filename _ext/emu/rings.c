/*
 * rings.c -- a context's shared-memory rings: commands into the command
 * ring, results from the result ring into the request map, and the futex
 * waits and wakes between host threads and the helper.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include "emu_host.h"
#include "emu_sync.h"

/* ---- results: reaping and collecting --------------------------------------------- */
/* Move finished results from the ring into the request map (c->lock held). */
static void reap(struct veo_thr_ctxt *c) {
  int settled = emu_proc_settled(c->proc); /* before reading done: see veorun's on_fault */
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
  emu_job_free(e->p);
  u64map_del(&c->reqs, e);
}

/* ---- futex waits and wakes -------------------------------------------------------- */
static void wait_progress(struct veo_thr_ctxt *c, uint64_t seen_done) {
  struct emu_ctx_ctl *ctl = &c->r->ctl;
  atomic_fetch_add(&ctl->host_waiters, 1);
  if (atomic_load(&ctl->done) == seen_done && !emu_proc_settled(c->proc))
    emu_futex_wait(&ctl->done, (uint32_t)seen_done, 20000000ull);
  atomic_fetch_sub(&ctl->host_waiters, 1);
}

void emu_wake_all_waiters(struct veo_proc_handle *p) {
  for (int i = 0; i < EMU_MAX_CONTEXTS; i++) {
    struct emu_ctx_region *r = emu_ctx_region(p->shm, i);
    emu_futex_wake(&r->ctl.done);
  }
}

/* ---- submitting commands ------------------------------------------------------------- */
/* Reserve `size` bytes in the command ring (caller holds submit_lock).
 * NULL if the proc died while waiting for space. */
static struct emu_cmd *ring_reserve(struct veo_thr_ctxt *c, uint32_t size) {
  struct emu_ctx_ctl *ctl = &c->r->ctl;
  for (;;) {
    if (emu_proc_dead(c->proc)) return NULL;
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
    emu_serve_agent_slot(c, 0);
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
  return !atomic_load(&c->closed) && !emu_proc_dead(c->proc) &&
         atomic_load(&c->state) == VEO_STATE_RUNNING;
}

uint64_t emu_submit(struct veo_thr_ctxt *c, int type, uint64_t addr, uint64_t arg0,
                    uint64_t arg1, const char *str, struct job *job) {
  size_t slen = str ? strlen(str) + 1 : 0;
  uint32_t size = (uint32_t)((sizeof(struct emu_cmd) + slen + 7) & ~(size_t)7);
  emu_proc_users_inc(c->proc);
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
      emu_profile_cmd(c->proc, cmd, job);
      id = ring_commit(c, cmd, job);
    } else {
      emu_set_error("the VE process of this proc has died");
    }
  }
  pthread_mutex_unlock(&c->submit_lock);
  emu_proc_leave(c->proc);
  return id;
}

uint64_t emu_submit_agent(struct veo_thr_ctxt *c, struct job *job) {
  uint64_t id = emu_submit(c, EMU_CMD_AGENT, 0, 0, 0, NULL, job);
  if (id == VEO_REQUEST_ID_INVALID) emu_job_free(job);
  return id;
}

/* A kernel call: types, values and stack argument descriptors follow the
 * command.  The stack job (if any) stays the caller's on failure. */
uint64_t emu_submit_call(struct veo_thr_ctxt *c, uint64_t addr, struct veo_args *a,
                         struct job *j) {
  uint32_t n = (uint32_t)a->nargs;
  uint32_t size = (uint32_t)(sizeof(struct emu_cmd) + ((n + 7) & ~7u) + 8u * n +
                             sizeof(struct emu_stack_desc) * (uint32_t)a->nstack);
  uint64_t id = VEO_REQUEST_ID_INVALID;
  emu_proc_users_inc(c->proc);
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
      emu_profile_cmd(c->proc, cmd, NULL);
      id = ring_commit(c, cmd, j);
    }
  } else {
    emu_set_error("veo_call_async: the context is not running");
  }
  pthread_mutex_unlock(&c->submit_lock);
  emu_proc_leave(c->proc);
  return id;
}

/* ---- waiting for results ---------------------------------------------------------------- */
/* *missing: the id is not (or no longer) outstanding on this context. */
static int peek_ex(struct veo_thr_ctxt *c, uint64_t id, uint64_t *retp, int *missing) {
  int status = VEO_COMMAND_UNFINISHED;
  *missing = 0;
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
    *missing = 1;
  } else if (e->c == REC_DONE) {
    collect(c, e, retp, &status);
  }
  pthread_mutex_unlock(&c->lock);
  return status;
}

int emu_peek(struct veo_thr_ctxt *c, uint64_t id, uint64_t *retp) {
  int missing;
  return peek_ex(c, id, retp, &missing);
}

static int wait_result(struct veo_thr_ctxt *c, uint64_t id, uint64_t *retp);

static int ctx_gone(struct veo_thr_ctxt *c) {
  return atomic_load(&c->closed) || atomic_load(&c->proc->destroyed);
}

/* As AVEO's callWaitResult: an id that is not outstanding is an error at
 * once; otherwise the thread sleeps until the request completes.  If another
 * thread collects it meanwhile (a second waiter, or a peek), AVEO's waiter
 * sleeps for ever; the emulator's sleeps too, until the context is closed or
 * the proc destroyed (AVEO: a use after free), and then returns
 * VEO_COMMAND_ERROR. */
int emu_wait_result(struct veo_thr_ctxt *c, uint64_t id, uint64_t *retp) {
  emu_proc_users_inc(c->proc);
  int st = wait_result(c, id, retp);
  emu_proc_leave(c->proc);
  return st;
}

static int wait_result(struct veo_thr_ctxt *c, uint64_t id, uint64_t *retp) {
  struct emu_ctx_ctl *ctl = &c->r->ctl;
  int missing;
  int st = peek_ex(c, id, retp, &missing);
  if (st != VEO_COMMAND_UNFINISHED) return st;
  atomic_fetch_add(&c->waiters, 1);
  uint64_t spin_end = emu_now_ns() + (uint64_t)c->proc->hdr->spin_us * 1000u;
  for (;;) {
    for (;;) { /* until request id is done: contexts complete in order */
      uint64_t done = atomic_load(&ctl->done);
      if (done > id || emu_proc_settled(c->proc) || atomic_load(&c->closed)) break;
      if (emu_serve_agent_slot(c, 0)) continue;
      if (emu_now_ns() < spin_end) {
        if (c->proc->hdr->spin_yield) sched_yield();
        else for (int i = 0; i < 32; i++) emu_cpu_relax();
        continue;
      }
      wait_progress(c, done);
    }
    st = peek_ex(c, id, retp, &missing);
    if (st != VEO_COMMAND_UNFINISHED) break;
  }
  if (missing && !atomic_load(&c->closed)) {
    /* collected by another thread: AVEO never returns from here */
    while (!ctx_gone(c)) usleep(2000);
    emu_set_error("request %llu was collected by another thread while this one waited for it "
                  "(AVEO: this wait never returns)", (unsigned long long)id);
  }
  atomic_fetch_sub(&c->waiters, 1);
  return st;
}

/* Run a command on the main context and wait for it (the sync proc API). */
int emu_main_call(struct veo_proc_handle *p, int type, uint64_t addr, uint64_t arg0,
                  uint64_t arg1, const char *str, uint64_t *retval) {
  struct veo_thr_ctxt *c = p->ctx[0];
  emu_proc_users_inc(p);
  uint64_t id = emu_submit(c, type, addr, arg0, arg1, str, NULL);
  int st = VEO_COMMAND_ERROR;
  if (id != VEO_REQUEST_ID_INVALID) {
    st = emu_wait_result(c, id, retval);
    if (c->r->ctl.msg[0] && (st != VEO_COMMAND_OK || !*retval)) emu_set_error("%s", c->r->ctl.msg);
    c->r->ctl.msg[0] = 0;
  }
  emu_proc_leave(p);
  return st;
}

/* Wait until every request submitted to the main context so far completed
 * (the sync proc API queues behind them); the caller holds the main
 * context's submit lock, so nothing is queued meanwhile.  -1 if the VE
 * process died. */
int emu_drain_main_locked(struct veo_proc_handle *p) {
  struct veo_thr_ctxt *c = p->ctx[0];
  int rc = 0;
  emu_proc_users_inc(p);
  for (;;) {
    if (emu_proc_dead(p)) {
      emu_set_error("the VE process of this proc has died");
      rc = -1;
      break;
    }
    uint64_t done = atomic_load(&c->r->ctl.done);
    if (done >= c->next_id) break;
    if (!emu_serve_agent_slot(c, 0)) wait_progress(c, done);
  }
  emu_proc_leave(p);
  return rc;
}

/* The same, taking the submit lock: returns with it held, also on error (-1). */
int emu_drain_main(struct veo_proc_handle *p) {
  pthread_mutex_lock(&p->ctx[0]->submit_lock);
  return emu_drain_main_locked(p);
}
