/*
 * profile.c -- the timing profile (VEO_EMU_PROFILE): make calls, transfers,
 * allocations and frees take what they take on a VE, and the copy routine of
 * transfers.
 *
 * The model, per AVEO's published VE10B figures (its README):
 *   - a command waits in transit (roundtrip - call) before the VE starts it,
 *     then the VE is busy with it for the rest of its round trip: calls
 *     submitted back to back complete one per `call`, a single call returns
 *     after `roundtrip`; veo_call_sync, which AVEO sends directly, after
 *     `sync_call`;
 *   - a transfer takes `write`/`read` (its 1-byte latency) plus its size at
 *     the bandwidth; veo_alloc_mem/veo_free_mem (and their async forms) take
 *     `alloc`/`free`, a command round trip on the main context;
 *   - VH functions (veo_call_async_vh), veo_context_sync and empty transfers
 *     are host requests on AVEO: no VE time.
 * Kernels still run at host speed: their time adds to the model's.  Waits
 * spin below a few hundred microseconds, so the figures are accurate.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "emu_host.h"
#include "emu_sync.h"

__thread int emu_t_sync_call;

/* AVEO 0.9.6 on a VE10B (SX-Aurora/aveo README): 5.6 us per call pipelined,
 * ~10 us to submit one call and wait for it, 6.7 us per veo_call_sync,
 * 11.9/12.9 us for a 1-byte write/read; 9-10.5 GB/s for large transfers
 * (write at the top of that range, read at the bottom, as reads have the
 * longer latency).  An allocation or a free is one command round trip on
 * the main context. */
static const struct emu_profile VE10B = {
    .on = 1, .name = "ve10b",
    .call = 5600, .roundtrip = 10000, .sync_call = 6700, .write = 11900, .read = 12900,
    .alloc = 10000, .free = 10000, .write_bps = 10.5e9, .read_bps = 9.0e9};

static const struct {
  const char *key;
  size_t off;
  int bandwidth;
} KEYS[] = {
    {"call_us", offsetof(struct emu_profile, call), 0},
    {"roundtrip_us", offsetof(struct emu_profile, roundtrip), 0},
    {"sync_call_us", offsetof(struct emu_profile, sync_call), 0},
    {"write_us", offsetof(struct emu_profile, write), 0},
    {"read_us", offsetof(struct emu_profile, read), 0},
    {"alloc_us", offsetof(struct emu_profile, alloc), 0},
    {"free_us", offsetof(struct emu_profile, free), 0},
    {"write_gbs", offsetof(struct emu_profile, write_bps), 1},
    {"read_gbs", offsetof(struct emu_profile, read_bps), 1},
};
#define NKEYS ((int)(sizeof(KEYS) / sizeof(KEYS[0])))

/* A profile file: "key value" lines (# starts a comment); keys not given
 * keep the VE10B's figures; "name NAME" names it. */
static int load_file(const char *path, struct emu_profile *pr) {
  FILE *f = fopen(path, "r");
  if (!f) {
    emu_set_error("VEO_EMU_PROFILE: '%s' is neither a profile name (ve10b) nor a readable "
                  "file: %s", path, strerror(errno));
    return -1;
  }
  *pr = VE10B;
  const char *base = strrchr(path, '/');
  snprintf(pr->name, sizeof(pr->name), "%s", base ? base + 1 : path);
  char line[256];
  int lineno = 0, rc = 0;
  while (rc == 0 && fgets(line, sizeof(line), f)) {
    lineno++;
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char key[64], val[128], extra[8];
    int n = sscanf(line, "%63s %127s %7s", key, val, extra);
    if (n <= 0) continue;
    if (n != 2) {
      emu_set_error("VEO_EMU_PROFILE %s:%d: expected 'key value'", path, lineno);
      rc = -1;
      break;
    }
    if (strcmp(key, "name") == 0) {
      snprintf(pr->name, sizeof(pr->name), "%.63s", val);
      continue;
    }
    int k = 0;
    while (k < NKEYS && strcmp(KEYS[k].key, key) != 0) k++;
    char *end;
    double v = strtod(val, &end);
    if (k == NKEYS) {
      emu_set_error("VEO_EMU_PROFILE %s:%d: unknown key '%s' (call_us, roundtrip_us, "
                    "sync_call_us, write_us, read_us, alloc_us, free_us, write_gbs, read_gbs, "
                    "name)", path, lineno, key);
      rc = -1;
    } else if (*end || end == val || !(v >= 0) || v > 1e9 || (KEYS[k].bandwidth && v <= 0)) {
      emu_set_error("VEO_EMU_PROFILE %s:%d: bad value '%s' for %s", path, lineno, val, key);
      rc = -1;
    } else if (KEYS[k].bandwidth) {
      *(double *)((char *)pr + KEYS[k].off) = v * 1e9;
    } else {
      *(uint64_t *)((char *)pr + KEYS[k].off) = (uint64_t)(v * 1000.0 + 0.5);
    }
  }
  fclose(f);
  if (rc == 0 && (pr->roundtrip < pr->call || pr->sync_call < pr->call)) {
    emu_set_error("VEO_EMU_PROFILE %s: roundtrip_us and sync_call_us include call_us (the VE's "
                  "time per call): they cannot be smaller", path);
    rc = -1;
  }
  return rc;
}

int emu_profile_load(struct emu_profile *pr) {
  memset(pr, 0, sizeof(*pr));
  const char *s = getenv("VEO_EMU_PROFILE");
  if (!s || !*s || strcmp(s, "off") == 0 || strcmp(s, "none") == 0) return 0;
  if (strcasecmp(s, "ve10b") == 0) {
    *pr = VE10B;
    return 0;
  }
  if (!strchr(s, '/') && !strchr(s, '.')) {
    emu_set_error("VEO_EMU_PROFILE: no profile '%s' (ve10b, off, or the path of a profile "
                  "file)", s);
    return -1;
  }
  return load_file(s, pr);
}

void emu_profile_format(const struct emu_profile *pr, char *buf, size_t len) {
  if (!pr->on) {
    snprintf(buf, len, "%s", "");
    return;
  }
  snprintf(buf, len,
           "%s: call %.1f us (pipelined), round trip %.1f us, veo_call_sync %.1f us, "
           "write %.1f us + %.2f GB/s, read %.1f us + %.2f GB/s, alloc %.1f us, free %.1f us",
           pr->name, pr->call / 1e3, pr->roundtrip / 1e3, pr->sync_call / 1e3, pr->write / 1e3,
           pr->write_bps / 1e9, pr->read / 1e3, pr->read_bps / 1e9, pr->alloc / 1e3,
           pr->free / 1e3);
}

EXPORT_EMU const char *veo_emu_profile(void) {
  static __thread char out[512];
  struct emu_profile pr;
  emu_clear_error();
  if (emu_profile_load(&pr)) return NULL;
  emu_profile_format(&pr, out, sizeof(out));
  return out;
}

static uint64_t at_bandwidth(uint64_t bytes, double bps) {
  return bps > 0 ? (uint64_t)((double)bytes * 1e9 / bps) : 0;
}

void emu_profile_cmd(struct veo_proc_handle *p, struct emu_cmd *cmd, const struct job *job) {
  const struct emu_profile *pr = &p->prof;
  if (!pr->on) return;
  uint64_t transit = pr->roundtrip - pr->call, total = pr->roundtrip;
  switch (cmd->type) {
    case EMU_CMD_EXIT:
    case EMU_CMD_NOP: /* veo_context_sync, empty transfers: host requests on AVEO */
      return;
    case EMU_CMD_CALL:
      if (emu_t_sync_call) {
        transit = pr->sync_call - pr->call;
        total = pr->sync_call;
      }
      break;
    case EMU_CMD_FREE:
      total = pr->free;
      break;
    case EMU_CMD_AGENT:
      if (!job || job->kind == JOB_VH) return;
      if (job->kind == JOB_WRITE) total = pr->write + at_bandwidth(job->len, pr->write_bps);
      else if (job->kind == JOB_READ) total = pr->read + at_bandwidth(job->len, pr->read_bps);
      else if (job->kind == JOB_ALLOC) total = pr->alloc;
      else if (job->kind == JOB_FREE) total = pr->free;
      break;
    default:
      break;
  }
  cmd->t_ready = emu_now_ns() + transit;
  cmd->service_ns = total > transit ? total - transit : 0;
}

void emu_profile_hold(struct veo_proc_handle *p, uint64_t t0, uint64_t base_ns, uint64_t bytes,
                      double bps) {
  if (!p->prof.on) return;
  emu_delay_until(t0 + base_ns + at_bandwidth(bytes, bps));
}

/* ---- the copy of transfers ----------------------------------------------------------- */
/* Large copies stream past the cache (non-temporal stores), as a DMA
 * engine's writes do: about twice memcpy's speed for tens of MiB on hosts
 * where glibc keeps them in the cache. */
#define EMU_STREAM_MIN (8u << 20)

void emu_copy(void *dst, const void *src, size_t n) {
#if defined(__x86_64__)
  if (n >= EMU_STREAM_MIN) {
    char *d = dst;
    const char *s = src;
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;
    memcpy(d, s, head);
    d += head;
    s += head;
    n -= head;
    for (size_t i = n / 64; i > 0; i--) {
      __m128i a = _mm_loadu_si128((const __m128i *)s);
      __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
      __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
      __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
      _mm_stream_si128((__m128i *)d, a);
      _mm_stream_si128((__m128i *)(d + 16), b);
      _mm_stream_si128((__m128i *)(d + 32), c);
      _mm_stream_si128((__m128i *)(d + 48), e);
      d += 64;
      s += 64;
    }
    _mm_sfence();
    memcpy(d, s, n % 64);
    return;
  }
#endif
  memcpy(dst, src, n);
}
