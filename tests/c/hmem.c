/* hmem addresses and the hook functions. */
#include <stdarg.h>

#include "check.h"

static void test_hmem(void) {
  struct veo_proc_handle *p0 = veo_proc_create(0), *p1 = veo_proc_create(4);
  REQUIRE(p0 && p1);
  CHECK_EQ(veo_get_max_proc_identifier(), 16);
  void *h = NULL, *h2 = NULL, *g = NULL;
  CHECK_EQ(veo_alloc_hmem(p1, &h, 4096), 0);
  CHECK_EQ(veo_alloc_hmem(p1, &h2, 4096), 0);
  CHECK_EQ(veo_alloc_hmem(p0, &g, 4096), 0);
  CHECK(veo_is_ve_addr(h) && veo_is_ve_addr(g));
  CHECK_EQ(veo_get_proc_identifier_from_hmem(h), veo_proc_identifier(p1));
  CHECK_EQ(veo_get_proc_identifier_from_hmem(g), 0);
  CHECK(veo_get_proc_handle_from_hmem(h) == p1);
  CHECK(veo_get_proc_handle_from_hmem(g) == p0);
  CHECK_EQ(veo_get_venum_from_hmem(h), 4);
  CHECK_EQ(veo_get_pid_from_hmem(h), veo_emu_proc_pid(p1));
  uint64_t raw = (uint64_t)(uintptr_t)veo_get_hmem_addr(h);
  CHECK((raw >> 59) == 0 && raw != 0);
  CHECK(veo_set_proc_identifier((void *)(uintptr_t)raw, 1) == h);
  CHECK(veo_set_proc_identifier(h, 16) == NULL);
  CHECK(veo_set_proc_identifier(h, -1) == NULL);
  /* host pointers */
  int x = 0;
  CHECK(!veo_is_ve_addr(&x));
  CHECK(veo_get_hmem_addr(&x) == (void *)&x);
  CHECK_EQ(veo_get_proc_identifier_from_hmem(&x), -1);
  CHECK(veo_get_proc_handle_from_hmem(&x) == NULL);
  CHECK_EQ(veo_get_venum_from_hmem(&x), -1);
  CHECK_EQ(veo_get_pid_from_hmem(&x), -1);

  /* copies in every direction */
  char src[4096], dst[4096];
  for (int i = 0; i < 4096; i++) src[i] = (char)(i * 13);
  CHECK_EQ(veo_hmemcpy(h, src, sizeof(src)), 0);                /* host -> VE */
  CHECK_EQ(veo_hmemcpy(h2, h, sizeof(src)), 0);                 /* VE -> VE */
  memset(dst, 0, sizeof(dst));
  CHECK_EQ(veo_hmemcpy(dst, h2, sizeof(dst)), 0);               /* VE -> host */
  CHECK(memcmp(src, dst, sizeof(src)) == 0);
  CHECK_EQ(veo_read_mem(p1, dst, raw, 16), 0);
  CHECK(memcmp(src, dst, 16) == 0);
  char hh[8] = "";
  CHECK_EQ(veo_hmemcpy(hh, "host", 5), 0);                      /* host -> host */
  CHECK(strcmp(hh, "host") == 0);
  CHECK_EQ(veo_hmemcpy(g, h, 16), -1);                          /* two procs */
  /* offsets inside an hmem block */
  CHECK_EQ(veo_hmemcpy(dst, (char *)h + 100, 10), 0);
  CHECK(memcmp(dst, src + 100, 10) == 0);

  /* host memory through the same API */
  void *hostm = NULL;
  CHECK_EQ(veo_alloc_hmem(NULL, &hostm, 64), 0);
  CHECK(hostm != NULL && !veo_is_ve_addr(hostm));
  memset(hostm, 1, 64);
  CHECK_EQ(veo_free_hmem(hostm), 0);

  CHECK_EQ(veo_free_hmem(h2), 0);
  CHECK(veo_free_hmem(h2) != 0); /* twice */
  /* a destroyed proc's hmem addresses */
  CHECK_EQ(veo_proc_destroy(p1), 0);
  CHECK(veo_get_proc_handle_from_hmem(h) == NULL);
  CHECK_EQ(veo_get_venum_from_hmem(h), -1);
  CHECK_EQ(veo_get_pid_from_hmem(h), -1);
  CHECK_EQ(veo_hmemcpy(dst, h, 8), -1);
  CHECK_EQ(veo_hmemcpy(h, src, 8), -1);
  CHECK(veo_free_hmem(h) != 0);
  /* an identifier nobody has */
  void *nobody = veo_set_proc_identifier((void *)(uintptr_t)raw, 9);
  CHECK(veo_get_proc_handle_from_hmem(nobody) == NULL);
  CHECK_EQ(veo_hmemcpy(dst, nobody, 8), -1);
  CHECK_EQ(veo_free_hmem(g), 0);
  CHECK_EQ(veo_proc_destroy(p0), 0);
  CHECK_EQ(veo_alloc_hmem(p0, &g, 64), -1); /* destroyed proc */
}

/* ---- hooks ---- */
struct call {
  void *payload, *handle;
  uint64_t a;
  size_t size;
};
static struct call g_calls[64];
static int g_ncalls;

static void alloc_hook(void *payload, ...) {
  va_list ap;
  va_start(ap, payload);
  struct call *c = &g_calls[g_ncalls++ % 64];
  c->payload = payload;
  c->handle = va_arg(ap, void *);
  c->a = va_arg(ap, uint64_t);
  c->size = va_arg(ap, size_t);
  va_end(ap);
}
static void free_hook(void *payload, ...) {
  va_list ap;
  va_start(ap, payload);
  struct call *c = &g_calls[g_ncalls++ % 64];
  c->payload = payload;
  c->handle = va_arg(ap, void *);
  c->a = va_arg(ap, uint64_t);
  c->size = 0;
  va_end(ap);
}

static void *g_hmem_allocs[16];
static size_t g_hmem_sizes[16];
static uint64_t g_hmem_frees[16];
static int g_nha, g_nhf;
static void hmem_alloc_cb(void *h, size_t sz) {
  g_hmem_allocs[g_nha % 16] = h;
  g_hmem_sizes[g_nha++ % 16] = sz;
}
static void hmem_free_cb(uint64_t h) { g_hmem_frees[g_nhf++ % 16] = h; }

static void test_hooks(void) {
  struct veo_proc_handle *p = veo_proc_create(0);
  REQUIRE(p);
  struct veo_thr_ctxt *c = veo_context_open(p);
  REQUIRE(c);
  int payload = 5;
  CHECK(veo_get_hook((void *)veo_alloc_mem) == NULL);
  veo_register_hook((void *)veo_alloc_mem, alloc_hook, &payload);
  veo_register_hook((void *)veo_free_mem, free_hook, &payload);
  veo_register_hook((void *)veo_alloc_mem_async, alloc_hook, &payload);
  veo_register_hook((void *)veo_free_mem_async, free_hook, &payload);
  veo_register_hook((void *)veo_alloc_hmem, alloc_hook, &payload);
  veo_register_hook((void *)veo_free_hmem, free_hook, &payload);
  CHECK(veo_get_hook((void *)veo_alloc_mem) == (void *)alloc_hook);

  uint64_t a = 0, r = 0;
  CHECK_EQ(veo_alloc_mem(p, &a, 1000), 0);
  CHECK_EQ(g_ncalls, 1);
  CHECK(g_calls[0].payload == &payload && g_calls[0].handle == p);
  CHECK(g_calls[0].a == (uint64_t)(uintptr_t)&a); /* a pointer to the address, as AVEO */
  CHECK_EQ(g_calls[0].size, 1000);
  CHECK_EQ(veo_free_mem(p, a), 0);
  CHECK_EQ(g_ncalls, 2);
  CHECK(g_calls[1].handle == p && g_calls[1].a == a);
  /* failures call no hook */
  uint64_t freed = a;
  CHECK(veo_alloc_mem(p, &a, 0) != 0);
  CHECK(veo_free_mem(p, freed) != 0); /* twice */
  CHECK_EQ(g_ncalls, 2);

  /* async: (payload, ctx, addr, size) / (payload, ctx, addr) */
  uint64_t id = veo_alloc_mem_async(c, 2048);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(g_ncalls, 3);
  CHECK(g_calls[2].handle == c && g_calls[2].a == r && g_calls[2].size == 2048);
  id = veo_free_mem_async(c, r);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(g_ncalls, 4);
  CHECK(g_calls[3].handle == c && g_calls[3].a == g_calls[2].a);

  /* hmem: the veo_alloc_mem hook, then the veo_alloc_hmem one */
  void *h = NULL;
  CHECK_EQ(veo_alloc_hmem(p, &h, 512), 0);
  CHECK_EQ(g_ncalls, 6);
  CHECK(g_calls[4].size == 512 && g_calls[5].a == (uint64_t)(uintptr_t)h);
  CHECK_EQ(veo_free_hmem(h), 0);
  CHECK_EQ(g_ncalls, 8);
  CHECK(g_calls[6].a == (uint64_t)(uintptr_t)veo_get_hmem_addr(h));
  CHECK(g_calls[7].a == (uint64_t)(uintptr_t)h);

  /* replace, unregister */
  int payload2 = 6;
  veo_register_hook((void *)veo_alloc_mem, alloc_hook, &payload2);
  CHECK_EQ(veo_alloc_mem(p, &a, 8), 0);
  CHECK(g_calls[8].payload == &payload2);
  veo_unregister_hook((void *)veo_alloc_mem);
  veo_unregister_hook((void *)veo_free_mem);
  veo_unregister_hook((void *)veo_alloc_mem_async);
  veo_unregister_hook((void *)veo_free_mem_async);
  veo_unregister_hook((void *)veo_alloc_hmem);
  veo_unregister_hook((void *)veo_free_hmem);
  CHECK(veo_get_hook((void *)veo_alloc_mem) == NULL);
  int n = g_ncalls;
  CHECK_EQ(veo_free_mem(p, a), 0);
  CHECK_EQ(veo_alloc_mem(p, &a, 8), 0);
  CHECK_EQ(veo_free_mem(p, a), 0);
  CHECK_EQ(g_ncalls, n);

  /* hmem hook functions: allocations reported as hmem addresses */
  veo_register_hmem_hook_functions(hmem_alloc_cb, hmem_free_cb);
  CHECK_EQ(veo_alloc_mem(p, &a, 100), 0);
  CHECK_EQ(g_nha, 1);
  CHECK(g_hmem_allocs[0] == veo_set_proc_identifier((void *)(uintptr_t)a, veo_proc_identifier(p)));
  CHECK_EQ(g_hmem_sizes[0], 100);
  CHECK_EQ(veo_free_mem(p, a), 0);
  CHECK_EQ(g_nhf, 1);
  CHECK(g_hmem_frees[0] == (uint64_t)(uintptr_t)g_hmem_allocs[0]);
  id = veo_alloc_mem_async(c, 300);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(g_nha, 2);
  CHECK(veo_get_hmem_addr(g_hmem_allocs[1]) == (void *)(uintptr_t)r && g_hmem_sizes[1] == 300);
  id = veo_free_mem_async(c, r);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(g_nhf, 2);
  veo_unregister_hmem_hook_functions();
  CHECK_EQ(veo_alloc_mem(p, &a, 100), 0);
  CHECK_EQ(veo_free_mem(p, a), 0);
  CHECK(g_nha == 2 && g_nhf == 2);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

/* hmem addresses hold 4 bits of proc identifier: with more than 16 procs
 * in the table, veo_alloc_hmem refuses. */
static void test_many_procs(void) {
  struct veo_proc_handle *p[17];
  for (int i = 0; i < 17; i++) {
    p[i] = veo_proc_create(i % 8);
    REQUIRE(p[i] != NULL);
  }
  CHECK_EQ(veo_proc_identifier(p[16]), 16);
  void *h = NULL;
  CHECK_EQ(veo_alloc_hmem(p[16], &h, 64), -1);
  CHECK_EQ(veo_alloc_hmem(p[3], &h, 64), -1);
  uint64_t a = 0; /* plain VE memory is fine */
  CHECK_EQ(veo_alloc_mem(p[16], &a, 64), 0);
  for (int i = 0; i < 17; i++) CHECK_EQ(veo_proc_destroy(p[i]), 0);
}

int main(void) {
  test_hmem();
  test_hooks();
  test_many_procs(); /* last: the table keeps its 17 slots (AVEO too) */
  DONE();
}
