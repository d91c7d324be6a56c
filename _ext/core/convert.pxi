# Python values to VE arguments, VE results to Python values.
#
# Value codes are the emulator's return-type codes (veo_emu_type, from
# libveo.pxd) plus T_PTR for pointers, which travel as u64 and come back as a
# VEMemPtr.  Integer ranges come from aioveo._ctype (CType.min/max), the one
# place that knows them; VeoFunction.args_type copies them into C arrays.
import numbers
from libc.math cimport isfinite, fabs

cdef enum:
    T_PTR = 11


cdef inline bint _is_signed(int code) noexcept nogil:
    return code == VEO_EMU_TYPE_I8 or code == VEO_EMU_TYPE_I16 or \
        code == VEO_EMU_TYPE_I32 or code == VEO_EMU_TYPE_I64


cdef int _code_of(ctype) except -1:
    return T_PTR if ctype.kind == "pointer" else ctype.emu_code


cdef str _arg_label(VeoFunction fn, int i):
    return f"{fn.name}() argument {i + 1} ({fn.ctypes[i].name})"


cdef bint _is_numpy_bool(object x):
    t = type(x)
    return t.__module__ == "numpy" and t.__name__ in ("bool", "bool_")


cdef object _wrong_type(VeoFunction fn, int i, object x, str expected):
    """The TypeError for an argument of the wrong kind, with the likely fix."""
    label = _arg_label(fn, i)
    kind = type(x).__name__
    if hasattr(x, "__await__") or hasattr(x, "cr_frame"):
        return TypeError(f"{label} is a {kind}, not a value: did you forget `await`?")
    if fn.codes[i] == T_PTR and (hasattr(x, "__array_interface__") or
                                 isinstance(x, (bytes, bytearray, memoryview))):
        return TypeError(f"{label} is a host buffer ({kind}); a pointer argument needs VE "
                         f"memory: copy it there with `await ctx.to_ve(x)` (asyncio) or "
                         f"proc.alloc_mem + write_mem, or pass OnStack(x) to copy it onto "
                         f"the VE stack for the call")
    return TypeError(f"{label} must be {expected}, not {kind}")


cdef object _as_real(VeoFunction fn, int i, object x):
    """`x` as a Python float: Python numbers and NumPy scalars, never bools."""
    if isinstance(x, numbers.Real) and not isinstance(x, bool) and not _is_numpy_bool(x):
        return float(x)
    raise _wrong_type(fn, i, x, "a number")


cdef object _as_int(VeoFunction fn, int i, object x, int code, object proc):
    """`x` as a Python int: ints, bools, NumPy integers and bools, objects
    with __index__; for a pointer also a VEMemPtr of `proc` or None."""
    cdef VEArray a
    if code == T_PTR:
        if type(x) is VEMemPtr:
            if _ptr_freed(<VEMemPtr>x):
                raise ClosedError(f"{_arg_label(fn, i)}: {x!r} was freed")
            if (<VEMemPtr>x).proc is not proc:
                raise ValueError(f"{_arg_label(fn, i)}: {x!r} belongs to another proc")
            return (<VEMemPtr>x).addr
        if type(x) is VEArray:
            a = <VEArray>x
            _check_array(a, proc, _arg_label(fn, i))
            if not _fits_pointee(a, fn.pkind[i], fn.psize[i]):
                need = _pointee_dtype(fn.pkind[i], fn.psize[i])
                raise TypeError(
                    f"{_arg_label(fn, i)}: a VEArray of {a.dtype} does not match the pointee "
                    f"type, which needs {need}; reinterpret its bytes explicitly with "
                    f"arr.view(numpy.{need}), or pass the untyped address arr.ptr")
            return a.ptr.addr
        if x is None:
            return 0
    if isinstance(x, int):
        return int(x)
    if _is_numpy_bool(x):
        return int(x)
    try:
        return operator.index(x)
    except TypeError:
        raise _wrong_type(fn, i, x, "an int") from None


cdef object _out_of_range(VeoFunction fn, int i, object x):
    cdef int code = fn.codes[i]
    lo = fn.lo[i] if _is_signed(code) else 0
    return OverflowError(f"{_arg_label(fn, i)}: {x} is out of range [{lo}, {fn.hi[i]}]")


cdef int _set_arg(veo_args *a, int i, VeoFunction fn, object x, object proc) except -1:
    """Set argument `i` of a call of `fn` from the Python value `x`."""
    cdef int code = fn.codes[i]
    cdef int rc
    cdef int64_t sv
    cdef uint64_t uv
    cdef double d
    if code == VEO_EMU_TYPE_DOUBLE or code == VEO_EMU_TYPE_FLOAT:
        if type(x) is not float:
            x = _as_real(fn, i, x)
        d = x
        if code == VEO_EMU_TYPE_DOUBLE:
            rc = api.args_set_double(a, i, d)
        else:
            if isfinite(d) and fabs(d) > 3.4028234663852886e38:
                raise OverflowError(f"{_arg_label(fn, i)}: {x!r} is out of range")
            rc = api.args_set_float(a, i, <float>d)
    else:
        if type(x) is not int:
            x = _as_int(fn, i, x, code, proc)
        if _is_signed(code):
            try:
                sv = x
            except OverflowError:
                raise _out_of_range(fn, i, x) from None
            if sv < fn.lo[i] or sv > <int64_t>fn.hi[i]:
                raise _out_of_range(fn, i, x)
            if code == VEO_EMU_TYPE_I64:
                rc = api.args_set_i64(a, i, sv)
            elif code == VEO_EMU_TYPE_I32:
                rc = api.args_set_i32(a, i, <int32_t>sv)
            elif code == VEO_EMU_TYPE_I16:
                rc = api.args_set_i16(a, i, <int16_t>sv)
            else:
                rc = api.args_set_i8(a, i, <int8_t>sv)
        else:
            if x < 0:
                raise _out_of_range(fn, i, x)
            try:
                uv = x
            except OverflowError:
                raise _out_of_range(fn, i, x) from None
            if uv > fn.hi[i]:
                raise _out_of_range(fn, i, x)
            if code == VEO_EMU_TYPE_U64 or code == T_PTR:
                rc = api.args_set_u64(a, i, uv)
            elif code == VEO_EMU_TYPE_U32:
                rc = api.args_set_u32(a, i, <uint32_t>uv)
            elif code == VEO_EMU_TYPE_U16:
                rc = api.args_set_u16(a, i, <uint16_t>uv)
            else:
                rc = api.args_set_u8(a, i, <uint8_t>uv)
    if rc != 0:
        _fail(f"{fn.name}(): setting argument {i + 1} failed", "veo_args_set_*", rc)
    return 0


cdef int _set_stack(veo_args *a, int i, OnStack s) except -1:
    if api.args_set_stack(a, <veo_args_intent>s._inout, i, <char *>s._buf.view.buf, s._size) != 0:
        _fail(f"veo_args_set_stack failed for argument {i + 1}", "veo_args_set_stack", -1)
    return 0


cdef object _convert_result(int code, uint64_t r, object proc):
    cdef double d
    cdef float f
    cdef uint32_t hi
    if code == VEO_EMU_TYPE_I32:
        return <int32_t>r
    if code == VEO_EMU_TYPE_I64:
        return <int64_t>r
    if code == VEO_EMU_TYPE_U64:
        return r
    if code == VEO_EMU_TYPE_DOUBLE:
        memcpy(&d, &r, 8)
        return d
    if code == VEO_EMU_TYPE_FLOAT:  # a float comes back in the upper 32 bits (VE ABI)
        hi = <uint32_t>(r >> 32)
        memcpy(&f, &hi, 4)
        return f
    if code == VEO_EMU_TYPE_VOID:
        return None
    if code == T_PTR:
        return VEMemPtr(proc, r, 0)
    if code == VEO_EMU_TYPE_U32:
        return <uint32_t>r
    if code == VEO_EMU_TYPE_I16:
        return <int16_t>r
    if code == VEO_EMU_TYPE_U16:
        return <uint16_t>r
    if code == VEO_EMU_TYPE_I8:
        return <int8_t>r
    if code == VEO_EMU_TYPE_U8:
        return <uint8_t>r
    raise AssertionError(code)
