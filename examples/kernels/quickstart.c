/* Kernels of quickstart.py: plain C functions, called from Python by name. */

long add(long a, long b)
{
    return a + b;
}

/* Sum of 1/k^2 for k = 1..n: converges to pi^2/6. */
double basel(long n)
{
    double s = 0.0;
    for (long k = n; k >= 1; k--)      /* smallest terms first: less rounding */
        s += 1.0 / ((double)k * (double)k);
    return s;
}
