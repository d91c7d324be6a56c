/* Arguments: every setter with its limits, many arguments, mixed floating
 * point and integers, stack arguments, return types. */
#include <float.h>
#include <limits.h>
#include <math.h>

#include "check.h"

static struct veo_proc_handle *p;
static struct veo_thr_ctxt *c;
static uint64_t lib;

static uint64_t call1(const char *fn, struct veo_args *a) { return CALL(c, sym(p, lib, fn), a); }

static void test_setters(void) {
  struct veo_args *a = veo_args_alloc();
  REQUIRE(a);
#define ONE(setter, fn, val, expect)                    \
  do {                                                  \
    veo_args_clear(a);                                  \
    CHECK_EQ(veo_args_set_##setter(a, 0, val), 0);      \
    CHECK(call1(fn, a) == (uint64_t)(expect));          \
  } while (0)
  ONE(i8, "k_i8", INT8_MIN, (int64_t)INT8_MIN);
  ONE(i8, "k_i8", INT8_MAX, INT8_MAX);
  ONE(i8, "k_i8", -1, (int64_t)-1);
  ONE(u8, "k_u8", UINT8_MAX, 255);
  ONE(u8, "k_u8", 0, 0);
  ONE(i16, "k_i16", INT16_MIN, (int64_t)INT16_MIN);
  ONE(i16, "k_i16", INT16_MAX, INT16_MAX);
  ONE(u16, "k_u16", UINT16_MAX, 65535);
  ONE(i32, "k_i32", INT32_MIN, (int64_t)INT32_MIN);
  ONE(i32, "k_i32", INT32_MAX, INT32_MAX);
  ONE(u32, "k_u32", UINT32_MAX, 4294967295u);
  ONE(i64, "k_i64", INT64_MIN, INT64_MIN);
  ONE(i64, "k_i64", INT64_MAX, INT64_MAX);
  ONE(u64, "k_u64", UINT64_MAX, UINT64_MAX);
  ONE(u64, "k_u64", 0x8000000000000001ull, 0x8000000000000001ull);
  /* floats and doubles arrive bit-exact */
  float fv[] = {1.5f, -0.0f, FLT_MAX, FLT_MIN, INFINITY, 1e-45f};
  for (size_t i = 0; i < sizeof(fv) / sizeof(fv[0]); i++) {
    uint32_t bits;
    memcpy(&bits, &fv[i], 4);
    ONE(float, "k_float_bits", fv[i], bits);
  }
  double dv[] = {3.25, -0.0, DBL_MAX, DBL_MIN, -INFINITY, 4.9e-324};
  for (size_t i = 0; i < sizeof(dv) / sizeof(dv[0]); i++) {
    uint64_t bits;
    memcpy(&bits, &dv[i], 8);
    ONE(double, "k_double_bits", dv[i], bits);
  }
  veo_args_clear(a);
  veo_args_set_double(a, 0, NAN);
  CHECK((call1("k_double_bits", a) & 0x7ff0000000000000ull) == 0x7ff0000000000000ull);
  /* replacing an argument changes its type too */
  veo_args_clear(a);
  veo_args_set_u64(a, 0, 0xffffffffffffff80ull);
  veo_args_set_i8(a, 0, -128);
  CHECK_EQ((int64_t)call1("k_i8", a), -128);
  /* argument numbers outside 0..255 are rejected */
  CHECK_EQ(veo_args_set_i64(a, -1, 1), -1);
  CHECK_EQ(veo_args_set_i64(a, 256, 1), -1);
  CHECK_EQ(veo_args_set_i64(a, 255, 1), 0);
  veo_args_free(a);
#undef ONE
}

static void test_many(void) {
  struct veo_args *a = veo_args_alloc();
  long want = 0;
  for (int i = 0; i < 12; i++) {
    veo_args_set_i64(a, i, 1000 - 37 * i);
    want += (i + 1) * (1000 - 37 * i);
  }
  CHECK_EQ((long)call1("sum12", a), want);

  veo_args_clear(a);
  double dwant = 0;
  for (int i = 0; i < 10; i++) {
    veo_args_set_double(a, i, 0.5 * i - 1);
    dwant += (i + 1) * (0.5 * i - 1);
  }
  CHECK_EQ(veo_emu_args_set_ret_type(a, VEO_EMU_TYPE_DOUBLE), 0);
  uint64_t bits = call1("dsum10", a);
  double d;
  memcpy(&d, &bits, 8);
  CHECK(d == dwant);

  /* 20 arguments: integers of every width mixed with floats and doubles,
   * more of both kinds than there are registers */
  veo_args_clear(a);
  double out[19];
  memset(out, 0xff, sizeof(out));
  CHECK_EQ(veo_args_set_stack(a, VEO_INTENT_OUT, 0, (char *)out, sizeof(out)), 0);
  veo_args_set_i8(a, 1, -7);
  veo_args_set_double(a, 2, 2.5);
  veo_args_set_u16(a, 3, 65535);
  veo_args_set_float(a, 4, 4.25f);
  veo_args_set_i32(a, 5, -123456);
  veo_args_set_double(a, 6, -6.5);
  veo_args_set_u32(a, 7, 4000000000u);
  veo_args_set_float(a, 8, -8.75f);
  veo_args_set_i64(a, 9, -(1ll << 40));
  veo_args_set_double(a, 10, 1e100);
  veo_args_set_u8(a, 11, 200);
  veo_args_set_float(a, 12, 0.125f);
  veo_args_set_i16(a, 13, -32768);
  veo_args_set_double(a, 14, 14.0);
  veo_args_set_u64(a, 15, 1ull << 52);
  veo_args_set_float(a, 16, 16.5f);
  veo_args_set_double(a, 17, -17.25);
  veo_args_set_i64(a, 18, 18);
  veo_args_set_float(a, 19, 19.5f);
  double expect[19] = {-7, 2.5, 65535, 4.25, -123456, -6.5, 4000000000.0, -8.75,
                       -(double)(1ll << 40), 1e100, 200, 0.125, -32768, 14.0,
                       (double)(1ull << 52), 16.5, -17.25, 18, 19.5};
  call1("mixed20", a);
  for (int i = 0; i < 19; i++)
    if (out[i] != expect[i]) {
      fprintf(stderr, "mixed20: argument %d: got %g, expected %g\n", i + 1, out[i], expect[i]);
      CHECK(out[i] == expect[i]);
    }

  /* all 256 arguments */
  veo_args_clear(a);
  want = 0;
  for (int i = 0; i < 256; i++) {
    veo_args_set_i64(a, i, (i * 7919) % 1000 - 500);
    want += (long)(i + 1) * ((i * 7919) % 1000 - 500);
  }
  CHECK_EQ((long)call1("sum256", a), want);

  /* a hole (argument 1 never set) is refused */
  veo_args_clear(a);
  veo_args_set_i64(a, 0, 1);
  veo_args_set_i64(a, 2, 2);
  CHECK(veo_call_async(c, sym(p, lib, "add"), a) == VEO_REQUEST_ID_INVALID);
  veo_args_set_i64(a, 1, 5); /* filled: fine (add uses the first two) */
  CHECK_EQ(call1("add", a), 6);
  /* arguments are reusable and survive being freed right after a call */
  veo_args_clear(a);
  veo_args_set_i64(a, 0, 20);
  veo_args_set_i64(a, 1, 22);
  uint64_t ids[50], r;
  for (int i = 0; i < 50; i++) ids[i] = veo_call_async(c, sym(p, lib, "add"), a);
  veo_args_free(a);
  for (int i = 0; i < 50; i++) {
    CHECK_EQ(veo_call_wait_result(c, ids[i], &r), VEO_COMMAND_OK);
    CHECK_EQ(r, 42);
  }
}

static void test_stack(void) {
  struct veo_args *a = veo_args_alloc();
  /* IN string */
  char s[] = "hello, VE";
  veo_args_set_stack(a, VEO_INTENT_IN, 0, s, sizeof(s));
  CHECK_EQ(call1("k_strlen", a), 9);
  /* INOUT string: modified in place */
  veo_args_clear(a);
  veo_args_set_stack(a, VEO_INTENT_INOUT, 0, s, sizeof(s));
  CHECK_EQ(call1("k_upcase", a), 9);
  CHECK(strcmp(s, "HELLO, VE") == 0);
  /* IN is not copied back */
  char s2[] = "lower";
  veo_args_clear(a);
  veo_args_set_stack(a, VEO_INTENT_IN, 0, s2, sizeof(s2));
  CHECK_EQ(call1("k_upcase", a), 5);
  CHECK(strcmp(s2, "lower") == 0);
  /* OUT array: arrives zeroed, comes back filled */
  int arr[1000];
  memset(arr, 0x7f, sizeof(arr));
  veo_args_clear(a);
  veo_args_set_stack(a, VEO_INTENT_OUT, 0, (char *)arr, sizeof(arr));
  veo_args_set_i64(a, 1, sizeof(arr));
  CHECK_EQ(call1("k_out_was_zero", a), 1);
  veo_args_clear(a);
  veo_args_set_stack(a, VEO_INTENT_OUT, 0, (char *)arr, sizeof(arr));
  veo_args_set_i64(a, 1, 1000);
  veo_args_set_i32(a, 2, -500);
  CHECK_EQ(call1("k_fill", a), 1000);
  int good = 1;
  for (int i = 0; i < 1000; i++) good &= arr[i] == i - 500;
  CHECK(good);
  /* IN array */
  veo_args_clear(a);
  veo_args_set_stack(a, VEO_INTENT_IN, 0, (char *)arr, sizeof(arr));
  veo_args_set_i64(a, 1, 1000);
  CHECK_EQ((long)call1("k_sum_ints", a), -500); /* sum of i - 500, i < 1000 */
  /* structs */
  struct pt {
    int x;
    double y;
    char tag[8];
  } pt = {20, 1.5, "orig"};
  veo_args_clear(a);
  veo_args_set_stack(a, VEO_INTENT_IN, 0, (char *)&pt, sizeof(pt));
  CHECK_EQ(veo_emu_args_set_ret_type(a, VEO_EMU_TYPE_DOUBLE), 0);
  uint64_t bits = call1("k_struct_in", a);
  double d;
  memcpy(&d, &bits, 8);
  CHECK(d == 21.5);
  veo_args_clear(a);
  veo_args_set_stack(a, VEO_INTENT_INOUT, 0, (char *)&pt, sizeof(pt));
  CHECK_EQ(call1("k_struct_inout", a), 40);
  CHECK(pt.x == 40 && pt.y == 2.0 && strcmp(pt.tag, "changed") == 0);
  /* stack arguments among scalars, one of them past the 8 register slots */
  char in[] = "four", in9[] = "nine-long", io[] = "io";
  int out2[2] = {-1, -1};
  veo_args_clear(a);
  veo_args_set_i64(a, 0, 1);
  veo_args_set_stack(a, VEO_INTENT_IN, 1, in, sizeof(in));
  veo_args_set_stack(a, VEO_INTENT_OUT, 2, (char *)out2, sizeof(out2));
  veo_args_set_i64(a, 3, 2);
  veo_args_set_stack(a, VEO_INTENT_INOUT, 4, io, sizeof(io));
  for (int i = 5; i < 9; i++) veo_args_set_i64(a, i, 10 * i);
  veo_args_set_stack(a, VEO_INTENT_IN, 9, in9, sizeof(in9));
  CHECK_EQ(call1("k_stack_mix", a), 1 + 2 + 50 + 60 + 70 + 80);
  CHECK(out2[0] == 4 && out2[1] == 9 && strcmp(io, "Xo") == 0);
  /* replacing a stack argument by a scalar drops it */
  veo_args_clear(a);
  veo_args_set_stack(a, VEO_INTENT_OUT, 0, (char *)out2, sizeof(out2));
  veo_args_set_u64(a, 0, 99);
  CHECK_EQ(call1("k_u64", a), 99);
  /* a large INOUT buffer: 8 MiB of longs incremented */
  size_t n = 1 << 20;
  uint64_t *big = malloc(n * 8);
  for (size_t i = 0; i < n; i++) big[i] = i;
  veo_args_clear(a);
  veo_args_set_stack(a, VEO_INTENT_INOUT, 0, (char *)big, n * 8);
  veo_args_set_i64(a, 1, (long)n);
  CHECK_EQ(call1("incr_all", a), n);
  good = 1;
  for (size_t i = 0; i < n; i++) good &= big[i] == i + 1;
  CHECK(good);
  free(big);
  /* IN data is a snapshot taken at submission */
  char snap[] = "snapshot";
  veo_args_clear(a);
  veo_args_set_i64(a, 0, 50);
  uint64_t idsleep = veo_call_async(c, sym(p, lib, "sleep_ms"), a);
  veo_args_clear(a);
  veo_args_set_stack(a, VEO_INTENT_IN, 0, snap, sizeof(snap));
  uint64_t id = veo_call_async(c, sym(p, lib, "k_strlen"), a);
  snap[2] = 0; /* before the kernel runs */
  uint64_t r;
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  CHECK_EQ(r, 8);
  CHECK_EQ(veo_call_wait_result(c, idsleep, &r), VEO_COMMAND_OK);
  /* OUT data is in place once the request completed, even uncollected */
  int o[4] = {0};
  veo_args_clear(a);
  veo_args_set_stack(a, VEO_INTENT_OUT, 0, (char *)o, sizeof(o));
  veo_args_set_i64(a, 1, 4);
  veo_args_set_i32(a, 2, 10);
  id = veo_call_async(c, sym(p, lib, "k_fill"), a);
  veo_context_sync(c);
  CHECK(o[0] == 10 && o[3] == 13);
  CHECK_EQ(veo_call_wait_result(c, id, &r), VEO_COMMAND_OK);
  /* bad stack arguments */
  CHECK_EQ(veo_args_set_stack(a, (enum veo_args_intent)7, 0, snap, 4), -1);
  CHECK_EQ(veo_args_set_stack(a, VEO_INTENT_IN, 0, NULL, 4), -1);
  CHECK_EQ(veo_args_set_stack(a, VEO_INTENT_IN, 300, snap, 4), -1);
  /* through veo_call_sync (the main context) */
  char s3[] = "sync";
  veo_args_clear(a);
  veo_args_set_stack(a, VEO_INTENT_INOUT, 0, s3, sizeof(s3));
  CHECK_EQ(veo_call_sync(p, sym(p, lib, "k_upcase"), a, &r), 0);
  CHECK(r == 4 && strcmp(s3, "SYNC") == 0);
  veo_args_free(a);
}

static void test_ret_types(void) {
  struct veo_args *a = veo_args_alloc();
  uint64_t r;
  float f;
  double d;
  veo_args_set_float(a, 0, 1.25f);
  CHECK_EQ(veo_emu_args_set_ret_type(a, VEO_EMU_TYPE_FLOAT), 0);
  r = call1("ret_float", a);
  uint32_t hi = (uint32_t)(r >> 32);
  memcpy(&f, &hi, 4);
  CHECK(f == 2.5f && (uint32_t)r == 0); /* like a VE: the float in bits 63:32 */
  veo_args_clear(a);
  veo_args_set_double(a, 0, 10.0);
  CHECK_EQ(veo_emu_args_set_ret_type(a, VEO_EMU_TYPE_DOUBLE), 0);
  r = call1("ret_double", a);
  memcpy(&d, &r, 8);
  CHECK(d == 2.5);
  /* veo_args_clear resets the return type */
  veo_args_clear(a);
  veo_args_set_u64(a, 0, 77);
  CHECK_EQ(call1("k_u64", a), 77);
#define RET(type, fn, expect)                                 \
  do {                                                        \
    veo_args_clear(a);                                        \
    CHECK_EQ(veo_emu_args_set_ret_type(a, VEO_EMU_TYPE_##type), 0); \
    CHECK(call1(fn, a) == (uint64_t)(expect));                \
  } while (0)
  RET(I8, "ret_i8", (int64_t)-5);
  RET(U8, "ret_u8", 250);
  RET(I16, "ret_i16", (int64_t)-300);
  RET(U16, "ret_u16", 65000);
  RET(I32, "ret_i32", (int64_t)-70000);
  RET(U32, "ret_u32", 4000000000u);
#undef RET
  veo_args_clear(a);
  long v = 0;
  veo_args_set_stack(a, VEO_INTENT_OUT, 0, (char *)&v, sizeof(v));
  CHECK_EQ(veo_emu_args_set_ret_type(a, VEO_EMU_TYPE_VOID), 0);
  CHECK_EQ(call1("ret_void", a), 0);
  CHECK_EQ(v, 7);
  errno = 0;
  CHECK_EQ(veo_emu_args_set_ret_type(a, 99), -1);
  CHECK_EQ(errno, EINVAL);
  CHECK_EQ(veo_emu_args_set_ret_type(a, -1), -1);
  CHECK_EQ(veo_emu_args_set_ret_type(NULL, VEO_EMU_TYPE_DOUBLE), -1);
  veo_args_free(a);
}

static void test_hmem_arg(void) {
  void *h = NULL;
  REQUIRE(veo_alloc_hmem(p, &h, 64) == 0);
  uint64_t v = 0x1122334455667788ull;
  CHECK_EQ(veo_hmemcpy(h, &v, 8), 0);
  struct veo_args *a = veo_args_alloc();
  CHECK_EQ(veo_args_set_hmem(a, 0, h), 0);
  CHECK(call1("read_hmem", a) == v);
  /* passed verbatim: flag bits included */
  CHECK(call1("k_u64", a) == (uint64_t)(uintptr_t)h);
  veo_args_free(a);
  CHECK_EQ(veo_free_hmem(h), 0);
}

int main(void) {
  p = proc_with_kernels(0, &lib);
  c = veo_context_open(p);
  REQUIRE(c);
  c = veo_context_open(p); /* a second context, not the main one */
  REQUIRE(c);
  test_setters();
  test_many();
  test_stack();
  test_ret_types();
  test_hmem_arg();
  CHECK_EQ(veo_proc_destroy(p), 0);
  DONE();
}
