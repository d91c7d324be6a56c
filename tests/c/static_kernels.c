/* A "static helper": kernels linked into the helper with a symbol table
 * (the emulator's mk_veorun_static), for veo_get_sym(proc, 0, name). */
long sfunc(long x) { return x + 1; }
/* same name as a kernel of libtestkernels.so: the static table wins */
static long static_add(long a, long b) { return a + b + 1000; }
struct {
  const char *name;
  void *addr;
} _veo_static_symtable[] = {{"sfunc", (void *)sfunc}, {"add", (void *)static_add}, {0, 0}};
