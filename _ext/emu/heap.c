/*
 * heap.c -- the emulated VE memory of a proc, and a small hash map.
 *
 * VE memory is one memfd mapped by the host and by the helper, so a transfer
 * is a single memcpy on the host.  The allocator is first-fit over a sorted
 * free list; freed extents of 1 MiB and more give their pages back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "emu_host.h"

/* ---- u64map --------------------------------------------------------------- */
static inline size_t hash64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  return (size_t)k;
}

static int u64map_grow(struct u64map *m) {
  size_t ncap = m->cap ? m->cap * 2 : 64;
  if (m->count * 2 < m->cap) ncap = m->cap; /* only tombstones: rehash */
  struct u64map_entry *nt = calloc(ncap, sizeof(*nt));
  if (!nt) return -1;
  for (size_t i = 0; i < m->cap; i++) {
    if (m->tab[i].used != 1) continue;
    size_t j = hash64(m->tab[i].key) & (ncap - 1);
    while (nt[j].used) j = (j + 1) & (ncap - 1);
    nt[j] = m->tab[i];
  }
  free(m->tab);
  m->tab = nt;
  m->cap = ncap;
  m->deleted = 0;
  return 0;
}

void u64map_free(struct u64map *m) {
  free(m->tab);
  memset(m, 0, sizeof(*m));
}

struct u64map_entry *u64map_get(struct u64map *m, uint64_t key) {
  if (!m->cap) return NULL;
  size_t j = hash64(key) & (m->cap - 1);
  while (m->tab[j].used) {
    if (m->tab[j].used == 1 && m->tab[j].key == key) return &m->tab[j];
    j = (j + 1) & (m->cap - 1);
  }
  return NULL;
}

struct u64map_entry *u64map_put(struct u64map *m, uint64_t key) {
  if ((m->count + m->deleted + 1) * 2 > m->cap && u64map_grow(m)) return NULL;
  size_t j = hash64(key) & (m->cap - 1);
  while (m->tab[j].used == 1) j = (j + 1) & (m->cap - 1);
  if (m->tab[j].used == 2) m->deleted--;
  memset(&m->tab[j], 0, sizeof(m->tab[j]));
  m->tab[j].used = 1;
  m->tab[j].key = key;
  m->count++;
  return &m->tab[j];
}

void u64map_del(struct u64map *m, struct u64map_entry *e) {
  e->used = 2;
  e->p = NULL;
  m->count--;
  m->deleted++;
}

/* ---- heap ------------------------------------------------------------------ */
#define HEAP_ALIGN 64u
#define PUNCH_MIN (1u << 20)

struct free_extent {
  uint64_t off, len;
  struct free_extent *next;
};

int heap_init(struct emu_heap *h, uint64_t size) {
  memset(h, 0, sizeof(*h));
  h->fd = memfd_create("aioveo-ve-memory", MFD_CLOEXEC);
  if (h->fd < 0) return -1;
  if (ftruncate(h->fd, (off_t)size) != 0) goto fail;
  h->host_base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, h->fd, 0);
  if (h->host_base == MAP_FAILED) {
    h->host_base = NULL;
    goto fail;
  }
  h->free_list = malloc(sizeof(struct free_extent));
  if (!h->free_list) goto fail_map;
  *h->free_list = (struct free_extent){0, size, NULL};
  h->size = size;
  pthread_mutex_init(&h->lock, NULL);
  return 0;
fail_map:
  munmap(h->host_base, size);
fail:
  close(h->fd);
  h->fd = -1;
  return -1;
}

void heap_destroy(struct emu_heap *h) {
  if (h->fd < 0 && !h->host_base) return;
  struct free_extent *e = h->free_list;
  while (e) {
    struct free_extent *n = e->next;
    free(e);
    e = n;
  }
  h->free_list = NULL;
  u64map_free(&h->allocs);
  if (h->host_base) munmap(h->host_base, h->size);
  h->host_base = NULL;
  if (h->fd >= 0) close(h->fd);
  h->fd = -1;
  pthread_mutex_destroy(&h->lock);
}

uint64_t heap_alloc(struct emu_heap *h, uint64_t size) {
  if (size == 0 || size > h->size) return UINT64_MAX;
  uint64_t need = (size + HEAP_ALIGN - 1) & ~(uint64_t)(HEAP_ALIGN - 1);
  uint64_t off = UINT64_MAX;
  pthread_mutex_lock(&h->lock);
  struct free_extent **pp = &h->free_list;
  for (struct free_extent *e = *pp; e; pp = &e->next, e = e->next) {
    if (e->len < need) continue;
    off = e->off;
    e->off += need;
    e->len -= need;
    if (e->len == 0) {
      *pp = e->next;
      free(e);
    }
    break;
  }
  if (off != UINT64_MAX) {
    struct u64map_entry *a = u64map_put(&h->allocs, off);
    if (!a) { /* give the extent back: out of host memory */
      pthread_mutex_unlock(&h->lock);
      heap_free(h, off);
      return UINT64_MAX;
    }
    a->a = need;
    h->used += need;
  }
  pthread_mutex_unlock(&h->lock);
  return off;
}

static void punch(struct emu_heap *h, uint64_t off, uint64_t len) {
  uint64_t pg = 4096, start = (off + pg - 1) & ~(pg - 1), end = (off + len) & ~(pg - 1);
  if (end > start && end - start >= PUNCH_MIN)
    fallocate(h->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)start, (off_t)(end - start));
}

int heap_free(struct emu_heap *h, uint64_t off) {
  pthread_mutex_lock(&h->lock);
  struct u64map_entry *a = u64map_get(&h->allocs, off);
  if (!a) {
    pthread_mutex_unlock(&h->lock);
    return -1;
  }
  uint64_t len = a->a;
  u64map_del(&h->allocs, a);
  h->used -= len;
  punch(h, off, len);
  struct free_extent **pp = &h->free_list, *prev = NULL;
  while (*pp && (*pp)->off < off) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  struct free_extent *next = *pp;
  if (prev && prev->off + prev->len == off) { /* merge into the previous */
    prev->len += len;
    if (next && prev->off + prev->len == next->off) {
      prev->len += next->len;
      prev->next = next->next;
      free(next);
    }
  } else if (next && off + len == next->off) { /* merge into the next */
    next->off = off;
    next->len += len;
  } else {
    struct free_extent *e = malloc(sizeof(*e));
    if (!e) { /* cannot track it: leak the extent rather than corrupt */
      pthread_mutex_unlock(&h->lock);
      return 0;
    }
    *e = (struct free_extent){off, len, next};
    *pp = e;
  }
  pthread_mutex_unlock(&h->lock);
  return 0;
}

/* Fresh VE memory is not zero on a VE (malloc reuses memory): the emulator
 * fills it with a pattern, VEO_EMU_POISON (default 0xA5; "off" or 0: keep
 * what the pages hold), so reads of uninitialised VE memory show. */
void heap_poison(struct emu_heap *h, uint64_t off, uint64_t size) {
  int b = emu_poison_byte();
  if (b > 0 && off < h->size && size <= h->size - off) memset(h->host_base + off, b, size);
}

void *heap_host_ptr(struct emu_heap *h, uint64_t addr, size_t len) {
  if (!h->host_base || addr < h->ve_base) return NULL;
  uint64_t off = addr - h->ve_base;
  if (off >= h->size || len > h->size - off) return NULL;
  return h->host_base + off;
}

int heap_lookup(struct emu_heap *h, uint64_t addr, size_t len, void **hp) {
  *hp = heap_host_ptr(h, addr, len);
  if (!*hp) return 0;
  /* Inside the heap: every byte must belong to a live allocation, else this
   * is a transfer to memory that was freed (or never handed out). */
  uint64_t off = addr - h->ve_base, end = off + (len ? len : 1);
  int ok = 1;
  pthread_mutex_lock(&h->lock);
  for (struct free_extent *e = h->free_list; e && e->off < end; e = e->next)
    if (e->off + e->len > off) {
      ok = 0;
      break;
    }
  pthread_mutex_unlock(&h->lock);
  return ok ? 1 : -1;
}
