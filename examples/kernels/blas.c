/* Level-1 BLAS style kernels of numpy_daxpy.py.  Arrays live in VE memory:
 * the host passes their VE addresses (VEMemPtr) as pointer arguments. */

/* y = a*x + y */
void daxpy(long n, double a, const double *x, double *y)
{
    for (long i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* x . y */
double ddot(long n, const double *x, const double *y)
{
    double s = 0.0;
    for (long i = 0; i < n; i++)
        s += x[i] * y[i];
    return s;
}

/* Sum of x, pairwise (blocks of 8 partial sums) so that it stays close to numpy's. */
double dsum(long n, const double *x)
{
    double p[8] = {0};
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            p[j] += x[i + j];
    double s = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
    for (; i < n; i++)
        s += x[i];
    return s;
}
