/*
 * check.h -- the assertions shared by the emulator's C tests.
 *
 * CHECK(e) reports "file:line: CHECK failed: e" and the emulator's last
 * error, then goes on; REQUIRE(e) does the same and exits.  A program ends
 * with DONE(), which prints "ALL OK" and returns 0 only if no check failed.
 * Kernels are in libtestkernels.so in the current directory (the test
 * driver runs each program from its build directory).
 */
#ifndef AIOVEO_TEST_CHECK_H
#define AIOVEO_TEST_CHECK_H

#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <ve_offload.h>

static int g_failures;

#define CHECK_(kind, e, fatal)                                                          \
  do {                                                                                  \
    if (!(e)) {                                                                         \
      fprintf(stderr, "%s:%d: %s failed: %s  [last error: %s]\n", __FILE__, __LINE__,   \
              kind, #e, veo_emu_last_error());                                          \
      fflush(stderr);                                                                   \
      __atomic_add_fetch(&g_failures, 1, __ATOMIC_RELAXED);                             \
      if (fatal) exit(1);                                                               \
    }                                                                                   \
  } while (0)

#define CHECK(e) CHECK_("CHECK", e, 0)
#define REQUIRE(e) CHECK_("REQUIRE", e, 1)

/* Integer comparison that shows both values. */
#define CHECK_EQ(a, b)                                                                  \
  do {                                                                                  \
    long long va_ = (long long)(a), vb_ = (long long)(b);                               \
    if (va_ != vb_) {                                                                   \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)  [last error: %s]\n", \
              __FILE__, __LINE__, #a, #b, va_, vb_, veo_emu_last_error());              \
      fflush(stderr);                                                                   \
      __atomic_add_fetch(&g_failures, 1, __ATOMIC_RELAXED);                             \
    }                                                                                   \
  } while (0)

#define DONE()                                                                          \
  do {                                                                                  \
    fflush(stdout);                                                                     \
    if (g_failures) {                                                                   \
      fprintf(stderr, "%d check(s) failed\n", g_failures);                              \
      return 1;                                                                         \
    }                                                                                   \
    printf("ALL OK\n");                                                                 \
    return 0;                                                                           \
  } while (0)

#define KLIB "./libtestkernels.so"

static inline double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* 1 if process `pid` exists and is not a zombie. */
static inline int pid_alive(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  char *s = strrchr(buf, ')');
  return s && s[1] == ' ' && s[2] != 'Z' && s[2] != 'X';
}

/* A proc with the test kernels loaded (fatal on failure). */
static inline struct veo_proc_handle *proc_with_kernels(int node, uint64_t *lib) {
  struct veo_proc_handle *p = veo_proc_create(node);
  REQUIRE(p != NULL);
  *lib = veo_load_library(p, KLIB);
  REQUIRE(*lib != 0);
  return p;
}

static inline uint64_t sym(struct veo_proc_handle *p, uint64_t lib, const char *name) {
  uint64_t a = veo_get_sym(p, lib, name);
  if (!a) {
    fprintf(stderr, "symbol %s not found: %s\n", name, veo_emu_last_error());
    exit(1);
  }
  return a;
}

/* Call kernel `addr` on ctx with args, wait, check the status; the result. */
static inline uint64_t call_ok(struct veo_thr_ctxt *c, uint64_t addr, struct veo_args *a,
                               const char *file, int line) {
  uint64_t id = veo_call_async(c, addr, a), r = 0xdeadbeef;
  if (id == VEO_REQUEST_ID_INVALID) {
    fprintf(stderr, "%s:%d: veo_call_async failed: %s\n", file, line, veo_emu_last_error());
    g_failures++;
    return r;
  }
  int st = veo_call_wait_result(c, id, &r);
  if (st != VEO_COMMAND_OK) {
    fprintf(stderr, "%s:%d: call status %d: %s\n", file, line, st, veo_emu_last_error());
    g_failures++;
  }
  return r;
}
#define CALL(c, addr, a) call_ok(c, addr, a, __FILE__, __LINE__)

#endif
