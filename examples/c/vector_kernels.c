/* VE kernels for the C example, compiled for the host to run on the emulator
 * (on a real VE: ncc -shared -fpic -o libvector_kernels.so vector_kernels.c). */
double dot(const double *x, const double *y, long n) {
  double s = 0;
  for (long i = 0; i < n; i++) s += x[i] * y[i];
  return s;
}

void daxpy(double *y, const double *x, double a, long n) {
  for (long i = 0; i < n; i++) y[i] += a * x[i];
}
