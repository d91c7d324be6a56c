/* Kernels shared by the benchmarks (built for the host, run by the emulator). */
#include <unistd.h>

long nop(void) { return 0; }

long sleep_ms(long ms) {
  usleep((useconds_t)ms * 1000);
  return ms;
}

/* About `us` microseconds of real vector work on `n` doubles. */
long axpy(double *y, const double *x, double a, long n) {
  for (long i = 0; i < n; i++) y[i] += a * x[i];
  return n;
}
