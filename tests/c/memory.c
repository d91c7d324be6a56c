/* Memory: alloc/free/read/write, sync and async, limits, bad addresses,
 * memory a kernel malloc'ed. */
#include "check.h"

static void test_basic(struct veo_proc_handle *p) {
  enum { N = 1 << 20 };
  unsigned char *src = malloc(N), *dst = malloc(N);
  for (int i = 0; i < N; i++) src[i] = (unsigned char)(i * 7 + 3);
  uint64_t a = 0, b = 0;
  CHECK_EQ(veo_alloc_mem(p, &a, N), 0);
  CHECK_EQ(veo_alloc_mem(p, &b, 100), 0);
  CHECK(a != 0 && b != 0);
  CHECK(b >= a + N || a >= b + 100); /* no overlap */
  CHECK_EQ(veo_write_mem(p, a, src, N), 0);
  memset(dst, 0, N);
  CHECK_EQ(veo_read_mem(p, dst, a, N), 0);
  CHECK(memcmp(src, dst, N) == 0);
  /* partial ranges, odd offsets and sizes */
  CHECK_EQ(veo_read_mem(p, dst, a + 12345, 3), 0);
  CHECK(memcmp(dst, src + 12345, 3) == 0);
  CHECK_EQ(veo_write_mem(p, a + 1, "xyz", 3), 0);
  char t[5] = "";
  CHECK_EQ(veo_read_mem(p, t, a, 4), 0);
  CHECK(t[0] == (char)src[0] && memcmp(t + 1, "xyz", 3) == 0);
  /* size 0 transfers do nothing and succeed */
  CHECK_EQ(veo_read_mem(p, dst, a, 0), 0);
  CHECK_EQ(veo_write_mem(p, a, src, 0), 0);
  /* a kernel sees what was written and the host sees what it wrote */
  uint64_t lib = veo_load_library(p, KLIB);
  REQUIRE(lib);
  uint64_t vals[4] = {1, 2, 3, 4};
  CHECK_EQ(veo_write_mem(p, b, vals, sizeof(vals)), 0);
  struct veo_args *args = veo_args_alloc();
  veo_args_set_u64(args, 0, b);
  veo_args_set_i64(args, 1, 4);
  uint64_t r = 0;
  CHECK_EQ(veo_call_sync(p, sym(p, lib, "incr_all"), args, &r), 0);
  CHECK_EQ(veo_read_mem(p, vals, b, sizeof(vals)), 0);
  CHECK(vals[0] == 2 && vals[3] == 5);
  veo_args_free(args);
  CHECK_EQ(veo_free_mem(p, a), 0);
  CHECK_EQ(veo_free_mem(p, b), 0);
  free(src);
  free(dst);
}

static void test_limits(struct veo_proc_handle *p) {
  uint64_t a = 123;
  CHECK(veo_alloc_mem(p, &a, 0) != 0);
  CHECK_EQ(a, 0);
  a = 123;
  CHECK(veo_alloc_mem(p, &a, veo_emu_node_memory() + 1) != 0);
  CHECK_EQ(a, 0);
  CHECK(veo_alloc_mem(p, &a, (size_t)-1) != 0);
  /* still usable */
  CHECK_EQ(veo_alloc_mem(p, &a, 64), 0);
  CHECK(a != 0);
  /* double free, free of a non-allocated heap address */
  CHECK_EQ(veo_free_mem(p, a), 0);
  CHECK(veo_free_mem(p, a) != 0);
  CHECK_EQ(veo_alloc_mem(p, &a, 4096), 0);
  CHECK(veo_free_mem(p, a + 64) != 0);
  CHECK_EQ(veo_free_mem(p, a), 0);
  CHECK_EQ(veo_free_mem(p, 0), 0); /* free(NULL), as on a VE */
  /* unmapped addresses: errors, the proc survives */
  char buf[16];
  CHECK(veo_read_mem(p, buf, 16, 8) != 0);
  CHECK(veo_write_mem(p, 16, buf, 8) != 0);
  CHECK(veo_read_mem(p, buf, 0xffffffffffff0000ull, 8) != 0);
  CHECK(veo_read_mem(p, buf, (uint64_t)-4, 8) != 0);
  CHECK_EQ(veo_alloc_mem(p, &a, 64), 0);
  CHECK_EQ(veo_write_mem(p, a, "ok", 3), 0);
  CHECK_EQ(veo_read_mem(p, buf, a, 3), 0);
  CHECK(strcmp(buf, "ok") == 0);
  CHECK_EQ(veo_free_mem(p, a), 0);
}

/* A proc with a small node memory: it fills up and is reusable after frees. */
static void test_small_node(void) {
  setenv("VEO_EMU_NODE_MEMORY", "64M", 1);
  struct veo_proc_handle *p = veo_proc_create(1);
  unsetenv("VEO_EMU_NODE_MEMORY");
  REQUIRE(p != NULL);
  uint64_t a = 0, b = 0;
  CHECK_EQ(veo_alloc_mem(p, &a, 48 << 20), 0);
  CHECK(veo_alloc_mem(p, &b, 48 << 20) != 0);
  CHECK_EQ(veo_free_mem(p, a), 0);
  for (int i = 0; i < 50; i++) { /* no leak in the allocator */
    CHECK_EQ(veo_alloc_mem(p, &a, 48 << 20), 0);
    CHECK_EQ(veo_alloc_mem(p, &b, 1000), 0);
    CHECK_EQ(veo_free_mem(p, a), 0);
    CHECK_EQ(veo_free_mem(p, b), 0);
  }
  /* many small blocks fill it exactly and coalesce when freed */
  enum { K = 1024 };
  static uint64_t blk[K];
  for (int i = 0; i < K; i++) CHECK_EQ(veo_alloc_mem(p, &blk[i], 64 << 10), 0);
  CHECK(veo_alloc_mem(p, &a, 64) != 0);
  for (int i = 0; i < K; i += 2) CHECK_EQ(veo_free_mem(p, blk[i]), 0);
  CHECK(veo_alloc_mem(p, &a, 128 << 10) != 0); /* fragmented */
  for (int i = 1; i < K; i += 2) CHECK_EQ(veo_free_mem(p, blk[i]), 0);
  CHECK_EQ(veo_alloc_mem(p, &a, 64 << 20), 0); /* all of it again */
  CHECK_EQ(veo_free_mem(p, a), 0);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

/* Memory a kernel malloc'ed lives outside the emulator's heap. */
static void test_kernel_malloc(struct veo_proc_handle *p) {
  uint64_t lib = veo_load_library(p, KLIB);
  REQUIRE(lib);
  struct veo_args *args = veo_args_alloc();
  veo_args_set_i64(args, 0, 100000);
  veo_args_set_i64(args, 1, 3);
  uint64_t km = 0;
  CHECK_EQ(veo_call_sync(p, sym(p, lib, "kmalloc"), args, &km), 0);
  REQUIRE(km != 0);
  uint64_t *v = malloc(100000 * 8);
  CHECK_EQ(veo_read_mem(p, v, km, 100000 * 8), 0);
  int good = 1;
  for (int i = 0; i < 100000; i++) good &= v[i] == (uint64_t)i * 3;
  CHECK(good);
  uint64_t x = 77;
  CHECK_EQ(veo_write_mem(p, km + 8 * 99999, &x, 8), 0);
  veo_args_clear(args);
  veo_args_set_u64(args, 0, km + 8 * 99999);
  uint64_t r = 0;
  CHECK_EQ(veo_call_sync(p, sym(p, lib, "read_u64"), args, &r), 0);
  CHECK_EQ(r, 77);
  /* async on a context, too */
  struct veo_thr_ctxt *c = veo_context_open(p);
  REQUIRE(c);
  memset(v, 0, 16);
  uint64_t id = veo_async_read_mem(c, v, km + 8, 16);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK(v[0] == 3 && v[1] == 6);
  /* addresses that cannot be malloc blocks are refused; the proc lives */
  CHECK(veo_free_mem(p, 0x1230) != 0);
  CHECK(veo_free_mem(p, km + 8) != 0);
  /* veo_free_mem_async is answered as AVEO's VE answers every free: OK, 0
   * (the emulator reports it on stderr; a VE's free() would usually abort) */
  r = 1;
  uint64_t fid = veo_free_mem_async(c, 0x1230);
  CHECK_EQ(veo_call_wait_result(c, fid, &r), VEO_COMMAND_OK);
  CHECK_EQ(r, 0);
  CHECK_EQ(veo_get_context_state(c), VEO_STATE_RUNNING);
  /* veo_free_mem frees it in the VE process */
  CHECK_EQ(veo_free_mem(p, km), 0);
  free(v);
  veo_args_free(args);
}

static void test_async(struct veo_proc_handle *p) {
  struct veo_thr_ctxt *c = veo_context_open(p);
  REQUIRE(c);
  uint64_t r = 1;
  uint64_t id = veo_alloc_mem_async(c, 4096);
  REQUIRE(id != VEO_REQUEST_ID_INVALID);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  uint64_t a = r;
  CHECK(a != 0);
  char in[4096], out[4096];
  for (int i = 0; i < 4096; i++) in[i] = (char)(i ^ 0x5a);
  uint64_t w = veo_async_write_mem(c, a, in, sizeof(in));
  uint64_t rd = veo_async_read_mem(c, out, a, sizeof(out));
  CHECK(w != VEO_REQUEST_ID_INVALID && rd != VEO_REQUEST_ID_INVALID && rd > w);
  CHECK_EQ(veo_call_wait_result(c, rd, &r), VEO_COMMAND_OK);
  CHECK(memcmp(in, out, sizeof(in)) == 0);
  CHECK_EQ(veo_call_wait_result(c, w, &r), VEO_COMMAND_OK);
  /* size 0 */
  id = veo_async_read_mem(c, out, a, 0);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  id = veo_async_write_mem(c, a, in, 0);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  /* bad addresses: the request fails, the proc lives */
  id = veo_async_read_mem(c, out, 16, 8);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_ERROR);
  id = veo_async_write_mem(c, 16, in, 8);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_get_context_state(c), VEO_STATE_RUNNING);
  /* free; a second free of the same address is answered as AVEO answers
   * every free (OK, 0), and the proc lives */
  id = veo_free_mem_async(c, a);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(r, 0);
  r = 1;
  id = veo_free_mem_async(c, a);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(r, 0);
  CHECK_EQ(veo_get_context_state(c), VEO_STATE_RUNNING);
  /* an allocation that cannot be satisfied: status OK, result 0 */
  id = veo_alloc_mem_async(c, veo_emu_node_memory() + 1);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(r, 0);
  /* 64 MiB round trip, unaligned */
  size_t n = (64u << 20) + 3;
  unsigned char *big = malloc(n), *back = malloc(n);
  for (size_t i = 0; i < n; i++) big[i] = (unsigned char)(i * 31 + (i >> 12));
  CHECK_EQ(veo_alloc_mem(p, &a, n), 0);
  w = veo_async_write_mem(c, a, big, n);
  rd = veo_async_read_mem(c, back, a, n);
  CHECK_EQ(veo_call_wait_result(c, rd, &r), VEO_COMMAND_OK);
  CHECK_EQ(veo_call_wait_result(c, w, &r), VEO_COMMAND_OK);
  CHECK(memcmp(big, back, n) == 0);
  memset(back, 0, n);
  CHECK_EQ(veo_read_mem(p, back, a, n), 0);
  CHECK(memcmp(big, back, n) == 0);
  CHECK_EQ(veo_free_mem(p, a), 0);
  free(big);
  free(back);
  CHECK_EQ(veo_context_close(c), 0);
}

/* veo_emu_node_usage: the procs on a node and the memory they hold. */
static void test_node_usage(struct veo_proc_handle *p) {
  uint64_t used = 1, before = 0, after = 0;
  CHECK_EQ(veo_emu_node_usage(3, &used), 0); /* no proc there */
  CHECK_EQ(used, 0);
  CHECK_EQ(veo_emu_node_usage(0, &before), 1); /* p */
  uint64_t a = 0;
  CHECK_EQ(veo_alloc_mem(p, &a, 3 << 20), 0);
  CHECK_EQ(veo_emu_node_usage(0, &after), 1);
  CHECK_EQ(after, before + (3 << 20));
  struct veo_proc_handle *q = veo_proc_create(0);
  REQUIRE(q != NULL);
  CHECK_EQ(veo_emu_node_usage(0, NULL), 2);
  CHECK_EQ(veo_proc_destroy(q), 0);
  CHECK_EQ(veo_emu_node_usage(0, NULL), 1);
  CHECK_EQ(veo_free_mem(p, a), 0);
  CHECK_EQ(veo_emu_node_usage(0, &after), 1);
  CHECK_EQ(after, before);
  CHECK_EQ(veo_emu_node_usage(veo_emu_num_nodes(), &used), -1);
  CHECK_EQ(veo_emu_node_usage(-1, &used), -1);
  CHECK(strstr(veo_emu_last_error(), "no node") != NULL);
}

int main(void) {
  struct veo_proc_handle *p = veo_proc_create(0);
  REQUIRE(p != NULL);
  test_basic(p);
  test_limits(p);
  test_kernel_malloc(p);
  test_async(p);
  test_node_usage(p);
  test_small_node();
  CHECK_EQ(veo_proc_destroy(p), 0);
  DONE();
}
