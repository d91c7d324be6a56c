/* Calls and results: peek/wait, ids, FIFO order with transfers, by name, VH
 * calls, call_sync, request blocks, ring wrap-around. */
#include <pthread.h>

#include "check.h"

static struct veo_proc_handle *p;
static uint64_t lib;

static void test_peek_wait(struct veo_thr_ctxt *c) {
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 150);
  uint64_t id = veo_call_async(c, sym(p, lib, "sleep_ms"), a);
  REQUIRE(id != VEO_REQUEST_ID_INVALID);
  uint64_t r = 12345;
  CHECK_EQ(veo_call_peek_result(c, id, &r), VEO_COMMAND_UNFINISHED);
  CHECK_EQ(r, 12345); /* untouched */
  int unfinished = 0, st;
  double t0 = now_s();
  while ((st = veo_call_peek_result(c, id, &r)) == VEO_COMMAND_UNFINISHED) {
    unfinished++;
    usleep(1000);
  }
  double dt = now_s() - t0;
  CHECK_EQ(st, VEO_COMMAND_OK);
  CHECK_EQ(r, 150);
  CHECK(unfinished > 10 && dt > 0.1);
  /* collected once */
  t0 = now_s();
  CHECK_EQ(veo_call_peek_result(c, id, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_ERROR);
  /* unknown ids: errors, not hangs */
  CHECK_EQ(veo_call_wait_result(c, id + 1000000, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_call_peek_result(c, id + 1000000, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_call_wait_result(c, VEO_REQUEST_ID_INVALID, &r), VEO_COMMAND_ERROR);
  CHECK(now_s() - t0 < 0.1);
  /* the same request collected by wait */
  veo_args_set_i64(a, 0, 20);
  id = veo_call_async(c, sym(p, lib, "sleep_ms"), a);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(r, 20);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_ERROR);
  /* ids increase; results can be collected in any order; NULL result ok */
  veo_args_clear(a);
  uint64_t ids[100];
  for (int i = 0; i < 100; i++) {
    veo_args_set_u64(a, 0, 1000 + i);
    ids[i] = veo_call_async(c, sym(p, lib, "ident"), a);
    if (i) CHECK(ids[i] > ids[i - 1]);
  }
  for (int i = 99; i >= 0; i--) {
    if (i == 50) {
      CHECK_EQ(veo_call_wait_result(c, ids[i], NULL), VEO_COMMAND_OK);
      continue;
    }
    CHECK_EQ(veo_call_wait_result(c, ids[i], &r), VEO_COMMAND_OK);
    CHECK_EQ(r, 1000 + i);
  }
  /* addr 0 */
  CHECK(veo_call_async(c, 0, a) == VEO_REQUEST_ID_INVALID);
  veo_args_free(a);
}

/* Requests of one context run in submission order, transfers included. */
static void test_fifo(struct veo_thr_ctxt *c) {
  enum { N = 4096 };
  uint64_t buf;
  REQUIRE(veo_alloc_mem(p, &buf, N * 8) == 0);
  uint64_t *h = malloc(N * 8), *back = malloc(N * 8), r;
  struct veo_args *a = veo_args_alloc();
  for (int round = 0; round < 20; round++) {
    for (int i = 0; i < N; i++) h[i] = (uint64_t)(round * N + i);
    memset(back, 0, N * 8);
    /* write -> call that reads -> call that modifies -> read: no waits between */
    uint64_t w = veo_async_write_mem(c, buf, h, N * 8);
    veo_args_clear(a);
    veo_args_set_u64(a, 0, buf + 8 * (N - 1));
    uint64_t k1 = veo_call_async(c, sym(p, lib, "read_u64"), a);
    veo_args_clear(a);
    veo_args_set_u64(a, 0, buf);
    veo_args_set_i64(a, 1, N);
    uint64_t k2 = veo_call_async(c, sym(p, lib, "incr_all"), a);
    uint64_t rd = veo_async_read_mem(c, back, buf, N * 8);
    CHECK(w < k1 && k1 < k2 && k2 < rd);
    CHECK_EQ(veo_call_wait_result(c, rd, &r), VEO_COMMAND_OK);
    int good = 1;
    for (int i = 0; i < N; i++) good &= back[i] == h[i] + 1;
    CHECK(good);
    CHECK_EQ(veo_call_wait_result(c, k1, &r), VEO_COMMAND_OK);
    CHECK_EQ(r, h[N - 1]);
    CHECK_EQ(veo_call_wait_result(c, k2, &r), VEO_COMMAND_OK);
    CHECK_EQ(veo_call_wait_result(c, w, &r), VEO_COMMAND_OK);
  }
  veo_args_free(a);
  free(h);
  free(back);
  CHECK_EQ(veo_free_mem(p, buf), 0);
}

static void test_by_name(struct veo_thr_ctxt *c) {
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 3);
  veo_args_set_i64(a, 1, 4);
  uint64_t r, id = veo_call_async_by_name(c, lib, "add", a);
  CHECK(id != VEO_REQUEST_ID_INVALID);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(r, 7);
  CHECK(veo_call_async_by_name(c, lib, "no_such_kernel", a) == VEO_REQUEST_ID_INVALID);
  CHECK(veo_call_async_by_name(c, lib, NULL, a) == VEO_REQUEST_ID_INVALID);
  CHECK(veo_call_async_by_name(c, 0, "add", a) == VEO_REQUEST_ID_INVALID);
  /* call_sync */
  CHECK_EQ(veo_call_sync(p, sym(p, lib, "add"), a, &r), 0);
  CHECK_EQ(r, 7);
  CHECK_EQ(veo_call_sync(p, 0, a, &r), -1);
  veo_args_free(a);
}

/* VH calls run on the host, in FIFO position. */
struct vh_state {
  double t_called;
  uint64_t seen;
  const uint64_t *watch;
  pthread_t thread;
};
static uint64_t vh_func(void *arg) {
  struct vh_state *s = arg;
  s->t_called = now_s();
  s->seen = *s->watch;
  s->thread = pthread_self();
  return 4242;
}

static void test_vh(struct veo_thr_ctxt *c) {
  struct veo_args *a = veo_args_alloc();
  uint64_t buf, value = 99, landed = 0, r;
  REQUIRE(veo_alloc_mem(p, &buf, 8) == 0);
  CHECK_EQ(veo_write_mem(p, buf, &value, 8), 0);
  veo_args_set_i64(a, 0, 60);
  double t0 = now_s();
  uint64_t k = veo_call_async(c, sym(p, lib, "sleep_ms"), a);
  uint64_t rd = veo_async_read_mem(c, &landed, buf, 8);
  struct vh_state s = {0, 0, &landed, 0};
  uint64_t vh = veo_call_async_vh(c, vh_func, &s);
  REQUIRE(vh != VEO_REQUEST_ID_INVALID);
  CHECK_EQ(veo_call_wait_result(c, vh, &r), VEO_COMMAND_OK);
  CHECK_EQ(r, 4242);
  CHECK(s.t_called - t0 >= 0.055); /* after the kernel */
  CHECK_EQ(s.seen, 99);             /* after the read landed */
  CHECK(!pthread_equal(s.thread, pthread_self()));
  CHECK_EQ(veo_call_wait_result(c, k, &r), VEO_COMMAND_OK);
  CHECK_EQ(veo_call_wait_result(c, rd, &r), VEO_COMMAND_OK);
  CHECK(veo_call_async_vh(c, NULL, NULL) == VEO_REQUEST_ID_INVALID);
  /* many, interleaved with calls */
  veo_args_clear(a);
  uint64_t ids[200];
  for (int i = 0; i < 200; i++) {
    if (i % 2) {
      ids[i] = veo_call_async_vh(c, vh_func, &s);
    } else {
      veo_args_set_u64(a, 0, (uint64_t)i);
      ids[i] = veo_call_async(c, sym(p, lib, "ident"), a);
    }
  }
  for (int i = 0; i < 200; i++) {
    CHECK_EQ(veo_call_wait_result(c, ids[i], &r), VEO_COMMAND_OK);
    CHECK_EQ(r, i % 2 ? 4242 : (uint64_t)i);
  }
  veo_args_free(a);
  CHECK_EQ(veo_free_mem(p, buf), 0);
}

/* A copy and a VH call queued one after the other, many times, while this
 * thread waits: the waiter serves copies and the agent thread serves both, so
 * the agent slot is claimed by either, re-posted at once for the VH call.  A
 * claim must run the request posted, never the one served just before. */
static uint64_t vh_count(void *arg) {
  uint64_t *n = arg;
  return ++*n;
}

static void test_vh_after_copies(struct veo_thr_ctxt *c) {
  uint64_t buf, value = 7, landed, n = 0, r;
  REQUIRE(veo_alloc_mem(p, &buf, 8) == 0);
  CHECK_EQ(veo_write_mem(p, buf, &value, 8), 0);
  int bad = 0;
  for (int i = 0; i < 2000 && !bad; i++) {
    landed = 0;
    uint64_t rd = veo_async_read_mem(c, &landed, buf, 8);
    uint64_t vh = veo_call_async_vh(c, vh_count, &n);
    REQUIRE(rd != VEO_REQUEST_ID_INVALID && vh != VEO_REQUEST_ID_INVALID);
    bad |= veo_call_wait_result(c, vh, &r) != VEO_COMMAND_OK || r != (uint64_t)i + 1;
    bad |= veo_call_wait_result(c, rd, &r) != VEO_COMMAND_OK || landed != 7;
  }
  CHECK(!bad);
  CHECK_EQ(n, 2000);
  CHECK_EQ(veo_free_mem(p, buf), 0);
}

/* A request block keeps one thread's requests together in the FIFO. */
struct blk {
  struct veo_thr_ctxt *c;
  volatile int started;
};
static void *other_submitter(void *arg) {
  struct blk *b = arg;
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 2);
  b->started = 1;
  uint64_t id = veo_call_async(b->c, sym(p, lib, "log_push"), a), r; /* blocked meanwhile */
  CHECK_EQ(veo_call_wait_result(b->c, id, &r), VEO_COMMAND_OK);
  veo_args_free(a);
  return NULL;
}

static void test_req_block(struct veo_thr_ctxt *c) {
  uint64_t n0 = 0, zero = 0, r;
  uint64_t lognaddr = sym(p, lib, "g_log_n"), logaddr = sym(p, lib, "g_log");
  CHECK_EQ(veo_write_mem(p, lognaddr, &zero, 8), 0);
  struct veo_args *a = veo_args_alloc();
  struct blk b = {c, 0};
  pthread_t t;
  veo_req_block_begin(c);
  veo_req_block_begin(c); /* nests */
  veo_args_set_i64(a, 0, 1);
  uint64_t id1 = veo_call_async(c, sym(p, lib, "log_push"), a);
  pthread_create(&t, NULL, other_submitter, &b);
  while (!b.started) usleep(100);
  usleep(30000); /* the other thread is stuck in veo_call_async */
  CHECK_EQ(veo_call_wait_result(c, id1, &r), VEO_COMMAND_OK); /* may wait inside a block */
  veo_args_set_i64(a, 0, 3);
  uint64_t id3 = veo_call_async(c, sym(p, lib, "log_push"), a);
  veo_req_block_end(c);
  usleep(10000);
  veo_args_set_i64(a, 0, 4);
  uint64_t id4 = veo_call_async(c, sym(p, lib, "log_push"), a); /* still inside */
  veo_req_block_end(c);
  pthread_join(t, NULL);
  CHECK_EQ(veo_call_wait_result(c, id3, &r), VEO_COMMAND_OK);
  CHECK_EQ(veo_call_wait_result(c, id4, &r), VEO_COMMAND_OK);
  long log[4];
  CHECK_EQ(veo_read_mem(p, &n0, lognaddr, 8), 0);
  CHECK_EQ(n0, 4);
  CHECK_EQ(veo_read_mem(p, log, logaddr, sizeof(log)), 0);
  CHECK(log[0] == 1 && log[1] == 3 && log[2] == 4 && log[3] == 2);
  veo_args_free(a);
}

/* More requests than the result ring has slots, more bytes than the command
 * ring: both wrap around. */
static void test_wrap(struct veo_thr_ctxt *c) {
  enum { N = 150000, BATCH = 30000 };
  struct veo_args *a = veo_args_alloc();
  static uint64_t ids[BATCH];
  uint64_t f = sym(p, lib, "ident"), r;
  int bad = 0;
  for (int base = 0; base < N; base += BATCH) {
    for (int i = 0; i < BATCH; i++) {
      veo_args_set_u64(a, 0, (uint64_t)(base + i) * 3);
      ids[i] = veo_call_async(c, f, a);
    }
    for (int i = 0; i < BATCH; i++)
      if (veo_call_wait_result(c, ids[i], &r) != VEO_COMMAND_OK || r != (uint64_t)(base + i) * 3)
        bad++;
  }
  CHECK_EQ(bad, 0);
  /* submitting 70000 requests without collecting: the submitter waits for
   * ring space, it does not fail */
  static uint64_t ids2[70000];
  for (int i = 0; i < 70000; i++) {
    veo_args_set_u64(a, 0, (uint64_t)i);
    ids2[i] = veo_call_async(c, f, a);
    if (ids2[i] == VEO_REQUEST_ID_INVALID) bad++;
  }
  for (int i = 0; i < 70000; i++)
    if (veo_call_wait_result(c, ids2[i], &r) != VEO_COMMAND_OK || r != (uint64_t)i) bad++;
  CHECK_EQ(bad, 0);
  /* big calls: 200 arguments each fill the command ring quickly */
  veo_args_clear(a);
  for (int i = 0; i < 200; i++) veo_args_set_i64(a, i, i);
  for (int i = 0; i < 2000; i++) {
    uint64_t id = veo_call_async(c, f, a);
    if (i % 500 == 499) veo_context_sync(c);
    (void)id;
  }
  veo_context_sync(c);
  veo_args_free(a);
}

int main(void) {
  p = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *c0 = veo_context_open(p), *c1 = veo_context_open(p);
  REQUIRE(c0 && c1);
  struct veo_thr_ctxt *cs[2] = {c0, c1};
  for (int i = 0; i < 2; i++) {
    test_peek_wait(cs[i]);
    test_fifo(cs[i]);
    test_by_name(cs[i]);
    test_vh(cs[i]);
    test_vh_after_copies(cs[i]);
    test_req_block(cs[i]);
  }
  test_wrap(c1);
  /* an id of one context is unknown on another */
  struct veo_args *a = veo_args_alloc();
  uint64_t id = veo_call_async(c1, sym(p, lib, "nop"), a), r;
  veo_context_sync(c1);
  uint64_t id0 = veo_call_async(c0, sym(p, lib, "nop"), a);
  CHECK_EQ(veo_call_wait_result(c0, id0, &r), VEO_COMMAND_OK);
  if (id != id0) CHECK_EQ(veo_call_peek_result(c0, id, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_call_wait_result(c1, id, &r), VEO_COMMAND_OK);
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p), 0);
  DONE();
}
