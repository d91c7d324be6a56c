/* Contexts: open/close, the main context, state, sync, listing, attributes. */
#include "check.h"

static void test_open_close(void) {
  uint64_t lib;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  uint64_t f_tid = sym(p, lib, "tid"), f_pid = sym(p, lib, "pid");
  struct veo_args *a = veo_args_alloc();

  CHECK_EQ(veo_num_contexts(p), 0);
  CHECK(veo_get_context(p, 0) == NULL);
  struct veo_thr_ctxt *c0 = veo_context_open(p); /* the main context */
  REQUIRE(c0 != NULL);
  CHECK_EQ(veo_num_contexts(p), 1);
  CHECK(veo_get_context(p, 0) == c0);
  CHECK_EQ(veo_get_context_state(c0), VEO_STATE_RUNNING);
  struct veo_thr_ctxt *c1 = veo_context_open(p);
  struct veo_thr_ctxt *c2 = veo_context_open(p);
  REQUIRE(c1 && c2);
  CHECK(c1 != c0 && c2 != c1 && c2 != c0);
  CHECK_EQ(veo_num_contexts(p), 3);
  CHECK(veo_get_context(p, 1) == c1 && veo_get_context(p, 2) == c2);
  CHECK(veo_get_context(p, 3) == NULL && veo_get_context(p, -1) == NULL);

  /* contexts are threads of one process */
  uint64_t t0 = CALL(c0, f_tid, a), t1 = CALL(c1, f_tid, a), t2 = CALL(c2, f_tid, a);
  CHECK(t0 != t1 && t1 != t2 && t0 != t2);
  CHECK_EQ(CALL(c1, f_pid, a), veo_emu_proc_pid(p));
  CHECK_EQ(CALL(c0, f_pid, a), veo_emu_proc_pid(p));
  /* the sync API runs on the main context */
  uint64_t r = 0;
  CHECK_EQ(veo_call_sync(p, f_tid, a, &r), 0);
  CHECK_EQ(r, t0);

  /* close the middle one: indexes shift */
  CHECK_EQ(veo_context_close(c1), 0);
  CHECK_EQ(veo_num_contexts(p), 2);
  CHECK(veo_get_context(p, 1) == c2);
  CHECK_EQ(veo_get_context_state(c1), VEO_STATE_EXIT);
  CHECK_EQ(veo_context_close(c1), 0); /* twice: fine */
  CHECK(veo_call_async(c1, f_tid, a) == VEO_REQUEST_ID_INVALID);
  /* closing the main context is a no-op */
  CHECK_EQ(veo_context_close(c0), 0);
  CHECK_EQ(veo_get_context_state(c0), VEO_STATE_RUNNING);
  CHECK_EQ(veo_num_contexts(p), 2);
  CHECK_EQ(CALL(c0, f_tid, a), t0);
  /* a new context reuses the closed one's slot and starts afresh */
  struct veo_thr_ctxt *c3 = veo_context_open(p);
  REQUIRE(c3 != NULL);
  CHECK_EQ(veo_num_contexts(p), 3);
  CHECK(veo_get_context(p, 2) == c3);
  for (int i = 0; i < 100; i++) CHECK(CALL(c3, f_tid, a) != t0);
  CHECK(veo_call_async(c1, f_tid, a) == VEO_REQUEST_ID_INVALID); /* stale handle */

  /* many contexts, closed in a scrambled order */
  struct veo_thr_ctxt *many[40];
  for (int i = 0; i < 40; i++) {
    many[i] = veo_context_open(p);
    REQUIRE(many[i] != NULL);
  }
  CHECK_EQ(veo_num_contexts(p), 43);
  for (int i = 0; i < 40; i++) CHECK(CALL(many[i], f_pid, a) == (uint64_t)veo_emu_proc_pid(p));
  for (int i = 0; i < 40; i++) CHECK_EQ(veo_context_close(many[(i * 7) % 40]), 0);
  CHECK_EQ(veo_num_contexts(p), 3);
  CHECK(veo_get_context(p, 0) == c0 && veo_get_context(p, 1) == c2 && veo_get_context(p, 2) == c3);
  /* the limit: 64 contexts per proc, main included */
  int opened = 0;
  struct veo_thr_ctxt *lim[64];
  while (opened < 64 && (lim[opened] = veo_context_open(p)) != NULL) opened++;
  CHECK_EQ(opened, 61);
  for (int i = 0; i < opened; i++) CHECK_EQ(veo_context_close(lim[i]), 0);
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

static void test_sync_and_close_drain(void) {
  uint64_t lib;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  uint64_t f_sleep = sym(p, lib, "sleep_ms"), f_push = sym(p, lib, "log_push");
  struct veo_thr_ctxt *c0 = veo_context_open(p), *c1 = veo_context_open(p);
  REQUIRE(c0 && c1);
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 20);
  uint64_t ids[5];
  double t = now_s();
  for (int i = 0; i < 5; i++) ids[i] = veo_call_async(c1, f_sleep, a);
  veo_context_sync(c1);
  CHECK(now_s() - t >= 0.095);
  uint64_t r;
  for (int i = 0; i < 5; i++) { /* all complete, still collectable */
    r = 0;
    CHECK_EQ(veo_call_peek_result(c1, ids[i], &r), VEO_COMMAND_OK);
    CHECK_EQ(r, 20);
  }
  veo_context_sync(c1); /* nothing pending: returns */
  veo_context_sync(c0);

  /* close waits for queued work to run */
  for (int i = 0; i < 3; i++) {
    veo_args_set_i64(a, 0, 100 + i);
    CHECK(veo_call_async(c1, f_push, a) != VEO_REQUEST_ID_INVALID);
  }
  veo_args_set_i64(a, 0, 30);
  uint64_t last = veo_call_async(c1, f_sleep, a);
  t = now_s();
  CHECK_EQ(veo_context_close(c1), 0);
  CHECK(now_s() - t >= 0.025);
  CHECK_EQ(veo_call_peek_result(c1, last, &r), VEO_COMMAND_ERROR); /* results are gone */
  long log[3], n = 0;
  CHECK_EQ(veo_read_mem(p, &n, sym(p, lib, "g_log_n"), 8), 0);
  CHECK_EQ(n, 3);
  CHECK_EQ(veo_read_mem(p, log, sym(p, lib, "g_log"), sizeof(log)), 0);
  CHECK(log[0] == 100 && log[1] == 101 && log[2] == 102);
  veo_context_sync(c1); /* closed: returns at once */
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

static void test_attrs(void) {
  struct veo_thr_ctxt_attr *at = veo_alloc_thr_ctxt_attr();
  REQUIRE(at != NULL);
  size_t sz = 0;
  CHECK_EQ(veo_get_thr_ctxt_stacksize(at, &sz), 0);
  CHECK_EQ(sz, 128u << 20);
  errno = 0;
  CHECK_EQ(veo_set_thr_ctxt_stacksize(at, 1 << 20), -1);
  CHECK_EQ(errno, EINVAL);
  CHECK_EQ(veo_get_thr_ctxt_stacksize(at, &sz), 0);
  CHECK_EQ(sz, 128u << 20);
  CHECK_EQ(veo_set_thr_ctxt_stacksize(at, 4u << 20), 0);
  CHECK_EQ(veo_set_thr_ctxt_stacksize(at, 16u << 20), 0);
  CHECK_EQ(veo_get_thr_ctxt_stacksize(at, &sz), 0);
  CHECK_EQ(sz, 16u << 20);
  errno = 0;
  CHECK_EQ(veo_get_thr_ctxt_stacksize(NULL, &sz), -1);
  CHECK_EQ(errno, EINVAL);
  CHECK_EQ(veo_get_thr_ctxt_stacksize(at, NULL), -1);
  CHECK_EQ(veo_set_thr_ctxt_stacksize(NULL, 16u << 20), -1);

  uint64_t lib;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  errno = 0;
  CHECK(veo_context_open_with_attr(NULL, at) == NULL);
  CHECK_EQ(errno, EINVAL);
  errno = 0;
  CHECK(veo_context_open_with_attr(p, NULL) == NULL);
  CHECK_EQ(errno, EINVAL);
  /* the first open returns the main context whatever the attribute says */
  struct veo_thr_ctxt *c0 = veo_context_open_with_attr(p, at);
  CHECK(c0 != NULL && veo_get_context(p, 0) == c0);
  struct veo_thr_ctxt *c1 = veo_context_open_with_attr(p, at);
  REQUIRE(c1 != NULL);
  /* the stack is as large as asked for: 12 MiB of it in a 16 MiB context */
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 12 << 20);
  CHECK_EQ(CALL(c1, sym(p, lib, "stack_use"), a), 1);
  /* the attribute can go; the context stays */
  CHECK_EQ(veo_free_thr_ctxt_attr(at), 0);
  CHECK_EQ(CALL(c1, sym(p, lib, "stack_use"), a), 1);
  CHECK_EQ(veo_free_thr_ctxt_attr(NULL), -1);
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

int main(void) {
  test_open_close();
  test_sync_and_close_drain();
  test_attrs();
  DONE();
}
