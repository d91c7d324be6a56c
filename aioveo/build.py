"""VeBuild: PyVEO's helper to compile VE kernels from source strings.

Same classes, method names and arguments as PyVEO's ``veo.vebuild``; the
compilers follow the backend. On the emulator the "VE" compilers are the
host's (``$CC``/``cc``, ``$CXX``/``c++``, ``$FC``/``gfortran``) building
``-shared -fPIC`` objects, and ``build_veorun`` links a static helper with
the emulator's ``libveorun.a``; on a real VE they are NEC's ``ncc``/``nc++``/
``nfort`` and ``mk_veorun_static``.

Differences from PyVEO, on purpose: a failing command raises
:class:`BuildError` (PyVEO printed and returned None); commands are argument
lists, never shell strings; the default build directory is a private
temporary directory (PyVEO: the current directory); ``realclean`` removes
only what this object built, and a directory only if it created it; the list
of built files is per object (PyVEO shared one list between all objects).
"""
from __future__ import annotations

import atexit
import os
import shlex
import shutil
import subprocess
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import _paths

__all__ = ["BuildError", "VeBuild", "VeObj", "VeCObj", "VeCppObj", "VeFtnObj"]

EMULATOR = "emulator"
VENDOR = "vendor"

SUFFIX = {"C": ".c", "C++": ".cpp", "F": ".f90"}
NEC_BIN = "/opt/nec/ve/bin"
# AVEO installs mk_veorun_static with NEC's tools (its scripts/mk_veorun_static
# runs ${AVEO_BINDIR}/mk_veorun_static_ve{1,3}, AVEO_BINDIR=/opt/nec/ve/bin);
# PyVEO's veoffload had it in libexec.  $AIOVEO_MK_VEORUN_STATIC overrides both.
MK_VEORUN_STATIC = "/opt/nec/ve/bin/mk_veorun_static"
MK_VEORUN_STATIC_OLD = "/opt/nec/ve/libexec/mk_veorun_static"
# The variables AVEO's mk_veorun_static (relink_aveorun) takes from the
# environment in place of its VE defaults: a host's CC or LDFLAGS (conda,
# spack, a Makefile's export) would link the VE helper with host tools or
# drop its VE libraries.  They are removed from its environment; ``flags``
# reach it as CFLAGS (compile options) and on its command line (-L/-l/-Wl,).
_MK_VEORUN_ENV = ("CC", "CXX", "FC", "NM", "CCLD", "CFLAGS", "LDFLAGS", "RELINKVEO_GEN",
                  "RELINKVEO_LIB")
# PyVEO's defaults for ncc/nc++/nfort.
VENDOR_FLAGS = {
    "C": "-O2 -fpic -pthread -report-all -fdiag-vector=2",
    "C++": "-O2 -fpic -pthread -finline -finline-functions -report-all -fdiag-vector=2",
    "F": "-O2 -fpic -pthread -report-all -fdiag-vector=2",
}
EMULATOR_FLAGS = {"C": "-O2 -fPIC -pthread", "C++": "-O2 -fPIC -pthread", "F": "-O2 -fPIC -pthread"}
GLOBAL_SO_FLAGS = "-shared -pthread"
# Host compiler names and the environment variables that override them.
_HOST_COMPILERS = {"C": ("CC", "cc"), "C++": ("CXX", "c++"), "F": ("FC", "gfortran")}
_NEC_COMPILERS = {"C": "ncc", "C++": "nc++", "F": "nfort"}
# NEC-only options that host compilers reject; dropped on the emulator so that
# PyVEO programs passing VE flags still build.
_NEC_ONLY_PREFIXES = ("-report-", "-fdiag-", "-mvector", "-mno-vector", "-mparallel",
                      "-mno-parallel", "-proginf", "-ftrace", "-traceback")
# nm symbol types of global definitions that go into a static helper's table
# (the set mk_veorun_static uses).
_NM_TYPES = frozenset("TDGSBRCu")
# Names that cannot be declared in the generated table (C keywords a C++ or
# Fortran object may define) or belong to the program itself.
_NOT_IN_TABLE = frozenset({
    "main", "_init", "_fini", "_start", "auto", "break", "case", "char", "const", "continue",
    "default", "do", "double", "else", "enum", "extern", "float", "for", "goto", "if",
    "inline", "int", "long", "register", "restrict", "return", "short", "signed", "sizeof",
    "static", "struct", "switch", "typedef", "union", "unsigned", "void", "volatile", "while",
    "_Bool", "_Complex", "_Imaginary"})


class BuildError(RuntimeError):
    """A compiler, linker or helper-builder command failed."""

    def __init__(self, cmd: Sequence[str], returncode: int, output: str,
                 message: str | None = None) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.output = output
        self.message = message
        head = message or f"command failed with exit status {returncode}"
        super().__init__(f"{head}: {shlex.join(self.cmd)}\n{output}".rstrip())

    def __reduce__(self) -> tuple[type[BuildError], tuple[list[str], int, str, str | None]]:
        return (type(self), (self.cmd, self.returncode, self.output, self.message))


def _words(flags: str | Sequence[str] | None) -> list[str]:
    """Split a flags argument: a string is split like a shell would, a list is kept."""
    if flags is None:
        return []
    if isinstance(flags, str):
        return shlex.split(flags)
    return [str(f) for f in flags]


def _libs(libs: str | Iterable[str] | None) -> list[str]:
    # PyVEO joined the list into a shell line, so one item may hold several words.
    if not libs:
        return []
    if isinstance(libs, str):
        return shlex.split(libs)
    out: list[str] = []
    for lib in libs:
        out.extend(shlex.split(str(lib)))
    return out


def _backend_kind(backend: object) -> str:
    """'emulator' or 'vendor' from an explicit choice, else from aioveo._core."""
    if backend is None:
        from . import _core
        try:
            backend = _core.backend()
        except ImportError as e:   # no usable libveo, e.g. AIOVEO_LIBVEO names a missing file
            raise ImportError(f"VeBuild cannot tell which compilers to use (the emulator's or "
                              f"NEC's): {e}; pass backend='emulator' or backend='vendor' to "
                              f"choose") from e
    kind = backend if isinstance(backend, str) else getattr(backend, "kind", None)
    if kind not in (EMULATOR, VENDOR):
        raise ValueError(f"backend must be 'emulator' or 'vendor', not {backend!r}")
    return kind


def _emu_file(name: str) -> Path:
    """A file of the installed emulator (include dir, libveorun.a)."""
    return _paths.EMU_DIR / name


def mk_veorun_static_path() -> str:
    """AVEO's mk_veorun_static: $AIOVEO_MK_VEORUN_STATIC, else where AVEO
    installs it, else PyVEO's old place if only that exists."""
    from .settings import current

    explicit = current().mk_veorun_static
    if explicit:
        return explicit
    if not os.path.exists(MK_VEORUN_STATIC) and os.path.exists(MK_VEORUN_STATIC_OLD):
        return MK_VEORUN_STATIC_OLD
    return MK_VEORUN_STATIC


def _run(cmd: list[str], cwd: str, verbose: bool, env: dict[str, str] | None = None) -> str:
    if verbose:
        print(shlex.join(cmd), flush=True)
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace", check=False)
    except OSError as e:
        raise BuildError(cmd, 127, str(e), f"cannot run {cmd[0]!r}") from e
    if verbose and proc.stdout:
        print(proc.stdout, end="" if proc.stdout.endswith("\n") else "\n", flush=True)
    if proc.returncode != 0:
        raise BuildError(cmd, proc.returncode, proc.stdout)
    return proc.stdout


class VeObj:
    """One source file of a VeBuild: its text, language, compiler and flags."""

    _type = "C"

    def __init__(self, content: str, flags: str | Sequence[str] | None = None,
                 compiler: str | None = None, *, backend: object = None) -> None:
        self._src = content
        self._flags = flags
        self._compiler = compiler
        self._backend = backend
        self._kind: str | None = None

    @property
    def backend(self) -> str:
        """'emulator' or 'vendor', resolved on first use."""
        if self._kind is None:
            self._kind = _backend_kind(self._backend)
        return self._kind

    def get_type(self) -> str:
        return self._type

    def get_compiler(self) -> str:
        """The compiler: the one given, else the backend's default."""
        if self._compiler is not None:
            return self._compiler
        if self.backend == EMULATOR:
            env, default = _HOST_COMPILERS[self._type]
            return os.environ.get(env) or default
        nec = os.path.join(NEC_BIN, _NEC_COMPILERS[self._type])
        return nec if os.path.exists(nec) else _NEC_COMPILERS[self._type]

    def set_compiler(self, compiler: str | None) -> None:
        self._compiler = compiler

    def get_flags(self) -> list[str]:
        """The compile flags: the ones given (replacing the defaults, as in PyVEO) or the defaults."""
        if self.backend == VENDOR:
            return _words(self._flags if self._flags is not None else VENDOR_FLAGS[self._type])
        flags = _words(self._flags if self._flags is not None else EMULATOR_FLAGS[self._type])
        flags = [f for f in flags if not f.startswith(_NEC_ONLY_PREFIXES)]
        if not {"-fpic", "-fPIC"} & set(flags):  # the object goes into a shared object
            flags.append("-fPIC")
        return flags + [f"-I{_emu_file('include')}"]

    def set_flags(self, flags: str | Sequence[str] | None) -> None:
        self._flags = flags

    def compile_command(self, oname: str) -> list[str]:
        """The compile command for ``<oname><suffix>`` -> ``<oname>.o`` (run in the build dir)."""
        return [self.get_compiler(), *self.get_flags(), "-c",
                oname + SUFFIX[self._type], "-o", oname + ".o"]

    def build(self, oname: str, dir: str | os.PathLike[str] | None = None,
              verbose: bool = False) -> bool:
        """Write the source to ``<dir>/<oname><suffix>`` and compile it to ``<oname>.o``.

        Returns True; raises BuildError with the compiler's output on failure.
        """
        cwd = os.fspath(dir) if dir else os.getcwd()
        Path(cwd, oname + SUFFIX[self._type]).write_text(self._src)
        _run(self.compile_command(oname), cwd, verbose)
        listing = Path(cwd, oname + ".L")  # ncc's -report-all listing
        if verbose and listing.is_file():
            print("---------\n" + listing.read_text(errors="replace").rstrip("\n")
                  + "\n---------", flush=True)
        return True

    def clean(self, oname: str, dir: str | os.PathLike[str] | None = None) -> None:
        """Remove the source, object and listing files of ``oname``."""
        base = Path(os.fspath(dir) if dir else os.getcwd())
        for name in (oname + SUFFIX[self._type], oname + ".o", oname + ".L"):
            try:
                (base / name).unlink()
            except FileNotFoundError:
                pass


class VeCObj(VeObj):
    """C source."""

    _type = "C"


class VeCppObj(VeObj):
    """C++ source."""

    _type = "C++"


class VeFtnObj(VeObj):
    """Fortran (free form, .f90) source."""

    _type = "F"


class VeBuild:
    """Compile sources given as strings into a VE shared object or static helper.

    As in PyVEO, files are built in the build directory: by default the
    current directory, and ``build_so`` returns the built file's name joined to
    the build directory as given (``"label.so"`` by default, relative to the
    current directory; ``"d/label.so"`` after ``set_build_dir("d")``).  With
    ``private_dir=True`` they are built in a private temporary directory
    (mode 0700, removed at exit) and the returned path is absolute.

    ``backend`` is "emulator" or "vendor" (or an object with such a ``kind``);
    by default it is the backend ``aioveo._core`` runs on, or the emulator.
    """

    def __init__(self, backend: object = None, *, private_dir: bool = False) -> None:
        self._obj: OrderedDict[str, VeObj] = OrderedDict()
        self._backend = backend
        self._kind: str | None = None
        self._private = private_dir
        self._blddir: str | None = None    # as given by set_build_dir; None: the default
        self._used_dir: str | None = None  # where the last build wrote (absolute)
        self._built: list[str] = []
        self._made_dirs: list[str] = []
        self._generated: list[str] = []  # intermediate files besides sources and objects
        self._blddir_is_temp = False

    # ---- PyVEO API ---------------------------------------------------------

    @property
    def backend(self) -> str:
        """'emulator' or 'vendor', resolved on first use."""
        if self._kind is None:
            self._kind = _backend_kind(self._backend)
        return self._kind

    def set_c_src(self, label: str, content: str, flags: str | Sequence[str] | None = None,
                  compiler: str | None = None) -> None:
        """Add (or replace) the C source ``label``."""
        self._add(label, VeCObj(content, flags=flags, compiler=compiler))

    def set_cpp_src(self, label: str, content: str, flags: str | Sequence[str] | None = None,
                    compiler: str | None = None) -> None:
        """Add (or replace) the C++ source ``label`` (VEO calls need extern "C" names)."""
        self._add(label, VeCppObj(content, flags=flags, compiler=compiler))

    def set_ftn_src(self, label: str, content: str, flags: str | Sequence[str] | None = None,
                    compiler: str | None = None) -> None:
        """Add (or replace) the Fortran source ``label``."""
        self._add(label, VeFtnObj(content, flags=flags, compiler=compiler))

    def set_build_dir(self, dirname: str | os.PathLike[str]) -> None:
        """Build in ``dirname`` (created when needed); built files are returned
        as ``dirname`` joined with their name, relative if ``dirname`` is."""
        self._blddir = os.fspath(dirname)
        self._blddir_is_temp = False

    @property
    def build_dir(self) -> str:
        """The build directory, absolute (created on first build)."""
        return self._check_create_blddir()

    def _output(self, blddir: str, name: str) -> str:
        """The name a build returns for `name` built in `blddir` (PyVEO's rule)."""
        if self._blddir_is_temp:
            return os.path.join(blddir, name)
        return os.path.join(self._blddir or "", name)

    def build_so(self, label: str | None = None, flags: str | Sequence[str] | None = None,
                 libs: str | Iterable[str] | None = None, linker: str | None = None,
                 verbose: bool = False) -> str:
        """Compile every source and link them into ``<build dir>/<label>.so``; return its path.

        ``label`` defaults to the first source's. ``flags`` replace the link
        flags ("-shared -pthread"; -shared is kept); ``libs`` are appended.
        """
        label = self._label(label)
        blddir = self._compile_all(verbose)
        soname = os.path.join(blddir, label + ".so")
        link_flags = _words(flags if flags is not None else GLOBAL_SO_FLAGS)
        if "-shared" not in link_flags:
            link_flags.insert(0, "-shared")
        cmd = [linker or self._find_linker(), *link_flags, "-o", soname,
               *self._objects(blddir), *_libs(libs), *self._runtime_libs(linker)]
        _run(cmd, blddir, verbose)
        self._record(soname)
        return self._output(blddir, label + ".so")

    def build_veorun(self, label: str | None = None, flags: str | Sequence[str] | None = None,
                     libs: str | Iterable[str] | None = None, verbose: bool = False,
                     linker: str | None = None) -> str:
        """Compile every source and link them into a static helper ``<label>.veorun``.

        Start it with ``VeoProc(node, veorun_bin=path)`` (or ``VEORUN_BIN``);
        its functions are found in ``proc.static_library()``. On a VE this is
        AVEO's mk_veorun_static (see ``mk_veorun_static_path``), run without the
        host's compiler variables; ``flags`` become its CFLAGS, except -L/-l/-Wl,
        options, which go on its command line; on the emulator the
        objects, a generated symbol table and ``libveorun.a`` are linked with
        the host compiler (``flags`` are added to the link).
        """
        label = self._label(label)
        blddir = self._compile_all(verbose)
        oname = os.path.join(blddir, label + ".veorun")
        objects = self._objects(blddir)
        if self.backend == VENDOR:
            env = {k: v for k, v in os.environ.items() if k not in _MK_VEORUN_ENV}
            words = _words(flags) if flags is not None else []
            link = [w for w in words if w.startswith(("-L", "-l", "-Wl,"))]
            compile_flags = [w for w in words if w not in link]
            if compile_flags:
                env["CFLAGS"] = " ".join(compile_flags)
            cmd = [mk_veorun_static_path(), oname, *objects, *link, *_libs(libs)]
            _run(cmd, blddir, verbose, env=env)
        else:
            helper_lib = _emu_file("libveorun.a")
            if not helper_lib.exists():
                raise BuildError([], 1, "", f"the emulator's {helper_lib} is missing "
                                 "(is aioveo installed?)")
            symtab = self._write_symtab(blddir, label, objects, verbose)
            cmd = [linker or self._find_linker(), *_words(flags), "-o", oname, *objects]
            if symtab:
                cmd.append(symtab)
            cmd += [*_libs(libs), *self._runtime_libs(linker)]
            # What `python -m aioveo config --static-helper-libs` prints.
            cmd += ["-rdynamic", str(helper_lib), "-lffi", "-ldl", "-lpthread"]
            _run(cmd, blddir, verbose)
        self._record(oname)
        return self._output(blddir, label + ".veorun")

    def clean(self) -> None:
        """Remove the sources and objects written for the current sources."""
        d = self._used_dir
        if d is None or not os.path.isdir(d):
            return
        for label, obj in self._obj.items():
            obj.clean(label, dir=d)
        for path in self._generated:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._generated = []

    def clear(self) -> None:
        """clean(), then forget all sources and the build directory setting."""
        self.clean()
        self._obj = OrderedDict()
        self._blddir = None
        self._blddir_is_temp = False

    def realclean(self) -> None:
        """clean(), remove every built .so/.veorun, and the directories this object created."""
        self.clean()
        for path in self._built:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._built = []
        for d in self._made_dirs:
            shutil.rmtree(d, ignore_errors=True)
        if self._blddir_is_temp:  # the next build makes a new private directory
            self._blddir, self._blddir_is_temp = None, False
        self._made_dirs = []

    # ---- internals -----------------------------------------------------------

    def _add(self, label: str, obj: VeObj) -> None:
        if (not isinstance(label, str) or not label or label in (".", "..")
                or "/" in label or "\0" in label):
            raise ValueError(f"a source label must be a plain file name, not {label!r}")
        obj._backend = self._backend
        obj._kind = self._kind
        self._obj[label] = obj

    def _label(self, label: str | None) -> str:
        if label is None:
            if not self._obj:
                raise ValueError("No label. Did you define any sources?")
            return next(iter(self._obj))
        if not label or "/" in label or "\0" in label:
            raise ValueError(f"a label must be a plain file name, not {label!r}")
        return label

    def _check_create_blddir(self) -> str:
        """The build directory as an absolute path, created when needed."""
        if self._blddir is None and self._private:
            d = tempfile.mkdtemp(prefix="aioveo-build-")  # mode 0700
            self._blddir, self._blddir_is_temp = d, True
            self._made_dirs.append(d)
            atexit.register(_remove_at_exit, d, os.getpid())
            return d
        d = os.path.abspath(self._blddir or os.curdir)
        if os.path.isdir(d):
            if not os.access(d, os.W_OK | os.R_OK | os.X_OK):
                raise OSError(f"Directory '{d}' exists but is not readable or writable!")
        else:
            os.makedirs(d)
            if d not in self._made_dirs:
                self._made_dirs.append(d)
        return d

    def _compile_all(self, verbose: bool) -> str:
        if not self._obj:
            raise ValueError("No sources. Call set_c_src() (or set_cpp_src/set_ftn_src) first.")
        blddir = self._used_dir = self._check_create_blddir()
        kind = self.backend
        for label, obj in self._obj.items():
            obj._kind = kind
            obj.build(label, dir=blddir, verbose=verbose)
            if verbose:
                print(f"compile {label} -> ok", flush=True)
        return blddir

    def _objects(self, blddir: str) -> list[str]:
        return [os.path.join(blddir, label + ".o") for label in self._obj]

    def _types(self) -> set[str]:
        return {obj.get_type() for obj in self._obj.values()}

    def _find_linker(self) -> str:
        """PyVEO's rule: C++ if any C++ source, else Fortran if any, else C.

        The linker is the compiler of the first source of that language.
        """
        types = self._types()
        if not types:
            raise ValueError("No linker. Did you define any sources?")
        kind = "C++" if "C++" in types else ("F" if "F" in types else "C")
        return self._compiler_for(kind)

    def _compiler_for(self, kind: str) -> str:
        for obj in self._obj.values():
            if obj.get_type() == kind:
                return obj.get_compiler()
        return _probe(kind, self.backend).get_compiler()

    def _runtime_libs(self, linker: str | None) -> list[str]:
        # The C++ driver does not link Fortran's runtime by itself (host only;
        # nc++ knows nfort's).
        if (self.backend == EMULATOR and linker is None
                and {"C++", "F"} <= self._types()):
            return ["-lgfortran"]
        return []

    def _write_symtab(self, blddir: str, label: str, objects: list[str],
                      verbose: bool) -> str | None:
        """Compile the helper's table of the objects' global symbols (like mk_veorun_static).

        Returns the table's object file, or None when a source defines its own
        ``_veo_static_symtable``.
        """
        nm = os.environ.get("NM") or "nm"
        out = _run([nm, "-P", "-g", "--defined-only", *objects], blddir, False)
        names: list[str] = []
        seen: set[str] = set()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 2 or parts[1] not in _NM_TYPES:
                continue
            name = parts[0]
            if name == "_veo_static_symtable":
                return None
            # Only names that are C identifiers can be declared in the table's source.
            if (name not in seen and name not in _NOT_IN_TABLE and name.isascii()
                    and name.replace("_", "a").isalnum() and not name[0].isdigit()):
                seen.add(name)
                names.append(name)
        lines = ["/* Generated by aioveo.build.VeBuild.build_veorun. */",
                 "struct veo_emu_static_sym { const char *name; void *addr; };"]
        lines += [f"extern char {n}[];" for n in names]
        lines.append("const struct veo_emu_static_sym _veo_static_symtable[] = {")
        lines += [f'  {{"{n}", (void *){n}}},' for n in names]
        lines += ["  {0, 0}", "};", ""]
        src = os.path.join(blddir, f"{label}_symtab.c")
        obj = os.path.join(blddir, f"{label}_symtab.o")
        self._generated += [p for p in (src, obj) if p not in self._generated]
        Path(src).write_text("\n".join(lines))
        _run([self._compiler_for("C"), "-c", "-fPIC", src, "-o", obj], blddir, verbose)
        return obj

    def _record(self, path: str) -> None:
        if path not in self._built:
            self._built.append(path)


def _probe(kind: str, backend: str) -> VeObj:
    obj = {"C": VeCObj, "C++": VeCppObj, "F": VeFtnObj}[kind]("")
    obj._kind = backend
    return obj


def _remove_at_exit(d: str, pid: int) -> None:
    if os.getpid() == pid:  # not in forked children: the directory is the parent's
        shutil.rmtree(d, ignore_errors=True)
