/* Creates a proc, prints its helper's pid and waits to be killed: the
 * driver SIGKILLs this process and checks that the helper goes away. */
#include "check.h"

int main(void) {
  struct veo_proc_handle *p = veo_proc_create(0);
  REQUIRE(p != NULL);
  struct veo_thr_ctxt *c = veo_context_open(p);
  struct veo_thr_ctxt *c2 = veo_context_open(p);
  REQUIRE(c && c2);
  printf("%d\n", (int)veo_emu_proc_pid(p));
  fflush(stdout);
  for (;;) pause();
}
