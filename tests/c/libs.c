/* Libraries and symbols: loading, relative paths, symbols, globals, handle 0
 * with a static helper.  argv[1]: a static helper built with
 * `python -m aioveo config --static-helper-libs` (static_kernels.c). */
#include <limits.h>
#include <sys/stat.h>

#include "check.h"

static void test_load(void) {
  struct veo_proc_handle *p = veo_proc_create(0);
  REQUIRE(p != NULL);
  uint64_t lib = veo_load_library(p, KLIB); /* relative to the host's cwd */
  REQUIRE(lib != 0);
  char abs[PATH_MAX];
  REQUIRE(realpath(KLIB, abs) != NULL);
  uint64_t lib2 = veo_load_library(p, abs);
  CHECK(lib2 == lib); /* dlopen semantics: same handle */

  /* a relative path is the host's: after the host changes directory, a
   * path relative to the new cwd works though the helper's cwd is the old */
  char cwd[PATH_MAX];
  REQUIRE(getcwd(cwd, sizeof(cwd)) != NULL);
  mkdir("subdir", 0755);
  REQUIRE(chdir("subdir") == 0);
  CHECK(veo_load_library(p, "../libtestkernels.so") == lib);
  CHECK(veo_load_library(p, KLIB) == 0); /* no such file here */
  REQUIRE(chdir(cwd) == 0);

  /* missing file, too long a name */
  CHECK(veo_load_library(p, "./no-such-library.so") == 0);
  CHECK(veo_emu_last_error()[0] != 0);
  CHECK(veo_load_library(p, "/no/such/dir/lib.so") == 0);
  CHECK(veo_load_library(p, "libno-such-library.so") == 0);
  char longname[400];
  memset(longname, 'a', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = 0;
  errno = 0;
  CHECK(veo_load_library(p, longname) == 0);
  CHECK_EQ(errno, ENAMETOOLONG);
  /* a file that is not a shared object */
  CHECK(veo_load_library(p, "/etc/passwd") == 0);

  /* symbols */
  uint64_t f = veo_get_sym(p, lib, "add");
  CHECK(f != 0);
  CHECK(veo_get_sym(p, lib, "add") == f); /* cached */
  CHECK(veo_get_sym(p, lib, "no_such_symbol") == 0);
  errno = 0;
  CHECK(veo_get_sym(p, lib, longname) == 0);
  CHECK_EQ(errno, ENAMETOOLONG);
  CHECK(veo_get_sym(p, 0x12345678, "add") == 0); /* not a library handle */
  /* handle 0: the (empty) static table of the bundled helper */
  CHECK(veo_get_sym(p, 0, "add") == 0);
  CHECK(veo_get_sym(p, 0, "sfunc") == 0);

  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 40);
  veo_args_set_i64(a, 1, 2);
  uint64_t r = 0;
  CHECK_EQ(veo_call_sync(p, f, a, &r), 0);
  CHECK_EQ(r, 42);

  /* global variables through their VE address */
  uint64_t g = veo_get_sym(p, lib, "g_counter");
  REQUIRE(g != 0);
  long v = 0;
  CHECK_EQ(veo_read_mem(p, &v, g, sizeof(v)), 0);
  CHECK_EQ(v, 42);
  v = 1234567;
  CHECK_EQ(veo_write_mem(p, g, &v, sizeof(v)), 0);
  veo_args_clear(a);
  CHECK_EQ(veo_call_sync(p, sym(p, lib, "get_counter"), a, &r), 0);
  CHECK_EQ(r, 1234567);
  char text[32] = "";
  uint64_t gt = sym(p, lib, "g_text");
  CHECK_EQ(veo_read_mem(p, text, gt, sizeof(text)), 0);
  CHECK(strcmp(text, "global") == 0);
  /* the same through a context, asynchronously */
  struct veo_thr_ctxt *c = veo_context_open(p);
  REQUIRE(c != NULL);
  long w = -5, back = 0;
  uint64_t id1 = veo_async_write_mem(c, g, &w, sizeof(w));
  uint64_t id2 = veo_call_async(c, sym(p, lib, "get_counter"), a);
  uint64_t id3 = veo_async_read_mem(c, &back, g, sizeof(back));
  CHECK_EQ(veo_call_wait_result(c, id1, &r), VEO_COMMAND_OK);
  CHECK_EQ(veo_call_wait_result(c, id2, &r), VEO_COMMAND_OK);
  CHECK_EQ((long)r, -5);
  CHECK_EQ(veo_call_wait_result(c, id3, &r), VEO_COMMAND_OK);
  CHECK_EQ(back, -5);

  /* unloading: three loads, three unloads, then the handle is unknown */
  CHECK_EQ(veo_unload_library(p, lib), 0);
  CHECK_EQ(veo_unload_library(p, lib), 0);
  CHECK(veo_get_sym(p, lib, "add") != 0); /* still loaded once */
  CHECK_EQ(veo_unload_library(p, lib), 0);
  CHECK(veo_get_sym(p, lib, "add") == 0);
  CHECK(veo_unload_library(p, lib) != 0);
  CHECK(veo_unload_library(p, 0) != 0);
  CHECK(veo_unload_library(p, 0xdead0000) != 0);
  /* and it loads again */
  lib = veo_load_library(p, KLIB);
  CHECK(lib != 0);
  CHECK(veo_get_sym(p, lib, "add") != 0);
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

static void check_static(struct veo_proc_handle *p) {
  uint64_t s = veo_get_sym(p, 0, "sfunc");
  REQUIRE(s != 0);
  CHECK(veo_get_sym(p, 0, "no_such_symbol") == 0);
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 41);
  uint64_t r = 0;
  CHECK_EQ(veo_call_sync(p, s, a, &r), 0);
  CHECK_EQ(r, 42);
  /* by name, through a context */
  struct veo_thr_ctxt *c = veo_context_open(p);
  REQUIRE(c != NULL);
  uint64_t id = veo_call_async_by_name(c, 0, "sfunc", a);
  CHECK(id != VEO_REQUEST_ID_INVALID);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(r, 42);
  /* a loaded library works too, and the static table wins over it */
  uint64_t lib = veo_load_library(p, KLIB);
  REQUIRE(lib != 0);
  uint64_t add = veo_get_sym(p, lib, "add");
  CHECK(add != 0 && veo_get_sym(p, 0, "add") == add);
  veo_args_set_i64(a, 1, 1);
  CHECK_EQ(veo_call_sync(p, add, a, &r), 0);
  CHECK_EQ(r, 41 + 1 + 1000);
  uint64_t nop = veo_get_sym(p, lib, "nop");
  CHECK(nop != 0 && veo_get_sym(p, 0, "nop") == 0);
  veo_args_free(a);
}

static void test_static_helper(const char *helper) {
  struct stat st;
  REQUIRE(stat(helper, &st) == 0);
  struct veo_proc_handle *p = veo_proc_create_static(0, (char *)helper);
  REQUIRE(p != NULL);
  check_static(p);
  CHECK_EQ(veo_proc_destroy(p), 0);
  /* VEORUN_BIN selects it for veo_proc_create */
  char *old = getenv("VEORUN_BIN") ? strdup(getenv("VEORUN_BIN")) : NULL;
  setenv("VEORUN_BIN", helper, 1);
  CHECK(strcmp(veo_emu_helper_path(), helper) == 0);
  p = veo_proc_create(0);
  REQUIRE(p != NULL);
  check_static(p);
  CHECK_EQ(veo_proc_destroy(p), 0);
  if (old) setenv("VEORUN_BIN", old, 1);
  else unsetenv("VEORUN_BIN");
  free(old);
}

int main(int argc, char **argv) {
  REQUIRE(argc > 1);
  test_load();
  test_static_helper(argv[1]);
  DONE();
}
