/*
 * kernels.c -- "VE kernels" of the emulator's C tests, built for the host:
 *   cc -shared -fPIC kernels.c -o libtestkernels.so
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- plain calls ---- */
long nop(void) { return 0; }
long add(long a, long b) { return a + b; }
uint64_t ident(uint64_t x) { return x; }
long sleep_ms(long ms) {
  usleep((useconds_t)ms * 1000);
  return ms;
}
long tid(void) { return (long)syscall(SYS_gettid); }
long pid(void) { return (long)getpid(); }

/* ---- each integer type, returned widened by the kernel itself ---- */
long k_i8(int8_t x) { return x; }
unsigned long k_u8(uint8_t x) { return x; }
long k_i16(int16_t x) { return x; }
unsigned long k_u16(uint16_t x) { return x; }
long k_i32(int32_t x) { return x; }
unsigned long k_u32(uint32_t x) { return x; }
long k_i64(int64_t x) { return x; }
uint64_t k_u64(uint64_t x) { return x; }
/* the float/double arguments, returned as their bits in an integer */
uint64_t k_float_bits(float x) {
  uint32_t b;
  memcpy(&b, &x, 4);
  return b;
}
uint64_t k_double_bits(double x) {
  uint64_t b;
  memcpy(&b, &x, 8);
  return b;
}

/* ---- return types (veo_emu_args_set_ret_type) ---- */
float ret_float(float x) { return x * 2.0f; }
double ret_double(double x) { return x / 4.0; }
int8_t ret_i8(void) { return -5; }
uint8_t ret_u8(void) { return 250; }
int16_t ret_i16(void) { return -300; }
uint16_t ret_u16(void) { return 65000; }
int32_t ret_i32(void) { return -70000; }
uint32_t ret_u32(void) { return 4000000000u; }
void ret_void(long *p) { if (p) *p = 7; }

/* ---- many arguments ---- */
long sum12(long a0, long a1, long a2, long a3, long a4, long a5, long a6, long a7, long a8,
           long a9, long a10, long a11) {
  return a0 + 2 * a1 + 3 * a2 + 4 * a3 + 5 * a4 + 6 * a5 + 7 * a6 + 8 * a7 + 9 * a8 + 10 * a9 +
         11 * a10 + 12 * a11;
}

/* 20 arguments of mixed types: more integers than integer registers and more
 * floating point values than FP registers.  Each is stored in out[]. */
void mixed20(double *out, int8_t a1, double d2, uint16_t a3, float f4, int32_t a5, double d6,
             uint32_t a7, float f8, int64_t a9, double d10, uint8_t a11, float f12, int16_t a13,
             double d14, uint64_t a15, float f16, double d17, long a18, float f19) {
  double v[] = {a1, d2, a3, f4, a5, d6, a7, f8, (double)a9, d10, a11, f12, a13, d14,
                (double)a15, f16, d17, (double)a18, f19};
  memcpy(out, v, sizeof(v));
}

double dsum10(double a, double b, double c, double d, double e, double f, double g, double h,
              double i, double j) {
  return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h + 9 * i + 10 * j;
}

/* 256 arguments, the most the API allows: sum of (i + 1) * arg_i */
#define A8(p) long p##0, long p##1, long p##2, long p##3, long p##4, long p##5, long p##6, long p##7
#define A64(p) A8(p##0), A8(p##1), A8(p##2), A8(p##3), A8(p##4), A8(p##5), A8(p##6), A8(p##7)
#define S8(p, b) \
  ((b) + 1) * p##0 + ((b) + 2) * p##1 + ((b) + 3) * p##2 + ((b) + 4) * p##3 + \
  ((b) + 5) * p##4 + ((b) + 6) * p##5 + ((b) + 7) * p##6 + ((b) + 8) * p##7
#define S64(p, b) \
  S8(p##0, b) + S8(p##1, (b) + 8) + S8(p##2, (b) + 16) + S8(p##3, (b) + 24) + \
  S8(p##4, (b) + 32) + S8(p##5, (b) + 40) + S8(p##6, (b) + 48) + S8(p##7, (b) + 56)
long sum256(A64(a), A64(b), A64(c), A64(d)) {
  return S64(a, 0) + S64(b, 64) + S64(c, 128) + S64(d, 192);
}

/* ---- stack arguments ---- */
long k_strlen(const char *s) { return (long)strlen(s); }
long k_upcase(char *s) { /* INOUT: upper-cases in place, returns the length */
  long n = 0;
  for (; s[n]; n++)
    if (s[n] >= 'a' && s[n] <= 'z') s[n] = (char)(s[n] - 32);
  return n;
}
long k_fill(int *out, long n, int base) { /* OUT */
  for (long i = 0; i < n; i++) out[i] = base + (int)i;
  return n;
}
long k_sum_ints(const int *in, long n) {
  long s = 0;
  for (long i = 0; i < n; i++) s += in[i];
  return s;
}
long k_out_was_zero(const unsigned char *out, long n) { /* OUT buffers arrive zeroed */
  for (long i = 0; i < n; i++)
    if (out[i]) return 0;
  return 1;
}
struct pt {
  int x;
  double y;
  char tag[8];
};
double k_struct_in(const struct pt *p) { return p->x + p->y; }
long k_struct_inout(struct pt *p) {
  p->x *= 2;
  p->y += 0.5;
  memcpy(p->tag, "changed", 8);
  return p->x;
}
/* stack args mixed with scalars, past the register arguments */
long k_stack_mix(long a, const char *in, int *out, long b, char *io, long c, long d, long e,
                 long f, const char *in9) {
  out[0] = (int)strlen(in);
  out[1] = (int)strlen(in9);
  io[0] = 'X';
  return a + b + c + d + e + f;
}

/* ---- memory ---- */
uint64_t read_u64(const uint64_t *p) { return *p; }
void write_u64(uint64_t *p, uint64_t v) { *p = v; }
long incr_all(uint64_t *p, long n) {
  for (long i = 0; i < n; i++) p[i]++;
  return n;
}
/* memory the kernel mallocs itself, filled with i*k */
uint64_t kmalloc(long n, long k) {
  uint64_t *p = malloc((size_t)n * 8);
  for (long i = 0; i < n; i++) p[i] = (uint64_t)(i * k);
  return (uint64_t)(uintptr_t)p;
}
void kfree(void *p) { free(p); }
long g_counter = 42;
char g_text[32] = "global";
long get_counter(void) { return g_counter; }
/* an hmem address passed verbatim: the kernel strips bits 63:59 itself */
uint64_t read_hmem(uint64_t a) { return *(uint64_t *)(uintptr_t)(a & ~0xF800000000000000ull); }

/* ---- output ---- */
void say(const char *s) {
  printf("kernel stdout: %s\n", s);
  fflush(stdout);
}
void say_partial(const char *s) { printf("%s", s); } /* no newline, no flush */
void say_err(const char *s) { fprintf(stderr, "kernel stderr: %s\n", s); }

/* ---- faults ---- */
volatile uintptr_t bad_address = 8;
long segv(void) { return *(volatile long *)bad_address; }
long fpe(long a, long b) {
  volatile long x = a, y = b;
  return x / y;
}
long do_abort(void) {
  abort();
  return 0;
}
long raise_sig(int sig) {
  raise(sig);
  return 0;
}
long spin(void) {
  for (;;) usleep(1000);
  return 0;
}

/* ---- ordering: an append-only log in VE memory ---- */
long g_log[4096];
long g_log_n;
long log_push(long v) {
  long i = __atomic_fetch_add(&g_log_n, 1, __ATOMIC_SEQ_CST);
  if (i < 4096) g_log[i] = v;
  return i;
}

/* ---- stack use (context stack size) ---- */
long stack_use(long bytes) {
  volatile char buf[bytes];
  for (long i = 0; i < bytes; i += 4096) buf[i] = (char)i;
  buf[bytes - 1] = 1;
  return buf[bytes - 1] + buf[0];
}

long do_exit(int code) {
  fflush(NULL);
  _exit(code);
}
