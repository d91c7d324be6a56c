/*
 * mempool.h -- the bookkeeping of aioveo's VE memory pool: which VE address
 * ranges of a proc are in use, free, or free on one context only.  No VEO
 * calls and no Python here: the core (mempool.pxi) grows the pool with
 * veo_alloc_mem, gives segments back with veo_free_mem and decides when a
 * block's last use is done.
 *
 * Segments are upstream allocations (one veo_alloc_mem each).  Blocks split
 * segments into address-ordered neighbours; a free block is in one index:
 *   - the global index of its kind (small or large): usable by anyone, and
 *     merged with free neighbours at once;
 *   - the fenced index of a context slot: freed while its last use was still
 *     queued on that context, so reusable on that context only (a context
 *     runs its queue in order) until mp_pass() sees the context's completed
 *     frontier reach the block's ticket, which moves it to the global index.
 * An index is a two-level segregated fit (TLSF): 16 bins per power of two,
 * bitmaps to find the first non-empty bin in O(1).  Sizes are multiples of
 * MP_UNIT; blocks are MP_UNIT-aligned offsets from their segment's start.
 */
#ifndef AIOVEO_MEMPOOL_H
#define AIOVEO_MEMPOOL_H

#include <stddef.h>
#include <stdint.h>

#define MP_UNIT 512u

enum mp_kind { MP_SMALL = 0, MP_LARGE = 1, MP_ARENA = 2, MP_KINDS = 3 };
enum mp_state { MP_USED = 1, MP_FREE = 2, MP_FENCED = 3 };

struct mp_segment;

typedef struct mp_block {
  uint64_t addr, size;
  struct mp_block *prev, *next;   /* address neighbours in the segment */
  struct mp_block *fprev, *fnext; /* links in an index bin */
  struct mp_segment *seg;
  uint64_t ticket;                /* MP_FENCED: the last use on its context */
  uint64_t gen;                   /* changes with every state change */
  int state;
  int slot;                       /* MP_FENCED: the context slot */
} mp_block;

typedef struct mp_stats {
  uint64_t reserved[MP_KINDS];    /* bytes of segments, by kind */
  uint64_t segments;
  uint64_t used, used_blocks;     /* handed out */
  uint64_t free, free_blocks;     /* global index */
  uint64_t fenced, fenced_blocks; /* fenced indexes */
  uint64_t largest_free;          /* largest block of the global index */
  uint64_t peak;                  /* highest `used` since creation or mp_reset_peak */
} mp_stats;

typedef struct mp_pool mp_pool;

/* small_max: requests up to this size come from small segments; max_split:
 * free blocks of at least this size are not split for smaller requests
 * (0: no bound; arena blocks are always split). */
mp_pool *mp_new(uint64_t small_max, uint64_t max_split);
void mp_destroy(mp_pool *p);
void mp_set_max_split(mp_pool *p, uint64_t max_split);

/* The rounded size of a request (0 if it overflows). */
uint64_t mp_round(uint64_t size);
/* The kind of segment a request of `size` bytes grows (MP_SMALL or MP_LARGE). */
int mp_kind_for(const mp_pool *p, uint64_t size);

/* A new upstream allocation [addr, addr + size) of `kind`: 0, or -1 (ENOMEM). */
int mp_add_segment(mp_pool *p, uint64_t addr, uint64_t size, int kind);

/* A block of at least `size` bytes, from slot's fenced index first (slot
 * >= 0), then the global indexes; NULL on a miss (grow and retry).  When it
 * came from the fenced index, *fence is the ticket its last use still has
 * queued on the slot's context (else UINT64_MAX). */
mp_block *mp_alloc(mp_pool *p, uint64_t size, int slot, uint64_t *fence);
void mp_reset_peak(mp_pool *p);
/* Back to the global index (merged with free neighbours). */
void mp_free(mp_pool *p, mp_block *b);
/* Back to slot's fenced index until slot's frontier reaches ticket: 0, or -1. */
int mp_fence(mp_pool *p, mp_block *b, int slot, uint64_t ticket);
/* Slot's completed frontier is now `frontier`: fenced blocks whose ticket it
 * reached go to the global index.  Returns the lowest ticket still fenced on
 * the slot (UINT64_MAX if none). */
uint64_t mp_pass(mp_pool *p, int slot, uint64_t frontier);

/* Context slots: a new one (-1 on ENOMEM), and dropping one (its fenced
 * blocks go to the global index: the context is closed, its queue done). */
int mp_new_slot(mp_pool *p);
void mp_drop_slot(mp_pool *p, int slot);

/* Segments made entirely of one free block, of a kind in `kinds` (a bit
 * mask of 1 << kind), are removed from the pool; their addresses and sizes
 * are written to addrs/sizes (at most max); returns how many. */
size_t mp_release(mp_pool *p, unsigned kinds, uint64_t *addrs, uint64_t *sizes, size_t max);

void mp_get_stats(const mp_pool *p, mp_stats *s);

/* The blocks of the pool in address order, segment by segment, for a
 * snapshot: calls fn(arg, segment addr, segment size, kind, block) for each
 * block; returns the number of blocks. */
typedef void (*mp_walk_fn)(void *arg, uint64_t seg_addr, uint64_t seg_size, int kind,
                           const mp_block *b);
size_t mp_walk(const mp_pool *p, mp_walk_fn fn, void *arg);

#endif
