/* Kernel stdout and stderr reach the host's (the driver checks the text). */
#include "check.h"

int main(void) {
  uint64_t lib;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *c = veo_context_open(p);
  REQUIRE(c);
  c = veo_context_open(p);
  REQUIRE(c);
  struct veo_args *a = veo_args_alloc();
  char msg[] = "hello from the VE", err[] = "warning from the VE";
  printf("host: before\n");
  fflush(stdout);
  veo_args_set_stack(a, VEO_INTENT_IN, 0, msg, sizeof(msg));
  CALL(c, sym(p, lib, "say"), a);
  printf("host: after\n");
  fflush(stdout);
  veo_args_set_stack(a, VEO_INTENT_IN, 0, err, sizeof(err));
  CALL(c, sym(p, lib, "say_err"), a);
  /* unflushed output is flushed when the proc ends */
  char part[] = "[partial line]";
  veo_args_set_stack(a, VEO_INTENT_IN, 0, part, sizeof(part));
  CALL(c, sym(p, lib, "say_partial"), a);
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p), 0);
  printf("\nhost: end\n");
  DONE();
}
