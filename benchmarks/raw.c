/*
 * raw.c -- the limits aioveo is measured against: the same operations written
 * in plain C against the same libveo, and memcpy.  Run by the development
 * suite (benchmarks/suite.py), one measurement per invocation, result on
 * stdout as one number.
 *
 *   raw KERNEL_LIB latency N        seconds per call, N calls one at a time
 *   raw KERNEL_LIB pipeline K N     seconds per call, K submitted then K waited
 *   raw KERNEL_LIB read SIZE REPS   bytes per second of veo_read_mem
 *   raw KERNEL_LIB write SIZE REPS  bytes per second of veo_write_mem
 *   raw - memcpy SIZE REPS          bytes per second of memcpy
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ve_offload.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void die(const char *what) {
  fprintf(stderr, "raw: %s failed\n", what);
  exit(1);
}

static void *page_buffer(size_t size) {
  void *p = NULL;
  if (posix_memalign(&p, 4096, size ? size : 1)) die("posix_memalign");
  memset(p, 1, size); /* fault the pages in before timing */
  return p;
}

static double bandwidth_memcpy(size_t size, long reps) {
  char *a = page_buffer(size), *b = page_buffer(size);
  memcpy(b, a, size); /* warm */
  double t0 = now();
  for (long r = 0; r < reps; r++) {
    memcpy(b, a, size);
    __asm__ volatile("" ::"r"(b) : "memory"); /* keep every copy */
  }
  double t = now() - t0;
  free(a);
  free(b);
  return (double)size * (double)reps / t;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: raw KERNEL_LIB latency N | pipeline K N | read|write SIZE REPS\n"
                    "       raw - memcpy SIZE REPS\n");
    return 2;
  }
  const char *mode = argv[2];
  if (!strcmp(mode, "memcpy")) {
    printf("%.6e\n", bandwidth_memcpy((size_t)atoll(argv[3]), atol(argv[4])));
    return 0;
  }
  struct veo_proc_handle *p = veo_proc_create(0);
  if (!p) die("veo_proc_create");
  uint64_t lib = veo_load_library(p, argv[1]);
  if (!lib) die("veo_load_library");
  uint64_t nop = veo_get_sym(p, lib, "nop");
  struct veo_thr_ctxt *c = veo_context_open(p);
  struct veo_args *a = veo_args_alloc();
  if (!nop || !c || !a) die("setup");
  uint64_t ret;
  double result = 0;

  if (!strcmp(mode, "latency")) {
    long n = atol(argv[3]);
    for (int w = 0; w < 1000; w++) /* warm-up */
      veo_call_wait_result(c, veo_call_async(c, nop, a), &ret);
    double t0 = now();
    for (long i = 0; i < n; i++)
      if (veo_call_wait_result(c, veo_call_async(c, nop, a), &ret) != VEO_COMMAND_OK) die("call");
    result = (now() - t0) / (double)n;
  } else if (!strcmp(mode, "pipeline")) {
    long k = atol(argv[3]), n = atol(argv[4]);
    uint64_t *ids = malloc((size_t)k * sizeof(uint64_t));
    long done = 0;
    double t0 = now();
    while (done < n) {
      for (long i = 0; i < k; i++) ids[i] = veo_call_async(c, nop, a);
      for (long i = 0; i < k; i++)
        if (veo_call_wait_result(c, ids[i], &ret) != VEO_COMMAND_OK) die("call");
      done += k;
    }
    result = (now() - t0) / (double)done;
    free(ids);
  } else if (!strcmp(mode, "read") || !strcmp(mode, "write")) {
    size_t size = (size_t)atoll(argv[3]);
    long reps = atol(argv[4]);
    uint64_t ve;
    if (veo_alloc_mem(p, &ve, size ? size : 1)) die("veo_alloc_mem");
    char *h = page_buffer(size);
    int rd = !strcmp(mode, "read");
    if (rd ? veo_read_mem(p, h, ve, size) : veo_write_mem(p, ve, h, size)) die(mode);
    double t0 = now();
    for (long r = 0; r < reps; r++)
      if (rd ? veo_read_mem(p, h, ve, size) : veo_write_mem(p, ve, h, size)) die(mode);
    result = (double)size * (double)reps / (now() - t0);
    free(h);
    veo_free_mem(p, ve);
  } else {
    fprintf(stderr, "raw: unknown mode %s\n", mode);
    return 2;
  }
  printf("%.6e\n", result);
  veo_args_free(a);
  veo_context_close(c);
  veo_proc_destroy(p);
  return 0;
}
