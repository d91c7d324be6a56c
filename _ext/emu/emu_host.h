/*
 * emu_host.h -- host-side internals of the emulator's libveo.so.
 */
#ifndef AIOVEO_EMU_HOST_H
#define AIOVEO_EMU_HOST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

#include "emu_proto.h"
#include "ve_offload.h"

#define EXPORT __attribute__((visibility("default")))

/* ---- a small uint64 -> record hash map (open addressing) ---------------- */
struct u64map_entry {
  uint64_t key;
  uint64_t a, b; /* payload */
  void *p;
  uint32_t used; /* 0 empty, 1 used, 2 deleted */
  uint32_t c;
};

struct u64map {
  struct u64map_entry *tab;
  size_t cap, count, deleted;
};

void u64map_free(struct u64map *m);
struct u64map_entry *u64map_get(struct u64map *m, uint64_t key);
struct u64map_entry *u64map_put(struct u64map *m, uint64_t key); /* NULL on ENOMEM */
void u64map_del(struct u64map *m, struct u64map_entry *e);

/* ---- the heap: VE memory shared by host and helper ---------------------- */
struct emu_heap {
  pthread_mutex_t lock;
  int fd;
  char *host_base;   /* host mapping */
  uint64_t ve_base;  /* helper address of offset 0 */
  uint64_t size;
  uint64_t used;
  struct free_extent *free_list; /* sorted by offset */
  struct u64map allocs;          /* offset -> size */
};

int heap_init(struct emu_heap *h, uint64_t size);
void heap_destroy(struct emu_heap *h);
/* Returns an offset, or UINT64_MAX when the node is full. */
uint64_t heap_alloc(struct emu_heap *h, uint64_t size);
/* 0, or -1 if `off` is not the start of a live allocation. */
int heap_free(struct emu_heap *h, uint64_t off);
/* Host pointer for [addr, addr+len) if it lies in the heap, else NULL. */
void *heap_host_ptr(struct emu_heap *h, uint64_t addr, size_t len);
/* 1 and *hp set if [addr, addr+len) is allocated heap memory, 0 if it is
 * outside the heap (kernel-malloc'ed memory, globals), -1 if it touches
 * heap memory that is not allocated (freed). */
int heap_lookup(struct emu_heap *h, uint64_t addr, size_t len, void **hp);

/* ---- arguments ----------------------------------------------------------- */
struct emu_stack_arg {
  int argnum;
  int intent;
  char *buf;
  size_t len;
};

#define ARGS_MAGIC 0x41524753u
struct veo_args {
  uint32_t magic;
  int nargs;
  int ret_type; /* enum veo_emu_type */
  uint8_t types[EMU_MAX_ARGS];
  uint64_t vals[EMU_MAX_ARGS];
  int nstack;
  struct emu_stack_arg stack[EMU_MAX_ARGS];
};

/* ---- host work done by the agent ----------------------------------------- */
enum job_kind {
  JOB_WRITE = 1, /* host buffer -> VE */
  JOB_READ,      /* VE -> host buffer */
  JOB_STACK_POST,/* copy OUT stack args back, free their heap blocks */
  JOB_VH,        /* call a host function */
  JOB_ALLOC,     /* heap alloc at a FIFO position */
  JOB_FREE,      /* heap free at a FIFO position */
};

struct job {
  int kind;
  uint64_t ve_addr;
  void *host;
  size_t len;
  uint64_t (*vh_func)(void *);
  void *vh_arg;
  int nstack;
  struct emu_stack_arg *stack; /* copies of the call's stack args */
  uint64_t *stack_off;         /* their heap offsets */
};

/* ---- contexts and procs -------------------------------------------------- */
#define CTX_MAGIC 0x43545854u
#define PROC_MAGIC 0x50524f43u

enum rec_state { REC_PENDING = 1, REC_DONE = 2 };

struct veo_thr_ctxt {
  uint32_t magic;
  int index; /* region index in the shm */
  _Atomic int state; /* enum veo_context_state */
  _Atomic int closed;
  struct veo_proc_handle *proc;
  struct emu_ctx_region *r;
  pthread_mutex_t submit_lock; /* recursive: veo_req_block_begin/end */
  pthread_mutex_t lock;        /* requests map and reaping */
  pthread_t block_owner;       /* veo_req_block_begin: holder and depth */
  int block_depth;
  uint64_t next_id;
  uint64_t reaped; /* results taken from the result ring */
  uint64_t head;   /* bytes written into the command ring */
  struct u64map reqs;
  struct veo_thr_ctxt *next_closed;
};

struct sym_cache_entry {
  uint64_t lib;
  uint64_t addr;
  struct sym_cache_entry *next;
  char name[];
};

struct veo_proc_handle {
  uint32_t magic;
  int node;
  int ident;
  pid_t pid;
  pid_t owner;            /* the host process that started the helper */
  _Atomic int dead;       /* helper died (exception, kill) */
  _Atomic int destroyed;
  int life_fd;            /* socket to the helper */
  int shm_fd;             /* kept to release the shared pages at destroy */
  void *shm;
  struct emu_header *hdr;
  struct emu_heap heap;
  pthread_t agent;
  int agent_started;
  int reaped_child;
  int exit_status;
  pthread_mutex_t lock;   /* contexts list */
  pthread_mutex_t sym_lock;  /* symbol cache */
  pthread_mutex_t reap_lock; /* waitpid of the helper vs. kill() of its pid */
  struct veo_thr_ctxt *ctx[EMU_MAX_CONTEXTS]; /* by region index */
  struct veo_thr_ctxt *open_list[EMU_MAX_CONTEXTS]; /* veo_get_context order */
  int nopen;
  struct veo_thr_ctxt *closed_list; /* kept so stale handles fail cleanly */
  struct sym_cache_entry *syms;
  struct veo_proc_handle *grave_next; /* destroyed procs stay listed, see libveo.c */
};

/* ---- shared helpers ------------------------------------------------------ */
void emu_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int emu_copy_to_ve(struct veo_proc_handle *p, uint64_t dst, const void *src, size_t n);
int emu_copy_from_ve(struct veo_proc_handle *p, void *dst, uint64_t src, size_t n);
int emu_proc_ok(struct veo_proc_handle *p);
struct veo_proc_handle *emu_proc_by_ident(int ident);

/* hooks (hmem.c) */
void emu_run_hook(void *api_func, int kind, void *handle, uint64_t addr, size_t size);
enum { HOOK_ALLOC, HOOK_FREE };

#endif
