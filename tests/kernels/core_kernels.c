/* Typical kernels for the core (PyVEO API) and asyncio tests, built for the host and run
 * by the emulator's helper process. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

long nop(void) { return 0; }
long add(long a, long b) { return a + b; }
long ident(long a) { return a; }

double dsum(const double *x, long n) {
  double s = 0;
  for (long i = 0; i < n; i++) s += x[i];
  return s;
}

float fsum(const float *x, int n) {
  float s = 0;
  for (int i = 0; i < n; i++) s += x[i];
  return s;
}

long scale(double *x, long n, double f) {
  for (long i = 0; i < n; i++) x[i] *= f;
  return n;
}

/* y = a*x + y over VE memory */
void daxpy(long n, double a, const double *x, double *y) {
  for (long i = 0; i < n; i++) y[i] += a * x[i];
}

/* copies src into dst (OUT stack buffer), returns its length */
long strcopy(char *dst, const char *src, long cap) {
  long n = (long)strlen(src);
  if (n >= cap) n = cap - 1;
  memcpy(dst, src, (size_t)n);
  dst[n] = 0;
  return n;
}

struct point { int32_t x, y; double w; };
/* doubles the point in place (INOUT), returns x + y */
long scale_point(struct point *p) {
  p->x *= 2;
  p->y *= 2;
  p->w *= 2;
  return p->x + p->y;
}

/* 12 mixed arguments: beyond the 8 register slots of either ABI */
double many(int8_t a, uint8_t b, int16_t c, uint16_t d, int32_t e, uint32_t f,
            int64_t g, uint64_t h, float i, double j, long k, long l) {
  return a + b + c + d + e + f + (double)g + (double)h + i + j + (double)k + (double)l;
}

/* echo kernels: the round trip of each C type */
int8_t echo_i8(int8_t x) { return x; }
uint8_t echo_u8(uint8_t x) { return x; }
int16_t echo_i16(int16_t x) { return x; }
uint16_t echo_u16(uint16_t x) { return x; }
int32_t echo_i32(int32_t x) { return x; }
uint32_t echo_u32(uint32_t x) { return x; }
int64_t echo_i64(int64_t x) { return x; }
uint64_t echo_u64(uint64_t x) { return x; }
float echo_float(float x) { return x; }
double echo_double(double x) { return x; }
void *echo_ptr(void *x) { return x; }

long counter = 42;              /* a global variable, found with get_symbol */
long get_counter(void) { return counter; }

void *ve_malloc(long n) { return malloc((size_t)n); }
void fill(char *p, long n, int c) { memset(p, c, (size_t)n); }

long sleep_ms(long ms) {
  usleep((useconds_t)ms * 1000);
  return ms;
}

/* Sleeps, then fills an OUT stack buffer: checks buffers outlive a cancel. */
long slow_fill(long ms, long *out, long n) {
  usleep((useconds_t)ms * 1000);
  for (long i = 0; i < n; i++) out[i] = i * 3;
  return n;
}

/* Sleeps, then sums: a slow reader several contexts can run on one array. */
long slow_sum(long ms, const long *x, long n) {
  usleep((useconds_t)ms * 1000);
  long s = 0;
  for (long i = 0; i < n; i++) s += x[i];
  return s;
}

long spin_forever(void) {
  for (;;) pause();
  return 0;
}

long crash(void) {
  volatile long *p = 0;
  *p = 1;
  return 0;
}

long hello(void) {
  printf("hello from the VE\n");
  fflush(stdout);
  return 0;
}
