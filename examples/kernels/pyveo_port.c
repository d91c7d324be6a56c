/* Kernels of pyveo_port.py (PyVEO's "average" example, and two more). */

double average(double *a, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += a[i];
    return sum / (double)n;
}

/* a *= f, in place in VE memory; returns how many elements it scaled. */
int scale(double *a, int n, double f)
{
    for (int i = 0; i < n; i++)
        a[i] *= f;
    return n;
}

/* Running sum, in place: the buffer goes to the VE stack and comes back. */
void cumsum(double *a, int n)
{
    for (int i = 1; i < n; i++)
        a[i] += a[i - 1];
}
