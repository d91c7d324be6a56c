/* Kernels for the reliability, soak and security tests (built for the host,
 * run by the emulator's helper process). */
#define _GNU_SOURCE
#include <fenv.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

long rel_nop(void) { return 0; }
long rel_add(long a, long b) { return a + b; }

long rel_sleep_ms(long ms) {
  usleep((useconds_t)ms * 1000);
  return ms;
}

/* ---- faults ---------------------------------------------------------------- */
long rel_segv(void) {
  volatile long *p = (long *)8;
  *p = 1;
  return 0;
}

long rel_abort(void) {
  abort();
  return 0;
}

/* Enables the divide-by-zero trap, then divides by zero: SIGFPE. */
double rel_fpe(double num) {
  feenableexcept(FE_DIVBYZERO);
  volatile double zero = 0.0;
  volatile double r = num / zero;
  return r;
}

/* Integer division by zero traps on x86 without any setup. */
long rel_idiv(long a, long b) { return a / b; }

long rel_never_returns(void) {
  for (;;) pause();
  return 0;
}

/* A kernel busy on the CPU forever (no syscalls to interrupt). */
long rel_spin(void) {
  volatile unsigned long n = 0;
  for (;;) n++;
  return 0;
}

/* ---- routing tags: each proc gets its own tag through a global -------------- */
long rel_proc_tag = 0;

/* tag << 40 | seq: a result that names the proc it ran on. */
long rel_tagged(long seq) { return (rel_proc_tag << 40) | seq; }

/* ---- checksums and fills (mirrored on the host with numpy) ----------------- */
static inline uint64_t splitmix64(uint64_t x) {
  uint64_t z = x;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/* p[i] = splitmix64(seed + (i + 1) * golden) for n 64-bit words. */
long rel_fill(uint64_t *p, long n, uint64_t seed) {
  for (long i = 0; i < n; i++) p[i] = splitmix64(seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ULL);
  return n;
}

/* sum of p[i] ^ (i * golden), mod 2^64: position-sensitive. */
uint64_t rel_checksum(const uint64_t *p, long n) {
  uint64_t s = 0;
  for (long i = 0; i < n; i++) s += p[i] ^ ((uint64_t)i * 0x9E3779B97F4A7C15ULL);
  return s;
}

/* Checksum of a buffer passed on the stack (IN), plus a tag. */
uint64_t rel_stack_checksum(const uint64_t *p, long n, long tag) {
  return rel_checksum(p, n) + (uint64_t)tag;
}

/* ---- argument placement: every C type at once, written back to the host ----- */
struct rel_all {
  int64_t a; uint64_t b; int64_t c; uint64_t d; int64_t e; uint64_t f;
  int64_t g; uint64_t h; float i; float pad; double j; int64_t k; double l;
};

/* 13 arguments of mixed types (past every register slot); copies each into
 * the OUT stack buffer `o` so the host can compare them one by one. */
long rel_echo_all(int8_t a, uint8_t b, int16_t c, uint16_t d, int32_t e, uint32_t f,
                  int64_t g, uint64_t h, float i, double j, long k, double l,
                  struct rel_all *o) {
  o->a = a; o->b = b; o->c = c; o->d = d; o->e = e; o->f = f;
  o->g = g; o->h = h; o->i = i; o->pad = 0; o->j = j; o->k = k; o->l = l;
  return 13;
}
