/* Several host threads sharing a proc and a context. */
#include <pthread.h>

#include "check.h"

static struct veo_proc_handle *p;
static uint64_t lib, f_add, f_ident, f_tid;
static struct veo_thr_ctxt *shared;
enum { T = 6, N = 2000 };

static void *one_context_user(void *arg) {
  long t = (long)arg;
  struct veo_args *a = veo_args_alloc();
  uint64_t r, ids[16];
  int bad = 0;
  for (int i = 0; i < N; i += 16) {
    for (int k = 0; k < 16; k++) {
      veo_args_set_i64(a, 0, t * 1000000 + i + k);
      veo_args_set_i64(a, 1, 1);
      ids[k] = veo_call_async(shared, f_add, a);
    }
    for (int k = 0; k < 16; k++) {
      int st = k % 2 ? veo_call_wait_result(shared, ids[k], &r) : VEO_COMMAND_UNFINISHED;
      while (st == VEO_COMMAND_UNFINISHED) st = veo_call_peek_result(shared, ids[k], &r);
      if (st != VEO_COMMAND_OK || r != (uint64_t)(t * 1000000 + i + k + 1)) bad++;
    }
  }
  veo_args_free(a);
  return (void *)(long)bad;
}

/* Thread-private contexts, plus the sync API (main context) from every thread. */
static void *own_context_user(void *arg) {
  long t = (long)arg;
  struct veo_thr_ctxt *c = veo_context_open(p);
  if (!c) return (void *)1L;
  struct veo_args *a = veo_args_alloc();
  int bad = 0;
  uint64_t mem, r;
  if (veo_alloc_mem(p, &mem, 4096)) bad++;
  for (int i = 0; i < 200; i++) {
    uint64_t v = (uint64_t)(t << 32 | (uint64_t)i), back = 0;
    if (veo_write_mem(p, mem + 8 * (i % 512), &v, 8)) bad++;
    veo_args_set_u64(a, 0, v);
    uint64_t id = veo_call_async(c, f_ident, a);
    if (veo_read_mem(p, &back, mem + 8 * (i % 512), 8) || back != v) bad++;
    if (veo_call_wait_result(c, id, &r) != VEO_COMMAND_OK || r != v) bad++;
    if (veo_call_sync(p, f_ident, a, &r) || r != v) bad++;
  }
  if (veo_free_mem(p, mem)) bad++;
  veo_args_free(a);
  if (veo_context_close(c)) bad++;
  return (void *)(long)bad;
}

/* One thread submits, another collects. */
static uint64_t handoff_ids[N];
static volatile int handoff_n;
static void *collector(void *arg) {
  (void)arg;
  int bad = 0;
  for (int i = 0; i < N; i++) {
    while (__atomic_load_n(&handoff_n, __ATOMIC_ACQUIRE) <= i) usleep(10);
    uint64_t r;
    if (veo_call_wait_result(shared, handoff_ids[i], &r) != VEO_COMMAND_OK || r != (uint64_t)i)
      bad++;
  }
  return (void *)(long)bad;
}

/* One thread holds a request block on the main context and uses the sync
 * API (a symbol lookup, the context list) while others open contexts: no
 * deadlock. */
static volatile int opener_go;
static void *opener(void *arg) {
  (void)arg;
  while (!opener_go) usleep(100);
  struct veo_thr_ctxt *c = veo_context_open(p);
  return (void *)(long)(c != NULL && veo_context_close(c) == 0 ? 0 : 1);
}

static void test_block_vs_open(void) {
  struct veo_thr_ctxt *c0 = veo_get_context(p, 0);
  REQUIRE(c0);
  pthread_t t[2];
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, opener, NULL);
  veo_req_block_begin(c0);
  opener_go = 1;
  usleep(20000); /* the openers wait for the main context */
  CHECK(veo_get_sym(p, lib, "k_u8") != 0); /* not cached yet: a request on main */
  CHECK(veo_num_contexts(p) >= 2);
  struct veo_args *a = veo_args_alloc();
  uint64_t r;
  CHECK_EQ(veo_call_sync(p, f_tid, a, &r), 0);
  veo_args_free(a);
  veo_req_block_end(c0);
  void *bad;
  for (int i = 0; i < 2; i++) {
    pthread_join(t[i], &bad);
    CHECK_EQ((long)bad, 0);
  }
}

/* Threads blocked in wait or polling with peek while another thread closes
 * the context or destroys the proc: they return, with OK or ERROR. */
struct waiter {
  struct veo_thr_ctxt *c;
  uint64_t id;
  int peek, status;
};
static void *waiter_main(void *arg) {
  struct waiter *w = arg;
  uint64_t r;
  if (!w->peek) {
    w->status = veo_call_wait_result(w->c, w->id, &r);
  } else {
    while ((w->status = veo_call_peek_result(w->c, w->id, &r)) == VEO_COMMAND_UNFINISHED)
      usleep(200);
  }
  return NULL;
}

static void test_teardown_under_waiters(int destroy) {
  uint64_t l;
  struct veo_proc_handle *q = proc_with_kernels(1, &l);
  struct veo_thr_ctxt *c = veo_context_open(q);
  c = veo_context_open(q);
  REQUIRE(c);
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 100);
  struct waiter w[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    w[i] = (struct waiter){c, veo_call_async(c, sym(q, l, "sleep_ms"), a), i % 2, -1};
    pthread_create(&t[i], NULL, waiter_main, &w[i]);
  }
  usleep(30000);
  double t0 = now_s();
  if (destroy) CHECK_EQ(veo_proc_destroy(q), 0);
  else CHECK_EQ(veo_context_close(c), 0);
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    CHECK(w[i].status == VEO_COMMAND_OK || w[i].status == VEO_COMMAND_ERROR);
  }
  CHECK(now_s() - t0 < 2.0);
  veo_args_free(a);
  if (!destroy) CHECK_EQ(veo_proc_destroy(q), 0);
}

int main(void) {
  p = proc_with_kernels(0, &lib);
  f_add = sym(p, lib, "add");
  f_ident = sym(p, lib, "ident");
  f_tid = sym(p, lib, "tid");
  REQUIRE(veo_context_open(p) != NULL); /* main */
  shared = veo_context_open(p);
  REQUIRE(shared);
  pthread_t th[T];
  void *bad;
  for (long t = 0; t < T; t++) pthread_create(&th[t], NULL, one_context_user, (void *)t);
  for (int t = 0; t < T; t++) {
    pthread_join(th[t], &bad);
    CHECK_EQ((long)bad, 0);
  }
  for (long t = 0; t < T; t++) pthread_create(&th[t], NULL, own_context_user, (void *)t);
  for (int t = 0; t < T; t++) {
    pthread_join(th[t], &bad);
    CHECK_EQ((long)bad, 0);
  }
  CHECK_EQ(veo_num_contexts(p), 2);
  test_block_vs_open();
  test_teardown_under_waiters(0);
  test_teardown_under_waiters(1);
  pthread_t col;
  pthread_create(&col, NULL, collector, NULL);
  struct veo_args *a = veo_args_alloc();
  for (int i = 0; i < N; i++) {
    veo_args_set_u64(a, 0, (uint64_t)i);
    handoff_ids[i] = veo_call_async(shared, f_ident, a);
    __atomic_store_n(&handoff_n, i + 1, __ATOMIC_RELEASE);
  }
  pthread_join(col, &bad);
  CHECK_EQ((long)bad, 0);
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p), 0);
  DONE();
}
