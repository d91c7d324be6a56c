/*
 * emu_host.h -- host-side internals of the emulator's libveo.so, shared by
 * its files (hidden: the library exports only what is marked EXPORT).
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
/* The veo_emu_* extensions: exported, except in the build of the library
 * without them (libveo-noext.so, -DVEO_EMU_NO_EXTENSIONS), which looks like
 * the vendor libveo to a program that probes for them. */
#ifdef VEO_EMU_NO_EXTENSIONS
#define EXPORT_EMU __attribute__((visibility("hidden")))
#else
#define EXPORT_EMU EXPORT
#endif

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
/* Fill fresh memory with the poison byte (VEO_EMU_POISON). */
void heap_poison(struct emu_heap *h, uint64_t off, uint64_t size);
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
/* Room for EMU_ARGS_INLINE arguments inside the struct; more (up to
 * EMU_MAX_ARGS) grow the arrays on the heap, as AVEO's vectors do, so a
 * veo_args of a few arguments stays small when thousands are in flight. */
#define EMU_ARGS_INLINE 8
struct veo_args {
  uint32_t magic;
  int nargs;
  int ret_type; /* enum veo_emu_type */
  int cap;      /* slots in types/vals/stack */
  uint8_t *types;
  uint64_t *vals;
  int nstack;
  struct emu_stack_arg *stack;
  uint8_t types_inline[EMU_ARGS_INLINE];
  uint64_t vals_inline[EMU_ARGS_INLINE];
  struct emu_stack_arg stack_inline[EMU_ARGS_INLINE];
};

/* AVEO refuses a call whose stack image (below the context's stack pointer,
 * after a 512 KiB reserve) leaves the stack pointer's 64 MiB-aligned region.
 * The emulator places each context's stack pointer 512 KiB below the end of
 * such a region, so the limit is 63 MiB, AVEO's documented "~63 MB"; on a VE
 * it is lower by however far the stack pointer sits below its region's end. */
#define EMU_STACK_IMAGE_MAX (63u << 20)
size_t emu_stack_image_bytes(const struct veo_args *a);

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
  _Atomic int waiters;        /* threads inside veo_call_wait_result on it */
  _Atomic int stale_reported; /* a use after close was reported */
};

struct sym_cache_entry {
  uint64_t lib;
  uint64_t addr;
  struct sym_cache_entry *next;
  char name[];
};

/* A timing profile (VEO_EMU_PROFILE): what a VE takes, in ns (bandwidths
 * in bytes per second); on == 0 without one. */
struct emu_profile {
  int on;
  char name[64];
  uint64_t call, roundtrip, sync_call, write, read, alloc, free;
  double write_bps, read_bps;
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
  struct veo_proc_handle *grave_next; /* destroyed procs stay listed, see proc.c */
  _Atomic int users;      /* threads inside calls that touch the shared memory */
  uint64_t buried_ns;     /* when veo_proc_destroy finished (0: not yet) */
  pthread_mutex_t fault_lock; /* the fault table (faults.c) */
  struct emu_profile prof;
  _Atomic int free_reported; /* a free of an unknown address was reported */
};

/* A thread is about to touch p's shared memory: the memory of a destroyed
 * proc is unmapped only once no thread is inside (proc.c's graveyard).
 * Callers check the proc's and context's flags after entering. */
static inline void emu_proc_users_inc(struct veo_proc_handle *p) { atomic_fetch_add(&p->users, 1); }
static inline void emu_proc_leave(struct veo_proc_handle *p) { atomic_fetch_sub(&p->users, 1); }
/* Enter, or 0 with the error set if p was destroyed. */
int emu_proc_enter(struct veo_proc_handle *p, const char *fn);

/* ---- state of a proc, read anywhere -------------------------------------- */
/* The proc is dead once the helper said so (a fault) or went away. */
static inline int emu_proc_dead(struct veo_proc_handle *p) {
  return atomic_load(&p->dead) || (p->hdr && atomic_load(&p->hdr->dead));
}

/* Nothing more will complete: the helper is gone, or it faulted and has
 * published the faulting request's result (hdr->dead alone is set before). */
static inline int emu_proc_settled(struct veo_proc_handle *p) {
  return atomic_load(&p->dead) || (p->hdr && atomic_load(&p->hdr->settled));
}

/* The open context at region index i, or NULL. */
static inline struct veo_thr_ctxt *emu_proc_ctx(struct veo_proc_handle *p, int i) {
  return __atomic_load_n(&p->ctx[i], __ATOMIC_ACQUIRE);
}

/* ---- api.c: errors, and the internal entry of veo_hmemcpy ---------------- */
void emu_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The message is cleared when an API function that may fail is entered, so
 * veo_emu_last_error never reports an earlier call's failure. */
void emu_clear_error(void);
/* Copy inside one proc (veo_hmemcpy VE to VE). */
int emu_ve_memcpy(struct veo_proc_handle *p, uint64_t dst, uint64_t src, size_t n);

/* ---- config.c: settings from the environment ------------------------------- */
uint32_t emu_spin_us(void);
int emu_poison_byte(void); /* 0: no poisoning */
/* Physical node for a VEO node argument (-1 = default), or -1 on error. */
int emu_resolve_node(int venode);

/* ---- proc.c: procs and contexts -------------------------------------------- */
struct veo_proc_handle *emu_proc_create(int venode, const char *bin);
int emu_proc_destroy(struct veo_proc_handle *p); /* p checked by the caller */
struct veo_proc_handle *emu_proc_by_ident(int ident);
int emu_proc_table_size(void);
int emu_proc_ident(struct veo_proc_handle *p); /* takes the table lock, as AVEO */
/* Handle checks: 1 if usable, else 0 with the error set (fn names the caller). */
int emu_proc_valid(struct veo_proc_handle *p, const char *fn);
int emu_proc_ok(struct veo_proc_handle *p); /* valid and not dead */
int emu_ctx_valid(struct veo_thr_ctxt *c, const char *fn);
/* Report (once per handle, on stderr) a use of a closed non-main context:
 * AVEO frees it at close, so there the use reads freed memory. */
void emu_report_stale(struct veo_thr_ctxt *c, const char *fn);
struct veo_thr_ctxt *emu_context_open(struct veo_proc_handle *p, size_t stacksize);
int emu_context_close(struct veo_thr_ctxt *c);
/* The symbol cache: 1 and *addr set on a hit. */
int emu_sym_cached(struct veo_proc_handle *p, uint64_t lib, const char *name, uint64_t *addr);
void emu_sym_remember(struct veo_proc_handle *p, uint64_t lib, const char *name, uint64_t addr);
void emu_sym_forget_lib(struct veo_proc_handle *p, uint64_t lib);

/* ---- spawn.c: the helper process ------------------------------------------- */
/* Start the helper (closing life_fd, its end of the life socket) and wait
 * until it serves; 0, or -1 with the error set and the helper gone. */
int emu_helper_start(struct veo_proc_handle *p, const char *bin, int life_fd);
void emu_helper_kill(struct veo_proc_handle *p); /* SIGKILL and reap */
void emu_helper_gone(struct veo_proc_handle *p); /* seen by the agent */
void emu_helper_end(struct veo_proc_handle *p);  /* veo_proc_destroy */
void emu_helper_kill_at_exit(struct veo_proc_handle *p);
pid_t emu_proc_pid(struct veo_proc_handle *p);

/* ---- rings.c: submitting commands, collecting results ---------------------- */
/* Submit a simple command with an optional string payload (NULL job: none). */
uint64_t emu_submit(struct veo_thr_ctxt *c, int type, uint64_t addr, uint64_t arg0,
                    uint64_t arg1, const char *str, struct job *job);
uint64_t emu_submit_agent(struct veo_thr_ctxt *c, struct job *job); /* frees job on failure */
uint64_t emu_submit_call(struct veo_thr_ctxt *c, uint64_t addr, struct veo_args *a,
                         struct job *stack_job);
int emu_peek(struct veo_thr_ctxt *c, uint64_t id, uint64_t *retp);
int emu_wait_result(struct veo_thr_ctxt *c, uint64_t id, uint64_t *retp);
int emu_main_call(struct veo_proc_handle *p, int type, uint64_t addr, uint64_t arg0,
                  uint64_t arg1, const char *str, uint64_t *retval);
/* Wait for the main context's queued work (the sync proc API queues behind
 * it).  emu_drain_main takes the main submit_lock and returns with it held,
 * also on error (-1); _locked expects it held. */
int emu_drain_main(struct veo_proc_handle *p);
int emu_drain_main_locked(struct veo_proc_handle *p);
void emu_wake_all_waiters(struct veo_proc_handle *p);

/* ---- agent.c: host work at a FIFO position --------------------------------- */
int emu_agent_start(struct veo_proc_handle *p); /* pthread_create's result */
int emu_serve_agent_slot(struct veo_thr_ctxt *c, int allow_vh);
struct job *emu_job_new(int kind); /* NULL with the error set */
void emu_job_free(struct job *j);
/* A call's stack arguments staged in VE memory, and their release. */
struct job *emu_stack_job_new(struct veo_proc_handle *p, struct veo_args *a);
void emu_stack_job_drop(struct veo_proc_handle *p, struct job *j);
int emu_copy_to_ve(struct veo_proc_handle *p, uint64_t dst, const void *src, size_t n);
int emu_copy_from_ve(struct veo_proc_handle *p, void *dst, uint64_t src, size_t n);

/* ---- faults.c: faults on purpose ------------------------------------------ */
void emu_fault_format(const struct emu_fault *f, char *buf, size_t len);
int emu_faults_check_env(void); /* -1 (error set) if VEO_EMU_FAULTS is wrong */
int emu_faults_arm_new(struct veo_proc_handle *p); /* VEO_EMU_FAULTS and inject(NULL) */
/* 1 (error set) if an allocation of `size` on context `ctx` must fail. */
int emu_fault_nomem(struct veo_proc_handle *p, int ctx, uint64_t size);
void emu_fault_allocated(struct veo_proc_handle *p, int ctx, uint64_t size);

/* ---- profile.c: the timing profile ------------------------------------------ */
int emu_profile_load(struct emu_profile *pr); /* VEO_EMU_PROFILE; -1 with the error set */
void emu_profile_format(const struct emu_profile *pr, char *buf, size_t len);
/* A command's t_ready and service_ns (0, 0 without a profile). */
void emu_profile_cmd(struct veo_proc_handle *p, struct emu_cmd *cmd, const struct job *job);
/* A synchronous operation that began at t0 ends no earlier than the
 * profile's base + bytes at its bandwidth. */
void emu_profile_hold(struct veo_proc_handle *p, uint64_t t0, uint64_t base_ns, uint64_t bytes,
                      double bps);
/* veo_call_sync's own round trip (AVEO calls it directly, not through the queue). */
extern __thread int emu_t_sync_call;
/* Copy for transfers (large ones bypass the cache, as a DMA does). */
void emu_copy(void *dst, const void *src, size_t n);

/* ---- hmem.c: hooks --------------------------------------------------------- */
void emu_run_hook(void *api_func, int kind, void *handle, uint64_t addr, size_t size);
enum { HOOK_ALLOC, HOOK_FREE };

#endif
