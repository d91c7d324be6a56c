/*
 * mempool.c -- the memory pool's bookkeeping (see mempool.h).
 *
 * Everything here runs on the event loop thread under the GIL: no locks.
 */
#include "mempool.h"

#include <stdlib.h>
#include <string.h>

#define SL_LOG 4
#define SL (1 << SL_LOG)
#define FL 52
#define UNIT_LOG 9
#define BEST_FIT_SCAN 8

typedef struct mp_index {
  uint64_t fl_map;
  uint32_t sl_map[FL];
  mp_block *bins[FL][SL];
} mp_index;

typedef struct mp_segment {
  uint64_t addr, size;
  int kind;
  mp_block *first;
  struct mp_segment *prev, *next;
} mp_segment;

typedef struct fence {
  uint64_t ticket, gen;
  mp_block *b;
} fence;

typedef struct mp_slot {
  int used;
  mp_index idx[2]; /* [0] small segments, [1] large segments and the arena */
  fence *heap;     /* a min-heap on ticket; stale entries are skipped */
  size_t n, cap;
} mp_slot;

struct mp_pool {
  uint64_t small_max, max_split, gen;
  mp_index global[2];
  mp_segment *segments;
  mp_slot **slots;
  int nslots;
  mp_block *spare; /* block structs to reuse */
  mp_stats st;
};

/* ---- the index -------------------------------------------------------- */
static void mapping(uint64_t units, int *fl, int *sl) {
  if (units < SL) {
    *fl = 0;
    *sl = (int)units;
    return;
  }
  int f = 63 - __builtin_clzll(units);
  *fl = f - SL_LOG + 1;
  *sl = (int)((units >> (f - SL_LOG)) - SL);
}

static void idx_insert(mp_index *ix, mp_block *b) {
  int fl, sl;
  mapping(b->size >> UNIT_LOG, &fl, &sl);
  b->fprev = NULL;
  b->fnext = ix->bins[fl][sl];
  if (b->fnext) b->fnext->fprev = b;
  ix->bins[fl][sl] = b;
  ix->fl_map |= 1ull << fl;
  ix->sl_map[fl] |= 1u << sl;
}

static void idx_remove(mp_index *ix, mp_block *b) {
  int fl, sl;
  mapping(b->size >> UNIT_LOG, &fl, &sl);
  if (b->fprev) b->fprev->fnext = b->fnext;
  else ix->bins[fl][sl] = b->fnext;
  if (b->fnext) b->fnext->fprev = b->fprev;
  b->fprev = b->fnext = NULL;
  if (!ix->bins[fl][sl]) {
    ix->sl_map[fl] &= ~(1u << sl);
    if (!ix->sl_map[fl]) ix->fl_map &= ~(1ull << fl);
  }
}

/* The smallest-fitting of a few blocks in the request's own bin, else the
 * head of the first non-empty bin whose blocks all fit. */
static mp_block *idx_find(const mp_index *ix, uint64_t size) {
  uint64_t units = size >> UNIT_LOG;
  int fl, sl;
  mapping(units, &fl, &sl);
  if (units >= SL && (ix->sl_map[fl] & (1u << sl))) {
    mp_block *best = NULL;
    int n = 0;
    for (mp_block *b = ix->bins[fl][sl]; b && n < BEST_FIT_SCAN; b = b->fnext, n++)
      if (b->size >= size && (!best || b->size < best->size)) best = b;
    if (best) return best;
  }
  if (units >= SL) { /* round up to the next bin: all its blocks fit */
    int f = 63 - __builtin_clzll(units);
    uint64_t up = units + (1ull << (f - SL_LOG)) - 1;
    if (up < units) return NULL;
    mapping(up, &fl, &sl);
  }
  if (fl >= FL) return NULL;
  uint32_t sm = ix->sl_map[fl] & (~0u << sl);
  if (!sm) {
    uint64_t fm = fl + 1 < 64 ? ix->fl_map & (~0ull << (fl + 1)) : 0;
    if (!fm) return NULL;
    fl = __builtin_ctzll(fm);
    sm = ix->sl_map[fl];
  }
  return ix->bins[fl][__builtin_ctz(sm)];
}

static uint64_t idx_largest(const mp_index *ix) {
  if (!ix->fl_map) return 0;
  int fl = 63 - __builtin_clzll(ix->fl_map);
  int sl = 31 - __builtin_clz(ix->sl_map[fl]);
  uint64_t m = 0;
  for (mp_block *b = ix->bins[fl][sl]; b; b = b->fnext)
    if (b->size > m) m = b->size;
  return m;
}

/* ---- blocks ----------------------------------------------------------- */
static mp_block *new_block(mp_pool *p) {
  mp_block *b = p->spare;
  if (b) p->spare = b->fnext;
  else if (!(b = malloc(sizeof(*b)))) return NULL;
  memset(b, 0, sizeof(*b));
  b->gen = ++p->gen;
  return b;
}

static void drop_block(mp_pool *p, mp_block *b) {
  b->state = 0;
  b->gen = ++p->gen;
  b->fnext = p->spare;
  p->spare = b;
}

static int index_of(const mp_block *b) { return b->seg->kind == MP_SMALL ? 0 : 1; }

static void set_state(mp_pool *p, mp_block *b, int state) {
  switch (b->state) {
    case MP_USED: p->st.used -= b->size; p->st.used_blocks--; break;
    case MP_FREE: p->st.free -= b->size; p->st.free_blocks--; break;
    case MP_FENCED: p->st.fenced -= b->size; p->st.fenced_blocks--; break;
    default: break;
  }
  b->state = state;
  b->gen = ++p->gen;
  switch (state) {
    case MP_USED: p->st.used += b->size; p->st.used_blocks++; break;
    case MP_FREE: p->st.free += b->size; p->st.free_blocks++; break;
    case MP_FENCED: p->st.fenced += b->size; p->st.fenced_blocks++; break;
    default: break;
  }
}

/* ---- fences (a min-heap per slot) ------------------------------------- */
static int heap_push(mp_slot *s, fence f) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 16;
    fence *h = realloc(s->heap, cap * sizeof(*h));
    if (!h) return -1;
    s->heap = h;
    s->cap = cap;
  }
  size_t i = s->n++;
  while (i > 0) {
    size_t up = (i - 1) / 2;
    if (s->heap[up].ticket <= f.ticket) break;
    s->heap[i] = s->heap[up];
    i = up;
  }
  s->heap[i] = f;
  return 0;
}

static fence heap_pop(mp_slot *s) {
  fence top = s->heap[0], last = s->heap[--s->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= s->n) break;
    if (c + 1 < s->n && s->heap[c + 1].ticket < s->heap[c].ticket) c++;
    if (last.ticket <= s->heap[c].ticket) break;
    s->heap[i] = s->heap[c];
    i = c;
  }
  if (s->n) s->heap[i] = last;
  return top;
}

static mp_slot *slot_of(mp_pool *p, int slot) {
  return slot >= 0 && slot < p->nslots && p->slots[slot] && p->slots[slot]->used
             ? p->slots[slot] : NULL;
}

/* ---- the pool --------------------------------------------------------- */
mp_pool *mp_new(uint64_t small_max, uint64_t max_split) {
  mp_pool *p = calloc(1, sizeof(*p));
  if (!p) return NULL;
  p->small_max = mp_round(small_max ? small_max : 1);
  p->max_split = max_split;
  return p;
}

void mp_set_max_split(mp_pool *p, uint64_t max_split) { p->max_split = max_split; }

void mp_destroy(mp_pool *p) {
  if (!p) return;
  for (mp_segment *s = p->segments, *sn; s; s = sn) {
    sn = s->next;
    for (mp_block *b = s->first, *bn; b; b = bn) {
      bn = b->next;
      free(b);
    }
    free(s);
  }
  for (mp_block *b = p->spare, *bn; b; b = bn) {
    bn = b->fnext;
    free(b);
  }
  for (int i = 0; i < p->nslots; i++) {
    if (p->slots[i]) free(p->slots[i]->heap);
    free(p->slots[i]);
  }
  free(p->slots);
  free(p);
}

uint64_t mp_round(uint64_t size) {
  if (size == 0) size = 1;
  if (size > UINT64_MAX - (MP_UNIT - 1)) return 0;
  return (size + MP_UNIT - 1) & ~(uint64_t)(MP_UNIT - 1);
}

int mp_kind_for(const mp_pool *p, uint64_t size) {
  return mp_round(size) <= p->small_max ? MP_SMALL : MP_LARGE;
}

int mp_add_segment(mp_pool *p, uint64_t addr, uint64_t size, int kind) {
  size &= ~(uint64_t)(MP_UNIT - 1);
  if (size == 0 || kind < 0 || kind >= MP_KINDS) return -1;
  mp_segment *s = calloc(1, sizeof(*s));
  mp_block *b = s ? new_block(p) : NULL;
  if (!b) {
    free(s);
    return -1;
  }
  *s = (mp_segment){addr, size, kind, b, NULL, p->segments};
  if (p->segments) p->segments->prev = s;
  p->segments = s;
  b->addr = addr;
  b->size = size;
  b->seg = s;
  p->st.reserved[kind] += size;
  p->st.segments++;
  set_state(p, b, MP_FREE);
  idx_insert(&p->global[index_of(b)], b);
  return 0;
}

/* Whether `b` may serve a request of `size`: oversize blocks (max_split)
 * stay whole for oversize requests, except in the arena. */
static int may_split(const mp_pool *p, const mp_block *b, uint64_t size) {
  return !p->max_split || b->seg->kind == MP_ARENA || size >= p->max_split ||
         b->size < p->max_split;
}

/* Cut `b` to `size`, the rest staying in the state (and index) `b` had. */
static void split(mp_pool *p, mp_block *b, uint64_t size, int state, mp_index *ix, int slot,
                  uint64_t ticket) {
  uint64_t rest = b->size - size;
  /* Large segments keep slivers up to small_max inside the block: only
   * small requests could use them, and those come from small segments. */
  uint64_t min_rest = b->seg->kind == MP_LARGE ? p->small_max + 1 : MP_UNIT;
  if (rest < min_rest) return;
  mp_block *r = new_block(p);
  if (!r) return; /* keep the whole block: no harm done */
  r->addr = b->addr + size;
  r->size = rest;
  r->seg = b->seg;
  r->prev = b;
  r->next = b->next;
  if (b->next) b->next->prev = r;
  b->next = r;
  /* b is USED now (counted with its old size): move the rest's bytes */
  p->st.used -= rest;
  b->size = size;
  r->slot = slot;
  r->ticket = ticket;
  set_state(p, r, state);
  if (state == MP_FENCED) {
    mp_slot *s = p->slots[slot];
    if (heap_push(s, (fence){ticket, r->gen, r}) != 0) { /* cannot track: free it now */
      set_state(p, r, MP_USED);
      mp_free(p, r);
      return;
    }
  }
  idx_insert(ix, r);
}

static mp_block *take(mp_pool *p, mp_index *ix, uint64_t size, int fenced_slot) {
  mp_block *b = idx_find(ix, size);
  if (!b || !may_split(p, b, size)) return NULL;
  idx_remove(ix, b);
  int was = b->state;
  uint64_t ticket = b->ticket;
  set_state(p, b, MP_USED);
  split(p, b, size, was, ix, fenced_slot, ticket);
  return b;
}

mp_block *mp_alloc(mp_pool *p, uint64_t size, int slot, uint64_t *fence) {
  *fence = UINT64_MAX;
  size = mp_round(size);
  if (!size) return NULL;
  int k = size <= p->small_max ? 0 : 1;
  mp_slot *s = slot_of(p, slot);
  mp_block *b = NULL;
  if (s && s->n && (b = take(p, &s->idx[k], size, slot))) *fence = b->ticket;
  if (!b) b = take(p, &p->global[k], size, -1);
  /* A small request may carve a large block when an arena is reserved, so
   * that one-process-per-VE programs live in the arena alone. */
  if (!b && k == 0 && p->st.reserved[MP_ARENA]) b = take(p, &p->global[1], size, -1);
  if (b && p->st.used > p->st.peak) p->st.peak = p->st.used;
  return b;
}

void mp_reset_peak(mp_pool *p) { p->st.peak = p->st.used; }

void mp_free(mp_pool *p, mp_block *b) {
  mp_index *ix = &p->global[index_of(b)];
  set_state(p, b, MP_FREE);
  mp_block *n = b->next, *v = b->prev;
  if (n && n->state == MP_FREE) {
    idx_remove(ix, n);
    set_state(p, n, 0);
    b->size += n->size;
    p->st.free += n->size;
    b->next = n->next;
    if (n->next) n->next->prev = b;
    drop_block(p, n);
  }
  if (v && v->state == MP_FREE) {
    idx_remove(ix, v);
    v->size += b->size;
    v->next = b->next;
    if (b->next) b->next->prev = v;
    set_state(p, b, 0);
    p->st.free += b->size; /* b's bytes are v's now (v stays counted as a block) */
    drop_block(p, b);
    b = v;
  }
  idx_insert(ix, b);
}

int mp_fence(mp_pool *p, mp_block *b, int slot, uint64_t ticket) {
  mp_slot *s = slot_of(p, slot);
  if (!s) {
    mp_free(p, b);
    return 0;
  }
  b->slot = slot;
  b->ticket = ticket;
  set_state(p, b, MP_FENCED);
  if (heap_push(s, (fence){ticket, b->gen, b}) != 0) {
    set_state(p, b, MP_USED);
    mp_free(p, b);
    return -1;
  }
  idx_insert(&s->idx[index_of(b)], b);
  return 0;
}

uint64_t mp_pass(mp_pool *p, int slot, uint64_t frontier) {
  mp_slot *s = slot_of(p, slot);
  if (!s) return UINT64_MAX;
  while (s->n && s->heap[0].ticket <= frontier) {
    fence f = heap_pop(s);
    mp_block *b = f.b;
    if (b->state != MP_FENCED || b->gen != f.gen) continue; /* reused or split since */
    idx_remove(&s->idx[index_of(b)], b);
    mp_free(p, b);
  }
  return s->n ? s->heap[0].ticket : UINT64_MAX;
}

int mp_new_slot(mp_pool *p) {
  for (int i = 0; i < p->nslots; i++)
    if (p->slots[i] && !p->slots[i]->used) {
      p->slots[i]->used = 1;
      return i;
    }
  mp_slot **ns = realloc(p->slots, (size_t)(p->nslots + 1) * sizeof(*ns));
  if (!ns) return -1;
  p->slots = ns;
  mp_slot *s = calloc(1, sizeof(*s));
  if (!s) return -1;
  s->used = 1;
  p->slots[p->nslots] = s;
  return p->nslots++;
}

void mp_drop_slot(mp_pool *p, int slot) {
  mp_slot *s = slot_of(p, slot);
  if (!s) return;
  mp_pass(p, slot, UINT64_MAX);
  free(s->heap);
  memset(s, 0, sizeof(*s));
}

size_t mp_release(mp_pool *p, unsigned kinds, uint64_t *addrs, uint64_t *sizes, size_t max) {
  size_t n = 0;
  for (mp_segment *s = p->segments, *sn; s && n < max; s = sn) {
    sn = s->next;
    mp_block *b = s->first;
    if (!(kinds & (1u << s->kind)) || b->state != MP_FREE || b->size != s->size) continue;
    idx_remove(&p->global[index_of(b)], b);
    set_state(p, b, 0);
    drop_block(p, b);
    if (s->prev) s->prev->next = s->next;
    else p->segments = s->next;
    if (s->next) s->next->prev = s->prev;
    p->st.reserved[s->kind] -= s->size;
    p->st.segments--;
    addrs[n] = s->addr;
    sizes[n] = s->size;
    n++;
    free(s);
  }
  return n;
}

void mp_get_stats(const mp_pool *p, mp_stats *s) {
  *s = p->st;
  uint64_t a = idx_largest(&p->global[0]), b = idx_largest(&p->global[1]);
  s->largest_free = a > b ? a : b;
}

size_t mp_walk(const mp_pool *p, mp_walk_fn fn, void *arg) {
  size_t n = 0;
  for (const mp_segment *s = p->segments; s; s = s->next)
    for (const mp_block *b = s->first; b; b = b->next, n++)
      if (fn) fn(arg, s->addr, s->size, s->kind, b);
  return n;
}
