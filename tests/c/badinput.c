/* Bad input gives error codes, never a crash: NULL and garbage handles,
 * closed contexts, destroyed procs, NULL buffers. */
#include "check.h"

static void test_null(void) {
  uint64_t a = 0, r = 0;
  char buf[8];
  struct veo_args *args = veo_args_alloc();
  errno = 0;
  CHECK(veo_load_library(NULL, KLIB) == 0);
  CHECK_EQ(veo_unload_library(NULL, 1), -1);
  CHECK(veo_get_sym(NULL, 1, "add") == 0);
  CHECK_EQ(veo_alloc_mem(NULL, &a, 8), -1);
  CHECK_EQ(veo_free_mem(NULL, 0x1000), -1);
  CHECK_EQ(veo_read_mem(NULL, buf, 0x1000, 8), -1);
  CHECK_EQ(veo_write_mem(NULL, 0x1000, buf, 8), -1);
  CHECK_EQ(veo_call_sync(NULL, 0x1000, args, &r), -1);
  errno = 0;
  CHECK_EQ(veo_num_contexts(NULL), -1);
  CHECK_EQ(errno, EINVAL);
  CHECK(veo_get_context(NULL, 0) == NULL);
  CHECK(veo_context_open(NULL) == NULL);
  CHECK_EQ(veo_proc_destroy(NULL), -1);
  CHECK_EQ(veo_proc_identifier(NULL), -1);
  CHECK_EQ(veo_emu_proc_pid(NULL), -1);

  CHECK(veo_call_async(NULL, 0x1000, args) == VEO_REQUEST_ID_INVALID);
  CHECK(veo_call_async_by_name(NULL, 1, "add", args) == VEO_REQUEST_ID_INVALID);
  CHECK(veo_call_async_vh(NULL, NULL, NULL) == VEO_REQUEST_ID_INVALID);
  CHECK_EQ(veo_call_peek_result(NULL, 0, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_call_wait_result(NULL, 0, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_get_context_state(NULL), VEO_STATE_UNKNOWN);
  CHECK_EQ(veo_context_close(NULL), -1);
  veo_context_sync(NULL);
  veo_req_block_begin(NULL);
  veo_req_block_end(NULL);
  CHECK(veo_async_read_mem(NULL, buf, 0x1000, 8) == VEO_REQUEST_ID_INVALID);
  CHECK(veo_async_write_mem(NULL, 0x1000, buf, 8) == VEO_REQUEST_ID_INVALID);
  CHECK(veo_alloc_mem_async(NULL, 8) == VEO_REQUEST_ID_INVALID);
  CHECK(veo_free_mem_async(NULL, 0x1000) == VEO_REQUEST_ID_INVALID);

  CHECK_EQ(veo_args_set_i64(NULL, 0, 1), -1);
  CHECK_EQ(veo_args_set_double(NULL, 0, 1), -1);
  CHECK_EQ(veo_args_set_stack(NULL, VEO_INTENT_IN, 0, buf, 8), -1);
  veo_args_clear(NULL);
  veo_args_free(NULL);
  CHECK_EQ(veo_alloc_hmem(NULL, NULL, 8), -1);
  veo_args_free(args);
}

/* Handles that point at memory that is not a handle. */
static void test_garbage(void) {
  static uint64_t junk[4096 / 8];
  memset(junk, 0x5a, sizeof(junk));
  struct veo_proc_handle *gp = (struct veo_proc_handle *)junk;
  struct veo_thr_ctxt *gc = (struct veo_thr_ctxt *)junk;
  struct veo_args *ga = (struct veo_args *)junk;
  uint64_t a, r;
  CHECK(veo_load_library(gp, KLIB) == 0);
  CHECK_EQ(veo_alloc_mem(gp, &a, 8), -1);
  CHECK_EQ(veo_num_contexts(gp), -1);
  CHECK_EQ(veo_proc_destroy(gp), -1);
  CHECK(veo_call_async(gc, 0x1000, NULL) == VEO_REQUEST_ID_INVALID);
  CHECK_EQ(veo_call_wait_result(gc, 0, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_context_close(gc), -1);
  CHECK_EQ(veo_args_set_i64(ga, 0, 1), -1);
  CHECK_EQ(veo_set_thr_ctxt_stacksize((struct veo_thr_ctxt_attr *)junk, 8 << 20), -1);
  CHECK_EQ(veo_free_thr_ctxt_attr((struct veo_thr_ctxt_attr *)junk), -1);
}

static void test_live_proc(void) {
  uint64_t lib, r, a = 0;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  uint64_t f_add = sym(p, lib, "add");
  struct veo_thr_ctxt *c0 = veo_context_open(p), *c1 = veo_context_open(p);
  REQUIRE(c0 && c1);
  struct veo_args *args = veo_args_alloc();
  veo_args_set_i64(args, 0, 1);
  veo_args_set_i64(args, 1, 1);
  /* NULL buffers and names */
  CHECK_EQ(veo_alloc_mem(p, NULL, 8), -1);
  CHECK_EQ(veo_alloc_mem(p, &a, 64), 0);
  CHECK_EQ(veo_read_mem(p, NULL, a, 8), -1);
  CHECK_EQ(veo_write_mem(p, a, NULL, 8), -1);
  CHECK(veo_async_read_mem(c1, NULL, a, 8) == VEO_REQUEST_ID_INVALID);
  CHECK(veo_async_write_mem(c1, a, NULL, 8) == VEO_REQUEST_ID_INVALID);
  CHECK(veo_load_library(p, NULL) == 0);
  CHECK(veo_get_sym(p, lib, NULL) == 0);
  CHECK(veo_call_async(c1, f_add, NULL) == VEO_REQUEST_ID_INVALID);
  CHECK_EQ(veo_call_sync(p, f_add, NULL, &r), -1);
  CHECK_EQ(veo_call_sync(p, f_add, args, NULL), 0); /* result not wanted */
  /* a freed veo_args is refused */
  struct veo_args *dead = veo_args_alloc();
  veo_args_free(dead);
  /* (reading freed memory is the caller's bug; not exercised) */
  /* a closed context: errors until the proc goes */
  uint64_t pending = veo_call_async(c1, f_add, args);
  CHECK_EQ(veo_context_close(c1), 0);
  CHECK_EQ(veo_get_context_state(c1), VEO_STATE_EXIT);
  CHECK(veo_call_async(c1, f_add, args) == VEO_REQUEST_ID_INVALID);
  CHECK(veo_call_async_vh(c1, NULL, NULL) == VEO_REQUEST_ID_INVALID);
  CHECK_EQ(veo_call_peek_result(c1, pending, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_call_wait_result(c1, pending, &r), VEO_COMMAND_ERROR);
  CHECK(veo_async_read_mem(c1, &r, a, 8) == VEO_REQUEST_ID_INVALID);
  CHECK(veo_alloc_mem_async(c1, 8) == VEO_REQUEST_ID_INVALID);
  veo_context_sync(c1);
  veo_req_block_begin(c1);
  veo_req_block_end(c1);
  CHECK_EQ(veo_context_close(c1), 0);
  /* unmatched request block ends are ignored */
  veo_req_block_end(c0);
  veo_req_block_end(c0);
  veo_req_block_begin(c0);
  veo_req_block_end(c0);
  veo_req_block_end(c0);
  /* the rest still works */
  CHECK_EQ(CALL(c0, f_add, args), 2);
  /* a destroyed proc and its contexts */
  CHECK_EQ(veo_proc_destroy(p), 0);
  CHECK_EQ(veo_proc_destroy(p), 0);
  CHECK(veo_load_library(p, KLIB) == 0);
  CHECK(veo_get_sym(p, lib, "add") == 0);
  CHECK_EQ(veo_alloc_mem(p, &a, 8), -1);
  CHECK(veo_free_mem(p, a) != 0);
  CHECK_EQ(veo_read_mem(p, &r, a, 8), -1);
  CHECK_EQ(veo_call_sync(p, f_add, args, &r), -1);
  CHECK_EQ(veo_num_contexts(p), -1);
  CHECK(veo_get_context(p, 0) == NULL);
  CHECK(veo_context_open(p) == NULL);
  CHECK_EQ(veo_proc_identifier(p), -1);
  CHECK_EQ(veo_get_context_state(c0), VEO_STATE_EXIT);
  CHECK_EQ(veo_get_context_state(c1), VEO_STATE_EXIT);
  CHECK(veo_call_async(c0, f_add, args) == VEO_REQUEST_ID_INVALID);
  CHECK_EQ(veo_call_wait_result(c0, 0, &r), VEO_COMMAND_ERROR);
  CHECK_EQ(veo_context_close(c0), 0);
  CHECK_EQ(veo_context_close(c1), 0);
  veo_context_sync(c0);
  veo_args_free(args);
}

/* veo_emu_last_error never reports an earlier call's failure: a call that
 * may fail clears it when it starts; queries that cannot fail keep it. */
static void test_last_error_is_current(void) {
  CHECK(veo_proc_create(99999) == NULL);
  CHECK(strstr(veo_emu_last_error(), "node 99999") != NULL);
  CHECK_EQ(veo_get_context_state(NULL), VEO_STATE_UNKNOWN); /* a query: kept */
  CHECK(veo_is_ve_addr(NULL) == 0);
  CHECK(strstr(veo_emu_last_error(), "node 99999") != NULL);
  uint64_t lib, a = 0;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib); /* succeeds: cleared */
  CHECK_EQ(veo_emu_last_error()[0], 0);
  CHECK(veo_get_sym(p, lib, "no_such_kernel") == 0);
  CHECK(strstr(veo_emu_last_error(), "no_such_kernel") != NULL);
  CHECK_EQ(veo_alloc_mem(p, &a, 64), 0);
  CHECK_EQ(veo_emu_last_error()[0], 0);
  CHECK_EQ(veo_free_mem(p, a + 8), -1);
  CHECK(veo_emu_last_error()[0] != 0);
  struct veo_thr_ctxt *c = veo_context_open(p);
  CHECK_EQ(veo_emu_last_error()[0], 0);
  uint64_t r, id = veo_alloc_mem_async(c, 64);
  CHECK(veo_call_peek_result(c, id + 1000, &r) == VEO_COMMAND_ERROR);
  CHECK(strstr(veo_emu_last_error(), "unknown on this context") != NULL);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(veo_emu_last_error()[0], 0);
  CHECK_EQ(veo_free_mem(p, a), 0);
  CHECK_EQ(veo_free_mem(p, r), 0);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

int main(void) {
  test_last_error_is_current();
  test_null();
  test_garbage();
  test_live_proc();
  DONE();
}
