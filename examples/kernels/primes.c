/* Kernel of multi_ve.py and server.py: count primes by trial division.
 * Deliberately naive: pure integer work that takes real time. */

static int is_prime(long n)
{
    if (n < 2)
        return 0;
    if (n % 2 == 0)
        return n == 2;
    for (long d = 3; d * d <= n; d += 2)
        if (n % d == 0)
            return 0;
    return 1;
}

/* Number of primes p with lo <= p < hi. */
long count_primes(long lo, long hi)
{
    long count = 0;
    for (long n = lo; n < hi; n++)
        count += is_prime(n);
    return count;
}
