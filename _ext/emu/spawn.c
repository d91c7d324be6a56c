/*
 * spawn.c -- the helper process of a proc: starting it (vfork/exec) and
 * waiting until it serves, reaping it when it is gone, ending it at
 * veo_proc_destroy, and killing what is left when the host exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "emu_host.h"
#include "emu_sync.h"

static int move_fd_high(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 10); }

/* Close every fd >= lo (async-signal-safe: called between vfork and exec). */
static void close_fds_from(int lo) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, (unsigned)lo, ~0u, 0u) == 0) return;
#endif
  long max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > 65536) max = 65536;
  for (int fd = lo; fd < max; fd++) close(fd);
}

static pid_t spawn_helper(const char *bin, int shm_fd, int heap_fd, int life_fd) {
  /* Put the fds above the target numbers first, so dup2 never meets itself
   * (dup2 onto the same number would keep FD_CLOEXEC). */
  int fds[3] = {move_fd_high(shm_fd), move_fd_high(heap_fd), move_fd_high(life_fd)};
  pid_t pid = -1;
  if (fds[0] >= 0 && fds[1] >= 0 && fds[2] >= 0) {
    char *argv[] = {(char *)bin, NULL};
    pid = vfork();
    if (pid == 0) {
      if (dup2(fds[0], EMU_FD_SHM) < 0 || dup2(fds[1], EMU_FD_HEAP) < 0 ||
          dup2(fds[2], EMU_FD_LIFE) < 0)
        _exit(127);
      /* The helper keeps only stdio and its three fds: an inherited pipe or
       * socket of the host must not stay open in it. */
      close_fds_from(EMU_FD_LIFE + 1);
      signal(SIGINT, SIG_IGN); /* Ctrl-C is for the host; the helper follows it */
      signal(SIGPIPE, SIG_IGN);
      execv(bin, argv);
      _exit(127);
    }
  }
  for (int i = 0; i < 3; i++)
    if (fds[i] >= 0) close(fds[i]);
  return pid;
}

int emu_helper_start(struct veo_proc_handle *p, const char *bin, int life_fd) {
  p->owner = getpid();
  p->pid = spawn_helper(bin, p->shm_fd, p->heap.fd, life_fd);
  close(life_fd);
  if (p->pid <= 0) {
    emu_set_error("veo_proc_create: cannot start the helper: %s", strerror(errno));
    return -1;
  }
  uint64_t deadline = emu_now_ns() + 30ull * 1000000000ull;
  while (!atomic_load(&p->hdr->ready)) {
    int st;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
      p->reaped_child = 1;
      emu_set_error("veo_proc_create: helper '%s' exited at start (status %d)", bin, st);
      return -1;
    }
    if (emu_now_ns() > deadline) {
      emu_set_error("veo_proc_create: helper '%s' did not start in time", bin);
      emu_helper_kill(p);
      return -1;
    }
    emu_futex_wait(&p->hdr->ready, 0, 10000000ull);
  }
  return 0;
}

void emu_helper_kill(struct veo_proc_handle *p) {
  kill(p->pid, SIGKILL);
  waitpid(p->pid, NULL, 0);
  p->reaped_child = 1;
}

/* The helper is gone (normal exit, fault or kill): reap it, fail its work. */
void emu_helper_gone(struct veo_proc_handle *p) {
  int st = 0;
  pthread_mutex_lock(&p->reap_lock);
  if (!p->reaped_child && waitpid(p->pid, &st, 0) == p->pid) {
    p->reaped_child = 1;
    p->exit_status = st;
  }
  pthread_mutex_unlock(&p->reap_lock);
  uint32_t zero = 0;
  atomic_compare_exchange_strong(&p->hdr->dead, &zero, 255u);
  atomic_store(&p->dead, 1);
  for (int i = 0; i < EMU_MAX_CONTEXTS; i++) {
    struct veo_thr_ctxt *c = emu_proc_ctx(p, i);
    if (c) atomic_store(&c->state, VEO_STATE_EXIT);
  }
  emu_wake_all_waiters(p);
}

/* Wait for the helper to end after EXIT was queued on its contexts: the
 * agent thread returns once it is gone.  As AVEO's veo_proc_destroy (which
 * joins each context's progress thread, draining its work), there is no
 * timeout: a kernel that never returns keeps veo_proc_destroy waiting until
 * the VE process is ended from outside (kill(2) of veo_get_pid_from_hmem's
 * pid), which is the way out aioveo takes. */
void emu_helper_end(struct veo_proc_handle *p) {
  pthread_join(p->agent, NULL);
  pthread_mutex_lock(&p->reap_lock);
  if (!p->reaped_child) waitpid(p->pid, NULL, 0);
  p->reaped_child = 1;
  pthread_mutex_unlock(&p->reap_lock);
  atomic_store(&p->dead, 1);
}

/* At unload (process exit) no helper may survive (proc.c's destructor). */
void emu_helper_kill_at_exit(struct veo_proc_handle *p) {
  /* (not in a forked child: the helpers are its parent's) */
  if (!p || p->pid <= 0 || p->owner != getpid()) return;
  pthread_mutex_lock(&p->reap_lock);
  if (!p->reaped_child) kill(p->pid, SIGKILL);
  pthread_mutex_unlock(&p->reap_lock);
}

pid_t emu_proc_pid(struct veo_proc_handle *p) { return p->pid; }
