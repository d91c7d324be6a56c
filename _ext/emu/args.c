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

/* Only the header is initialized: the slot arrays (~8 KiB for 256 arguments)
 * are valid up to nargs/nstack, so allocating and clearing cost the same for
 * 0 or 256 arguments.  Zeroing them made veo_args_alloc the largest cost of a
 * call from Python. */
EXPORT struct veo_args *veo_args_alloc(void) {
  struct veo_args *a = malloc(sizeof(*a));
  if (!a) return NULL;
  a->magic = ARGS_MAGIC;
  a->nargs = 0;
  a->nstack = 0;
  a->ret_type = VEO_EMU_TYPE_U64;
  return a;
}

EXPORT void veo_args_clear(struct veo_args *a) {
  if (!a || a->magic != ARGS_MAGIC) return;
  a->nargs = 0;
  a->nstack = 0;
  a->ret_type = VEO_EMU_TYPE_U64;
}

EXPORT void veo_args_free(struct veo_args *a) {
  if (!a || a->magic != ARGS_MAGIC) return;
  a->magic = 0;
  free(a);
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
  uint64_t bits;
  memcpy(&bits, &v, sizeof(bits));
  return set_arg(a, n, EMU_T_DOUBLE, bits);
}

/* Internally a float travels in the low 32 bits of its slot, where the
 * helper hands its address to libffi. */
EXPORT int veo_args_set_float(struct veo_args *a, int n, float v) {
  uint32_t bits;
  memcpy(&bits, &v, sizeof(bits));
  return set_arg(a, n, EMU_T_FLOAT, bits);
}

EXPORT int veo_args_set_hmem(struct veo_args *a, int n, void *p) {
  return set_arg(a, n, EMU_T_U64, (uint64_t)(uintptr_t)p);
}

EXPORT int veo_args_set_stack(struct veo_args *a, enum veo_args_intent intent, int n, char *buf,
                              size_t len) {
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
  if (!a || a->magic != ARGS_MAGIC || type < VEO_EMU_TYPE_U64 || type > VEO_EMU_TYPE_DOUBLE) {
    emu_set_error("veo_emu_args_set_ret_type: bad handle or type %d", type);
    errno = EINVAL;
    return -1;
  }
  a->ret_type = type;
  return 0;
}
