/* Kernel of service.py's fault injection (--fault-injection): it faults, and
 * the VE process running it dies, as a buggy kernel's would. */

long fault(void)
{
    volatile long *p = 0;
    *p = 1;
    return 0;
}
