/*
 * args.c -- struct veo_args: typed call arguments and stack arguments.
 *
 * Unlike AVEO, argument numbers outside 0..VEO_MAX_NUM_ARGS-1 are rejected,
 * and a hole (an argument never set below the highest one set) makes the
 * call fail with VEO_REQUEST_ID_INVALID instead of crashing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "emu_host.h"

/* Only the header is initialized: the slots are valid up to nargs/nstack. */
EXPORT struct veo_args *veo_args_alloc(void) {
  emu_clear_error();
  struct veo_args *a = malloc(sizeof(*a));
  if (!a) return NULL;
  a->magic = ARGS_MAGIC;
  a->nargs = 0;
  a->nstack = 0;
  a->ret_type = VEO_EMU_TYPE_U64;
  a->cap = EMU_ARGS_INLINE;
  a->types = a->types_inline;
  a->vals = a->vals_inline;
  a->stack = a->stack_inline;
  return a;
}

EXPORT void veo_args_clear(struct veo_args *a) {
  if (!a || a->magic != ARGS_MAGIC) return;
  a->nargs = 0;
  a->nstack = 0;
  a->ret_type = VEO_EMU_TYPE_U64;
}

static void free_slots(struct veo_args *a) {
  if (a->types != a->types_inline) free(a->types);
  if (a->vals != a->vals_inline) free(a->vals);
  if (a->stack != a->stack_inline) free(a->stack);
}

EXPORT void veo_args_free(struct veo_args *a) {
  if (!a || a->magic != ARGS_MAGIC) return;
  a->magic = 0;
  free_slots(a);
  free(a);
}

/* Make room for argument number argnum (< EMU_MAX_ARGS): all at once to the
 * maximum, since a call with more than a few arguments is rare. */
static int grow(struct veo_args *a, int argnum) {
  if (argnum < a->cap) return 0;
  uint8_t *t = malloc(EMU_MAX_ARGS);
  uint64_t *v = malloc(sizeof(*v) * EMU_MAX_ARGS);
  struct emu_stack_arg *s = malloc(sizeof(*s) * EMU_MAX_ARGS);
  if (!t || !v || !s) {
    free(t);
    free(v);
    free(s);
    emu_set_error("veo_args_set: out of memory");
    errno = ENOMEM;
    return -1;
  }
  memcpy(t, a->types, (size_t)a->nargs);
  memcpy(v, a->vals, sizeof(*v) * (size_t)a->nargs);
  memcpy(s, a->stack, sizeof(*s) * (size_t)a->nstack);
  free_slots(a);
  a->types = t;
  a->vals = v;
  a->stack = s;
  a->cap = EMU_MAX_ARGS;
  return 0;
}

/* Drop a stack argument previously registered at argnum (it is replaced). */
static void drop_stack(struct veo_args *a, int argnum) {
  for (int i = 0; i < a->nstack; i++) {
    if (a->stack[i].argnum != argnum) continue;
    memmove(&a->stack[i], &a->stack[i + 1], (size_t)(a->nstack - i - 1) * sizeof(a->stack[0]));
    a->nstack--;
    return;
  }
}

static int set_arg(struct veo_args *a, int argnum, int type, uint64_t val) {
  emu_clear_error();
  if (!a || a->magic != ARGS_MAGIC) {
    emu_set_error("veo_args_set: invalid veo_args handle");
    errno = EINVAL;
    return -1;
  }
  if (argnum < 0 || argnum >= EMU_MAX_ARGS) {
    emu_set_error("veo_args_set: argument number %d outside 0..%d", argnum, EMU_MAX_ARGS - 1);
    errno = EINVAL;
    return -1;
  }
  if (grow(a, argnum)) return -1;
  if (argnum >= a->nargs) { /* slots skipped over are holes until set */
    memset(&a->types[a->nargs], EMU_T_NONE, (size_t)(argnum - a->nargs));
    a->nargs = argnum + 1;
  } else if (a->types[argnum] == EMU_T_STACK) {
    drop_stack(a, argnum);
  }
  a->types[argnum] = (uint8_t)type;
  a->vals[argnum] = val;
  return 0;
}

#define SETTER(name, ctype, T, conv)                                   \
  EXPORT int veo_args_set_##name(struct veo_args *a, int n, ctype v) { \
    return set_arg(a, n, T, conv);                                     \
  }
SETTER(i64, int64_t, EMU_T_I64, (uint64_t)v)
SETTER(u64, uint64_t, EMU_T_U64, v)
SETTER(i32, int32_t, EMU_T_I32, (uint64_t)(int64_t)v)
SETTER(u32, uint32_t, EMU_T_U32, (uint64_t)v)
SETTER(i16, int16_t, EMU_T_I16, (uint64_t)(int64_t)v)
SETTER(u16, uint16_t, EMU_T_U16, (uint64_t)v)
SETTER(i8, int8_t, EMU_T_I8, (uint64_t)(int64_t)v)
SETTER(u8, uint8_t, EMU_T_U8, (uint64_t)v)

EXPORT int veo_args_set_double(struct veo_args *a, int n, double v) {
  emu_clear_error();
  uint64_t bits;
  memcpy(&bits, &v, sizeof(bits));
  return set_arg(a, n, EMU_T_DOUBLE, bits);
}

/* Internally a float travels in the low 32 bits of its slot, where the
 * helper hands its address to libffi. */
EXPORT int veo_args_set_float(struct veo_args *a, int n, float v) {
  emu_clear_error();
  uint32_t bits;
  memcpy(&bits, &v, sizeof(bits));
  return set_arg(a, n, EMU_T_FLOAT, bits);
}

EXPORT int veo_args_set_hmem(struct veo_args *a, int n, void *p) {
  emu_clear_error();
  return set_arg(a, n, EMU_T_U64, (uint64_t)(uintptr_t)p);
}

EXPORT int veo_args_set_stack(struct veo_args *a, enum veo_args_intent intent, int n, char *buf,
                              size_t len) {
  emu_clear_error();
  if (intent != VEO_INTENT_IN && intent != VEO_INTENT_INOUT && intent != VEO_INTENT_OUT) {
    emu_set_error("veo_args_set_stack: bad intent %d", (int)intent);
    errno = EINVAL;
    return -1;
  }
  if (len && !buf) {
    emu_set_error("veo_args_set_stack: NULL buffer of %zu bytes", len);
    errno = EINVAL;
    return -1;
  }
  if (set_arg(a, n, EMU_T_STACK, 0)) return -1;
  a->stack[a->nstack++] = (struct emu_stack_arg){n, (int)intent, buf, len};
  return 0;
}

/* AVEO's stack image of a call (CallArgs::getStackImage): the register save
 * and parameter area (176 + 8 bytes per argument), then each stack
 * argument's data padded to 8 bytes, the whole rounded up to 16. */
size_t emu_stack_image_bytes(const struct veo_args *a) {
  size_t n = 176 + 8 * (size_t)a->nargs;
  for (int i = 0; i < a->nstack; i++) n += (a->stack[i].len + 7) & ~(size_t)7;
  return (n + 15) & ~(size_t)15;
}

EXPORT_EMU int veo_emu_args_set_ret_type(struct veo_args *a, int type) {
  emu_clear_error();
  if (!a || a->magic != ARGS_MAGIC || type < VEO_EMU_TYPE_U64 || type > VEO_EMU_TYPE_DOUBLE) {
    emu_set_error("veo_emu_args_set_ret_type: bad handle or type %d", type);
    errno = EINVAL;
    return -1;
  }
  a->ret_type = type;
  return 0;
}
