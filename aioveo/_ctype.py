"""C type strings for ``args_type``/``ret_type`` and a C prototype parser.

PyVEO accepts a fixed list of type names plus "anything ending in ``*``".
This module accepts a superset (every spelling C allows for the scalar types
VEO can pass, qualifiers, fixed-width typedefs, pointers to named types) and
rejects everything else with :class:`CTypeError`, never another exception.
The VE is LP64: ``long`` and pointers are 8 bytes.
"""
from __future__ import annotations

import enum
import functools
import re
from typing import Callable, NamedTuple

from ._core import TYPE_CODES

__all__ = ["CType", "CTypeError", "EmuType", "Prototype", "parse_type", "parse_prototype"]


class CTypeError(ValueError, TypeError):
    """A C type or prototype string that is not understood.

    A ValueError (bad string content) and a TypeError (what PyVEO raised for an
    unknown type), so code written for either keeps working.
    """


class EmuType(enum.IntEnum):
    """Return-type codes of the emulator's veo_emu_args_set_ret_type(), as
    ve_offload.h numbers them (the core reads them from the header)."""

    U64 = TYPE_CODES["U64"]
    VOID = TYPE_CODES["VOID"]
    I8 = TYPE_CODES["I8"]
    U8 = TYPE_CODES["U8"]
    I16 = TYPE_CODES["I16"]
    U16 = TYPE_CODES["U16"]
    I32 = TYPE_CODES["I32"]
    U32 = TYPE_CODES["U32"]
    I64 = TYPE_CODES["I64"]
    FLOAT = TYPE_CODES["FLOAT"]
    DOUBLE = TYPE_CODES["DOUBLE"]


_INT_CODES = {
    (1, True): EmuType.I8, (1, False): EmuType.U8,
    (2, True): EmuType.I16, (2, False): EmuType.U16,
    (4, True): EmuType.I32, (4, False): EmuType.U32,
    (8, True): EmuType.I64, (8, False): EmuType.U64,
}
class CType(NamedTuple):
    """One parsed C type.

    ``name`` is the normalized spelling ("unsigned int", "double *"), ``kind``
    one of "int", "float", "pointer", "void"; ``size`` in bytes on the VE.
    """

    name: str
    kind: str
    size: int
    signed: bool
    emu_code: int

    @property
    def min(self) -> int | None:
        """Smallest value of an integer (or pointer) type; None for float and void."""
        if self.kind == "pointer":
            return 0
        if self.kind != "int":
            return None
        return -(1 << (8 * self.size - 1)) if self.signed else 0

    @property
    def max(self) -> int | None:
        """Largest value of an integer (or pointer) type; None for float and void."""
        if self.kind == "pointer":
            return (1 << 64) - 1
        if self.kind != "int":
            return None
        if self.name == "bool":
            return 1
        return (1 << (8 * self.size - (1 if self.signed else 0))) - 1

    def __str__(self) -> str:
        return self.name


class Prototype(NamedTuple):
    """A parsed C function declaration."""

    name: str
    ret: CType
    args: tuple[CType, ...]
    arg_names: tuple[str | None, ...]

    def __str__(self) -> str:
        params = ", ".join(
            _join_decl(t.name, n) for t, n in zip(self.args, self.arg_names)) or "void"
        return f"{_join_decl(self.ret.name, self.name)}({params})"


def _join_decl(type_name: str, name: str | None) -> str:
    if not name:
        return type_name
    return f"{type_name}{name}" if type_name.endswith("*") else f"{type_name} {name}"


def _int(name: str, size: int, signed: bool) -> CType:
    return CType(name, "int", size, signed, int(_INT_CODES[(size, signed)]))


_VOID = CType("void", "void", 0, False, int(EmuType.VOID))
_FLOAT = CType("float", "float", 4, True, int(EmuType.FLOAT))
_DOUBLE = CType("double", "float", 8, True, int(EmuType.DOUBLE))

# Single-word type names other than the int keyword combinations.
_NAMED: dict[str, CType] = {
    "void": _VOID,
    "float": _FLOAT,
    "double": _DOUBLE,
    "bool": _int("bool", 1, False),
    "_Bool": _int("bool", 1, False),
    "int8_t": _int("int8_t", 1, True),
    "uint8_t": _int("uint8_t", 1, False),
    "int16_t": _int("int16_t", 2, True),
    "uint16_t": _int("uint16_t", 2, False),
    "int32_t": _int("int32_t", 4, True),
    "uint32_t": _int("uint32_t", 4, False),
    "int64_t": _int("int64_t", 8, True),
    "uint64_t": _int("uint64_t", 8, False),
    "size_t": _int("size_t", 8, False),
    "ssize_t": _int("ssize_t", 8, True),
    "intptr_t": _int("intptr_t", 8, True),
    "uintptr_t": _int("uintptr_t", 8, False),
    "ptrdiff_t": _int("ptrdiff_t", 8, True),
}

_INT_WORDS = frozenset({"signed", "unsigned", "char", "short", "int", "long"})
_QUALIFIERS = frozenset({"const", "volatile", "restrict", "__restrict", "__restrict__"})
_TAGS = frozenset({"struct", "union", "enum"})
# Words that can never be a parameter name or a struct tag.
_RESERVED = (_INT_WORDS | _QUALIFIERS | _TAGS | frozenset(_NAMED)
             | frozenset({"extern", "static", "inline", "register", "auto", "typedef"}))

_TOKEN = re.compile(r"\s*(?:(\.\.\.)|([A-Za-z_][A-Za-z0-9_]*)|([0-9][A-Za-z0-9_]*)|([*()\[\],;]))")
_EXPECTED = ("expected a C scalar type (char, short, int, long, long long, optionally "
             "signed/unsigned; float, double, bool, int8_t..uint64_t, size_t, ssize_t), "
             "void, or a pointer such as 'double *' or 'struct foo *'")
_MAX_SHOWN = 120
_PUNCT = frozenset("[]*(),;") | {"..."}


def _show(s: str) -> str:
    return repr(s if len(s) <= _MAX_SHOWN else s[:_MAX_SHOWN] + "...")


def _tokenize(s: str, what: str) -> list[str]:
    tokens: list[str] = []
    pos, end = 0, len(s)
    while pos < end:
        m = _TOKEN.match(s, pos)
        if m is None:
            if s[pos:].strip() == "":
                break
            raise CTypeError(f"invalid {what} {_show(s)}: unexpected character "
                             f"{s[pos:].lstrip()[0]!r} at position {pos}")
        tokens.append(m.group(m.lastindex or 0))
        pos = m.end()
    return tokens


def _to_str(s: object, what: str) -> str:
    if isinstance(s, (bytes, bytearray)):  # PyVEO accepted bytes type names too
        try:
            return bytes(s).decode("ascii")
        except UnicodeDecodeError:
            raise CTypeError(f"invalid {what} {s!r}: not ASCII") from None
    if not isinstance(s, str):
        raise CTypeError(f"a {what} must be a str, not {type(s).__name__}: {s!r:.{_MAX_SHOWN}}")
    return s


def _base_type(words: list[str], stars: int, src: str) -> CType:
    """The type named by the specifier words (qualifiers already removed)."""
    def bad(detail: str) -> CTypeError:
        return CTypeError(f"invalid C type {_show(src)}: {detail}; {_EXPECTED}")

    if not words:
        raise bad("no type name")
    if words[0] in _TAGS:
        if len(words) != 2 or not _is_ident(words[1]) or words[1] in _RESERVED:
            raise bad(f"'{words[0]}' must be followed by one tag name")
        name = f"{words[0]} {words[1]}"
        if stars:
            return _pointer(name, stars)
        if words[0] == "enum":
            return CType(name, "int", 4, True, int(EmuType.I32))
        raise bad(f"{name} passed by value is not supported by VEO; pass a pointer")
    for w in words:
        if w in _TAGS:
            raise bad(f"misplaced '{w}'")
    if len(words) == 1 and words[0] in _NAMED:
        base = _NAMED[words[0]]
    elif all(w in _INT_WORDS for w in words):
        base = _int_keywords(words, bad)
    elif "double" in words and set(words) == {"long", "double"}:
        raise bad("long double (16 bytes on the VE) cannot be passed in a VEO argument")
    elif len(words) == 1 and _is_ident(words[0]):
        if stars:  # like PyVEO: a pointer to any named type is a pointer
            return _pointer(words[0], stars)
        raise bad(f"unknown type name '{words[0]}' (typedef names are only "
                  "accepted as pointers)")
    else:
        raise bad(f"'{' '.join(words)}' is not a type")
    return _pointer(base.name, stars) if stars else base


def _int_keywords(words: list[str], bad: Callable[[str], CTypeError]) -> CType:
    count = {w: words.count(w) for w in _INT_WORDS}
    if count["signed"] + count["unsigned"] > 1:
        raise bad("more than one signed/unsigned")
    if count["char"] > 1 or count["short"] > 1 or count["int"] > 1 or count["long"] > 2:
        raise bad("repeated type keyword")
    unsigned = count["unsigned"] == 1
    prefix = "unsigned " if unsigned else ""
    if count["char"]:
        if count["short"] or count["long"] or count["int"]:
            raise bad("'char' combined with short/long/int")
        # Plain char is signed on the VE (and on x86-64) but is its own C type.
        name = "unsigned char" if unsigned else ("signed char" if count["signed"] else "char")
        return _int(name, 1, not unsigned)
    if count["short"]:
        if count["long"]:
            raise bad("'short' combined with 'long'")
        return _int(prefix + "short", 2, not unsigned)
    if count["long"] == 2:
        return _int(prefix + "long long", 8, not unsigned)
    if count["long"] == 1:
        return _int(prefix + "long", 8, not unsigned)
    return _int(prefix + "int", 4, not unsigned)


def _pointer(base_name: str, stars: int) -> CType:
    return CType(f"{base_name} {'*' * stars}", "pointer", 8, False, int(EmuType.U64))


def _is_ident(tok: str) -> bool:
    return tok[:1].isalpha() or tok[:1] == "_"


def _split_declarator(tokens: list[str]) -> tuple[list[str], int, list[str]]:
    """Split tokens into (specifier words without qualifiers, pointer depth, rest)."""
    words: list[str] = []
    i = 0
    while i < len(tokens) and _is_ident(tokens[i]):
        if tokens[i] not in _QUALIFIERS:
            words.append(tokens[i])
        i += 1
    stars = 0
    while i < len(tokens) and (tokens[i] == "*" or (stars and tokens[i] in _QUALIFIERS)):
        stars += tokens[i] == "*"
        i += 1
    return words, stars, tokens[i:]


@functools.lru_cache(maxsize=1024)
def _parse_type_str(s: str) -> CType:
    tokens = _tokenize(s, "C type")
    words, stars, rest = _split_declarator(tokens)
    if rest:
        raise CTypeError(f"invalid C type {_show(s)}: unexpected {rest[0]!r}; {_EXPECTED}")
    return _base_type(words, stars, s)


def parse_type(s: str | bytes | CType) -> CType:
    """Parse a C type string such as ``"unsigned long"`` or ``"const double *"``.

    Whitespace and const/volatile/restrict qualifiers do not matter. A CType is
    returned unchanged. Raises CTypeError for anything else.
    """
    if isinstance(s, CType):
        return s
    return _parse_type_str(_to_str(s, "C type"))


def _parse_param(tokens: list[str], src: str) -> tuple[CType, str | None]:
    """One parameter declaration: type, optional name, optional array suffixes."""
    def bad(detail: str) -> CTypeError:
        return CTypeError(f"invalid prototype {_show(src)}: {detail}")

    if not tokens:
        raise bad("empty parameter")
    if "(" in tokens or ")" in tokens:
        raise bad("function pointer parameters are not supported; declare them as 'void *'")
    words, stars, rest = _split_declarator(tokens)
    name: str | None = None
    if stars:
        if rest and _is_ident(rest[0]):
            name, rest = rest[0], rest[1:]
    elif len(words) >= 2 and words[-1] not in _RESERVED and words[-2] not in _TAGS:
        name = words.pop()
    if name is not None and name in _RESERVED:
        raise bad(f"'{name}' is not a valid parameter name")
    arrays = 0
    while rest[:1] == ["["]:
        if len(rest) >= 2 and rest[1] == "]":
            rest = rest[2:]
        elif len(rest) >= 3 and rest[2] == "]" and rest[1] not in _PUNCT:
            rest = rest[3:]
        else:
            raise bad("bad array declarator")
        arrays += 1
    if rest:
        raise bad(f"unexpected {rest[0]!r} in parameter '{' '.join(tokens)}'")
    try:
        # An array parameter decays to a pointer to its element.
        ctype = _base_type(words, stars + (1 if arrays else 0), " ".join(tokens))
    except CTypeError as e:
        raise bad(f"parameter: {e}") from None
    if ctype.kind == "void":
        raise bad("a parameter cannot have type void")
    return ctype, name


@functools.lru_cache(maxsize=256)
def _parse_prototype_str(s: str) -> Prototype:
    def bad(detail: str) -> CTypeError:
        return CTypeError(f"invalid prototype {_show(s)}: {detail}; "
                          "expected a C declaration like 'double mysum(double *a, int n)'")

    tokens = _tokenize(s, "prototype")
    while tokens and tokens[0] == "extern":
        tokens = tokens[1:]
    if tokens[-1:] == [";"]:
        tokens = tokens[:-1]
    if "(" not in tokens:
        raise bad("no parameter list")
    lpar = tokens.index("(")
    if tokens[-1:] != [")"]:
        raise bad("the declaration must end with ')'")
    if lpar < 2:
        raise bad("missing return type or function name")
    name = tokens[lpar - 1]
    if not _is_ident(name) or name in _RESERVED:
        raise bad(f"{name!r} is not a function name")
    try:
        ret = parse_type(" ".join(tokens[:lpar - 1]))
    except CTypeError as e:
        raise bad(f"return type: {e}") from None
    inner = tokens[lpar + 1:-1]
    if "(" in inner or ")" in inner:
        raise bad("function pointer parameters are not supported; declare them as 'void *'")
    if "..." in inner:
        raise bad("variadic functions ('...') cannot be called through VEO")
    if ";" in inner:
        raise bad("unexpected ';'")
    if not inner or inner == ["void"]:
        return Prototype(name, ret, (), ())
    params: list[list[str]] = [[]]
    for tok in inner:
        if tok == ",":
            params.append([])
        else:
            params[-1].append(tok)
    parsed = [_parse_param(p, s) for p in params]
    return Prototype(name, ret, tuple(t for t, _ in parsed), tuple(n for _, n in parsed))


def parse_prototype(s: str | bytes) -> Prototype:
    """Parse a C function declaration such as ``"double mysum(double *a, int n);"``.

    ``f()`` and ``f(void)`` take no arguments; array parameters decay to
    pointers; ``extern`` and a trailing ``;`` are ignored. Structs by value and
    varargs are rejected. Raises CTypeError for anything else.
    """
    return _parse_prototype_str(_to_str(s, "prototype"))
