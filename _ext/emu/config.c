/*
 * config.c -- settings read from the environment: the emulated nodes and
 * their memory, spin and exit-grace times, the helper program, and the
 * mapping of VEO node numbers (VE_NODE_NUMBER, _VENODELIST).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emu_host.h"

static uint64_t parse_size(const char *s, uint64_t dflt) {
  if (!s || !*s) return dflt;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s) return dflt;
  switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    case 't': case 'T': v <<= 40; end++; break;
    default: break;
  }
  if (*end == 'i' || *end == 'I') end++;
  if (*end == 'b' || *end == 'B') end++;
  return *end ? dflt : (uint64_t)v;
}

static long env_long(const char *name, long dflt, long lo, long hi) {
  const char *s = getenv(name);
  if (!s || !*s) return dflt;
  char *end;
  long v = strtol(s, &end, 10);
  if (*end || v < lo || v > hi) return dflt;
  return v;
}

EXPORT_EMU int veo_emu_num_nodes(void) { return (int)env_long("VEO_EMU_NODES", 8, 1, 4096); }

EXPORT_EMU uint64_t veo_emu_node_memory(void) {
  return parse_size(getenv("VEO_EMU_NODE_MEMORY"), 48ull << 30);
}

uint32_t emu_spin_us(void) { return (uint32_t)env_long("VEO_EMU_SPIN_US", 50, 0, 100000); }

int emu_poison_byte(void) {
  const char *s = getenv("VEO_EMU_POISON");
  if (!s || !*s) return 0xA5;
  if (strcmp(s, "off") == 0 || strcmp(s, "no") == 0) return 0;
  char *end;
  long v = strtol(s, &end, 0);
  if (*end || v < 0 || v > 255) return 0xA5;
  return (int)v;
}

EXPORT_EMU const char *veo_emu_helper_path(void) {
  static char path[PATH_MAX];
  const char *env = getenv("VEORUN_BIN");
  if (env && *env) return env;
  if (!path[0]) {
    Dl_info info;
    char tmp[PATH_MAX] = "";
    if (dladdr((void *)veo_emu_helper_path, &info) && info.dli_fname)
      snprintf(tmp, sizeof(tmp), "%s", info.dli_fname);
    char *slash = strrchr(tmp, '/');
    if (slash) *slash = 0;
    else snprintf(tmp, sizeof(tmp), ".");
    snprintf(path, sizeof(path), "%.*s/aioveo-veorun", (int)(sizeof(path) - 16), tmp);
  }
  return path;
}

int emu_resolve_node(int venode) {
  if (venode < -1) return -1;
  const char *list = getenv("_VENODELIST");
  const char *dflt = getenv("VE_NODE_NUMBER");
  int node = -1;
  if (list && *list) {
    int nodes[256], n = 0;
    char *end;
    for (const char *s = list; *s && n < 256;) {
      long v = strtol(s, &end, 10);
      if (end == s) return -1;
      nodes[n++] = (int)v;
      s = end;
      while (*s == ' ') s++;
    }
    if (venode == -1) {
      if (dflt && *dflt) {
        long want = strtol(dflt, &end, 10);
        if (*end) return -1;
        for (int i = 0; i < n; i++)
          if (nodes[i] == want) node = (int)want;
      } else if (n > 0) {
        node = nodes[0];
      }
    } else if (venode < n) {
      node = nodes[venode];
    }
  } else if (venode == -1) {
    node = 0;
    if (dflt && *dflt) {
      char *end;
      long v = strtol(dflt, &end, 10);
      node = *end ? -1 : (int)v;
    }
  } else {
    node = venode;
  }
  if (node < 0 || node >= veo_emu_num_nodes()) return -1;
  return node;
}
