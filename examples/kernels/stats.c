/* Kernel of server.py: summary statistics of a vector passed on the VE stack. */
#include <math.h>

/* out[0..3] = min, max, mean, standard deviation of x[0..n). */
void stats(const double *x, long n, double *out)
{
    double lo = x[0], hi = x[0], sum = 0.0;
    for (long i = 0; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
        sum += x[i];
    }
    double mean = sum / n, var = 0.0;
    for (long i = 0; i < n; i++)
        var += (x[i] - mean) * (x[i] - mean);
    out[0] = lo;
    out[1] = hi;
    out[2] = mean;
    out[3] = sqrt(var / n);
}
