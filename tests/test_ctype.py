"""C type strings and prototypes (aioveo._ctype)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioveo._ctype import CType, CTypeError, EmuType, Prototype, parse_prototype, parse_type

# (spelling, normalized name, kind, size, signed, emulator return code)
TYPES = [
    ("char", "char", "int", 1, True, EmuType.I8),
    ("signed char", "signed char", "int", 1, True, EmuType.I8),
    ("unsigned char", "unsigned char", "int", 1, False, EmuType.U8),
    ("short", "short", "int", 2, True, EmuType.I16),
    ("short int", "short", "int", 2, True, EmuType.I16),
    ("signed short int", "short", "int", 2, True, EmuType.I16),
    ("unsigned short", "unsigned short", "int", 2, False, EmuType.U16),
    ("int", "int", "int", 4, True, EmuType.I32),
    ("signed", "int", "int", 4, True, EmuType.I32),
    ("signed int", "int", "int", 4, True, EmuType.I32),
    ("unsigned", "unsigned int", "int", 4, False, EmuType.U32),
    ("unsigned int", "unsigned int", "int", 4, False, EmuType.U32),
    ("long", "long", "int", 8, True, EmuType.I64),
    ("long int", "long", "int", 8, True, EmuType.I64),
    ("signed long", "long", "int", 8, True, EmuType.I64),
    ("unsigned long", "unsigned long", "int", 8, False, EmuType.U64),
    ("long unsigned int", "unsigned long", "int", 8, False, EmuType.U64),
    ("long long", "long long", "int", 8, True, EmuType.I64),
    ("long long int", "long long", "int", 8, True, EmuType.I64),
    ("unsigned long long", "unsigned long long", "int", 8, False, EmuType.U64),
    ("int8_t", "int8_t", "int", 1, True, EmuType.I8),
    ("uint8_t", "uint8_t", "int", 1, False, EmuType.U8),
    ("int16_t", "int16_t", "int", 2, True, EmuType.I16),
    ("uint16_t", "uint16_t", "int", 2, False, EmuType.U16),
    ("int32_t", "int32_t", "int", 4, True, EmuType.I32),
    ("uint32_t", "uint32_t", "int", 4, False, EmuType.U32),
    ("int64_t", "int64_t", "int", 8, True, EmuType.I64),
    ("uint64_t", "uint64_t", "int", 8, False, EmuType.U64),
    ("size_t", "size_t", "int", 8, False, EmuType.U64),
    ("ssize_t", "ssize_t", "int", 8, True, EmuType.I64),
    ("bool", "bool", "int", 1, False, EmuType.U8),
    ("_Bool", "bool", "int", 1, False, EmuType.U8),
    ("float", "float", "float", 4, True, EmuType.FLOAT),
    ("double", "double", "float", 8, True, EmuType.DOUBLE),
    ("void", "void", "void", 0, False, EmuType.VOID),
    ("void *", "void *", "pointer", 8, False, EmuType.U64),
    ("void*", "void *", "pointer", 8, False, EmuType.U64),
    ("double*", "double *", "pointer", 8, False, EmuType.U64),
    ("char *", "char *", "pointer", 8, False, EmuType.U64),
    ("const char *", "char *", "pointer", 8, False, EmuType.U64),
    ("char const*const", "char *", "pointer", 8, False, EmuType.U64),
    ("unsigned * *", "unsigned int **", "pointer", 8, False, EmuType.U64),
    ("volatile long long ***", "long long ***", "pointer", 8, False, EmuType.U64),
    ("double * restrict", "double *", "pointer", 8, False, EmuType.U64),
    ("struct foo *", "struct foo *", "pointer", 8, False, EmuType.U64),
    ("union  u*", "union u *", "pointer", 8, False, EmuType.U64),
    ("my_type_t *", "my_type_t *", "pointer", 8, False, EmuType.U64),
    ("enum color", "enum color", "int", 4, True, EmuType.I32),
]


@pytest.mark.parametrize("spelling,name,kind,size,signed,code", TYPES)
def test_type_table(spelling: str, name: str, kind: str, size: int, signed: bool,
                    code: int) -> None:
    t = parse_type(spelling)
    assert (t.name, t.kind, t.size, t.signed, t.emu_code) == (name, kind, size, signed, code)
    assert parse_type(t.name) == t  # the normalized name parses to itself
    assert str(t) == name


@pytest.mark.parametrize("spelling", ["  unsigned\tlong\n", "unsigned   long", "\nunsigned long "])
def test_whitespace_does_not_matter(spelling: str) -> None:
    assert parse_type(spelling) == parse_type("unsigned long")


def test_pyveo_spellings_and_bytes() -> None:
    # Every name PyVEO's conv_i64.pxi knows, and bytes (PyVEO accepted b"... *").
    for s in ["char", "short", "int", "int32_t", "long", "int64_t", "unsigned char",
              "unsigned short", "unsigned int", "uint32_t", "unsigned long", "uint64_t",
              "float", "double", "void", "void *", "double *"]:
        parse_type(s)
    assert parse_type(b"double *").name == "double *"
    assert parse_type(b"int") == parse_type("int")


def test_ctype_passthrough_and_cache() -> None:
    t = parse_type("unsigned int")
    assert parse_type(t) is t
    assert parse_type("unsigned int") is t  # cached


def test_ranges() -> None:
    assert (parse_type("char").min, parse_type("char").max) == (-128, 127)
    assert (parse_type("unsigned char").min, parse_type("unsigned char").max) == (0, 255)
    assert parse_type("short").min == -32768
    assert parse_type("unsigned short").max == 65535
    assert parse_type("int").max == 2**31 - 1
    assert parse_type("unsigned int").max == 2**32 - 1
    assert parse_type("long").min == -(2**63)
    assert parse_type("unsigned long").max == 2**64 - 1
    assert parse_type("bool").max == 1
    assert (parse_type("void *").min, parse_type("void *").max) == (0, 2**64 - 1)
    assert parse_type("double").min is None and parse_type("void").max is None


def test_emu_codes_match_header() -> None:
    """EmuType follows enum veo_emu_type of the emulator's ve_offload.h."""
    header = Path(__file__).resolve().parent.parent / "_ext" / "emu" / "ve_offload.h"
    if not header.exists():
        pytest.skip("emulator header not in the source tree")
    body = re.search(r"enum veo_emu_type \{(.*?)\};", header.read_text(), re.S)
    assert body is not None
    names = re.findall(r"VEO_EMU_TYPE_(\w+)", body.group(1))
    assert re.search(r"VEO_EMU_TYPE_U64\s*=\s*0", body.group(1))
    assert names == [m.name for m in EmuType]
    assert [m.value for m in EmuType] == list(range(len(names)))


BAD_TYPES = [
    ("", "no type name"), ("   ", "no type name"), ("int x", "not a type"),
    ("foo_t", "unknown type name 'foo_t'"), ("struct foo", "passed by value"),
    ("union u", "passed by value"), ("long double", "long double"),
    ("unsigned unsigned int", "signed/unsigned"), ("signed unsigned", "signed/unsigned"),
    ("short long", "'short' combined"), ("long long long", "repeated"),
    ("char int", "'char' combined"), ("unsigned double", "not a type"),
    ("int[]", "unexpected"), ("int (*)(int)", "unexpected"), ("double &", "unexpected character"),
    ("* int", "unexpected 'int'"), ("struct *", "tag name"), ("struct int *", "tag name"),
    ("int;", "unexpected"), ("ünsigned", "unexpected character"), ("const", "no type name"),
    ("int const x *", "not a type"), ("void f(void)", "unexpected"), ("3", "unexpected"),
]


@pytest.mark.parametrize("bad,detail", BAD_TYPES)
def test_bad_types(bad: str, detail: str) -> None:
    with pytest.raises(CTypeError) as info:
        parse_type(bad)
    msg = str(info.value)
    assert repr(bad) in msg  # the bad string is quoted
    assert detail in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


@pytest.mark.parametrize("bad", [None, 3, 1.5, ["int"], {"int": 1}, object()])
def test_non_strings(bad: object) -> None:
    with pytest.raises(CTypeError):
        parse_type(bad)  # type: ignore[arg-type]
    with pytest.raises(CTypeError):
        parse_prototype(bad)  # type: ignore[arg-type]


def test_long_garbage_is_truncated_in_message() -> None:
    with pytest.raises(CTypeError) as info:
        parse_type("int " * 10_000)
    assert len(str(info.value)) < 1000


PROTOTYPES = [
    ("double mysum(double *a, int n)", "mysum", "double", ["double *", "int"], ["a", "n"]),
    ("void f(void)", "f", "void", [], []),
    ("int g()", "g", "int", [], []),
    ("uint64_t h(const char *s, struct foo *p)", "h", "uint64_t",
     ["char *", "struct foo *"], ["s", "p"]),
    ("extern long k(int a[], unsigned b[10][4], char c[n]);", "k", "long",
     ["int *", "unsigned int *", "char *"], ["a", "b", "c"]),
    ("int main(int argc, char *argv[]);", "main", "int", ["int", "char **"], ["argc", "argv"]),
    ("double*dup(double*,unsigned long)", "dup", "double *",
     ["double *", "unsigned long"], [None, None]),
    ("struct node *next(struct node *n)", "next", "struct node *", ["struct node *"], ["n"]),
    ("enum e pick(enum e x, unsigned x2)", "pick", "enum e", ["enum e", "unsigned int"],
     ["x", "x2"]),
    ("void fill(float * restrict out, const float *const in, size_t n)", "fill", "void",
     ["float *", "float *", "size_t"], ["out", "in", "n"]),
    ("  extern  extern void\tz ( long long , bool b ) ; ", "z", "void",
     ["long long", "bool"], [None, "b"]),
]


@pytest.mark.parametrize("src,name,ret,args,names", PROTOTYPES)
def test_prototypes(src: str, name: str, ret: str, args: list[str],
                    names: list[str | None]) -> None:
    p = parse_prototype(src)
    assert isinstance(p, Prototype)
    assert p.name == name
    assert p.ret == parse_type(ret)
    assert p.args == tuple(parse_type(a) for a in args)
    assert p.arg_names == tuple(names)
    assert parse_prototype(str(p)) == p  # str() is a valid declaration


BAD_PROTOTYPES = [
    ("int f(...)", "variadic"), ("int printf(const char *fmt, ...)", "variadic"),
    ("void f(struct s x)", "passed by value"), ("void f(struct s)", "passed by value"),
    ("void f(void x)", "void"), ("void f(int, void)", "void"), ("f()", "missing return type"),
    ("int (f)(int)", "missing return type or function name"), ("int *(*fp)(int)", "not a function name"),
    ("void f(int (*cb)(int))", "function pointer"), ("int f(int a,)", "empty parameter"),
    ("int f(int a", "must end with ')'"), ("int f", "no parameter list"), ("", "no parameter list"),
    ("int f(int a) x", "must end with ')'"), ("int int(int a)", "not a function name"),
    ("int f(int int)", "repeated type keyword"), ("int f(foo_t x)", "unknown type name"),
    ("long double f(void)", "long double"), ("int f(int a[)", "bad array"),
    ("static int f(void)", "return type"), ("int f(int a);;", "must end with ')'"),
    ("int f(int a; int b)", "';'"), ("int f(int a b)", "'int a' is not a type"),
]


@pytest.mark.parametrize("bad,detail", BAD_PROTOTYPES)
def test_bad_prototypes(bad: str, detail: str) -> None:
    with pytest.raises(CTypeError) as info:
        parse_prototype(bad)
    assert repr(bad) in str(info.value)
    assert detail in str(info.value)


# ---- property tests --------------------------------------------------------

C_CHARS = st.sampled_from(list("abcdefghijklmnopqrstuvwxyz_ABCXYZ0123456789 \t\n*()[],;.&:{}<>-+=/\\\"'#"))
WORDS = st.sampled_from([
    "int", "char", "long", "short", "unsigned", "signed", "void", "double", "float",
    "struct", "union", "enum", "const", "volatile", "extern", "size_t", "foo", "x", "...",
    "*", "(", ")", "[", "]", ",", ";", "10", " ", "bool", "_Bool", "int8_t", "restrict"])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=60), st.text(C_CHARS, max_size=60),
                 st.lists(WORDS, max_size=14).map(" ".join),
                 st.lists(WORDS, max_size=14).map("".join)))
def test_garbage_raises_only_ctypeerror(s: str) -> None:
    for fn in (parse_type, parse_prototype):
        try:
            result = fn(s)
        except CTypeError:
            continue
        assert isinstance(result, (CType, Prototype))


SPELLINGS: dict[str, list[str]] = {
    "char": ["char"], "signed char": ["signed char", "char signed"],
    "unsigned char": ["unsigned char", "char unsigned"],
    "short": ["short", "short int", "signed short", "int short signed"],
    "unsigned short": ["unsigned short", "unsigned short int", "short unsigned"],
    "int": ["int", "signed", "signed int", "int signed"],
    "unsigned int": ["unsigned", "unsigned int", "int unsigned"],
    "long": ["long", "long int", "signed long", "int long signed"],
    "unsigned long": ["unsigned long", "long unsigned int", "unsigned long int"],
    "long long": ["long long", "long long int", "signed long long", "long int long"],
    "unsigned long long": ["unsigned long long", "long long unsigned int"],
    "float": ["float"], "double": ["double"], "bool": ["bool", "_Bool"],
    **{n: [n] for n in ["int8_t", "uint8_t", "int16_t", "uint16_t", "int32_t", "uint32_t",
                        "int64_t", "uint64_t", "size_t", "ssize_t"]},
}
SPACE = st.sampled_from(["", " ", "  ", "\t", "\n "])
NONEMPTY_SPACE = st.sampled_from([" ", "  ", "\t", "\n "])
RESERVED = {"int", "char", "long", "short", "unsigned", "signed", "void", "double", "float",
            "struct", "union", "enum", "const", "volatile", "restrict", "extern", "static",
            "inline", "register", "auto", "typedef", "bool", "_Bool", "__restrict",
            "__restrict__", "intptr_t", "uintptr_t", "ptrdiff_t", *SPELLINGS}
IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(
    lambda s: s not in RESERVED)


@st.composite
def c_type(draw: st.DrawFn, allow_void: bool) -> tuple[str, str]:
    """A random (spelling, expected normalized name) of a parameter or return type."""
    choices = list(SPELLINGS) + ["struct", "typedef"] + (["void"] if allow_void else [])
    base = draw(st.sampled_from(choices))
    stars = draw(st.integers(0, 3))
    if base == "struct":
        tag = draw(st.sampled_from(["struct", "union"])) + " " + draw(IDENT)
        spelling, norm, stars = tag, tag, max(stars, 1)
    elif base == "typedef":
        spelling = norm = draw(IDENT)
        stars = max(stars, 1)
    elif base == "void":
        spelling = norm = "void"
    else:
        spelling, norm = draw(st.sampled_from(SPELLINGS[base])), base
    words = spelling.split()
    if draw(st.booleans()):
        words.insert(draw(st.integers(0, len(words))), draw(st.sampled_from(["const", "volatile"])))
    text = draw(NONEMPTY_SPACE).join(words)
    for _ in range(stars):
        text += draw(SPACE) + "*" + draw(st.sampled_from(["", " const", " restrict"]))
    return text, norm + (" " + "*" * stars if stars else "")


@st.composite
def prototype(draw: st.DrawFn) -> tuple[str, str, str, list[str], list[str | None]]:
    ret_text, ret_norm = draw(c_type(allow_void=True))
    name = draw(IDENT)
    params = draw(st.lists(st.tuples(c_type(allow_void=False), st.one_of(st.none(), IDENT)),
                           max_size=8))
    parts = []
    for (text, _), pname in params:
        parts.append(text + (draw(NONEMPTY_SPACE) + pname if pname else ""))
    sep = draw(SPACE) + "," + draw(SPACE)
    plist = sep.join(parts) if parts else draw(st.sampled_from(["", "void", " void "]))
    src = (draw(st.sampled_from(["", "extern "])) + ret_text + draw(NONEMPTY_SPACE) + name
           + draw(SPACE) + "(" + draw(SPACE) + plist + draw(SPACE) + ")"
           + draw(st.sampled_from(["", ";", " ;"])))
    return src, name, ret_norm, [n for (_, n), _ in params], [p for _, p in params]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(prototype())
def test_generated_prototypes_round_trip(case: tuple[str, str, str, list[str],
                                                     list[str | None]]) -> None:
    src, name, ret, args, names = case
    p = parse_prototype(src)
    assert p.name == name
    assert p.ret.name == ret
    assert [a.name for a in p.args] == args
    assert list(p.arg_names) == names
    assert parse_prototype(str(p)) == p


@settings(max_examples=300)
@given(c_type(allow_void=True))
def test_generated_types_normalize(case: tuple[str, str]) -> None:
    text, norm = case
    t = parse_type(text)
    assert t.name == norm
    assert parse_type(norm) == t
