/* kernels.c: the kernels the documentation's examples call.

   Plain C functions: on a Vector Engine compile them with NEC's compiler,
       ncc -shared -fpic -O2 kernels.c -o libkernels.so
   and on aioveo's emulator with the host's,
       cc -shared -fPIC -O2 kernels.c -o libkernels.so          */
#include <signal.h>
#include <time.h>

long add(long a, long b) { return a + b; }

double dot(double *x, double *y, long n)
{
    double s = 0;
    for (long i = 0; i < n; i++)
        s += x[i] * y[i];
    return s;
}

/* x[i] *= f in place; returns the sum of the scaled values. */
double scale(double *x, long n, double f)
{
    double s = 0;
    for (long i = 0; i < n; i++)
        s += (x[i] *= f);
    return s;
}

/* Sum of n doubles passed by reference (PyVEO's OnStack example). */
double mysum(double *a, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += a[i];
    return s;
}

/* out[i] = i * step, for i < n: an OUT argument. */
void ramp(double *out, int n, double step)
{
    for (int i = 0; i < n; i++)
        out[i] = i * step;
}

/* Sleep for ms milliseconds: a kernel that takes a while. */
long nap(long ms)
{
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&t, 0);
    return ms;
}

/* A kernel that crashes: the VE process dies with it. */
long crash(void)
{
    raise(SIGSEGV);
    return 0;
}

/* A global variable of the VE process (found with get_symbol). */
long counter = 0;

long bump(long by) { return counter += by; }
