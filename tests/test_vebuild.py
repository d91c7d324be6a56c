"""VeBuild (aioveo.build) on the emulator: kernels built with the host compilers."""
from __future__ import annotations

import ctypes
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from aioveo import build as vebuild
from aioveo.build import BuildError, VeBuild, VeCObj

C_SRC = r"""
#include <ve_offload.h>     /* found through the emulator's include dir */
#ifndef VEO_EMULATOR
#error "not the emulator's ve_offload.h"
#endif
double mysum(double *a, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += a[i];
    return s;
}
long add(long a, long b) { return a + b; }
"""

STATIC_SRC = r"""
long sfunc(long x) { return x + 1; }
long scounter = 7;
"""

CPP_SRC = r"""
#include <numeric>
#include <vector>
template <typename T> static T total(const T *a, int n) {
    std::vector<T> v(a, a + n);
    return std::accumulate(v.begin(), v.end(), T(0));
}
extern "C" long cpp_total(const long *a, int n) { return total(a, n); }
"""

FTN_SRC = """
function ftwice(x) bind(C, name="ftwice")
  use iso_c_binding
  integer(c_long), value :: x
  integer(c_long) :: ftwice
  ftwice = 2 * x
end function ftwice
"""


def emu_libveo() -> Path | None:
    path = vebuild._emu_file("libveo.so")
    return path if path.exists() else None


def test_c_kernel_so(tmp_path: Path) -> None:
    b = VeBuild()
    assert b.backend in ("emulator", "vendor")
    b = VeBuild(backend="emulator")
    b.set_build_dir(tmp_path)
    b.set_c_src("libkern", C_SRC)
    so = b.build_so()
    assert isinstance(so, str) and so == str(tmp_path / "libkern.so")
    lib = ctypes.CDLL(so)
    lib.mysum.restype = ctypes.c_double
    lib.mysum.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.c_int]
    arr = (ctypes.c_double * 4)(1.0, 2.0, 3.5, 4.0)
    assert lib.mysum(arr, 4) == 10.5
    lib.add.restype = ctypes.c_long
    lib.add.argtypes = [ctypes.c_long, ctypes.c_long]
    assert lib.add(40, 2) == 42


def test_several_sources_label_and_libs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = VeBuild(backend="emulator")
    b.set_build_dir(tmp_path)
    b.set_c_src("first", "#include <math.h>\ndouble hyp(double a, double b) "
                "{ return sqrt(a*a + b*b); }\n", flags=["-O1"])
    # NEC-only flags are dropped on the emulator, -fPIC is added.
    b.set_c_src("second", "int twice(int x) { return 2 * x; }\n",
                flags="-O2 -report-all -fdiag-vector=2 -mvector")
    so = b.build_so("libboth", libs=["-lm"], verbose=True)
    assert Path(so).name == "libboth.so"
    out = capsys.readouterr().out
    assert "-report-all" not in out and "-fPIC" in out and "-lm" in out
    lib = ctypes.CDLL(so)
    lib.hyp.restype = ctypes.c_double
    lib.hyp.argtypes = [ctypes.c_double, ctypes.c_double]
    assert lib.hyp(3.0, 4.0) == 5.0
    assert lib.twice(21) == 42
    # Default label: the first source's.
    assert Path(b.build_so()).name == "first.so"


def test_compile_error_raises_build_error(tmp_path: Path) -> None:
    b = VeBuild(backend="emulator")
    b.set_build_dir(tmp_path)
    b.set_c_src("broken", "int f(void) { return undeclared_thing_xyz; }\n")
    with pytest.raises(BuildError) as info:
        b.build_so()
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.returncode != 0
    assert isinstance(err.cmd, list) and "broken.c" in err.cmd
    assert "undeclared_thing_xyz" in err.output
    assert "undeclared_thing_xyz" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert (again.cmd, again.returncode, str(again)) == (err.cmd, err.returncode, str(err))


def test_link_error_raises_build_error(tmp_path: Path) -> None:
    b = VeBuild(backend="emulator")
    b.set_build_dir(tmp_path)
    b.set_c_src("k", "int f(void) { return 1; }\n")
    with pytest.raises(BuildError) as info:
        b.build_so(libs=["-lno_such_library_xyz"])
    assert "no_such_library_xyz" in info.value.output


def test_missing_compiler_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc-xyz")
    b = VeBuild(backend="emulator")
    b.set_build_dir(tmp_path)
    b.set_c_src("k", "int f(void) { return 1; }\n")
    with pytest.raises(BuildError) as info:
        b.build_so()
    assert info.value.cmd[0] == "/nonexistent/cc-xyz"
    assert "cannot run" in str(info.value)
    # An explicit compiler wins over $CC.
    b.set_c_src("k", "int f(void) { return 1; }\n", compiler=shutil.which("cc"))
    assert Path(b.build_so(linker=shutil.which("cc"))).exists()


def test_cpp_kernel(tmp_path: Path) -> None:
    if shutil.which(os.environ.get("CXX") or "c++") is None:
        pytest.skip("no C++ compiler")
    b = VeBuild(backend="emulator")
    b.set_build_dir(tmp_path)
    b.set_cpp_src("libcpp", CPP_SRC)
    b.set_c_src("cpart", "long cplain(long x) { return x - 1; }\n")
    so = b.build_so()  # linked by the C++ compiler (PyVEO's rule)
    lib = ctypes.CDLL(so)
    lib.cpp_total.restype = ctypes.c_long
    arr = (ctypes.c_long * 3)(1, 2, 39)
    assert lib.cpp_total(arr, 3) == 42
    assert lib.cplain(43) == 42


@pytest.mark.skipif(shutil.which(os.environ.get("FC") or "gfortran") is None,
                    reason="gfortran is not installed")
def test_fortran_kernel(tmp_path: Path) -> None:
    b = VeBuild(backend="emulator")
    b.set_build_dir(tmp_path)
    b.set_ftn_src("libftn", FTN_SRC)
    so = b.build_so()
    lib = ctypes.CDLL(so)
    lib.ftwice.restype = ctypes.c_long
    lib.ftwice.argtypes = [ctypes.c_long]
    assert lib.ftwice(21) == 42


def _call_static_with_libveo(helper: str, name: str, arg: int) -> int:
    """Run ``name(arg)`` from a static helper through the emulator's libveo C API."""
    libveo_path = emu_libveo()
    if libveo_path is None:
        pytest.skip("the emulator's libveo.so is not installed")
    veo = ctypes.CDLL(str(libveo_path))
    veo.veo_proc_create_static.restype = ctypes.c_void_p
    veo.veo_proc_create_static.argtypes = [ctypes.c_int, ctypes.c_char_p]
    veo.veo_get_sym.restype = ctypes.c_uint64
    veo.veo_get_sym.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p]
    veo.veo_args_alloc.restype = ctypes.c_void_p
    veo.veo_args_set_i64.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64]
    veo.veo_args_free.argtypes = [ctypes.c_void_p]
    veo.veo_call_sync.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p,
                                  ctypes.POINTER(ctypes.c_uint64)]
    veo.veo_proc_destroy.argtypes = [ctypes.c_void_p]
    proc = veo.veo_proc_create_static(0, helper.encode())
    assert proc, "veo_proc_create_static failed"
    try:
        addr = veo.veo_get_sym(proc, 0, name.encode())
        assert addr != 0, f"{name} not in the static symbol table"
        args = veo.veo_args_alloc()
        try:
            veo.veo_args_set_i64(args, 0, arg)
            result = ctypes.c_uint64()
            assert veo.veo_call_sync(proc, addr, args, ctypes.byref(result)) == 0
            return result.value
        finally:
            veo.veo_args_free(args)
    finally:
        assert veo.veo_proc_destroy(proc) == 0


def test_build_veorun_static_helper(tmp_path: Path) -> None:
    b = VeBuild(backend="emulator")
    b.set_build_dir(tmp_path)
    b.set_c_src("kstatic", STATIC_SRC)
    helper = b.build_veorun()
    assert helper == str(tmp_path / "kstatic.veorun")
    mode = os.stat(helper).st_mode
    assert stat.S_ISREG(mode) and os.access(helper, os.X_OK)
    symtab = (tmp_path / "kstatic_symtab.c").read_text()
    assert '"sfunc"' in symtab and '"scounter"' in symtab
    assert _call_static_with_libveo(helper, "sfunc", 41) == 42


def test_build_veorun_through_core(tmp_path: Path) -> None:
    try:
        from aioveo import _core  # type: ignore[attr-defined]
        _core.VeoProc  # noqa: B018
    except (ImportError, AttributeError):
        pytest.skip("aioveo._core is not available")
    b = VeBuild()
    if b.backend != "emulator":
        pytest.skip("not on the emulator")
    b.set_build_dir(tmp_path)
    b.set_c_src("kcore", STATIC_SRC)
    helper = b.build_veorun()
    proc = _core.VeoProc(0, veorun_bin=helper)
    lib = proc.static_library()
    f = lib.find_function("sfunc")
    f.args_type("long")
    f.ret_type("long")
    ctx = proc.open_context()
    assert f(ctx, 41).wait_result() == 42


def test_build_veorun_with_own_symtable(tmp_path: Path) -> None:
    src = STATIC_SRC + ("struct { const char *name; void *addr; } _veo_static_symtable[] = "
                        "{{\"renamed\", (void *)sfunc}, {0, 0}};\n")
    b = VeBuild(backend="emulator")
    b.set_build_dir(tmp_path)
    b.set_c_src("own", src)
    helper = b.build_veorun()
    assert not (tmp_path / "own_symtab.c").exists()
    assert _call_static_with_libveo(helper, "renamed", 1) == 2


def test_clean_clear_realclean_user_dir(tmp_path: Path) -> None:
    b = VeBuild(backend="emulator")
    b.set_build_dir(str(tmp_path))
    b.set_c_src("a", "int fa(void) { return 1; }\n")
    b.set_cpp_src("b", 'extern "C" int fb(void) { return 2; }\n')
    so = b.build_so("libab")
    helper = b.build_veorun("helper")
    names = {p.name for p in tmp_path.iterdir()}
    assert {"a.c", "a.o", "b.cpp", "b.o", "libab.so", "helper.veorun"} <= names
    (tmp_path / "unrelated.txt").write_text("keep me")

    b.clean()  # sources and objects go, built results stay
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"libab.so", "helper.veorun", "unrelated.txt"}

    b.realclean()  # built results go; a directory this object did not create stays
    assert {p.name for p in tmp_path.iterdir()} == {"unrelated.txt"}
    assert not os.path.exists(so) and not os.path.exists(helper)

    b.build_so()
    b.clear()  # clean() and forget the sources
    with pytest.raises(ValueError):
        b.build_so()
    assert {p.name for p in tmp_path.iterdir()} == {"a.so", "unrelated.txt"}


def test_realclean_removes_dirs_it_created(tmp_path: Path) -> None:
    b = VeBuild(backend="emulator", private_dir=True)
    b.set_c_src("k", "int f(void) { return 1; }\n")
    so = b.build_so()
    tmp = Path(so).parent
    assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o700  # private temporary dir
    b.realclean()
    assert not tmp.exists()
    so2 = b.build_so()  # a fresh private directory
    assert Path(so2).exists() and Path(so2).parent != tmp
    b.realclean()

    sub = tmp_path / "new" / "dir"
    b.set_build_dir(sub)
    b.build_so()
    assert sub.is_dir()
    b.realclean()
    assert not sub.exists()


def test_objects_do_not_share_built_files(tmp_path: Path) -> None:
    # PyVEO kept one class-wide list, so realclean() of one VeBuild deleted the
    # other's libraries.
    one, two = VeBuild(backend="emulator"), VeBuild(backend="emulator")
    for b, d in ((one, tmp_path / "one"), (two, tmp_path / "two")):
        b.set_build_dir(d)
        b.set_c_src("k", "int f(void) { return 1; }\n")
    so_one, so_two = one.build_so(), two.build_so()
    one.realclean()
    assert not os.path.exists(so_one) and os.path.exists(so_two)


def test_unusable_libveo_is_reported(tmp_path: Path) -> None:
    """Without a usable libveo VeBuild cannot choose its compilers: it says why
    (it used to fall back to the emulator's silently); an explicit backend works."""
    code = ("from aioveo import VeBuild\n"
            "print(VeBuild(backend='emulator').backend)\n"
            "VeBuild().backend\n")
    env = dict(os.environ, AIOVEO_LIBVEO=str(tmp_path / "no-such-libveo.so"))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == "emulator\n", r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: VeBuild cannot tell which compilers to use"), r.stderr
    assert "no-such-libveo.so (AIOVEO_LIBVEO)" in last and "backend='emulator'" in last
    assert "The above exception was the direct cause" in r.stderr     # the core's error


def test_bad_labels_and_no_sources() -> None:
    b = VeBuild(backend="emulator")
    for bad in ["", "a/b", "..", "x\0y"]:
        with pytest.raises(ValueError):
            b.set_c_src(bad, "int x;")
    with pytest.raises(ValueError):
        b.build_so()
    with pytest.raises(ValueError):
        b.build_veorun()
    with pytest.raises(ValueError):
        VeBuild(backend="gpu").backend  # noqa: B018


def test_vendor_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With backend='vendor' the NEC tools are used with PyVEO's flags."""
    obj = VeCObj("int x;", backend="vendor")
    cmd = obj.compile_command("k")
    assert Path(cmd[0]).name == "ncc"
    assert "-fpic" in cmd and "-report-all" in cmd and not any(f.startswith("-I") for f in cmd)

    calls: list[tuple[list[str], dict[str, str] | None]] = []

    def fake_run(cmd: list[str], cwd: str, verbose: bool, env: dict[str, str] | None = None) -> str:
        calls.append((cmd, env))
        return ""

    monkeypatch.setattr(vebuild, "_run", fake_run)
    b = VeBuild(backend="vendor")
    b.set_build_dir(tmp_path)
    b.set_c_src("c", "int x;")
    b.set_ftn_src("f", "")
    so = b.build_so(libs=["-lblas_sequential -lm"])
    link = calls[-1][0]
    assert Path(link[0]).name == "nfort"  # Fortran links when there is no C++
    assert link[1:3] == ["-shared", "-pthread"] and link[-2:] == ["-lblas_sequential", "-lm"]
    assert so in link
    helper = b.build_veorun(flags="-O3 -g")
    cmd, env = calls[-1]
    assert cmd[:2] == [vebuild.MK_VEORUN_STATIC, helper]
    assert env is not None and env["CFLAGS"] == "-O3 -g"


# ---- PyVEO's usage patterns, exactly as its example programs use VeBuild --------------
def test_pyveo_default_builds_in_the_current_directory(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """PyVEO's examples/test-veo.py: build_so() with no build directory, then
    load os.getcwd() + "/" + the returned name."""
    monkeypatch.chdir(tmp_path)
    b = VeBuild()
    b.set_c_src("_test", "long twice(long x) { return 2 * x; }\n")
    kernel = b.build_so()
    assert kernel == "_test.so"
    assert {p.name for p in tmp_path.iterdir()} == {"_test.c", "_test.o", "_test.so"}
    b.clean()
    assert {p.name for p in tmp_path.iterdir()} == {"_test.so"}
    import aioveo as veo
    with veo.VeoProc(0) as p:
        lib = p.load_library(os.getcwd() + "/" + kernel)
        f = lib.find_function("long twice(long)")
        assert f(p.open_context(), 21).wait_result() == 42
    b.realclean()
    assert not any(tmp_path.iterdir())


def test_pyveo_relative_build_dir_is_returned_as_given(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    b = VeBuild()
    b.set_build_dir("build")
    b.set_c_src("k", "int f(void) { return 1; }\n")
    assert b.build_so() == os.path.join("build", "k.so")
    assert (tmp_path / "build" / "k.so").exists() and b.build_dir == str(tmp_path / "build")
    monkeypatch.chdir("/")          # realclean still finds what it built
    b.realclean()
    assert not (tmp_path / "build").exists()
