/*
 * emu_proto.h -- the shared-memory protocol between libveo.so (the host
 * side) and aioveo-veorun (the helper process that plays the VE).
 *
 * One memfd per proc holds a header and one region per context.  A context
 * region has a command ring (host -> helper, variable-length records) and a
 * result ring (helper -> host, one slot per request, in FIFO order).  Both
 * sides wake each other with a short spin and then a futex on the shared
 * words.  VE memory ("the heap") is a second memfd mapped by both sides, so
 * transfers to memory from veo_alloc_mem are one memcpy on the host.
 *
 * Work the helper cannot do alone -- copying to or from host buffers, VH
 * calls, heap alloc/free at a FIFO position -- is posted to the host's
 * "agent" (a thread of libveo per proc) through the context's agent slot;
 * the context thread waits for the agent, so FIFO order is kept.
 */
#ifndef AIOVEO_EMU_PROTO_H
#define AIOVEO_EMU_PROTO_H

#include <stdint.h>
#include <stdatomic.h>

#define EMU_MAGIC 0x56454f454d55ULL /* "VEOEMU" */
#define EMU_PROTO_VERSION 2
#define EMU_MAX_CONTEXTS 64
#define EMU_CMD_RING_BYTES (1u << 20)
#define EMU_RES_RING_SLOTS (1u << 16)
#define EMU_MAX_ARGS 256
#define EMU_MSG_LEN 256

/* fd numbers the helper finds its resources at (set up before exec). */
#define EMU_FD_SHM 3
#define EMU_FD_HEAP 4
#define EMU_FD_LIFE 5 /* socket: EOF = the other side died; bytes = agent wake */

enum emu_cmd_type {
  EMU_CMD_NOP = 1,       /* completes with 0 (used by veo_context_sync) */
  EMU_CMD_CALL,          /* call a kernel */
  EMU_CMD_LOAD_LIB,      /* dlopen(name) -> handle */
  EMU_CMD_UNLOAD_LIB,    /* dlclose(handle) */
  EMU_CMD_GET_SYM,       /* dlsym(handle, name) / static table -> address */
  EMU_CMD_FREE,          /* free() of a non-heap address */
  EMU_CMD_MEMCPY,        /* VE to VE copy inside the proc */
  EMU_CMD_OPEN_CTX,      /* start the thread for context `arg0` */
  EMU_CMD_EXIT,          /* the context thread ends (context 0: the helper) */
  EMU_CMD_AGENT,         /* pure host work at this FIFO position */
};

/* Argument types recorded in veo_args (libffi types on the helper side). */
enum emu_arg_type {
  EMU_T_NONE = 0, EMU_T_I8, EMU_T_U8, EMU_T_I16, EMU_T_U16, EMU_T_I32,
  EMU_T_U32, EMU_T_I64, EMU_T_U64, EMU_T_FLOAT, EMU_T_DOUBLE,
  EMU_T_STACK, /* a pointer to a stack buffer the helper fills in */
};

/* Flags of a command. */
#define EMU_F_AGENT_AFTER 1u /* ask the host agent after execution */

/* A command record in the ring, 8-byte aligned.  For EMU_CMD_CALL the record
 * continues with nargs type bytes (padded to 8), nargs 64-bit values, then
 * nstack struct emu_stack_desc; strings (lib/sym names) follow the header. */
struct emu_cmd {
  uint32_t size;   /* bytes of the whole record, multiple of 8 */
  uint16_t type;
  uint16_t flags;
  uint64_t seq;    /* request id */
  uint64_t addr;   /* call address / handle / address to free / dst */
  uint64_t arg0;   /* ret type / context index / src / stack size */
  uint64_t arg1;   /* memcpy length */
  uint32_t nargs;
  uint32_t nstack;
  /* The timing profile (VEO_EMU_PROFILE; both 0 without one): the VE may
   * start the command at t_ready (CLOCK_MONOTONIC ns: its submission plus
   * the transit the profile models) and it then takes at least service_ns. */
  uint64_t t_ready;
  uint64_t service_ns;
};

/* A stack argument: the helper passes a pointer to a buffer of `len` bytes
 * at heap offset `heap_off` (allocated and filled by the host at submit). */
struct emu_stack_desc {
  uint64_t heap_off;
  uint64_t len;
  uint32_t argnum;
  uint32_t intent;
};

struct emu_result {
  uint64_t retval;
  uint32_t status; /* enum veo_command_state */
  uint32_t pad;
};

/* Agent slot: the context thread posts a request for host work and waits. */
enum emu_agent_state { EMU_AGENT_IDLE = 0, EMU_AGENT_READY, EMU_AGENT_BUSY, EMU_AGENT_DONE };

struct emu_agent_slot {
  _Atomic uint32_t state;   /* futex word */
  uint32_t status;          /* result of the host work (veo_command_state) */
  uint64_t seq;             /* request the work belongs to */
  uint64_t value;           /* in: kernel result; out: request result */
};

/* Cache-line separated words of a context's control block. */
struct emu_ctx_ctl {
  _Atomic uint64_t cmd_head;     /* bytes written by the host (futex: low 32) */
  char pad0[56];
  _Atomic uint64_t cmd_tail;     /* bytes consumed by the helper */
  _Atomic uint32_t helper_sleeping;
  _Atomic uint32_t state;        /* enum veo_context_state seen by the helper */
  char pad1[48];
  _Atomic uint64_t done;         /* requests completed (futex: low 32 bits) */
  _Atomic uint32_t host_waiters;
  char pad2[52];
  struct emu_agent_slot agent;
  char pad3[40];
  char msg[EMU_MSG_LEN];         /* last error text from the helper */
};

struct emu_ctx_region {
  struct emu_ctx_ctl ctl;
  struct emu_result results[EMU_RES_RING_SLOTS];
  unsigned char ring[EMU_CMD_RING_BYTES];
};

struct emu_header {
  uint64_t magic;
  uint32_t version;
  uint32_t node;
  uint64_t heap_size;     /* bytes of the heap memfd */
  uint64_t heap_base;     /* helper address of the heap (set by the helper) */
  _Atomic uint32_t ready; /* futex: 1 once the helper is serving context 0 */
  _Atomic uint32_t dead;  /* signal number that killed the proc, or 255 */
  _Atomic uint32_t agent_sleeping;
  _Atomic uint32_t agent_posts; /* bumped by the helper at each agent post */
  uint32_t spin_us;       /* spin budget before futex sleeps */
  _Atomic uint32_t settled; /* 1 once a fault's result is published (after dead) */
  _Atomic uint32_t nfaults; /* injected faults published in faults[] (see below) */
  uint32_t spin_yield;    /* spinning waits yield the core (the timing profile) */
  char pad1[56];
};

/* ---- injected faults (VEO_EMU_FAULTS, veo_emu_inject) ------------------------
 * The host parses a fault and publishes it in the header's table (record
 * first, then nfaults); the helper checks the table at each kernel call.
 * Allocation faults are the host's alone; the others are the helper's. */
enum emu_fault_kind {
  EMU_FAULT_CRASH = 1, /* the kernel raises a signal */
  EMU_FAULT_DIE,       /* the VE process dies after N calls or at a time */
  EMU_FAULT_NOMEM,     /* allocations fail */
  EMU_FAULT_HANG,      /* the kernel never returns */
  EMU_FAULT_DELAY,     /* the kernel starts late */
};
#define EMU_MAX_FAULTS 32
#define EMU_FAULT_SYM_LEN 128

struct emu_fault {
  uint32_t kind;
  _Atomic uint32_t active;  /* 0 once cleared */
  int32_t node, proc, ctx;  /* -1: any */
  int32_t signal;           /* crash */
  uint64_t call;            /* only the N-th matching event (0: every one) */
  uint64_t rate;            /* each event with probability rate / 2^53 (0: off) */
  uint64_t seed;
  uint64_t after_calls;     /* die: after this many matching calls */
  uint64_t after_ns;        /* die: this long after it was armed (as written) */
  uint64_t deadline_ns;     /* die: armed time + after_ns, CLOCK_MONOTONIC */
  uint64_t above;           /* nomem: requests larger than this fail */
  uint64_t budget;          /* nomem: ... or that would pass this many bytes */
  uint64_t delay_ns;        /* delay */
  _Atomic uint64_t seen;    /* matching events so far */
  _Atomic uint64_t fired;   /* times it acted */
  _Atomic uint64_t bytes;   /* nomem: bytes allocated while armed */
  char sym[EMU_FAULT_SYM_LEN]; /* fnmatch pattern of the kernel's symbol; "" any */
  char text[128];           /* the fault as written (normalized), for messages */
};

/* A fault's decision for its k-th event with a rate: deterministic given
 * the seed (splitmix64). */
static inline int emu_fault_roll(const struct emu_fault *f, uint64_t k) {
  uint64_t z = f->seed + k * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (z >> 11) < f->rate;
}

#define EMU_HEADER_BYTES 16384u
#define EMU_SHM_BYTES \
  ((uint64_t)EMU_HEADER_BYTES + (uint64_t)EMU_MAX_CONTEXTS * sizeof(struct emu_ctx_region))

static inline struct emu_fault *emu_faults(void *shm) {
  return (struct emu_fault *)((char *)shm + 256);
}
_Static_assert(sizeof(struct emu_header) <= 256, "the header must leave room for the faults");
_Static_assert(256 + EMU_MAX_FAULTS * sizeof(struct emu_fault) <= EMU_HEADER_BYTES,
               "the faults must fit in the header");

static inline struct emu_ctx_region *emu_ctx_region(void *shm, int idx) {
  return (struct emu_ctx_region *)((char *)shm + EMU_HEADER_BYTES) + idx;
}

/* A "static helper" links kernels in and defines this table (NULL-terminated);
 * veo_get_sym(proc, 0, name) searches it. */
struct veo_emu_static_sym {
  const char *name;
  void *addr;
};

#endif
