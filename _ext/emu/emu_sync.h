/*
 * emu_sync.h -- futex and spin helpers shared by libveo.so and the helper.
 * The futex words live in a MAP_SHARED memfd, so no FUTEX_PRIVATE_FLAG.
 */
#ifndef AIOVEO_EMU_SYNC_H
#define AIOVEO_EMU_SYNC_H

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t emu_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void emu_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* One step of a spinning wait: a pause, or (polite, under the timing
 * profile, where waits are microseconds long) the core to whoever needs it,
 * so that a busy host still runs the thread being waited for. */
static inline void emu_spin_step(int polite) {
  if (polite) sched_yield();
  else emu_cpu_relax();
}

/* Return at `deadline` (emu_now_ns time): sleep while it is far, spin the
 * last stretch, so short delays (the timing profile's microseconds) are
 * accurate and long ones cost no CPU.  The spin yields the core while more
 * than a few microseconds are left, so that on a busy host the thread being
 * waited for (sharing it) still runs. */
static inline void emu_delay_until(uint64_t deadline) {
  for (;;) {
    uint64_t now = emu_now_ns();
    if (now >= deadline) return;
    uint64_t left = deadline - now;
    if (left > 300000u) {
      uint64_t nap = left - 150000u;
      struct timespec ts = {(time_t)(nap / 1000000000ull), (long)(nap % 1000000000ull)};
      nanosleep(&ts, NULL);
    } else if (left > 3000u) {
      sched_yield();
    } else {
      emu_cpu_relax();
    }
  }
}

/* Sleep while *(uint32_t *)addr == val, at most timeout_ns (0 = forever). */
static inline void emu_futex_wait(void *addr, uint32_t val, uint64_t timeout_ns) {
  struct timespec ts, *tp = NULL;
  if (timeout_ns) {
    ts.tv_sec = (time_t)(timeout_ns / 1000000000ull);
    ts.tv_nsec = (long)(timeout_ns % 1000000000ull);
    tp = &ts;
  }
  syscall(SYS_futex, addr, FUTEX_WAIT, val, tp, NULL, 0);
}

static inline void emu_futex_wake(void *addr) {
  syscall(SYS_futex, addr, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
}

#endif
