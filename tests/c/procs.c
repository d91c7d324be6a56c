/* Procs: creation and destruction, identifiers, nodes, helper processes. */
#include <fcntl.h>
#include <sys/select.h>

#include <pthread.h>

#include "check.h"

static int node_of(struct veo_proc_handle *p) {
  void *h = NULL;
  if (veo_alloc_hmem(p, &h, 64) != 0) return -100;
  int n = veo_get_venum_from_hmem(h);
  veo_free_hmem(h);
  return n;
}

static void test_identifiers(void) {
  struct veo_proc_handle *p[4];
  for (int i = 0; i < 3; i++) {
    p[i] = veo_proc_create(0); /* several procs on one node */
    REQUIRE(p[i] != NULL);
    CHECK_EQ(veo_proc_identifier(p[i]), i);
  }
  pid_t pids[3];
  for (int i = 0; i < 3; i++) {
    pids[i] = veo_emu_proc_pid(p[i]);
    CHECK(pids[i] > 0 && pid_alive(pids[i]));
    CHECK_EQ(node_of(p[i]), 0);
  }
  CHECK(pids[0] != pids[1] && pids[1] != pids[2]);

  /* destroy the middle one: the others keep their identifiers, the next proc
   * takes the free slot */
  CHECK_EQ(veo_proc_destroy(p[1]), 0);
  CHECK_EQ(veo_proc_identifier(p[1]), -1);
  CHECK_EQ(veo_emu_proc_pid(p[1]), -1);
  CHECK(!pid_alive(pids[1]));
  CHECK_EQ(veo_proc_identifier(p[0]), 0);
  CHECK_EQ(veo_proc_identifier(p[2]), 2);
  p[3] = veo_proc_create(3);
  REQUIRE(p[3] != NULL);
  CHECK_EQ(veo_proc_identifier(p[3]), 1);
  CHECK_EQ(node_of(p[3]), 3);
  /* destroying twice is harmless */
  CHECK_EQ(veo_proc_destroy(p[1]), 0);
  for (int i = 0; i < 4; i++)
    if (i != 1) CHECK_EQ(veo_proc_destroy(p[i]), 0);
  for (int i = 0; i < 3; i++) CHECK(!pid_alive(pids[i]));
}

static void test_nodes(void) {
  unsetenv("VE_NODE_NUMBER");
  unsetenv("_VENODELIST");
  unsetenv("VEO_EMU_NODES");
  CHECK_EQ(veo_emu_num_nodes(), 8);
  struct veo_proc_handle *p = veo_proc_create(-1); /* the default node: 0 */
  REQUIRE(p != NULL);
  CHECK_EQ(node_of(p), 0);
  CHECK_EQ(veo_proc_destroy(p), 0);

  p = veo_proc_create(7);
  REQUIRE(p != NULL);
  CHECK_EQ(node_of(p), 7);
  CHECK_EQ(veo_proc_destroy(p), 0);

  /* unknown nodes */
  errno = 0;
  CHECK(veo_proc_create(8) == NULL);
  CHECK(veo_emu_last_error()[0] != 0);
  CHECK(veo_proc_create(-2) == NULL);
  CHECK(veo_proc_create(1000000) == NULL);
  CHECK_EQ(veo_get_ve_arch(0), 0);
  CHECK_EQ(veo_get_ve_arch(8), -1);

  setenv("VEO_EMU_NODES", "2", 1);
  CHECK(veo_proc_create(2) == NULL);
  p = veo_proc_create(1);
  CHECK(p != NULL);
  if (p) CHECK_EQ(veo_proc_destroy(p), 0);
  unsetenv("VEO_EMU_NODES");

  /* VE_NODE_NUMBER picks the default node */
  setenv("VE_NODE_NUMBER", "5", 1);
  p = veo_proc_create(-1);
  REQUIRE(p != NULL);
  CHECK_EQ(node_of(p), 5);
  CHECK_EQ(veo_proc_destroy(p), 0);
  p = veo_proc_create(2); /* an explicit node ignores it */
  REQUIRE(p != NULL);
  CHECK_EQ(node_of(p), 2);
  CHECK_EQ(veo_proc_destroy(p), 0);
  setenv("VE_NODE_NUMBER", "9", 1);
  CHECK(veo_proc_create(-1) == NULL);
  setenv("VE_NODE_NUMBER", "zero", 1);
  CHECK(veo_proc_create(-1) == NULL);
  unsetenv("VE_NODE_NUMBER");

  /* _VENODELIST: node arguments are indexes into the scheduler's list */
  setenv("_VENODELIST", "3 6", 1);
  p = veo_proc_create(1);
  REQUIRE(p != NULL);
  CHECK_EQ(node_of(p), 6);
  CHECK_EQ(veo_proc_destroy(p), 0);
  p = veo_proc_create(-1);
  REQUIRE(p != NULL);
  CHECK_EQ(node_of(p), 3);
  CHECK_EQ(veo_proc_destroy(p), 0);
  CHECK(veo_proc_create(2) == NULL);
  setenv("VE_NODE_NUMBER", "6", 1);
  p = veo_proc_create(-1);
  REQUIRE(p != NULL);
  CHECK_EQ(node_of(p), 6);
  CHECK_EQ(veo_proc_destroy(p), 0);
  setenv("VE_NODE_NUMBER", "4", 1); /* not in the list */
  CHECK(veo_proc_create(-1) == NULL);
  unsetenv("VE_NODE_NUMBER");
  unsetenv("_VENODELIST");
}

static void test_helpers(void) {
  const char *helper = veo_emu_helper_path();
  CHECK(helper && access(helper, X_OK) == 0);
  CHECK(veo_proc_create_static(0, "/nonexistent/veorun") == NULL);
  CHECK(veo_proc_create_static(0, NULL) == NULL);
  /* a helper that is not one: exits at once */
  CHECK(veo_proc_create_static(0, "/bin/true") == NULL);
  setenv("VEORUN_BIN", "/nonexistent/veorun", 1);
  CHECK(veo_proc_create(0) == NULL);
  setenv("VEORUN_BIN", helper, 1);
  struct veo_proc_handle *p = veo_proc_create(0);
  CHECK(p != NULL);
  if (p) CHECK_EQ(veo_proc_destroy(p), 0);
  p = veo_proc_create_static(0, (char *)helper);
  CHECK(p != NULL);
  if (p) CHECK_EQ(veo_proc_destroy(p), 0);
}

/* Destroying a proc with open contexts and queued work drains it. */
static void test_destroy_busy(void) {
  uint64_t lib;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  uint64_t f = sym(p, lib, "sleep_ms");
  struct veo_thr_ctxt *c[3];
  for (int i = 0; i < 3; i++) {
    c[i] = veo_context_open(p);
    REQUIRE(c[i] != NULL);
  }
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 30);
  for (int i = 0; i < 3; i++)
    for (int k = 0; k < 2; k++) CHECK(veo_call_async(c[i], f, a) != VEO_REQUEST_ID_INVALID);
  pid_t pid = veo_emu_proc_pid(p);
  double t0 = now_s();
  CHECK_EQ(veo_proc_destroy(p), 0);
  double dt = now_s() - t0;
  CHECK(dt >= 0.05 && dt < 5);
  CHECK(!pid_alive(pid));
  CHECK_EQ(veo_get_context_state(c[1]), VEO_STATE_EXIT);
  CHECK(veo_call_async(c[1], f, a) == VEO_REQUEST_ID_INVALID);
  veo_args_free(a);
}

/* A kernel that never returns: as AVEO, veo_proc_destroy waits for it (no
 * timeout), until the VE process is ended from outside through the pid AVEO's
 * API gives (veo_get_pid_from_hmem). */
struct killer {
  pid_t pid;
  double delay;
};
static void *kill_later(void *arg) {
  struct killer *k = arg;
  usleep((useconds_t)(k->delay * 1e6));
  kill(k->pid, SIGKILL);
  return NULL;
}

static void test_destroy_waits(void) {
  uint64_t lib;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_thr_ctxt *c = veo_context_open(p);
  struct veo_args *a = veo_args_alloc();
  CHECK(veo_call_async(c, sym(p, lib, "spin"), a) != VEO_REQUEST_ID_INVALID);
  int ident = veo_proc_identifier(p);
  REQUIRE(ident >= 0);
  pid_t pid = veo_get_pid_from_hmem(veo_set_proc_identifier(NULL, ident));
  CHECK_EQ(pid, veo_emu_proc_pid(p));
  struct killer k = {pid, 1.0};
  pthread_t t;
  pthread_create(&t, NULL, kill_later, &k);
  double t0 = now_s();
  CHECK_EQ(veo_proc_destroy(p), 0);
  double dt = now_s() - t0;
  CHECK(dt >= 0.9 && dt < 5);
  pthread_join(t, NULL);
  CHECK(!pid_alive(pid));
  veo_args_free(a);
}

/* A host that exits without destroying its procs leaves no helper behind,
 * whether it runs destructors (exit) or not (_exit). */
static void test_exit_without_destroy(int use_exit) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    close(fds[0]);
    struct veo_proc_handle *p = veo_proc_create(0);
    pid_t helper = p ? veo_emu_proc_pid(p) : -1;
    if (p) veo_context_open(p);
    if (write(fds[1], &helper, sizeof(helper)) != sizeof(helper)) _exit(3);
    if (use_exit) exit(0);
    _exit(0);
  }
  close(fds[1]);
  pid_t helper = -1;
  CHECK(read(fds[0], &helper, sizeof(helper)) == sizeof(helper));
  close(fds[0]);
  int st = 0;
  CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  CHECK(helper > 0);
  double t0 = now_s();
  while (helper > 0 && pid_alive(helper) && now_s() - t0 < 5) usleep(1000);
  CHECK(helper > 0 && !pid_alive(helper));
}

/* A forked child that exits does not take the parent's procs with it. */
static void test_fork_child_exit(void) {
  uint64_t lib;
  struct veo_proc_handle *p = proc_with_kernels(0, &lib);
  struct veo_args *a = veo_args_alloc();
  veo_args_set_i64(a, 0, 2);
  veo_args_set_i64(a, 1, 3);
  uint64_t r = 0;
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) exit(0); /* runs the library's destructors */
  int st;
  CHECK(waitpid(child, &st, 0) == child);
  usleep(20000);
  CHECK(pid_alive(veo_emu_proc_pid(p)));
  CHECK_EQ(veo_call_sync(p, sym(p, lib, "add"), a, &r), 0);
  CHECK_EQ(r, 5);
  veo_args_free(a);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

/* The helper does not keep the host's other file descriptors open: a pipe
 * the host closes sees EOF though a proc was created while it was open. */
static void test_fd_inheritance(void) {
  int fds[2];
  REQUIRE(pipe(fds) == 0); /* inheritable (no O_CLOEXEC) */
  struct veo_proc_handle *p = veo_proc_create(0);
  REQUIRE(p != NULL);
  close(fds[1]);
  char b;
  struct timeval tv = {2, 0};
  fd_set rs;
  FD_ZERO(&rs);
  FD_SET(fds[0], &rs);
  CHECK(select(fds[0] + 1, &rs, NULL, NULL, &tv) == 1 && read(fds[0], &b, 1) == 0);
  close(fds[0]);
  CHECK_EQ(veo_proc_destroy(p), 0);
}

static int count_lines(const char *path) {
  FILE *f = fopen(path, "r");
  int n = 0, ch;
  if (!f) return -1;
  while ((ch = fgetc(f)) != EOF) n += ch == '\n';
  fclose(f);
  return n;
}

static int count_fds(void) {
  int n = 0;
  for (int fd = 0; fd < 1024; fd++) n += fcntl(fd, F_GETFD) != -1;
  return n;
}

/* Creating and destroying procs leaks no fds and no threads. */
static void test_churn(void) {
  int fds0 = count_fds();
  int maps0 = count_lines("/proc/self/maps");
  for (int i = 0; i < 40; i++) {
    uint64_t lib;
    struct veo_proc_handle *p = proc_with_kernels(i % 8, &lib);
    struct veo_thr_ctxt *c = veo_context_open(p);
    c = veo_context_open(p);
    REQUIRE(c);
    struct veo_args *a = veo_args_alloc();
    CALL(c, sym(p, lib, "nop"), a);
    veo_args_free(a);
    if (i % 2) CHECK_EQ(veo_context_close(c), 0);
    CHECK_EQ(veo_proc_destroy(p), 0);
  }
  CHECK_EQ(count_fds(), fds0);
  /* a destroyed proc's shared memory (128 MiB of address space) is unmapped
   * by a later create or destroy once nobody uses it (after 0.2 s): the
   * mappings and the address space do not grow with the procs destroyed */
  usleep(250000);
  struct veo_proc_handle *p = veo_proc_create(0);
  REQUIRE(p);
  CHECK_EQ(veo_proc_destroy(p), 0);
  int maps = count_lines("/proc/self/maps");
  if (maps - maps0 > 8) fprintf(stderr, "%d mappings more after 40 procs\n", maps - maps0);
  CHECK(maps - maps0 <= 8);
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  int threads = -1;
  while (f && fgets(line, sizeof(line), f))
    if (sscanf(line, "Threads: %d", &threads) == 1) break;
  if (f) fclose(f);
  CHECK_EQ(threads, 1);
}

static long vm_size_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof(line), f))
    if (sscanf(line, "VmSize: %ld", &kib) == 1) break;
  if (f) fclose(f);
  return kib;
}

/* Many short-lived procs: the address space stays bounded (each destroyed
 * proc used to keep 128 MiB mapped: ~65k of them exhausted the mappings). */
static void test_address_space_bound(void) {
  struct veo_proc_handle *p = veo_proc_create(0);
  REQUIRE(p);
  CHECK_EQ(veo_proc_destroy(p), 0);
  usleep(250000);
  int maps0 = count_lines("/proc/self/maps");
  long vm0 = vm_size_kib(), vm_max = vm0;
  for (int i = 0; i < 150; i++) {
    p = veo_proc_create(i % 8);
    REQUIRE(p);
    CHECK_EQ(veo_proc_destroy(p), 0);
    long vm = vm_size_kib();
    if (vm > vm_max) vm_max = vm;
  }
  usleep(250000);
  p = veo_proc_create(0);
  CHECK_EQ(veo_proc_destroy(p), 0);
  int maps = count_lines("/proc/self/maps");
  long vm = vm_size_kib();
  printf("150 procs created and destroyed: %+d mappings, %+ld MiB of address space "
         "(at most %+ld MiB on the way)\n", maps - maps0, (vm - vm0) / 1024,
         (vm_max - vm0) / 1024);
  CHECK(maps - maps0 <= 8);
  CHECK(vm - vm0 < 256 * 1024);
}

int main(void) {
  CHECK_EQ(veo_api_version(), 16);
  CHECK(veo_version_string() && veo_version_string()[0]);
  test_identifiers();
  test_nodes();
  test_helpers();
  test_destroy_busy();
  test_destroy_waits();
  test_exit_without_destroy(1);
  test_exit_without_destroy(0);
  test_fork_child_exit();
  test_fd_inheritance();
  test_churn();
  test_address_space_bound();
  /* every helper was reaped: this process has no child left */
  errno = 0;
  CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);
  DONE();
}
