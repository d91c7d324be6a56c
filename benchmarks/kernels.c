/* Kernels of the development benchmarks, suite.py and run_emulator.py (built for
 * the host, run by the emulator). */
#include <time.h>
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

/* Busy for `us` microseconds of CPU: a kernel that does real work, for the
 * scaling benchmark (sleeping would not compete for the cores). */
long work_us(long us) {
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  volatile double acc = 0;
  for (;;) {
    for (int i = 0; i < 1000; i++) acc += i * 0.5;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 >= us) break;
  }
  return us;
}

/* Faults, ending its VE process: the pool's replacement benchmark. */
long crash(void) {
  volatile long *p = 0;
  *p = 1;
  return 0;
}
