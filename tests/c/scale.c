/* Scale: 8 procs x 4 contexts, a host thread per context, all calling and
 * transferring at once; every result checked. */
#include <pthread.h>

#include "check.h"

enum { P = 8, C = 4, CALLS = 1500, BATCH = 50 };

struct worker {
  struct veo_proc_handle *p;
  struct veo_thr_ctxt *c;
  uint64_t f_add, f_incr, mem;
  int pi, ci, bad;
};

static void *work(void *arg) {
  struct worker *w = arg;
  struct veo_args *a = veo_args_alloc();
  uint64_t ids[BATCH], r;
  for (int i = 0; i < CALLS; i += BATCH) {
    for (int k = 0; k < BATCH; k++) {
      veo_args_set_i64(a, 0, w->pi * 100000 + w->ci * 10000 + i + k);
      veo_args_set_i64(a, 1, w->ci);
      ids[k] = veo_call_async(w->c, w->f_add, a);
    }
    for (int k = 0; k < BATCH; k++)
      if (veo_call_wait_result(w->c, ids[k], &r) != VEO_COMMAND_OK ||
          r != (uint64_t)(w->pi * 100000 + w->ci * 10000 + i + k + w->ci))
        w->bad++;
  }
  /* transfers and a kernel on this context's own slice of the proc's memory */
  uint64_t v[256], back[256];
  for (int i = 0; i < 256; i++) v[i] = (uint64_t)(w->pi * 1000 + w->ci * 100 + i);
  uint64_t slice = w->mem + (uint64_t)w->ci * sizeof(v);
  for (int round = 0; round < 20; round++) {
    veo_async_write_mem(w->c, slice, v, sizeof(v));
    veo_args_clear(a);
    veo_args_set_u64(a, 0, slice);
    veo_args_set_i64(a, 1, 256);
    veo_call_async(w->c, w->f_incr, a);
    uint64_t id = veo_async_read_mem(w->c, back, slice, sizeof(v));
    if (veo_call_wait_result(w->c, id, &r) != VEO_COMMAND_OK) w->bad++;
    for (int i = 0; i < 256; i++)
      if (back[i] != v[i] + 1) w->bad++;
  }
  veo_context_sync(w->c);
  veo_args_free(a);
  return NULL;
}

int main(void) {
  struct veo_proc_handle *p[P];
  struct worker w[P][C];
  double t0 = now_s();
  for (int i = 0; i < P; i++) {
    uint64_t lib;
    p[i] = proc_with_kernels(i % 8, &lib);
    CHECK_EQ(veo_proc_identifier(p[i]), i);
    uint64_t mem;
    REQUIRE(veo_alloc_mem(p[i], &mem, C * 256 * 8) == 0);
    for (int k = 0; k < C; k++) {
      w[i][k] = (struct worker){p[i], veo_context_open(p[i]), sym(p[i], lib, "add"),
                                sym(p[i], lib, "incr_all"), mem, i, k, 0};
      REQUIRE(w[i][k].c != NULL);
    }
    CHECK_EQ(veo_num_contexts(p[i]), C);
  }
  pthread_t th[P][C];
  for (int i = 0; i < P; i++)
    for (int k = 0; k < C; k++) pthread_create(&th[i][k], NULL, work, &w[i][k]);
  for (int i = 0; i < P; i++)
    for (int k = 0; k < C; k++) {
      pthread_join(th[i][k], NULL);
      CHECK_EQ(w[i][k].bad, 0);
    }
  for (int i = 0; i < P; i++) CHECK_EQ(veo_proc_destroy(p[i]), 0);
  printf("%d procs x %d contexts x %d calls in %.2f s\n", P, C, CALLS, now_s() - t0);
  DONE();
}
