/* Random operations on the memory pool's bookkeeping (_ext/core/mempool.c),
 * checking its invariants after each: blocks tile their segments, no two
 * free neighbours stay unmerged, live blocks never overlap, the counters add
 * up, and fenced blocks only come back on their own slot until passed.
 * Built and run by tests/test_mempool.py (with AddressSanitizer when the
 * compiler has it).  Usage: mempool_fuzz SEED STEPS */
#include <stdio.h>
#include <stdlib.h>

#include "mempool.h"

#define MAXLIVE 512
#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); exit(1); } while (0)

struct live { mp_block *b; uint64_t addr, size; int slot; };
static struct live live[MAXLIVE];
static int nlive;
static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

/* fenced ranges (shadow): reusable on their slot only until passed */
struct fenced { uint64_t addr, size, ticket; int k; };
static struct fenced fen[4 * MAXLIVE];
static int nfen;

static void fence_add(uint64_t addr, uint64_t size, uint64_t ticket, int k) {
  if (nfen == 4 * MAXLIVE) FAIL("too many fenced ranges");
  fen[nfen++] = (struct fenced){addr, size, ticket, k};
}

/* A block handed out to context k (-1: none): it must not overlap a range
 * fenced on another context; the part it takes of k's ranges is used now. */
static void fence_taken(uint64_t addr, uint64_t size, int k) {
  for (int i = 0; i < nfen; i++) {
    struct fenced f = fen[i];
    if (!(addr < f.addr + f.size && f.addr < addr + size)) continue;
    if (f.k != k) FAIL("block 0x%llx reused on context %d while fenced on %d",
                       (unsigned long long)addr, k, f.k);
    fen[i] = fen[--nfen];
    if (f.addr < addr) fence_add(f.addr, addr - f.addr, f.ticket, f.k);
    if (addr + size < f.addr + f.size) fence_add(addr + size, f.addr + f.size - addr - size, f.ticket, f.k);
    i = -1; /* the array changed: start over */
  }
}

static void fence_passed(int k, uint64_t frontier) {
  for (int i = 0; i < nfen; i++)
    if (fen[i].k == k && fen[i].ticket <= frontier) fen[i--] = fen[--nfen];
}

struct walk { uint64_t seg, end, free, used, fenced, reserved; int prev_free; int nblocks; };

static void visit(void *arg, uint64_t seg_addr, uint64_t seg_size, int kind, const mp_block *b) {
  struct walk *w = arg;
  (void)kind;
  if (seg_addr != w->seg) { /* a new segment */
    if (w->seg && w->end != 0) FAIL("segment 0x%llx not tiled", (unsigned long long)w->seg);
    w->seg = seg_addr;
    w->end = seg_addr;
    w->prev_free = 0;
    w->reserved += seg_size;
  }
  if (b->addr != w->end) FAIL("gap or overlap at 0x%llx", (unsigned long long)b->addr);
  if (b->size == 0 || b->size % MP_UNIT) FAIL("bad block size %llu", (unsigned long long)b->size);
  w->end = b->addr + b->size;
  if (w->end == seg_addr + seg_size) w->end = 0; /* segment complete */
  if (b->state == MP_FREE && w->prev_free) FAIL("two free neighbours");
  w->prev_free = b->state == MP_FREE;
  if (b->state == MP_FREE) w->free += b->size;
  else if (b->state == MP_USED) w->used += b->size;
  else if (b->state == MP_FENCED) w->fenced += b->size;
  else FAIL("bad state %d", b->state);
  w->nblocks++;
}

static void check(mp_pool *p) {
  struct walk w = {0};
  mp_walk(p, visit, &w);
  mp_stats s;
  mp_get_stats(p, &s);
  uint64_t reserved = s.reserved[0] + s.reserved[1] + s.reserved[2];
  if (w.reserved != reserved) FAIL("reserved %llu != %llu", (unsigned long long)w.reserved, (unsigned long long)reserved);
  if (w.free != s.free || w.used != s.used || w.fenced != s.fenced)
    FAIL("counters: free %llu/%llu used %llu/%llu fenced %llu/%llu",
         (unsigned long long)w.free, (unsigned long long)s.free, (unsigned long long)w.used,
         (unsigned long long)s.used, (unsigned long long)w.fenced, (unsigned long long)s.fenced);
  if (s.used + s.free + s.fenced != reserved) FAIL("bytes do not add up");
  for (int i = 0; i < nlive; i++)
    for (int j = i + 1; j < nlive; j++)
      if (live[i].addr < live[j].addr + live[j].size && live[j].addr < live[i].addr + live[i].size)
        FAIL("live blocks overlap");
}

int main(int argc, char **argv) {
  unsigned long seed = argc > 1 ? strtoul(argv[1], NULL, 10) : 1;
  long steps = argc > 2 ? strtol(argv[2], NULL, 10) : 20000;
  rng ^= seed * 0x9E3779B97F4A7C15ull;
  uint64_t max_split = (rnd() % 2) ? (64u << 20) : 0;
  mp_pool *p = mp_new(1 << 20, max_split);
  int slots[3];
  uint64_t ticket[3] = {0, 0, 0}, frontier[3] = {0, 0, 0};
  for (int i = 0; i < 3; i++) slots[i] = mp_new_slot(p);
  uint64_t next_addr = 1ull << 32;
  if (rnd() % 3 == 0) { /* an arena */
    mp_add_segment(p, next_addr, 256u << 20, MP_ARENA);
    next_addr += 512u << 20;
  }
  for (long step = 0; step < steps; step++) {
    unsigned op = (unsigned)(rnd() % 100);
    if (op < 45 && nlive < MAXLIVE) { /* allocate */
      uint64_t size = rnd() % 4 ? 1 + rnd() % (2u << 20) : 1 + rnd() % (96u << 20);
      int k = (int)(rnd() % 4) - 1; /* -1: no context */
      int slot = k >= 0 ? slots[k] : -1;
      uint64_t fence_ticket;
      mp_block *b = mp_alloc(p, size, slot, &fence_ticket);
      if (!b) {
        int kind = mp_kind_for(p, size);
        uint64_t seg = kind == MP_SMALL ? 2u << 20 : mp_round(size) + (rnd() % 3) * (8u << 20);
        /* as the core grows: a segment for a request under max_split stays under it */
        if (max_split && size < max_split && seg >= max_split)
          seg = mp_round(size) > max_split - MP_UNIT ? mp_round(size) : max_split - MP_UNIT;
        if (mp_add_segment(p, next_addr, seg, kind)) FAIL("add_segment");
        next_addr += seg + (1u << 20);
        b = mp_alloc(p, size, slot, &fence_ticket);
        if (!b) FAIL("miss after growing by %llu for %llu", (unsigned long long)seg, (unsigned long long)size);
      }
      if (b->state != MP_USED || b->size < size) FAIL("bad allocation");
      if (fence_ticket != UINT64_MAX && (k < 0 || fence_ticket <= frontier[k] || fence_ticket > ticket[k]))
        FAIL("bad fence ticket");
      fence_taken(b->addr, b->size, k);
      live[nlive++] = (struct live){b, b->addr, b->size, k};
    } else if (op < 80 && nlive) { /* free, or fence on a context */
      int i = (int)(rnd() % (unsigned)nlive);
      struct live l = live[i];
      live[i] = live[--nlive];
      if (l.b->addr != l.addr || l.b->size != l.size || l.b->state != MP_USED) FAIL("live block changed");
      int k = (int)(rnd() % 4) - 1;
      if (k < 0) mp_free(p, l.b);
      else {
        mp_fence(p, l.b, slots[k], ++ticket[k]);
        fence_add(l.addr, l.size, ticket[k], k);
      }
    } else if (op < 95) { /* a context completes some work */
      int k = (int)(rnd() % 3);
      if (frontier[k] < ticket[k]) frontier[k] += 1 + rnd() % (ticket[k] - frontier[k]);
      uint64_t low = mp_pass(p, slots[k], frontier[k]);
      fence_passed(k, frontier[k]);
      if (low != UINT64_MAX && low <= frontier[k]) FAIL("pass left a passed fence");
    } else if (op < 98) { /* give free segments back */
      uint64_t a[8], s[8];
      while (mp_release(p, 1u << MP_SMALL | 1u << MP_LARGE, a, s, 8) == 8) {}
    } else { /* close a context and open another */
      int k = (int)(rnd() % 3);
      mp_drop_slot(p, slots[k]);
      fence_passed(k, UINT64_MAX);
      slots[k] = mp_new_slot(p);
      ticket[k] = frontier[k] = 0;
    }
    check(p);
  }
  /* everything back: all free, all segments releasable except the arena */
  while (nlive) mp_free(p, live[--nlive].b);
  for (int k = 0; k < 3; k++) mp_drop_slot(p, slots[k]);
  check(p);
  mp_stats s;
  mp_get_stats(p, &s);
  if (s.used || s.fenced) FAIL("blocks left in use after freeing everything");
  uint64_t a[8], sz[8];
  while (mp_release(p, 7, a, sz, 8) == 8) {}
  mp_get_stats(p, &s);
  if (s.segments || s.free) FAIL("segments left after releasing everything");
  mp_destroy(p);
  printf("ok %ld steps\n", steps);
  return 0;
}
