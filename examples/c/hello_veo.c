/* A plain VEO C program: it compiles unchanged against the vendor libveo or
 * against aioveo's emulator:
 *
 *   cc hello_veo.c $(python -m aioveo config --cflags --libs) -o hello_veo
 *   ./hello_veo ./libvector_kernels.so
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ve_offload.h>

#define N 1000000

int main(int argc, char **argv) {
  const char *lib = argc > 1 ? argv[1] : "./libvector_kernels.so";
  struct veo_proc_handle *proc = veo_proc_create(-1);
  if (!proc) {
    fprintf(stderr, "veo_proc_create failed\n");
    return 1;
  }
  uint64_t handle = veo_load_library(proc, lib);
  struct veo_thr_ctxt *ctx = veo_context_open(proc);
  uint64_t f_daxpy = veo_get_sym(proc, handle, "daxpy"), f_dot = veo_get_sym(proc, handle, "dot");
  if (!handle || !ctx || !f_daxpy || !f_dot) {
    fprintf(stderr, "cannot load %s\n", lib);
    return 1;
  }

  double *x = malloc(N * sizeof(double)), *y = malloc(N * sizeof(double));
  for (long i = 0; i < N; i++) {
    x[i] = 1.0;
    y[i] = (double)i;
  }
  uint64_t vx, vy;
  veo_alloc_mem(proc, &vx, N * sizeof(double));
  veo_alloc_mem(proc, &vy, N * sizeof(double));

  /* Queue everything on the context; it runs in order. */
  struct veo_args *args = veo_args_alloc();
  veo_async_write_mem(ctx, vx, x, N * sizeof(double));
  veo_async_write_mem(ctx, vy, y, N * sizeof(double));
  veo_args_set_u64(args, 0, vy);
  veo_args_set_u64(args, 1, vx);
  veo_args_set_double(args, 2, 2.0);
  veo_args_set_i64(args, 3, N);
  veo_call_async(ctx, f_daxpy, args); /* y += 2 x */

  veo_args_clear(args);
  veo_args_set_u64(args, 0, vx);
  veo_args_set_u64(args, 1, vy);
  veo_args_set_i64(args, 2, N);
#ifdef VEO_EMULATOR
  veo_emu_args_set_ret_type(args, VEO_EMU_TYPE_DOUBLE); /* the host returns doubles in xmm0 */
#endif
  uint64_t id = veo_call_async(ctx, f_dot, args); /* sum(x * y) */
  uint64_t bits;
  if (veo_call_wait_result(ctx, id, &bits) != VEO_COMMAND_OK) {
    fprintf(stderr, "dot failed\n");
    return 1;
  }
  double dot;
  memcpy(&dot, &bits, sizeof(dot));
  double expect = (double)N * (N - 1) / 2 + 2.0 * N;
  printf("dot(x, y + 2x) = %.1f (expected %.1f) on %s\n", dot, expect, veo_version_string());

  veo_read_mem(proc, y, vy, N * sizeof(double));
  int ok = dot == expect && y[10] == 12.0;
  veo_args_free(args);
  veo_free_mem(proc, vx);
  veo_free_mem(proc, vy);
  veo_proc_destroy(proc);
  free(x);
  free(y);
  printf("%s\n", ok ? "OK" : "WRONG");
  return ok ? 0 : 1;
}
