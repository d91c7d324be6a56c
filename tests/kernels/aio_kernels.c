/* Kernels for the asyncio tests (built for the host, run by the emulator). */
#include <signal.h>
#include <stdint.h>
#include <unistd.h>

long nop(void) { return 0; }
long add(long a, long b) { return a + b; }
long ident(long a) { return a; }

double dsum(const double *x, long n) {
  double s = 0;
  for (long i = 0; i < n; i++) s += x[i];
  return s;
}

long scale(double *x, long n, double f) {
  for (long i = 0; i < n; i++) x[i] *= f;
  return n;
}

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

long crash(void) {
  volatile long *p = 0;
  *p = 1;
  return 0;
}

long spin_forever(void) {
  for (;;) pause();
  return 0;
}
