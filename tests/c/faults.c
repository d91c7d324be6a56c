/* Faults: a kernel that segfaults, traps or aborts; a helper killed from
 * outside; a kernel that exits.  The faulting request reports
 * VEO_COMMAND_EXCEPTION with the signal number on the main context and
 * VEO_COMMAND_ERROR on another one (as AVEO), the proc is dead, every other
 * request fails promptly, veo_proc_destroy succeeds, the host lives on. */
#include <pthread.h>

#include "check.h"

struct waiter {
  struct veo_thr_ctxt *c;
  uint64_t id;
  int status;
  double t_done;
};
static void *wait_thread(void *arg) {
  struct waiter *w = arg;
  uint64_t r;
  w->status = veo_call_wait_result(w->c, w->id, &r);
  w->t_done = now_s();
  return NULL;
}

/* Everything on a dead proc fails, promptly. */
static void check_dead(struct veo_proc_handle *p, uint64_t lib, struct veo_thr_ctxt **cs, int n,
                       uint64_t cached_sym) {
  double t0 = now_s();
  struct veo_args *a = veo_args_alloc();
  uint64_t r = 0, addr = 0;
  char buf[8];
  for (int i = 0; i < n; i++) {
    CHECK_EQ(veo_get_context_state(cs[i]), VEO_STATE_EXIT);
    CHECK(veo_call_async(cs[i], cached_sym, a) == VEO_REQUEST_ID_INVALID);
    CHECK(veo_async_read_mem(cs[i], buf, 0x1000, 8) == VEO_REQUEST_ID_INVALID);
    CHECK(veo_async_write_mem(cs[i], 0x1000, buf, 8) == VEO_REQUEST_ID_INVALID);
    CHECK(veo_alloc_mem_async(cs[i], 8) == VEO_REQUEST_ID_INVALID);
    CHECK(veo_call_async_by_name(cs[i], lib, "add", a) == VEO_REQUEST_ID_INVALID);
    veo_context_sync(cs[i]);
  }
  CHECK(veo_alloc_mem(p, &addr, 64) != 0);
  CHECK(veo_read_mem(p, buf, 0x1000, 8) != 0);
  CHECK(veo_write_mem(p, 0x1000, buf, 8) != 0);
  CHECK(veo_call_sync(p, cached_sym, a, &r) != 0);
  CHECK(veo_load_library(p, KLIB) == 0);
  CHECK(veo_get_sym(p, lib, "nop") == 0);
  CHECK(veo_get_sym(p, lib, "add") == cached_sym); /* cached, as AVEO */
  CHECK(veo_context_open(p) == NULL);
  void *h = NULL;
  CHECK(veo_alloc_hmem(p, &h, 8) != 0);
  CHECK(now_s() - t0 < 1.0);
  veo_args_free(a);
}

/* `kernel` faults on context 0 (the main one) or 1; context 2 has a long
 * kernel in flight, another thread waits on it. */
static void fault_case(const char *kernel, long arg, int sig, int fault_ctx) {
  uint64_t lib;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *cs[3];
  for (int i = 0; i < 3; i++) {
    cs[i] = veo_context_open(p);
    REQUIRE(cs[i] != NULL);
  }
  uint64_t f_add = sym(p, lib, "add"), f_sleep = sym(p, lib, "sleep_ms"), r;
  pid_t pid = veo_emu_proc_pid(p);
  struct veo_args *a = veo_args_alloc(), *fa = veo_args_alloc();
  veo_args_set_i64(a, 0, 1);
  veo_args_set_i64(a, 1, 2);
  CHECK_EQ(CALL(cs[fault_ctx], f_add, a), 3);
  veo_args_set_i64(a, 0, 5000);
  uint64_t long_id = veo_call_async(cs[2], f_sleep, a);
  uint64_t queued2 = veo_call_async(cs[2], f_add, a);
  struct waiter w = {cs[2], long_id, -1, 0};
  pthread_t t;
  pthread_create(&t, NULL, wait_thread, &w);
  usleep(20000);

  if (arg >= 0) veo_args_set_i64(fa, 0, arg);
  if (arg >= 0) veo_args_set_i64(fa, 1, 0);
  double t0 = now_s();
  uint64_t fid = veo_call_async(cs[fault_ctx], sym(p, lib, kernel), fa);
  uint64_t after = veo_call_async(cs[fault_ctx], f_add, a); /* behind the fault */
  REQUIRE(fid != VEO_REQUEST_ID_INVALID);
  /* as AVEO: EXCEPTION with the signal on the main context, ERROR elsewhere */
  r = 12345;
  CHECK_EQ(veo_call_wait_result(cs[fault_ctx], fid, &r),
           fault_ctx == 0 ? VEO_COMMAND_EXCEPTION : VEO_COMMAND_ERROR);
  CHECK_EQ(r, fault_ctx == 0 ? (uint64_t)sig : 0);
  if (after != VEO_REQUEST_ID_INVALID)
    CHECK_EQ(veo_call_wait_result(cs[fault_ctx], after, &r), VEO_COMMAND_ERROR);
  pthread_join(t, NULL);
  CHECK_EQ(w.status, VEO_COMMAND_ERROR);
  CHECK(w.t_done - t0 < 1.0);
  CHECK_EQ(veo_call_peek_result(cs[2], queued2, &r), VEO_COMMAND_ERROR);
  CHECK(now_s() - t0 < 1.0);
  check_dead(p, lib, cs, 3, f_add);
  CHECK_EQ(veo_context_close(cs[1]), 0);
  CHECK_EQ(veo_proc_destroy(p), 0);
  CHECK(!pid_alive(pid));
  veo_args_free(a);
  veo_args_free(fa);
}

static void test_call_sync_fault(void) {
  uint64_t lib, r = 0;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_args *a = veo_args_alloc();
  uint64_t f_nop = sym(p, lib, "nop");
  CHECK_EQ(veo_call_sync(p, sym(p, lib, "segv"), a, &r), -1);
  CHECK_EQ(r, 11);
  CHECK(veo_call_sync(p, f_nop, a, &r) != 0);
  CHECK_EQ(veo_proc_destroy(p), 0);
  veo_args_free(a);
}

/* The helper killed from outside in the middle of calls. */
static void test_sigkill(void) {
  uint64_t lib;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *c0 = veo_context_open(p), *c1 = veo_context_open(p);
  REQUIRE(c0 && c1);
  struct veo_args *a = veo_args_alloc();
  uint64_t f_add = sym(p, lib, "add");
  uint64_t spin = veo_call_async(c1, sym(p, lib, "spin"), a), r;
  veo_args_set_i64(a, 0, 5000);
  uint64_t s0 = veo_call_async(c0, sym(p, lib, "sleep_ms"), a);
  uint64_t q0 = veo_call_async(c0, sym(p, lib, "sleep_ms"), a);
  struct waiter w = {c1, spin, -1, 0};
  pthread_t t;
  pthread_create(&t, NULL, wait_thread, &w);
  usleep(30000);
  CHECK_EQ(veo_call_peek_result(c1, spin, &r), VEO_COMMAND_UNFINISHED);
  pid_t pid = veo_emu_proc_pid(p);
  double t0 = now_s();
  REQUIRE(kill(pid, SIGKILL) == 0);
  CHECK_EQ(veo_call_wait_result(c0, s0, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_call_wait_result(c0, q0, &r), VEO_COMMAND_ERROR);
  pthread_join(t, NULL);
  CHECK_EQ(w.status, VEO_COMMAND_ERROR);
  CHECK(now_s() - t0 < 1.0);
  struct veo_thr_ctxt *cs[2] = {c0, c1};
  check_dead(p, lib, cs, 2, f_add);
  CHECK_EQ(veo_proc_destroy(p), 0);
  CHECK(!pid_alive(pid));
  veo_args_free(a);
}

/* A kernel that ends the VE process: no exception, but the proc is dead. */
static void test_kernel_exit(void) {
  uint64_t lib;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *c0 = veo_context_open(p), *c1 = veo_context_open(p);
  REQUIRE(c0 && c1);
  uint64_t f_add = sym(p, lib, "add"), r;
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 3);
  uint64_t id = veo_call_async(c1, sym(p, lib, "do_exit"), a);
  veo_args_set_i64(a, 1, 3);
  uint64_t after = veo_call_async(c1, f_add, a);
  CHECK_EQ(veo_call_wait_result(c1, id, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_call_wait_result(c1, after, &r), VEO_COMMAND_ERROR);
  struct veo_thr_ctxt *cs[2] = {c0, c1};
  check_dead(p, lib, cs, 2, f_add);
  CHECK_EQ(veo_proc_destroy(p), 0);
  veo_args_free(a);
}

/* Faults in one proc leave the others alone. */
static void test_isolation(void) {
  uint64_t lib1, lib2, r;
  struct veo_proc_handle *p1 = proc_with_kernels(0, &lib1), *p2 = proc_with_kernels(0, &lib2);
  struct veo_args *a = veo_args_alloc();
  CHECK_EQ(veo_call_sync(p1, sym(p1, lib1, "segv"), a, &r), -1);
  veo_args_set_i64(a, 0, 20);
  veo_args_set_i64(a, 1, 22);
  CHECK_EQ(veo_call_sync(p2, sym(p2, lib2, "add"), a, &r), 0);
  CHECK_EQ(r, 42);
  CHECK_EQ(veo_proc_destroy(p1), 0);
  CHECK_EQ(veo_call_sync(p2, sym(p2, lib2, "add"), a, &r), 0);
  CHECK_EQ(veo_proc_destroy(p2), 0);
  veo_args_free(a);
}

int main(void) {
  fault_case("segv", -1, SIGSEGV, 0);
  fault_case("segv", -1, SIGSEGV, 1);
  fault_case("fpe", 1, SIGFPE, 1);
  fault_case("do_abort", -1, SIGABRT, 0);
  fault_case("do_abort", -1, SIGABRT, 1);
  fault_case("raise_sig", SIGBUS, SIGBUS, 1);
  fault_case("raise_sig", SIGILL, SIGILL, 0);
  test_call_sync_fault();
  test_sigkill();
  test_kernel_exit();
  test_isolation();
  /* the host is untouched: a new proc works */
  uint64_t lib, r;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 1);
  veo_args_set_i64(a, 1, 1);
  CHECK_EQ(veo_call_sync(p, sym(p, lib, "add"), a, &r), 0);
  CHECK_EQ(r, 2);
  CHECK_EQ(veo_proc_destroy(p), 0);
  veo_args_free(a);
  DONE();
}
