/* The timing profile (VEO_EMU_PROFILE): with ve10b, calls, transfers,
 * allocations and frees take what AVEO's published VE10B figures say, each
 * measured as the median of repeats and checked within 25%; a profile file
 * of numbers; a wrong profile refuses to create procs.
 *
 * Usage: test_profile [--timing]   (without --timing, under valgrind or the
 * sanitizers, the figures are printed but not checked). */
#include "check.h"

static int g_timing;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The machine may be too busy for the figures: the emulator needs the host
 * thread and the helper to spin on two cores at once (on one core, each
 * hand-over waits for a spin budget, ~50 us).  Nor can a profile's bandwidth
 * be reached where the host copies 64 MiB slower than that (this VM's
 * memcpy runs at 6-11 GB/s, the VE10B's DMA at 9-10.5).  A figure is
 * measured up to 5 times and passes if one measurement is within 25%
 * (contention only makes it slower); if none is and the plain emulator on
 * the same machine falls short at that moment too, the figure is reported
 * as not checked. */
static struct veo_proc_handle *g_plain;
static struct veo_thr_ctxt *g_plain_ctx;
static uint64_t g_plain_nop;
static int g_unchecked;

static double plain_round_trip(void) {
  static double t[51];
  struct veo_args *a = veo_args_alloc();
  for (int i = 0; i < 51; i++) {
    double t0 = now_s();
    CALL(g_plain_ctx, g_plain_nop, a);
    t[i] = now_s() - t0;
  }
  veo_args_free(a);
  return median(t, 51);
}

/* The same with host work in the queue (the agent's copy): three threads. */
static uint64_t g_plain_addr;
static double plain_async_write(void) {
  static double t[51];
  char byte = 1;
  uint64_t r;
  for (int i = 0; i < 51; i++) {
    double t0 = now_s();
    uint64_t id = veo_async_write_mem(g_plain_ctx, g_plain_addr, &byte, 1);
    CHECK_EQ(veo_call_wait_result(g_plain_ctx, id, &r), VEO_COMMAND_OK);
    t[i] = now_s() - t0;
  }
  return median(t, 51);
}

/* Whether the plain emulator falls short too; each says why. */
static int too_busy(double plain) {
  if (plain <= 5e-6) return 0;
  printf("  (not checked: the machine is too busy, the plain emulator takes %.1f us)\n",
         plain * 1e6);
  return 1;
}
static int busy_round_trip(double target) { (void)target; return too_busy(plain_round_trip()); }
static int busy_async_write(double target) { (void)target; return too_busy(plain_async_write()); }

#define BIG (64u << 20)
static char *BUF;
static uint64_t g_plain_big;
static int short_big_copy(double target, int read) {
  if (!g_plain_big) REQUIRE(veo_alloc_mem(g_plain, &g_plain_big, BIG) == 0);
  double t[5];
  for (int i = 0; i < 5; i++) {
    double t0 = now_s();
    CHECK_EQ(read ? veo_read_mem(g_plain, BUF, g_plain_big, BIG)
                  : veo_write_mem(g_plain, g_plain_big, BUF, BIG), 0);
    t[i] = BIG / (now_s() - t0) / 1e9;
  }
  double plain = median(t, 5);
  if (plain >= 0.75 * target) return 0;
  printf("  (not checked: the plain emulator copies 64 MiB at %.2f GB/s here, below the "
         "bound)\n", plain);
  return 1;
}
static int short_big_write(double target) { return short_big_copy(target, 0); }
static int short_big_read(double target) { return short_big_copy(target, 1); }

static void figure_(const char *what, double (*measure)(void), double target, const char *unit,
                    int (*plain_falls_short)(double target), int higher_is_better) {
  double value = 0, dev = 0;
  for (int attempt = 0; attempt < 5; attempt++) {
    if (attempt) usleep(500000);
    value = measure();
    dev = (value - target) / target;
    if (dev >= -0.25 && dev <= 0.25) break;
  }
  printf("%-34s %10.2f %-5s (profile %8.2f, %+5.1f%%)\n", what, value, unit, target, dev * 100);
  if (!g_timing || (dev >= -0.25 && dev <= 0.25)) return;
  int slower = higher_is_better ? dev < 0 : dev > 0;
  if (slower && plain_falls_short(target)) {
    g_unchecked++;
    return;
  }
  fprintf(stderr, "%s: %.2f %s, more than 25%% from the profile's %.2f\n", what, value, unit,
          target);
  CHECK(dev >= -0.25 && dev <= 0.25);
}

#define figure(what, m, target, unit) figure_(what, m, target, unit, busy_round_trip, 0)
#define figure_agent(what, m, target, unit) figure_(what, m, target, unit, busy_async_write, 0)
#define figure_bw(what, m, target, plain) figure_(what, m, target, "GB/s", plain, 1)

#define REPEATS 301
static struct veo_proc_handle *P;
static struct veo_thr_ctxt *C;
static uint64_t F_NOP, ADDR;
static struct veo_args *A;
static double T[REPEATS];

static double m_round_trip(void) {
  for (int i = 0; i < REPEATS; i++) {
    double t0 = now_s();
    CALL(C, F_NOP, A);
    T[i] = now_s() - t0;
  }
  return median(T, REPEATS) * 1e6;
}

static double m_call_sync(void) {
  uint64_t r;
  for (int i = 0; i < REPEATS; i++) {
    double t0 = now_s();
    CHECK_EQ(veo_call_sync(P, F_NOP, A, &r), 0);
    T[i] = now_s() - t0;
  }
  return median(T, REPEATS) * 1e6;
}

static double m_in_flight(void) {
  static uint64_t ids[500];
  uint64_t r;
  for (int b = 0; b < 7; b++) {
    double t0 = now_s();
    for (int i = 0; i < 500; i++) ids[i] = veo_call_async(C, F_NOP, A);
    CHECK_EQ(veo_call_wait_result(C, ids[499], &r), VEO_COMMAND_OK);
    T[b] = (now_s() - t0) / 500;
    for (int i = 0; i < 499; i++) veo_call_wait_result(C, ids[i], &r);
  }
  return median(T, 7) * 1e6;
}

static double m_write1(void) {
  char byte = 7;
  for (int i = 0; i < REPEATS; i++) {
    double t0 = now_s();
    CHECK_EQ(veo_write_mem(P, ADDR, &byte, 1), 0);
    T[i] = now_s() - t0;
  }
  return median(T, REPEATS) * 1e6;
}

static double m_read1(void) {
  char byte = 0;
  for (int i = 0; i < REPEATS; i++) {
    double t0 = now_s();
    CHECK_EQ(veo_read_mem(P, &byte, ADDR, 1), 0);
    T[i] = now_s() - t0;
  }
  CHECK_EQ(byte, 7);
  return median(T, REPEATS) * 1e6;
}

static double m_async_write1(void) {
  char byte = 7;
  uint64_t r;
  for (int i = 0; i < REPEATS; i++) {
    double t0 = now_s();
    uint64_t id = veo_async_write_mem(C, ADDR, &byte, 1);
    CHECK_EQ(veo_call_wait_result(C, id, &r), VEO_COMMAND_OK);
    T[i] = now_s() - t0;
  }
  return median(T, REPEATS) * 1e6;
}

static double m_write_big(void) {
  for (int i = 0; i < 7; i++) {
    double t0 = now_s();
    CHECK_EQ(veo_write_mem(P, ADDR, BUF, BIG), 0);
    T[i] = BIG / (now_s() - t0) / 1e9;
  }
  return median(T, 7);
}

static double m_read_big(void) {
  for (int i = 0; i < 7; i++) {
    double t0 = now_s();
    CHECK_EQ(veo_read_mem(P, BUF, ADDR, BIG), 0);
    T[i] = BIG / (now_s() - t0) / 1e9;
  }
  CHECK(BUF[0] == 0x3c && BUF[BIG - 1] == 0x3c);
  return median(T, 7);
}

static double m_async_read_big(void) {
  uint64_t r;
  for (int i = 0; i < 5; i++) {
    double t0 = now_s();
    uint64_t id = veo_async_read_mem(C, BUF, ADDR, BIG);
    CHECK_EQ(veo_call_wait_result(C, id, &r), VEO_COMMAND_OK);
    T[i] = BIG / (now_s() - t0) / 1e9;
  }
  return median(T, 5);
}

static double m_alloc_free(void) {
  uint64_t a;
  for (int i = 0; i < REPEATS; i++) {
    double t0 = now_s();
    CHECK_EQ(veo_alloc_mem(P, &a, 4096), 0);
    CHECK_EQ(veo_free_mem(P, a), 0);
    T[i] = now_s() - t0;
  }
  return median(T, REPEATS) * 1e6;
}

static double m_async_alloc_free(void) {
  uint64_t a, r;
  for (int i = 0; i < REPEATS; i++) {
    double t0 = now_s();
    uint64_t id = veo_alloc_mem_async(C, 4096);
    CHECK_EQ(veo_call_wait_result(C, id, &a), VEO_COMMAND_OK);
    id = veo_free_mem_async(C, a);
    CHECK_EQ(veo_call_wait_result(C, id, &r), VEO_COMMAND_OK);
    T[i] = now_s() - t0;
  }
  return median(T, REPEATS) * 1e6;
}

static void test_ve10b(void) {
  uint64_t lib, plib;
  unsetenv("VEO_EMU_PROFILE");
  g_plain = proc_with_kernels(0, &plib);
  g_plain_ctx = veo_context_open(g_plain);
  g_plain_nop = sym(g_plain, plib, "nop");
  REQUIRE(veo_alloc_mem(g_plain, &g_plain_addr, 64) == 0);
  setenv("VEO_EMU_PROFILE", "ve10b", 1);
  const char *desc = veo_emu_profile();
  REQUIRE(desc != NULL);
  CHECK(strncmp(desc, "ve10b:", 6) == 0);
  P = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *m = veo_context_open(P);
  C = veo_context_open(P);
  REQUIRE(m && C);
  F_NOP = sym(P, lib, "nop");
  A = veo_args_alloc();
  for (int i = 0; i < 200; i++) CALL(C, F_NOP, A); /* warm up */

  figure("call_async + wait, one at a time", m_round_trip, 10.0, "us");
  figure("veo_call_sync", m_call_sync, 6.7, "us");
  figure("calls in flight, per call", m_in_flight, 5.6, "us");
  REQUIRE(veo_alloc_mem(P, &ADDR, BIG) == 0);
  figure("veo_write_mem, 1 byte", m_write1, 11.9, "us");
  figure("veo_read_mem, 1 byte", m_read1, 12.9, "us");
  figure_agent("veo_async_write_mem + wait, 1 byte", m_async_write1, 11.9, "us");
  BUF = malloc(BIG);
  REQUIRE(BUF != NULL);
  memset(BUF, 0x3c, BIG);
  figure_bw("veo_write_mem, 64 MiB", m_write_big, BIG / (11.9e-6 + BIG / 10.5e9) / 1e9,
            short_big_write);
  figure_bw("veo_read_mem, 64 MiB", m_read_big, BIG / (12.9e-6 + BIG / 9.0e9) / 1e9,
            short_big_read);
  figure_bw("veo_async_read_mem + wait, 64 MiB", m_async_read_big,
            BIG / (12.9e-6 + BIG / 9.0e9) / 1e9, short_big_read);
  free(BUF);
  CHECK_EQ(veo_free_mem(P, ADDR), 0);
  figure("veo_alloc_mem + veo_free_mem", m_alloc_free, 20.0, "us");
  figure_agent("async alloc + free, each awaited", m_async_alloc_free, 20.0, "us");
  veo_args_free(A);
  CHECK_EQ(veo_proc_destroy(P), 0);
}

/* A profile of one's own: a file of numbers (others keep the VE10B's). */
static void test_file(void) {
  const char *path = "./slow.profile";
  FILE *f = fopen(path, "w");
  REQUIRE(f != NULL);
  fprintf(f, "# a slow card\nname slowcard\ncall_us 100\nroundtrip_us 300   # a call alone\n"
             "sync_call_us 150\nalloc_us 250\n");
  fclose(f);
  setenv("VEO_EMU_PROFILE", path, 1);
  const char *desc = veo_emu_profile();
  REQUIRE(desc != NULL);
  CHECK(strstr(desc, "slowcard: call 100.0 us") != NULL);
  CHECK(strstr(desc, "round trip 300.0 us") != NULL);
  CHECK(strstr(desc, "write 11.9 us") != NULL); /* kept from ve10b */
  uint64_t lib, r, addr;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *c = veo_context_open(p);
  uint64_t f_nop = sym(p, lib, "nop");
  struct veo_args *a = veo_args_alloc();
  /* (times long enough for a busy machine: checked against the file's
   * figures with no upper bound but 4x) */
  double t[9];
  for (int i = 0; i < 9; i++) {
    double t0 = now_s();
    CALL(c, f_nop, a);
    t[i] = now_s() - t0;
  }
  double rt = median(t, 9) * 1e6;
  uint64_t ids[20];
  double t0 = now_s();
  for (int i = 0; i < 20; i++) ids[i] = veo_call_async(c, f_nop, a);
  for (int i = 0; i < 20; i++) CHECK_EQ(veo_call_wait_result(c, ids[i], &r), VEO_COMMAND_OK);
  double pipelined = (now_s() - t0) / 20 * 1e6;
  for (int i = 0; i < 9; i++) {
    t0 = now_s();
    CHECK_EQ(veo_alloc_mem(p, &addr, 64), 0);
    t[i] = now_s() - t0;
    CHECK_EQ(veo_free_mem(p, addr), 0);
  }
  double alloc = median(t, 9) * 1e6;
  printf("slowcard: round trip %.1f us (300), in flight %.1f us per call (110), alloc %.1f us "
         "(250)\n", rt, pipelined, alloc);
  if (g_timing) {
    CHECK(rt >= 300 * 0.9 && rt < 300 * 4);
    CHECK(pipelined >= 110 * 0.9 && pipelined < 110 * 4);
    CHECK(alloc >= 250 * 0.9 && alloc < 250 * 4);
  }
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p), 0);

  /* mistakes: no proc, and a message naming the line */
  f = fopen(path, "w");
  fprintf(f, "call_us 5\nroundtrip_usec 10\n");
  fclose(f);
  CHECK(veo_emu_profile() == NULL);
  CHECK(strstr(veo_emu_last_error(), "slow.profile:2: unknown key 'roundtrip_usec'") != NULL);
  CHECK(veo_proc_create(0) == NULL);
  CHECK(strstr(veo_emu_last_error(), "roundtrip_usec") != NULL);
  f = fopen(path, "w");
  fprintf(f, "call_us 20\nroundtrip_us 10\n");
  fclose(f);
  CHECK(veo_proc_create(0) == NULL);
  CHECK(strstr(veo_emu_last_error(), "cannot be smaller") != NULL);
  setenv("VEO_EMU_PROFILE", "ve99", 1);
  CHECK(veo_proc_create(0) == NULL);
  CHECK(strstr(veo_emu_last_error(), "no profile 've99'") != NULL);
  setenv("VEO_EMU_PROFILE", "./missing.profile", 1);
  CHECK(veo_proc_create(0) == NULL);
  unlink(path);
  /* off: the plain emulator */
  setenv("VEO_EMU_PROFILE", "off", 1);
  CHECK(veo_emu_profile() != NULL && veo_emu_profile()[0] == 0);
  unsetenv("VEO_EMU_PROFILE");
}

int main(int argc, char **argv) {
  g_timing = argc > 1 && strcmp(argv[1], "--timing") == 0;
  test_ve10b();
  test_file();
  CHECK_EQ(veo_proc_destroy(g_plain), 0);
  if (g_unchecked) printf("TIMING NOT CHECKED for %d figure(s): the machine was too busy\n",
                          g_unchecked);
  DONE();
}
