/*
 * engine.c -- see engine.h.  No Python here: the engine threads never take
 * the GIL, so they cannot stall behind a busy event loop.
 */
#define _GNU_SOURCE
#include "engine.h"
#include "ve_offload.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>


struct ereq {
  uint64_t id, token;
  struct ereq *next;
};

struct ectx {
  void *ctx;
  struct ereq *head, *tail;
  int busy;      /* a thread is peeking/waiting on it with the lock released */
  int stop;      /* ENGINE_WAIT: the waiter thread should end */
  int has_thread;
  pthread_t thread;
  pthread_cond_t cond; /* ENGINE_WAIT: work for the waiter */
  struct engine *e;
  struct ectx *next;
};

struct engine {
  int mode;
  engine_peek_fn peek, wait;
  uint64_t spin_ns, max_sleep_ns;
  pthread_mutex_t lock;
  pthread_cond_t cond; /* poll thread: work arrived; also "a context is idle" */
  struct ectx *ctxs;
  long watched;  /* in FIFOs */
  long queued;   /* completions not yet drained */
  struct engine_completion *q;
  size_t qhead, qcap;
  int efd;
  _Atomic int armed;
  int stop, kicked, has_thread;
  pthread_t thread;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Append a completion and wake the loop unless it is already due (lock held). */
static int push_completion(struct engine *e, uint64_t token, int status, uint64_t retval) {
  if ((size_t)e->queued + e->qhead == e->qcap) {
    if (e->qhead) { /* compact */
      memmove(e->q, e->q + e->qhead, (size_t)e->queued * sizeof(*e->q));
      e->qhead = 0;
    }
    if ((size_t)e->queued == e->qcap) {
      size_t ncap = e->qcap ? e->qcap * 2 : 256;
      void *n = realloc(e->q, ncap * sizeof(*e->q));
      if (!n) return -1;
      e->q = n;
      e->qcap = ncap;
    }
  }
  e->q[e->qhead + (size_t)e->queued] = (struct engine_completion){token, retval, status};
  e->queued++;
  if (!atomic_exchange(&e->armed, 1)) {
    uint64_t one = 1;
    ssize_t r = write(e->efd, &one, sizeof(one)); /* EAGAIN: already readable */
    (void)r;
  }
  return 0;
}

static void pop_head(struct engine *e, struct ectx *c, int status, uint64_t retval) {
  struct ereq *r = c->head;
  c->head = r->next;
  if (!c->head) c->tail = NULL;
  e->watched--;
  push_completion(e, r->token, status, retval);
  free(r);
}

/* ---- ENGINE_POLL -------------------------------------------------------------- */
static void *poll_main(void *arg) {
  struct engine *e = arg;
  uint64_t last = now_ns(), sleep_ns = 0;
  int yields = 0;
  /* The default 50 us timer slack would stretch every short back-off sleep
   * (20 us) to 70 us and more: ask for the sleeps we compute. */
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  pthread_mutex_lock(&e->lock);
  while (!e->stop) {
    if (e->watched == 0) {
      pthread_cond_wait(&e->cond, &e->lock);
      last = now_ns();
      sleep_ns = 0;
      yields = 0;
      continue;
    }
    int completed = 0;
    for (struct ectx *c = e->ctxs; c; c = c->next) {
      while (c->head) { /* oldest first: a context completes in order */
        uint64_t id = c->head->id, ret = 0;
        c->busy = 1;
        pthread_mutex_unlock(&e->lock);
        int st = e->peek(c->ctx, id, &ret);
        pthread_mutex_lock(&e->lock);
        c->busy = 0;
        if (st == VEO_COMMAND_UNFINISHED || !c->head || c->head->id != id) break;
        pop_head(e, c, st, ret);
        completed++;
      }
    }
    pthread_cond_broadcast(&e->cond); /* for engine_forget waiting on busy */
    if (completed || e->kicked) {
      e->kicked = 0;
      last = now_ns();
      sleep_ns = 0;
      yields = 0;
      continue;
    }
    /* back-off: spin while recent, then yield, then sleep (woken by a watch) */
    uint64_t t = now_ns();
    if (t - last < e->spin_ns) {
      pthread_mutex_unlock(&e->lock);
      for (int i = 0; i < 64; i++) cpu_relax();
      pthread_mutex_lock(&e->lock);
    } else if (yields < 8) {
      yields++;
      pthread_mutex_unlock(&e->lock);
      sched_yield();
      pthread_mutex_lock(&e->lock);
    } else {
      /* Double the sleep, but never beyond 1/8 of the time already waited:
       * a completion is then noticed within ~12% of the request's duration
       * (a 100 us transfer is not found 1 ms late), while a long kernel
       * still settles at max_sleep_ns. */
      uint64_t bound = (t - last) / 8;
      sleep_ns = sleep_ns ? sleep_ns * 2 : 20000;
      if (sleep_ns > bound) sleep_ns = bound > 20000 ? bound : 20000;
      if (sleep_ns > e->max_sleep_ns) sleep_ns = e->max_sleep_ns;
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      uint64_t ns = (uint64_t)ts.tv_nsec + sleep_ns;
      ts.tv_sec += (time_t)(ns / 1000000000ull);
      ts.tv_nsec = (long)(ns % 1000000000ull);
      if (!e->kicked) pthread_cond_timedwait(&e->cond, &e->lock, &ts);
    }
  }
  pthread_mutex_unlock(&e->lock);
  return NULL;
}

/* ---- ENGINE_WAIT ---------------------------------------------------------------- */
static void *wait_main(void *arg) {
  struct ectx *c = arg;
  struct engine *e = c->e;
  pthread_mutex_lock(&e->lock);
  while (!c->stop) {
    if (!c->head) {
      pthread_cond_wait(&c->cond, &e->lock);
      continue;
    }
    uint64_t id = c->head->id, ret = 0;
    c->busy = 1;
    pthread_mutex_unlock(&e->lock);
    int st = e->wait(c->ctx, id, &ret);
    pthread_mutex_lock(&e->lock);
    c->busy = 0;
    if (c->head && c->head->id == id) pop_head(e, c, st, ret);
    pthread_cond_broadcast(&e->cond);
  }
  pthread_mutex_unlock(&e->lock);
  return NULL;
}

/* ---- API ---------------------------------------------------------------------------- */
struct engine *engine_new(int mode, engine_peek_fn peek, engine_peek_fn wait, unsigned spin_us,
                          unsigned max_sleep_us) {
  if ((mode != ENGINE_POLL && mode != ENGINE_WAIT) || !peek || (mode == ENGINE_WAIT && !wait)) {
    errno = EINVAL;
    return NULL;
  }
  struct engine *e = calloc(1, sizeof(*e));
  if (!e) return NULL;
  e->mode = mode;
  e->peek = peek;
  e->wait = wait;
  e->spin_ns = (uint64_t)spin_us * 1000u;
  e->max_sleep_ns = (uint64_t)(max_sleep_us ? max_sleep_us : 5000) * 1000u;
  e->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (e->efd < 0) {
    free(e);
    return NULL;
  }
  pthread_mutex_init(&e->lock, NULL);
  pthread_cond_init(&e->cond, NULL);
  if (mode == ENGINE_POLL) {
    int rc = pthread_create(&e->thread, NULL, poll_main, e);
    if (rc) {
      close(e->efd);
      free(e);
      errno = rc;
      return NULL;
    }
    e->has_thread = 1;
  }
  return e;
}

static struct ectx *find_ctx(struct engine *e, void *ctx, int create) {
  for (struct ectx *c = e->ctxs; c; c = c->next)
    if (c->ctx == ctx) return c;
  if (!create) return NULL;
  struct ectx *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->ctx = ctx;
  c->e = e;
  pthread_cond_init(&c->cond, NULL);
  if (e->mode == ENGINE_WAIT) {
    if (pthread_create(&c->thread, NULL, wait_main, c)) {
      free(c);
      return NULL;
    }
    c->has_thread = 1;
  }
  c->next = e->ctxs;
  e->ctxs = c;
  return c;
}

int engine_watch(struct engine *e, void *ctx, uint64_t id, uint64_t token, int wake) {
  struct ereq *r = malloc(sizeof(*r));
  if (!r) return -1;
  r->id = id;
  r->token = token;
  r->next = NULL;
  pthread_mutex_lock(&e->lock);
  struct ectx *c = find_ctx(e, ctx, 1);
  if (!c) {
    pthread_mutex_unlock(&e->lock);
    free(r);
    return -1;
  }
  if (c->tail) c->tail->next = r;
  else c->head = r;
  c->tail = r;
  e->watched++;
  e->kicked = 1;
  if (e->mode == ENGINE_WAIT) pthread_cond_signal(&c->cond);
  else if (wake) pthread_cond_signal(&e->cond);
  pthread_mutex_unlock(&e->lock);
  return 0;
}

void engine_wake(struct engine *e) {
  pthread_mutex_lock(&e->lock);
  e->kicked = 1;
  pthread_cond_signal(&e->cond);
  pthread_mutex_unlock(&e->lock);
}

int engine_drain(struct engine *e, struct engine_completion *out, int max) {
  pthread_mutex_lock(&e->lock);
  atomic_store(&e->armed, 0);
  uint64_t cnt;
  ssize_t r = read(e->efd, &cnt, sizeof(cnt));
  (void)r;
  int n = 0;
  while (n < max && e->queued > 0) {
    out[n++] = e->q[e->qhead++];
    e->queued--;
  }
  if (e->queued == 0) e->qhead = 0;
  else if (!atomic_exchange(&e->armed, 1)) { /* more than max: come back */
    uint64_t one = 1;
    r = write(e->efd, &one, sizeof(one));
  }
  pthread_mutex_unlock(&e->lock);
  return n;
}

int engine_forget(struct engine *e, void *ctx, int status, unsigned timeout_ms) {
  pthread_mutex_lock(&e->lock);
  struct ectx **pp = &e->ctxs, *c;
  while ((c = *pp) && c->ctx != ctx) pp = &c->next;
  if (!c) {
    pthread_mutex_unlock(&e->lock);
    return 0;
  }
  int n = 0;
  while (c->head) {
    pop_head(e, c, status, 0);
    n++;
  }
  c->stop = 1;
  pthread_cond_signal(&c->cond);
  uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
  while (c->busy && now_ns() < deadline) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 5000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&e->cond, &e->lock, &ts);
  }
  *pp = c->next;
  int busy = c->busy;
  pthread_mutex_unlock(&e->lock);
  if (c->has_thread) {
    if (busy) pthread_detach(c->thread); /* blocked in a kernel that never returns */
    else pthread_join(c->thread, NULL);
  }
  if (busy) return -1;
  pthread_cond_destroy(&c->cond);
  free(c);
  return n;
}

int engine_tokens(struct engine *e, void *ctx, uint64_t *out, int max) {
  int n = 0;
  pthread_mutex_lock(&e->lock);
  struct ectx *c = find_ctx(e, ctx, 0);
  for (struct ereq *r = c ? c->head : NULL; r; r = r->next) {
    if (n < max) out[n] = r->token;
    n++;
  }
  pthread_mutex_unlock(&e->lock);
  return n;
}

int engine_stop(struct engine *e, unsigned timeout_ms) {
  pthread_mutex_lock(&e->lock);
  e->stop = 1;
  pthread_cond_broadcast(&e->cond);
  pthread_mutex_unlock(&e->lock);
  if (e->has_thread) pthread_join(e->thread, NULL);
  e->has_thread = 0;
  int leaked = 0;
  while (e->ctxs) leaked |= engine_forget(e, e->ctxs->ctx, ENGINE_FORGOTTEN, timeout_ms) < 0;
  return leaked;
}

void engine_free(struct engine *e) {
  if (!e) return;
  free(e->q);
  close(e->efd);
  pthread_cond_destroy(&e->cond);
  pthread_mutex_destroy(&e->lock);
  free(e);
}

int engine_fd(struct engine *e) { return e->efd; }
