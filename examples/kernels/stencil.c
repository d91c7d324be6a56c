/* Kernel of pipeline.py: a compute-heavy filter that takes milliseconds per chunk. */

/* Apply `sweeps` passes of a 3-point smoothing stencil to x[0..n), in place,
 * using tmp[0..n) as scratch.  Costs about n * sweeps multiply-adds. */
void smooth(double *x, double *tmp, long n, long sweeps)
{
    for (long s = 0; s < sweeps; s++) {
        tmp[0] = x[0];
        tmp[n - 1] = x[n - 1];
        for (long i = 1; i < n - 1; i++)
            tmp[i] = 0.25 * x[i - 1] + 0.5 * x[i] + 0.25 * x[i + 1];
        double *t = x; x = tmp; tmp = t;
    }
    if (sweeps % 2)                       /* the result must end up in x */
        for (long i = 0; i < n; i++)
            tmp[i] = x[i];
}
