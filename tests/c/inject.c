/* Faults on purpose: every kind (crash, hang, delay, die, nomem), armed from
 * the environment (VEO_EMU_FAULTS, read by veo_proc_create) and from code
 * (veo_emu_inject), with their scopes (node, proc, context, symbol), their
 * triggers (the N-th call, a seeded rate), listing, clearing and the
 * messages for specifications that are wrong. */
#include "check.h"

enum { ENV, CODE };
static const char *HOW[] = {"VEO_EMU_FAULTS", "veo_emu_inject"};

/* A proc with the test kernels and `spec` armed the one way or the other;
 * contexts: the main one and one more. */
static struct veo_proc_handle *proc_with(const char *spec, int how, uint64_t *lib,
                                         struct veo_thr_ctxt **m, struct veo_thr_ctxt **c) {
  if (how == ENV) setenv("VEO_EMU_FAULTS", spec, 1);
  struct veo_proc_handle *p = proc_with_kernels(0, lib);
  unsetenv("VEO_EMU_FAULTS");
  if (how == CODE) CHECK_EQ(veo_emu_inject(p, spec), 0);
  *m = veo_context_open(p);
  *c = veo_context_open(p);
  REQUIRE(*m && *c);
  return p;
}

static uint64_t call(struct veo_thr_ctxt *c, uint64_t f, long x, int *status) {
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, x);
  veo_args_set_i64(a, 1, 1);
  uint64_t r = 12345, id = veo_call_async(c, f, a);
  *status = id == VEO_REQUEST_ID_INVALID ? -1 : veo_call_wait_result(c, id, &r);
  veo_args_free(a);
  return r;
}

/* crash on the 3rd call of add: EXCEPTION with the signal on the main
 * context, ERROR on another; calls of other kernels do not count. */
static void test_crash(int how) {
  uint64_t lib;
  struct veo_thr_ctxt *m, *c;
  struct veo_proc_handle *p = proc_with("crash:sym=add,call=3", how, &lib, &m, &c);
  uint64_t f_add = sym(p, lib, "add"), f_ident = sym(p, lib, "ident");
  int st;
  CHECK_EQ(call(m, f_add, 1, &st), 2);
  CHECK_EQ(st, VEO_COMMAND_OK);
  CHECK_EQ(call(c, f_ident, 5, &st), 5); /* another kernel */
  CHECK_EQ(call(c, f_add, 2, &st), 3);
  const char *list = veo_emu_faults(p);
  CHECK(list && strstr(list, "crash:sym=add,call=3,signal=SIGSEGV\t(seen 2, fired 0)"));
  uint64_t r = call(m, f_add, 3, &st);
  CHECK_EQ(st, VEO_COMMAND_EXCEPTION);
  CHECK_EQ(r, SIGSEGV);
  CHECK_EQ(veo_get_context_state(c), VEO_STATE_EXIT);
  CHECK_EQ(veo_proc_destroy(p), 0);

  /* another signal, on the other context */
  p = proc_with("crash:ctx=1,signal=SIGFPE", how, &lib, &m, &c);
  f_add = sym(p, lib, "add");
  CHECK_EQ(call(m, f_add, 1, &st), 2); /* ctx=1 only */
  r = call(c, f_add, 1, &st);
  CHECK_EQ(st, VEO_COMMAND_ERROR); /* as AVEO: a fault off the main context */
  CHECK_EQ(veo_get_context_state(m), VEO_STATE_EXIT);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

/* A seeded rate: the same calls fault for the same seed. */
static int first_crash(const char *spec, int how) {
  uint64_t lib;
  struct veo_thr_ctxt *m, *c;
  struct veo_proc_handle *p = proc_with(spec, how, &lib, &m, &c);
  uint64_t f_add = sym(p, lib, "add");
  int st = VEO_COMMAND_OK, k = 0;
  while (st == VEO_COMMAND_OK && k < 1000) {
    k++;
    call(c, f_add, k, &st);
  }
  CHECK_EQ(veo_proc_destroy(p), 0);
  return k;
}

static void test_rate(int how) {
  int a = first_crash("crash:rate=0.05,seed=7", how);
  int b = first_crash("crash:rate=0.05,seed=7", how);
  int d = first_crash("crash:rate=0.05,seed=8", how);
  CHECK(a < 1000);
  CHECK_EQ(a, b);
  CHECK(d < 1000);
  if (how == ENV) printf("rate 0.05: seed 7 faults at call %d, seed 8 at call %d\n", a, d);
  /* the same choices, armed either way */
  static int first = -1;
  if (first < 0) first = a;
  CHECK_EQ(a, first);
}

/* hang: the 2nd call of nop never returns; killing the VE process ends it. */
static void test_hang(int how) {
  uint64_t lib, r;
  struct veo_thr_ctxt *m, *c;
  struct veo_proc_handle *p = proc_with("hang:sym=nop,call=2", how, &lib, &m, &c);
  uint64_t f_nop = sym(p, lib, "nop"), f_add = sym(p, lib, "add");
  struct veo_args *a = veo_args_alloc();
  CHECK_EQ(CALL(c, f_nop, a), 0);
  uint64_t id = veo_call_async(c, f_nop, a);
  int st;
  CHECK_EQ(call(m, f_add, 4, &st), 5); /* the other context works */
  usleep(200000);
  CHECK_EQ(veo_call_peek_result(c, id, &r), VEO_COMMAND_UNFINISHED);
  CHECK_EQ(veo_get_context_state(c), VEO_STATE_RUNNING);
  pid_t pid = veo_emu_proc_pid(p);
  REQUIRE(kill(pid, SIGKILL) == 0);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_proc_destroy(p), 0);
  veo_args_free(a);
}

/* delay: calls of nop start 150 ms late; add is not delayed. */
static void test_delay(int how) {
  uint64_t lib;
  struct veo_thr_ctxt *m, *c;
  struct veo_proc_handle *p = proc_with("delay:sym=n?p,for=150ms", how, &lib, &m, &c);
  uint64_t f_nop = sym(p, lib, "nop"), f_add = sym(p, lib, "add");
  struct veo_args *a = veo_args_alloc();
  double t0 = now_s();
  CALL(c, f_nop, a);
  double dt = now_s() - t0;
  CHECK(dt >= 0.150);
  int st;
  t0 = now_s();
  call(c, f_add, 1, &st);
  CHECK(now_s() - t0 < 0.150);
  CHECK_EQ(st, VEO_COMMAND_OK);
  CHECK_EQ(veo_proc_destroy(p), 0);
  veo_args_free(a);
}

/* die after 3 calls: the 3rd completes, then the VE process is gone. */
static void test_die_calls(int how) {
  uint64_t lib;
  struct veo_thr_ctxt *m, *c;
  struct veo_proc_handle *p = proc_with("die:after=3", how, &lib, &m, &c);
  uint64_t f_add = sym(p, lib, "add");
  pid_t pid = veo_emu_proc_pid(p);
  int st;
  for (int i = 1; i <= 3; i++) {
    CHECK_EQ(call(i % 2 ? m : c, f_add, i, &st), (uint64_t)i + 1);
    CHECK_EQ(st, VEO_COMMAND_OK);
  }
  for (int i = 0; i < 200 && veo_get_context_state(m) != VEO_STATE_EXIT; i++) usleep(5000);
  CHECK_EQ(veo_get_context_state(m), VEO_STATE_EXIT);
  call(c, f_add, 4, &st);
  CHECK(st == -1 || st == VEO_COMMAND_ERROR);
  uint64_t addr;
  CHECK(veo_alloc_mem(p, &addr, 64) != 0);
  CHECK_EQ(veo_proc_destroy(p), 0);
  CHECK(!pid_alive(pid));
}

/* die after a time, idle or not; a request in flight fails. */
static void test_die_time(int how) {
  uint64_t lib, r;
  struct veo_thr_ctxt *m, *c;
  double t0 = now_s();
  struct veo_proc_handle *p = proc_with("die:after=300ms", how, &lib, &m, &c);
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 5000);
  uint64_t id = veo_call_async(c, sym(p, lib, "sleep_ms"), a);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_ERROR);
  double dt = now_s() - t0;
  CHECK(dt >= 0.29 && dt < 20.0); /* (it dies, and nothing waits for ever) */
  CHECK_EQ(veo_get_context_state(m), VEO_STATE_EXIT);
  CHECK_EQ(veo_proc_destroy(p), 0);
  /* idle: nobody calls, it dies all the same */
  p = proc_with("die:after=200ms", how, &lib, &m, &c);
  for (int i = 0; i < 400 && veo_get_context_state(m) != VEO_STATE_EXIT; i++) usleep(5000);
  CHECK_EQ(veo_get_context_state(m), VEO_STATE_EXIT);
  CHECK_EQ(veo_proc_destroy(p), 0);
  veo_args_free(a);
}

/* nomem: above a size, after a number of bytes, the N-th allocation. */
static void test_nomem(int how) {
  uint64_t lib, addr, r, a1, a2;
  struct veo_thr_ctxt *m, *c;
  struct veo_proc_handle *p = proc_with("nomem:above=1M", how, &lib, &m, &c);
  CHECK_EQ(veo_alloc_mem(p, &a1, 1 << 20), 0);
  CHECK_EQ(veo_alloc_mem(p, &addr, (1 << 20) + 1), -1);
  CHECK_EQ(addr, 0);
  CHECK(strstr(veo_emu_last_error(), "injected fault 'nomem:above=1M'") != NULL);
  uint64_t id = veo_alloc_mem_async(c, 2 << 20);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK); /* as a VE's failed malloc */
  CHECK_EQ(r, 0);
  void *h = NULL;
  CHECK(veo_alloc_hmem(p, &h, 4 << 20) != 0);
  CHECK_EQ(veo_get_context_state(m), VEO_STATE_RUNNING); /* the proc lives */
  CHECK_EQ(veo_free_mem(p, a1), 0);
  CHECK_EQ(veo_proc_destroy(p), 0);

  p = proc_with("nomem:after=1M", how, &lib, &m, &c);
  for (int i = 0; i < 4; i++) CHECK_EQ(veo_alloc_mem(p, &a1, 256 << 10), 0);
  CHECK_EQ(veo_alloc_mem(p, &a2, 1), -1); /* 1 MiB allocated: no more */
  id = veo_alloc_mem_async(c, 64);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(r, 0);
  CHECK_EQ(veo_proc_destroy(p), 0);

  /* the 2nd allocation on context 1 only */
  p = proc_with("nomem:ctx=1,call=2", how, &lib, &m, &c);
  for (int i = 0; i < 3; i++) CHECK_EQ(veo_alloc_mem(p, &a1, 64), 0); /* main context */
  id = veo_alloc_mem_async(c, 64);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK(r != 0);
  id = veo_alloc_mem_async(c, 64);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(r, 0);
  id = veo_alloc_mem_async(c, 64);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK(r != 0);
  const char *list = veo_emu_faults(p);
  CHECK(list && strstr(list, "nomem:ctx=1,call=2\t(seen 3, fired 1)"));
  CHECK_EQ(veo_proc_destroy(p), 0);
}

/* Scopes from code: node and proc must match the proc; inject(NULL) arms
 * new procs (on their node only); clear disarms. */
static void test_scopes_and_clear(void) {
  uint64_t lib, lib1;
  int st;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *m = veo_context_open(p);
  uint64_t f_add = sym(p, lib, "add");
  CHECK_EQ(veo_emu_inject(p, "crash:node=1"), -1);
  CHECK(strstr(veo_emu_last_error(), "does not apply to this proc (node 0") != NULL);
  char spec[64];
  snprintf(spec, sizeof(spec), "crash:node=0,proc=%d,sym=add", veo_proc_identifier(p));
  CHECK_EQ(veo_emu_inject(p, spec), 0);
  CHECK_EQ(veo_emu_clear_faults(p), 0);
  CHECK(veo_emu_faults(p) && veo_emu_faults(p)[0] == 0);
  CHECK_EQ(call(m, f_add, 1, &st), 2); /* cleared */
  CHECK_EQ(st, VEO_COMMAND_OK);

  /* for new procs, on node 1 only */
  CHECK_EQ(veo_emu_inject(NULL, "crash:node=1,sym=add,call=1"), 0);
  CHECK(strstr(veo_emu_faults(NULL), "crash:node=1,sym=add,call=1,signal=SIGSEGV\n") != NULL);
  struct veo_proc_handle *p1 = proc_with_kernels(1, &lib1), *p0 = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *m1 = veo_context_open(p1), *m0 = veo_context_open(p0);
  CHECK_EQ(call(m0, sym(p0, lib, "add"), 1, &st), 2);
  CHECK_EQ(st, VEO_COMMAND_OK);
  call(m1, sym(p1, lib1, "add"), 1, &st);
  CHECK_EQ(st, VEO_COMMAND_EXCEPTION);
  CHECK_EQ(veo_emu_clear_faults(NULL), 0);
  CHECK(veo_emu_faults(NULL) && veo_emu_faults(NULL)[0] == 0);
  CHECK_EQ(veo_proc_destroy(p1), 0);
  CHECK_EQ(veo_proc_destroy(p0), 0);
  /* proc= of the environment: the proc with that identifier */
  int next = veo_proc_identifier(p) + 1;
  snprintf(spec, sizeof(spec), "crash:proc=%d", next);
  setenv("VEO_EMU_FAULTS", spec, 1);
  struct veo_proc_handle *q = proc_with_kernels(0, &lib1);
  unsetenv("VEO_EMU_FAULTS");
  CHECK_EQ(veo_proc_identifier(q), next);
  CHECK(strstr(veo_emu_faults(q), spec) != NULL);
  CHECK_EQ(veo_proc_destroy(q), 0);
  CHECK_EQ(veo_emu_faults(p)[0], 0); /* not p */
  CHECK_EQ(veo_proc_destroy(p), 0);
  CHECK(veo_emu_faults(p) == NULL); /* destroyed */
}

/* Wrong specifications: an error that says what is wrong; a wrong
 * VEO_EMU_FAULTS refuses to create procs. */
static void test_errors(void) {
  static const struct {
    const char *spec, *msg;
  } bad[] = {
      {"crsh", "unknown fault 'crsh'"},
      {"crash:sym", "'sym' is not key=value"},
      {"crash:signal=SIGKILL", "signal 'SIGKILL'"},
      {"crash:call=2,rate=0.5", "exclude each other"},
      {"crash:rate=1.5", "bad value '1.5' for rate"},
      {"delay:sym=f", "needs for=DURATION"},
      {"delay:for=200", "for='200' is not a duration"},
      {"die", "needs after=N calls or after=DURATION"},
      {"die:after=2s,sym=f", "no ctx= or sym="},
      {"die:call=3", "use after=N"},
      {"nomem:above=lots", "above='lots' is not a size"},
      {"nomem:sym=f", "sym= does not apply"},
      {"hang:colour=red", "unknown key 'colour'"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    errno = 0;
    CHECK_EQ(veo_emu_inject(NULL, bad[i].spec), -1);
    CHECK_EQ(errno, EINVAL);
    if (!strstr(veo_emu_last_error(), bad[i].msg))
      fprintf(stderr, "'%s': got '%s', want '%s'\n", bad[i].spec, veo_emu_last_error(),
              bad[i].msg);
    CHECK(strstr(veo_emu_last_error(), bad[i].msg) != NULL);
  }
  CHECK_EQ(veo_emu_faults(NULL)[0], 0); /* nothing was armed */
  setenv("VEO_EMU_FAULTS", "crash:sym=add; hang:call=zero", 1);
  CHECK(veo_emu_faults(NULL) == NULL);
  CHECK(veo_proc_create(0) == NULL);
  CHECK(strstr(veo_emu_last_error(), "VEO_EMU_FAULTS: hang: bad value 'zero' for call") != NULL);
  /* the grammar's forms, written back normalized */
  setenv("VEO_EMU_FAULTS", " crash : sym = ax* , rate = 0.25 ; delay:for=1.5ms ;"
                           "nomem:above=64KiB,after=1G; die:after=90s,node=2;", 1);
  const char *list = veo_emu_faults(NULL);
  REQUIRE(list != NULL);
  CHECK(strcmp(list, "crash:sym=ax*,rate=0.25,seed=0,signal=SIGSEGV\n"
                     "delay:for=1500us\n"
                     "nomem:above=64K,after=1G\n"
                     "die:node=2,after=90s\n") == 0);
  unsetenv("VEO_EMU_FAULTS");
  /* a stale message is never reported by a later call that succeeds */
  CHECK_EQ(veo_emu_inject(NULL, "crsh"), -1);
  CHECK(veo_emu_last_error()[0] != 0);
  struct veo_args *a = veo_args_alloc();
  CHECK_EQ(veo_args_set_i64(a, 0, 1), 0);
  CHECK_EQ(veo_emu_last_error()[0], 0);
  veo_args_free(a);
}

int main(void) {
  for (int how = ENV; how <= CODE; how++) {
    printf("-- faults from %s\n", HOW[how]);
    fflush(stdout);
    test_crash(how);
    test_rate(how);
    test_hang(how);
    test_delay(how);
    test_die_calls(how);
    test_die_time(how);
    test_nomem(how);
  }
  test_scopes_and_clear();
  test_errors();
  DONE();
}
