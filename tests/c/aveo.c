/* Behaviours of AVEO the emulator reproduces (SX-Aurora/aveo: ProcHandle.cpp,
 * Context.cpp, aveorun.c): the main context, VE_OMP_NUM_THREADS for a second
 * context, the sync API queued behind the main context, the stack-argument
 * limit, a wait and a peek of one request, poisoned fresh memory.  (Faults:
 * faults.c; veo_proc_destroy waiting: procs.c.) */
#include <pthread.h>

#include "check.h"

/* The first veo_context_open returns the main context, whose close does
 * nothing; every later one needs VE_OMP_NUM_THREADS=1 (stoi semantics),
 * including after the main context was "closed". */
static void test_main_context_and_omp(void) {
  unsetenv("VE_OMP_NUM_THREADS");
  uint64_t lib;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *m = veo_context_open(p); /* no VE_OMP_NUM_THREADS needed */
  REQUIRE(m != NULL);
  CHECK(veo_get_context(p, 0) == m);
  CHECK_EQ(veo_context_close(m), 0); /* a no-op */
  CHECK_EQ(veo_get_context_state(m), VEO_STATE_RUNNING);
  CHECK_EQ(veo_num_contexts(p), 1);
  struct veo_args *a = veo_args_alloc();
  CHECK_EQ(CALL(m, sym(p, lib, "nop"), a), 0);
  /* open -> close -> open: the main context is still there, this is a second one */
  CHECK(veo_context_open(p) == NULL);
  CHECK(strstr(veo_emu_last_error(), "VE_OMP_NUM_THREADS") != NULL);
  const char *refused[] = {"2", "0", "", "8", "-1"};
  for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
    setenv("VE_OMP_NUM_THREADS", refused[i], 1);
    CHECK(veo_context_open(p) == NULL);
  }
  /* AVEO aborts the host on these (an uncaught std::invalid_argument /
   * out_of_range); the emulator refuses them and says why */
  const char *aborts[] = {"abc", "one", "99999999999999999999"};
  for (size_t i = 0; i < sizeof(aborts) / sizeof(aborts[0]); i++) {
    setenv("VE_OMP_NUM_THREADS", aborts[i], 1);
    CHECK(veo_context_open(p) == NULL);
    CHECK(strstr(veo_emu_last_error(), "abort") != NULL);
  }
  CHECK_EQ(veo_num_contexts(p), 1);
  const char *accepted[] = {"1", " 1", "+1", "1x", "01"}; /* as std::stoi reads them */
  for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
    setenv("VE_OMP_NUM_THREADS", accepted[i], 1);
    struct veo_thr_ctxt *c = veo_context_open(p);
    CHECK(c != NULL && c != m);
    if (c) CHECK_EQ(veo_context_close(c), 0);
  }
  CHECK_EQ(veo_num_contexts(p), 1);
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p), 0);
  setenv("VE_OMP_NUM_THREADS", "1", 1);
}

/* The sync memory and library API runs behind the main context's work;
 * another context's work does not hold it up. */
static void test_sync_api_queues_behind_main(void) {
  uint64_t lib;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *m = veo_context_open(p), *c = veo_context_open(p);
  REQUIRE(m && c);
  uint64_t f_sleep = sym(p, lib, "sleep_ms"), addr = 0, r;
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 200);
  char buf[64] = {0};

  /* busy other context: the sync API is not delayed */
  uint64_t id = veo_call_async(c, f_sleep, a);
  double t = now_s();
  CHECK_EQ(veo_alloc_mem(p, &addr, 64), 0);
  CHECK_EQ(veo_write_mem(p, addr, buf, 64), 0);
  CHECK_EQ(veo_free_mem(p, addr), 0);
  CHECK(now_s() - t < 0.1);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);

  /* busy main context: each waits for it */
  const char *what[] = {"alloc", "write", "read", "free", "get_sym", "load_library", "open"};
  for (int k = 0; k < 7; k++) {
    if (k == 1 || k == 2 || k == 3) CHECK_EQ(veo_alloc_mem(p, &addr, 64), 0);
    id = veo_call_async(m, f_sleep, a);
    t = now_s();
    switch (k) {
      case 0: CHECK_EQ(veo_alloc_mem(p, &addr, 64), 0); break;
      case 1: CHECK_EQ(veo_write_mem(p, addr, buf, 64), 0); break;
      case 2: CHECK_EQ(veo_read_mem(p, buf, addr, 64), 0); break;
      case 3: CHECK_EQ(veo_free_mem(p, addr), 0); addr = 0; break;
      case 4: CHECK(veo_get_sym(p, lib, "k_i8") != 0); break;
      case 5: CHECK(veo_load_library(p, KLIB) == lib); break;
      case 6: {
        struct veo_thr_ctxt *c2 = veo_context_open(p);
        CHECK(c2 != NULL);
        if (c2) veo_context_close(c2);
        break;
      }
    }
    double dt = now_s() - t;
    if (dt < 0.15) fprintf(stderr, "%s did not wait for the main context (%.3f s)\n", what[k], dt);
    CHECK(dt >= 0.15);
    CHECK_EQ(veo_call_wait_result(m, id, &r), VEO_COMMAND_OK);
    if (addr && k != 0 && k != 3) {
      CHECK_EQ(veo_free_mem(p, addr), 0);
      addr = 0;
    }
    if (k == 0) {
      CHECK_EQ(veo_free_mem(p, addr), 0);
      addr = 0;
    }
  }
  /* a cached symbol does not queue (AVEO's cache is checked first) */
  id = veo_call_async(m, f_sleep, a);
  t = now_s();
  CHECK(veo_get_sym(p, lib, "k_i8") != 0);
  CHECK(now_s() - t < 0.1);
  CHECK_EQ(veo_call_wait_result(m, id, &r), VEO_COMMAND_OK);
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

/* A call whose stack image exceeds ~63 MB is refused at submission. */
static void test_stack_limit(void) {
  uint64_t lib, r = 0;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *m = veo_context_open(p);
  uint64_t f = sym(p, lib, "k_sum_ints");
  size_t big = (size_t)64 << 20;
  char *buf = calloc(1, big);
  REQUIRE(buf != NULL);
  struct veo_args *a = veo_args_alloc();
  /* 176 + 16 bytes of registers, then the data: 63 MiB minus that fits */
  size_t fits = ((size_t)63 << 20) - 176 - 16;
  veo_args_set_stack(a, VEO_INTENT_IN, 0, buf, fits);
  veo_args_set_i64(a, 1, 4);
  uint64_t id = veo_call_async(m, f, a);
  CHECK(id != VEO_REQUEST_ID_INVALID);
  if (id != VEO_REQUEST_ID_INVALID) CHECK_EQ(veo_call_wait_result(m, id, &r), VEO_COMMAND_OK);
  veo_args_clear(a);
  veo_args_set_stack(a, VEO_INTENT_IN, 0, buf, fits + 16);
  veo_args_set_i64(a, 1, 4);
  errno = 0;
  CHECK(veo_call_async(m, f, a) == VEO_REQUEST_ID_INVALID);
  CHECK(strstr(veo_emu_last_error(), "63 MB") != NULL);
  CHECK_EQ(veo_call_sync(p, f, a, &r), -1);
  /* the context is fine */
  veo_args_clear(a);
  CHECK_EQ(CALL(m, sym(p, lib, "nop"), a), 0);
  veo_args_free(a);
  free(buf);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

/* Two waits (or a wait and a peek) of one request: AVEO's waiter checks the
 * id, then sleeps for its completion; if another thread takes the completion
 * first, the waiter never wakes.  The emulator's waiter sleeps too, until
 * the context is closed. */
struct waiter {
  struct veo_thr_ctxt *c;
  uint64_t id;
  volatile int status, done;
};
static void *waiter_main(void *arg) {
  struct waiter *w = arg;
  uint64_t r;
  w->status = veo_call_wait_result(w->c, w->id, &r);
  w->done = 1;
  return NULL;
}

static void test_two_waiters(void) {
  uint64_t lib, r;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *m = veo_context_open(p), *c = veo_context_open(p);
  REQUIRE(m && c);
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 100);
  uint64_t id = veo_call_async(c, sym(p, lib, "sleep_ms"), a);
  struct waiter w[2] = {{c, id, -1, 0}, {c, id, -1, 0}};
  pthread_t t[2];
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, waiter_main, &w[i]);
  usleep(400000);
  /* one took the result; the other sleeps on (a peek taking it does the same) */
  CHECK_EQ(w[0].done + w[1].done, 1);
  struct waiter *won = w[0].done ? &w[0] : &w[1], *lost = w[0].done ? &w[1] : &w[0];
  CHECK_EQ(won->status, VEO_COMMAND_OK);
  CHECK(!lost->done);
  /* an id that is not outstanding is an error at once */
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_call_peek_result(c, id, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_context_close(c), 0); /* reports the waiter, which returns */
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  CHECK(lost->done);
  CHECK_EQ(lost->status, VEO_COMMAND_ERROR);
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

/* veo_proc_destroy holds AVEO's global proc table lock for the whole
 * destroy: another proc's veo_proc_identifier (and veo_get_pid_from_hmem)
 * waits for a busy proc's destroy. */
static void *destroy_main(void *arg) {
  veo_proc_destroy(arg);
  return NULL;
}

static void test_destroy_holds_the_table_lock(void) {
  uint64_t lib1, lib2;
  struct veo_proc_handle *p1 = proc_with_kernels(0, &lib1), *p2 = proc_with_kernels(0, &lib2);
  struct veo_thr_ctxt *m = veo_context_open(p1);
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 300);
  CHECK(veo_call_async(m, sym(p1, lib1, "sleep_ms"), a) != VEO_REQUEST_ID_INVALID);
  int ident2 = veo_proc_identifier(p2);
  pthread_t t;
  pthread_create(&t, NULL, destroy_main, p1);
  usleep(50000);
  double t0 = now_s();
  CHECK_EQ(veo_proc_identifier(p2), ident2);
  CHECK(now_s() - t0 >= 0.15);
  pthread_join(t, NULL);
  t0 = now_s();
  CHECK(veo_get_pid_from_hmem(veo_set_proc_identifier(NULL, ident2)) == veo_emu_proc_pid(p2));
  CHECK(now_s() - t0 < 0.1);
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p2), 0);
}

/* Fresh VE memory is not zero (VEO_EMU_POISON, default 0xA5). */
static void test_poison(void) {
  uint64_t lib, addr;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  unsigned char buf[256];
  CHECK_EQ(veo_alloc_mem(p, &addr, sizeof(buf)), 0);
  CHECK_EQ(veo_read_mem(p, buf, addr, sizeof(buf)), 0);
  int all = 1;
  for (size_t i = 0; i < sizeof(buf); i++) all &= buf[i] == 0xA5;
  CHECK(all);
  memset(buf, 0, sizeof(buf));
  CHECK_EQ(veo_write_mem(p, addr, buf, sizeof(buf)), 0);
  CHECK_EQ(veo_free_mem(p, addr), 0);
  setenv("VEO_EMU_POISON", "0x5a", 1);
  CHECK_EQ(veo_alloc_mem(p, &addr, sizeof(buf)), 0);
  CHECK_EQ(veo_read_mem(p, buf, addr, sizeof(buf)), 0);
  CHECK(buf[0] == 0x5a && buf[255] == 0x5a);
  CHECK_EQ(veo_free_mem(p, addr), 0);
  /* off: the memory holds what it held (here, the zeros written above) */
  setenv("VEO_EMU_POISON", "off", 1);
  CHECK_EQ(veo_alloc_mem(p, &addr, sizeof(buf)), 0);
  CHECK_EQ(veo_read_mem(p, buf, addr, sizeof(buf)), 0);
  CHECK(buf[0] == 0x5a);
  CHECK_EQ(veo_free_mem(p, addr), 0);
  unsetenv("VEO_EMU_POISON");
  /* veo_alloc_mem_async memory too */
  struct veo_thr_ctxt *m = veo_context_open(p);
  uint64_t id = veo_alloc_mem_async(m, 64), r = 0, v = 0;
  CHECK_EQ(veo_call_wait_result(m, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(veo_read_mem(p, &v, r, 8), 0);
  CHECK_EQ(v, 0xA5A5A5A5A5A5A5A5ull);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

/* veo_alloc_mem queues behind a veo_free_mem_async on the main context
 * (AVEO queues both there): memory a queued free gives back is there for
 * the allocation. */
static void test_alloc_after_queued_free(void) {
  setenv("VEO_EMU_NODE_MEMORY", "64M", 1);
  uint64_t lib, r, big, x;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  unsetenv("VEO_EMU_NODE_MEMORY");
  struct veo_thr_ctxt *m = veo_context_open(p);
  REQUIRE(m);
  CHECK_EQ(veo_alloc_mem(p, &big, 48 << 20), 0);
  CHECK(veo_alloc_mem(p, &x, 48 << 20) != 0); /* full */
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 100);
  uint64_t s = veo_call_async(m, sym(p, lib, "sleep_ms"), a);
  uint64_t f = veo_free_mem_async(m, big);
  double t0 = now_s();
  CHECK_EQ(veo_alloc_mem(p, &x, 48 << 20), 0); /* after the queued free */
  CHECK(now_s() - t0 >= 0.09);
  CHECK_EQ(veo_call_peek_result(m, s, &r), VEO_COMMAND_OK);
  r = 1;
  CHECK_EQ(veo_call_peek_result(m, f, &r), VEO_COMMAND_OK);
  CHECK_EQ(r, 0);
  /* and the other way round: a queued async allocation comes first */
  s = veo_call_async(m, sym(p, lib, "sleep_ms"), a);
  uint64_t al = veo_alloc_mem_async(m, 8 << 20);
  CHECK(veo_alloc_mem(p, &big, 16 << 20) != 0); /* 8 MiB were left: the async one took them */
  CHECK_EQ(veo_call_peek_result(m, al, &r), VEO_COMMAND_OK);
  CHECK(r != 0);
  CHECK_EQ(veo_call_wait_result(m, s, &r), VEO_COMMAND_OK);
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

int main(void) {
  setenv("VE_OMP_NUM_THREADS", "1", 1);
  test_alloc_after_queued_free();
  test_main_context_and_omp();
  test_sync_api_queues_behind_main();
  test_stack_limit();
  test_two_waiters();
  test_poison();
  test_destroy_holds_the_table_lock();
  DONE();
}
