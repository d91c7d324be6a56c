/*
 * bench_emulator.c -- the emulator against its targets, in one run.
 *
 *   null call (submit, then wait; one at a time)      median <= 5 us
 *   10,000 calls submitted, then all waited           <= 1 us per call
 *   veo_read_mem / veo_write_mem >= 1 MiB              >= 80% of memcpy
 *   1-byte transfers                                   <= 5 us
 *   idle proc                                          < 1% of a core
 *   host thread in veo_call_wait_result on a 2 s kernel < 5% of a core
 *
 * Variants are interleaved round by round so drift hits all of them alike.
 * Usage: bench_emulator KERNEL_LIB [--quick]
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <ve_offload.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu_self(void) { /* user+system seconds of this process */
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static double cpu_of_pid(pid_t pid) { /* utime+stime of another process, seconds */
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  char *s = strrchr(buf, ')');
  unsigned long ut = 0, st = 0;
  if (s) sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(double), cmp);
  return v[n / 2];
}

#define CHECK(c)                                                                 \
  do {                                                                           \
    if (!(c)) {                                                                  \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #c,          \
              veo_emu_last_error());                                             \
      exit(1);                                                                   \
    }                                                                            \
  } while (0)

static void verdict(const char *what, double value, const char *unit, double target, int le) {
  int ok = le ? value <= target : value >= target;
  printf("%-4s %-52s %10.3f %-6s (target %s %g)\n", ok ? "PASS" : "MISS", what, value, unit,
         le ? "<=" : ">=", target);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s KERNEL_LIB [--quick]\n", argv[0]);
    return 2;
  }
  int quick = argc > 2 && strcmp(argv[2], "--quick") == 0;
  struct veo_proc_handle *p = veo_proc_create(0);
  CHECK(p);
  uint64_t lib = veo_load_library(p, argv[1]);
  CHECK(lib);
  struct veo_thr_ctxt *c = veo_context_open(p);
  CHECK(c);
  uint64_t nop = veo_get_sym(p, lib, "nop"), sleep_ms = veo_get_sym(p, lib, "sleep_ms");
  CHECK(nop && sleep_ms);
  struct veo_args *a = veo_args_alloc();
  uint64_t r;

  /* null call latency: samples of 1000 calls each */
  int rounds = quick ? 20 : 100;
  double lat[100];
  for (int k = 0; k < rounds; k++) {
    double t0 = now();
    for (int i = 0; i < 1000; i++) {
      uint64_t id = veo_call_async(c, nop, a);
      CHECK(veo_call_wait_result(c, id, &r) == VEO_COMMAND_OK);
    }
    lat[k] = (now() - t0) / 1000 * 1e6;
  }
  double lat_med = median(lat, rounds);

  /* 10,000 in flight */
  static uint64_t ids[10000];
  double pipe[20];
  int prounds = quick ? 5 : 20;
  for (int k = 0; k < prounds; k++) {
    double t0 = now();
    for (int i = 0; i < 10000; i++) ids[i] = veo_call_async(c, nop, a);
    for (int i = 0; i < 10000; i++) CHECK(veo_call_wait_result(c, ids[i], &r) == VEO_COMMAND_OK);
    pipe[k] = (now() - t0) / 10000 * 1e6;
  }
  double pipe_med = median(pipe, prounds);

  printf("%-10s %12s %12s %12s %8s %8s\n", "bytes", "write GB/s", "read GB/s", "memcpy GB/s",
         "write%", "read%");
  size_t maxsz = quick ? (64u << 20) : (256u << 20);
  uint64_t ve;
  CHECK(veo_alloc_mem(p, &ve, maxsz) == 0);
  /* page-aligned host buffers, like large numpy arrays */
  char *h1 = aligned_alloc(4096, maxsz), *h2 = aligned_alloc(4096, maxsz);
  memset(h1, 1, maxsz);
  memset(h2, 2, maxsz);
  CHECK(veo_write_mem(p, ve, h1, maxsz) == 0); /* touch every page once */
  double min_ratio_big = 1e9, one_byte_us = 0;
  for (size_t sz = 1; sz <= maxsz; sz *= (sz < 4096 ? 64 : 4)) {
    int reps = (int)((quick ? 64e6 : 256e6) / (double)sz);
    if (reps > 20000) reps = 20000;
    if (reps < 3) reps = 3;
    double w[5], rd[5], m[5];
    for (int k = 0; k < 5; k++) { /* interleaved rounds */
      double t0 = now();
      for (int i = 0; i < reps; i++) CHECK(veo_write_mem(p, ve, h1, sz) == 0);
      w[k] = (double)sz * reps / (now() - t0) / 1e9;
      t0 = now();
      for (int i = 0; i < reps; i++) CHECK(veo_read_mem(p, h2, ve, sz) == 0);
      rd[k] = (double)sz * reps / (now() - t0) / 1e9;
      t0 = now();
      for (int i = 0; i < reps; i++) {
        memcpy(h2, h1, sz);
        __asm__ __volatile__("" ::: "memory");
      }
      m[k] = (double)sz * reps / (now() - t0) / 1e9;
    }
    double wm = median(w, 5), rm = median(rd, 5), mm = median(m, 5);
    printf("%-10zu %12.3f %12.3f %12.3f %7.0f%% %7.0f%%\n", sz, wm, rm, mm, 100 * wm / mm,
           100 * rm / mm);
    if (sz == 1) one_byte_us = 1.0 / (rm * 1e9) * 1e6 > 1.0 / (wm * 1e9) * 1e6
                                   ? 1.0 / (rm * 1e9) * 1e6
                                   : 1.0 / (wm * 1e9) * 1e6;
    if (sz >= (1u << 20)) {
      double ratio = (wm < rm ? wm : rm) / mm;
      if (ratio < min_ratio_big) min_ratio_big = ratio;
    }
  }

  /* idle proc: helper CPU over 2 s with nothing queued */
  pid_t hp = veo_emu_proc_pid(p);
  usleep(200000);
  double t0 = now(), h0 = cpu_of_pid(hp);
  sleep(quick ? 1 : 2);
  double idle = (cpu_of_pid(hp) - h0) / (now() - t0) * 100;

  /* waiting on a 2 s kernel: this process's CPU while in veo_call_wait_result */
  veo_args_set_i64(a, 0, quick ? 1000 : 2000);
  t0 = now();
  double c0 = cpu_self();
  uint64_t id = veo_call_async(c, sleep_ms, a);
  CHECK(veo_call_wait_result(c, id, &r) == VEO_COMMAND_OK);
  double waitcpu = (cpu_self() - c0) / (now() - t0) * 100;

  printf("\n");
  verdict("null call, submit then wait (median)", lat_med, "us", 5, 1);
  verdict("10,000 calls in flight, per call (median)", pipe_med, "us", 1, 1);
  verdict("read/write >= 1 MiB, worst ratio to memcpy", min_ratio_big * 100, "%", 80, 0);
  verdict("1-byte transfer, slower of read/write", one_byte_us, "us", 5, 1);
  verdict("idle proc, helper CPU", idle, "%core", 1, 1);
  verdict("host waiting on a long kernel, CPU", waitcpu, "%core", 5, 1);
  veo_args_free(a);
  veo_free_mem(p, ve);
  veo_proc_destroy(p);
  free(h1);
  free(h2);
  return 0;
}
