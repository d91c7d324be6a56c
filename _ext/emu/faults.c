/*
 * faults.c -- faults on purpose: parsing VEO_EMU_FAULTS and veo_emu_inject's
 * specifications, arming them on procs (the helper acts on kernel faults,
 * the host on allocation faults), and listing them.
 *
 *   faults := fault { ";" fault }
 *   fault  := kind [ ":" key "=" value { "," key "=" value } ]
 *
 *   crash  the kernel raises a signal (signal=SIGSEGV, the default, SIGBUS,
 *          SIGFPE, SIGILL or SIGABRT) instead of running
 *   hang   the kernel never returns
 *   delay  the kernel starts late (for=DURATION, required)
 *   die    the VE process dies after N calls (after=N) or after a time
 *          (after=DURATION), counted from when the fault is armed
 *   nomem  allocations fail: larger than a size (above=SIZE), or that would
 *          pass a number of bytes allocated since it was armed (after=SIZE);
 *          without either, every allocation
 *
 * Any fault may be limited to a node (node=N), a proc (proc=N, its
 * veo_proc_identifier) and a context (ctx=N: 0 the main context, N the N-th
 * opened after it); kernel faults also to kernels whose symbol matches a
 * pattern (sym=NAME, * and ? as in the shell).  crash, hang, delay and nomem
 * act on every matching call or allocation, or only on the N-th (call=N), or
 * on each at random with a probability (rate=P, seed=S: the same choices for
 * the same seed and order of events).  Counts are per proc.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "emu_host.h"
#include "emu_sync.h"

static const char *const KINDS[] = {[EMU_FAULT_CRASH] = "crash", [EMU_FAULT_DIE] = "die",
                                    [EMU_FAULT_NOMEM] = "nomem", [EMU_FAULT_HANG] = "hang",
                                    [EMU_FAULT_DELAY] = "delay"};
#define NKINDS ((int)(sizeof(KINDS) / sizeof(KINDS[0])))

static const struct {
  const char *name;
  int sig;
} SIGNALS[] = {{"SIGSEGV", SIGSEGV}, {"SIGBUS", SIGBUS}, {"SIGFPE", SIGFPE},
               {"SIGILL", SIGILL},   {"SIGABRT", SIGABRT}};
#define NSIGNALS ((int)(sizeof(SIGNALS) / sizeof(SIGNALS[0])))

/* ---- values ------------------------------------------------------------------------ */
static int parse_u64(const char *v, uint64_t *out) {
  char *end;
  if (!isdigit((unsigned char)*v)) return -1;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno || *end) return -1;
  *out = x;
  return 0;
}

static int parse_int(const char *v, int32_t *out) {
  uint64_t x;
  if (parse_u64(v, &x) || x > INT32_MAX) return -1;
  *out = (int32_t)x;
  return 0;
}

/* "512", "64K", "1M", "2G", "1T" (also "MiB", "MB": powers of 2). */
static int parse_bytes(const char *v, uint64_t *out) {
  char *end;
  if (!isdigit((unsigned char)*v)) return -1;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno) return -1;
  int shift = 0;
  switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: break;
  }
  if (shift && (*end == 'i' || *end == 'I')) end++;
  if (*end == 'b' || *end == 'B') end++;
  if (*end || (shift && x > (UINT64_MAX >> shift))) return -1;
  *out = (uint64_t)x << shift;
  return 0;
}

/* "250ns", "200us", "1.5ms", "2s": a number and a unit. */
static int parse_duration(const char *v, uint64_t *ns) {
  char *end;
  if (!isdigit((unsigned char)*v) && *v != '.') return -1;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || end == v || !isfinite(x) || x < 0) return -1;
  double mul;
  if (strcmp(end, "ns") == 0) mul = 1;
  else if (strcmp(end, "us") == 0) mul = 1e3;
  else if (strcmp(end, "ms") == 0) mul = 1e6;
  else if (strcmp(end, "s") == 0) mul = 1e9;
  else return -1;
  if (x * mul > 1e18) return -1;
  *ns = (uint64_t)(x * mul + 0.5);
  return 0;
}

static int parse_signal(const char *v, int32_t *sig) {
  int32_t n;
  if (isdigit((unsigned char)*v)) {
    if (parse_int(v, &n)) return -1;
    for (int i = 0; i < NSIGNALS; i++)
      if (SIGNALS[i].sig == n) {
        *sig = n;
        return 0;
      }
    return -1;
  }
  for (int i = 0; i < NSIGNALS; i++)
    if (strcasecmp(v, SIGNALS[i].name) == 0 || strcasecmp(v, SIGNALS[i].name + 3) == 0) {
      *sig = SIGNALS[i].sig;
      return 0;
    }
  return -1;
}

static const char *signal_name(int sig) {
  for (int i = 0; i < NSIGNALS; i++)
    if (SIGNALS[i].sig == sig) return SIGNALS[i].name;
  return "?";
}

/* ---- one fault ---------------------------------------------------------------------- */
static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
  return s;
}

#define FAIL(...)                                     \
  do {                                                \
    snprintf(err, errlen, __VA_ARGS__);               \
    return -1;                                        \
  } while (0)

/* Parse one fault (text is modified). */
static int parse_one(char *text, struct emu_fault *f, char *err, size_t errlen) {
  memset(f, 0, sizeof(*f));
  f->node = f->proc = f->ctx = -1;
  char *opts = strchr(text, ':');
  if (opts) *opts++ = 0;
  char *kind = trim(text);
  for (int k = 1; k < NKINDS; k++)
    if (KINDS[k] && strcasecmp(kind, KINDS[k]) == 0) f->kind = (uint32_t)k;
  if (!f->kind)
    FAIL("unknown fault '%s' (crash, hang, delay, die or nomem)", kind);
  int has_after = 0, has_bytes_after = 0;
  double rate = -1;
  for (char *save = NULL, *o = opts ? strtok_r(opts, ",", &save) : NULL; o;
       o = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(o, '=');
    if (!eq) FAIL("%s: '%s' is not key=value", kind, trim(o));
    *eq = 0;
    char *key = trim(o), *val = trim(eq + 1);
    int bad = 0;
    if (strcmp(key, "node") == 0) bad = parse_int(val, &f->node);
    else if (strcmp(key, "proc") == 0) bad = parse_int(val, &f->proc);
    else if (strcmp(key, "ctx") == 0) bad = parse_int(val, &f->ctx);
    else if (strcmp(key, "sym") == 0) {
      if (f->kind == EMU_FAULT_NOMEM) FAIL("nomem: sym= does not apply to allocations");
      bad = !*val || strlen(val) >= EMU_FAULT_SYM_LEN;
      if (!bad) snprintf(f->sym, sizeof(f->sym), "%s", val);
    } else if (strcmp(key, "call") == 0) {
      if (f->kind == EMU_FAULT_DIE) FAIL("die: use after=N (dies after the N-th call)");
      bad = parse_u64(val, &f->call) || f->call == 0;
    } else if (strcmp(key, "rate") == 0) {
      if (f->kind == EMU_FAULT_DIE) FAIL("die: rate= does not apply");
      char *end;
      rate = strtod(val, &end);
      bad = *end || end == val || !(rate > 0 && rate <= 1);
    } else if (strcmp(key, "seed") == 0) {
      bad = parse_u64(val, &f->seed);
    } else if (strcmp(key, "signal") == 0) {
      if (f->kind != EMU_FAULT_CRASH) FAIL("%s: signal= is for crash", kind);
      bad = parse_signal(val, &f->signal);
      if (bad) FAIL("crash: signal '%s' (SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT)", val);
    } else if (strcmp(key, "for") == 0) {
      if (f->kind != EMU_FAULT_DELAY) FAIL("%s: for= is for delay", kind);
      bad = parse_duration(val, &f->delay_ns) || f->delay_ns == 0;
      if (bad) FAIL("delay: for='%s' is not a duration (e.g. 200us, 5ms, 1s)", val);
    } else if (strcmp(key, "above") == 0) {
      if (f->kind != EMU_FAULT_NOMEM) FAIL("%s: above= is for nomem", kind);
      bad = parse_bytes(val, &f->above);
      if (bad) FAIL("nomem: above='%s' is not a size (e.g. 4096, 64K, 1G)", val);
    } else if (strcmp(key, "after") == 0) {
      if (f->kind == EMU_FAULT_NOMEM) {
        bad = parse_bytes(val, &f->budget);
        if (bad) FAIL("nomem: after='%s' is not a size (e.g. 64M, 1G)", val);
        has_bytes_after = 1;
      } else if (f->kind == EMU_FAULT_DIE) {
        if (isdigit((unsigned char)val[strlen(val) - 1])) {
          bad = parse_u64(val, &f->after_calls) || f->after_calls == 0;
        } else {
          bad = parse_duration(val, &f->after_ns) || f->after_ns == 0;
        }
        if (bad) FAIL("die: after='%s' is neither a number of calls nor a duration (100, 2s)",
                      val);
        has_after = 1;
      } else {
        FAIL("%s: after= is for die and nomem", kind);
      }
    } else {
      FAIL("%s: unknown key '%s'", kind, key);
    }
    if (bad) FAIL("%s: bad value '%s' for %s", kind, val, key);
  }
  if (f->call && rate > 0) FAIL("%s: call= and rate= exclude each other", kind);
  if (rate > 0) f->rate = (uint64_t)(rate * 9007199254740992.0 + 0.5); /* 2^53 */
  switch (f->kind) {
    case EMU_FAULT_CRASH:
      if (!f->signal) f->signal = SIGSEGV;
      break;
    case EMU_FAULT_DELAY:
      if (!f->delay_ns) FAIL("delay: needs for=DURATION (e.g. delay:for=200us)");
      break;
    case EMU_FAULT_DIE:
      if (!has_after) FAIL("die: needs after=N calls or after=DURATION (e.g. die:after=2s)");
      if (f->after_ns && (f->ctx >= 0 || f->sym[0]))
        FAIL("die: after a time, the whole VE process dies (no ctx= or sym=)");
      break;
    default:
      break;
  }
  (void)has_bytes_after;
  return 0;
}

static void put_duration(char *b, size_t len, uint64_t ns) {
  if (ns % 1000000000ull == 0) snprintf(b, len, "%" PRIu64 "s", (uint64_t)(ns / 1000000000u));
  else if (ns % 1000000ull == 0) snprintf(b, len, "%" PRIu64 "ms", (uint64_t)(ns / 1000000u));
  else if (ns % 1000ull == 0) snprintf(b, len, "%" PRIu64 "us", (uint64_t)(ns / 1000u));
  else snprintf(b, len, "%" PRIu64 "ns", ns);
}

static void put_bytes(char *b, size_t len, uint64_t n) {
  const char *u = "KMGT";
  int i = 3;
  for (; i >= 0; i--)
    if (n && n % (1ull << (10 * (i + 1))) == 0) break;
  if (i < 0) snprintf(b, len, "%" PRIu64, n);
  else snprintf(b, len, "%" PRIu64 "%c", n >> (10 * (i + 1)), u[i]);
}

/* The fault as one would write it, keys in a fixed order. */
void emu_fault_format(const struct emu_fault *f, char *buf, size_t len) {
  char v[64];
  size_t n = (size_t)snprintf(buf, len, "%s", f->kind < (uint32_t)NKINDS ? KINDS[f->kind] : "?");
  char sep = ':';
#define PUT(...)                                                                     \
  do {                                                                               \
    if (n < len) n += (size_t)snprintf(buf + n, len - n, "%c", sep);                 \
    if (n < len) n += (size_t)snprintf(buf + n, len - n, __VA_ARGS__);               \
    sep = ',';                                                                       \
  } while (0)
  if (f->node >= 0) PUT("node=%d", f->node);
  if (f->proc >= 0) PUT("proc=%d", f->proc);
  if (f->ctx >= 0) PUT("ctx=%d", f->ctx);
  if (f->sym[0]) PUT("sym=%s", f->sym);
  if (f->call) PUT("call=%" PRIu64, f->call);
  if (f->rate) PUT("rate=%g", (double)f->rate / 9007199254740992.0);
  if (f->rate || f->seed) PUT("seed=%" PRIu64, f->seed);
  if (f->after_calls) PUT("after=%" PRIu64, f->after_calls);
  if (f->after_ns) {
    put_duration(v, sizeof(v), f->after_ns);
    PUT("after=%s", v);
  }
  if (f->kind == EMU_FAULT_NOMEM && f->above) {
    put_bytes(v, sizeof(v), f->above);
    PUT("above=%s", v);
  }
  if (f->kind == EMU_FAULT_NOMEM && f->budget) {
    put_bytes(v, sizeof(v), f->budget);
    PUT("after=%s", v);
  }
  if (f->kind == EMU_FAULT_CRASH) PUT("signal=%s", signal_name(f->signal));
  if (f->delay_ns) {
    put_duration(v, sizeof(v), f->delay_ns);
    PUT("for=%s", v);
  }
#undef PUT
}

/* Parse "fault; fault; ..." into out[0..*n); 0, or -1 with the error set
 * (prefixed with `what`). */
static int parse_spec(const char *what, const char *spec, struct emu_fault *out, int max,
                      int *n) {
  char err[256] = "";
  *n = 0;
  char *copy = strdup(spec ? spec : "");
  if (!copy) {
    emu_set_error("%s: out of memory", what);
    return -1;
  }
  int rc = 0;
  for (char *save = NULL, *one = strtok_r(copy, ";", &save); one;
       one = strtok_r(NULL, ";", &save)) {
    if (!*trim(one)) continue;
    if (*n >= max) {
      snprintf(err, sizeof(err), "more than %d faults", max);
      rc = -1;
      break;
    }
    if (parse_one(one, &out[*n], err, sizeof(err))) {
      rc = -1;
      break;
    }
    emu_fault_format(&out[*n], out[*n].text, sizeof(out[*n].text));
    (*n)++;
  }
  free(copy);
  if (rc) emu_set_error("%s: %s", what, err);
  return rc;
}

/* ---- faults every new proc gets ------------------------------------------------------ */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct emu_fault g_global[EMU_MAX_FAULTS]; /* veo_emu_inject(NULL, ...) */
static int g_nglobal;

/* VEO_EMU_FAULTS, parsed (at each proc creation: the environment may change). */
static int env_faults(struct emu_fault *out, int *n) {
  const char *spec = getenv("VEO_EMU_FAULTS");
  char what[64] = "VEO_EMU_FAULTS";
  return parse_spec(what, spec, out, EMU_MAX_FAULTS, n);
}

static int applies_to(const struct emu_fault *f, struct veo_proc_handle *p) {
  return (f->node < 0 || f->node == p->node) && (f->proc < 0 || f->proc == p->ident);
}

/* Publish f in p's table (p->fault_lock held). */
static int arm(struct veo_proc_handle *p, const struct emu_fault *f) {
  uint32_t i = atomic_load(&p->hdr->nfaults);
  if (i >= EMU_MAX_FAULTS) {
    emu_set_error("veo_emu_inject: at most %d faults per proc", EMU_MAX_FAULTS);
    return -1;
  }
  struct emu_fault *slot = &emu_faults(p->shm)[i];
  memcpy(slot, f, sizeof(*slot));
  atomic_store(&slot->seen, 0);
  atomic_store(&slot->fired, 0);
  atomic_store(&slot->bytes, 0);
  slot->deadline_ns = f->after_ns ? emu_now_ns() + f->after_ns : 0;
  atomic_store(&slot->active, 1);
  atomic_store(&p->hdr->nfaults, i + 1);
  if (f->after_ns) { /* the helper's watcher recomputes its deadline */
    ssize_t w = write(p->life_fd, "t", 1);
    (void)w;
  }
  return 0;
}

int emu_faults_check_env(void) {
  struct emu_fault fs[EMU_MAX_FAULTS];
  int n;
  return env_faults(fs, &n);
}

int emu_faults_arm_new(struct veo_proc_handle *p) {
  struct emu_fault fs[EMU_MAX_FAULTS];
  int n;
  if (env_faults(fs, &n)) return -1;
  pthread_mutex_lock(&g_lock);
  for (int i = 0; i < g_nglobal && n < EMU_MAX_FAULTS; i++) fs[n++] = g_global[i];
  pthread_mutex_unlock(&g_lock);
  int rc = 0;
  pthread_mutex_lock(&p->fault_lock);
  for (int i = 0; i < n && rc == 0; i++)
    if (applies_to(&fs[i], p)) rc = arm(p, &fs[i]);
  pthread_mutex_unlock(&p->fault_lock);
  return rc;
}

/* ---- allocation faults (the host's) -------------------------------------------------- */
int emu_fault_nomem(struct veo_proc_handle *p, int ctx, uint64_t size) {
  if (!p->hdr || !atomic_load(&p->hdr->nfaults)) return 0;
  int fail = 0;
  pthread_mutex_lock(&p->fault_lock);
  uint32_t n = atomic_load(&p->hdr->nfaults);
  for (uint32_t i = 0; i < n; i++) {
    struct emu_fault *f = &emu_faults(p->shm)[i];
    if (f->kind != EMU_FAULT_NOMEM || !atomic_load(&f->active)) continue;
    if (f->ctx >= 0 && f->ctx != ctx) continue;
    if (f->above && size <= f->above) continue;
    if (f->budget && atomic_load(&f->bytes) + size <= f->budget) continue;
    uint64_t k = atomic_fetch_add(&f->seen, 1) + 1;
    int hit = f->call ? k == f->call : f->rate ? emu_fault_roll(f, k) : 1;
    if (hit && !fail) {
      atomic_fetch_add(&f->fired, 1);
      emu_set_error("out of VE memory: injected fault '%s' (allocation of %" PRIu64 " bytes)",
                    f->text, size);
      fail = 1;
    }
  }
  pthread_mutex_unlock(&p->fault_lock);
  return fail;
}

void emu_fault_allocated(struct veo_proc_handle *p, int ctx, uint64_t size) {
  if (!p->hdr || !atomic_load(&p->hdr->nfaults)) return;
  uint32_t n = atomic_load(&p->hdr->nfaults);
  for (uint32_t i = 0; i < n; i++) {
    struct emu_fault *f = &emu_faults(p->shm)[i];
    if (f->kind == EMU_FAULT_NOMEM && f->budget && atomic_load(&f->active) &&
        (f->ctx < 0 || f->ctx == ctx))
      atomic_fetch_add(&f->bytes, size);
  }
}

/* ---- the API ---------------------------------------------------------------------------- */
EXPORT_EMU int veo_emu_inject(struct veo_proc_handle *p, const char *spec) {
  emu_clear_error();
  struct emu_fault fs[EMU_MAX_FAULTS];
  int n;
  if (!spec) {
    emu_set_error("veo_emu_inject: NULL specification");
    errno = EINVAL;
    return -1;
  }
  if (parse_spec("veo_emu_inject", spec, fs, EMU_MAX_FAULTS, &n)) {
    errno = EINVAL;
    return -1;
  }
  if (!p) { /* every proc created from now on */
    pthread_mutex_lock(&g_lock);
    int rc = 0;
    if (g_nglobal + n > EMU_MAX_FAULTS) {
      emu_set_error("veo_emu_inject: at most %d faults for new procs", EMU_MAX_FAULTS);
      rc = -1;
    } else {
      memcpy(&g_global[g_nglobal], fs, sizeof(fs[0]) * (size_t)n);
      g_nglobal += n;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
  }
  if (!emu_proc_valid(p, "veo_emu_inject")) return -1;
  for (int i = 0; i < n; i++)
    if (!applies_to(&fs[i], p)) {
      emu_set_error("veo_emu_inject: '%s' does not apply to this proc (node %d, identifier %d)",
                    fs[i].text, p->node, p->ident);
      errno = EINVAL;
      return -1;
    }
  if (!emu_proc_enter(p, "veo_emu_inject")) return -1;
  int rc = 0;
  pthread_mutex_lock(&p->fault_lock);
  if (atomic_load(&p->hdr->nfaults) + (uint32_t)n > EMU_MAX_FAULTS) {
    emu_set_error("veo_emu_inject: at most %d faults per proc", EMU_MAX_FAULTS);
    errno = ENOSPC;
    rc = -1;
  }
  for (int i = 0; i < n && rc == 0; i++) rc = arm(p, &fs[i]);
  pthread_mutex_unlock(&p->fault_lock);
  emu_proc_leave(p);
  return rc;
}

EXPORT_EMU int veo_emu_clear_faults(struct veo_proc_handle *p) {
  emu_clear_error();
  if (!p) {
    pthread_mutex_lock(&g_lock);
    g_nglobal = 0;
    pthread_mutex_unlock(&g_lock);
    return 0;
  }
  if (!emu_proc_valid(p, "veo_emu_clear_faults") || !emu_proc_enter(p, "veo_emu_clear_faults"))
    return -1;
  pthread_mutex_lock(&p->fault_lock);
  uint32_t n = atomic_load(&p->hdr->nfaults);
  for (uint32_t i = 0; i < n; i++) atomic_store(&emu_faults(p->shm)[i].active, 0);
  pthread_mutex_unlock(&p->fault_lock);
  emu_proc_leave(p);
  return 0;
}

/* One line per fault.  A proc's: its armed faults and what they did; NULL:
 * the faults a new proc gets (VEO_EMU_FAULTS, then veo_emu_inject(NULL)). */
EXPORT_EMU const char *veo_emu_faults(struct veo_proc_handle *p) {
  static __thread char out[EMU_MAX_FAULTS * 2 * 200];
  size_t len = 0;
  out[0] = 0;
  emu_clear_error();
  if (!p) {
    struct emu_fault fs[EMU_MAX_FAULTS];
    int n;
    if (env_faults(fs, &n)) return NULL;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < g_nglobal && n < EMU_MAX_FAULTS; i++) fs[n++] = g_global[i];
    pthread_mutex_unlock(&g_lock);
    for (int i = 0; i < n && len < sizeof(out); i++)
      len += (size_t)snprintf(out + len, sizeof(out) - len, "%s\n", fs[i].text);
    return out;
  }
  if (!emu_proc_valid(p, "veo_emu_faults") || !emu_proc_enter(p, "veo_emu_faults")) return NULL;
  pthread_mutex_lock(&p->fault_lock);
  uint32_t n = atomic_load(&p->hdr->nfaults);
  for (uint32_t i = 0; i < n && len < sizeof(out); i++) {
    struct emu_fault *f = &emu_faults(p->shm)[i];
    if (!atomic_load(&f->active)) continue;
    len += (size_t)snprintf(out + len, sizeof(out) - len, "%s\t(seen %" PRIu64 ", fired %" PRIu64
                            ")\n", f->text, (uint64_t)atomic_load(&f->seen),
                            (uint64_t)atomic_load(&f->fired));
  }
  pthread_mutex_unlock(&p->fault_lock);
  emu_proc_leave(p);
  return out;
}
