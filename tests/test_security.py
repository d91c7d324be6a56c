"""Security: the memory shared between the host and the emulator's helper is
reachable by the owning user only, the helper inherits nothing it should
not, and VeBuild builds in a private directory without ever using a shell."""
from __future__ import annotations

import os
import re
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

import aioveo as veo
from aioveo import build as vebuild
from aioveo.build import BuildError, VeBuild

SRC = "long sec_add(long a, long b) { return a + b; }\n"


# ---- shared memory and descriptors of the helper ------------------------------------
def fd_targets(pid: int) -> dict[int, str]:
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:   # closed meanwhile (our own listdir fd)
            pass
    return out


def shared_mappings(pid: int) -> list[tuple[str, str]]:
    """(permissions, path) of every shared mapping of `pid`."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) >= 2 and parts[1][3] == "s":
                out.append((parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return out


def named_unix_sockets() -> dict[int, str]:
    """inode -> path of unix sockets bound to a name (filesystem or abstract)."""
    out = {}
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8:
                out[int(parts[6])] = parts[7]
    return out


def assert_private_shared_memory(pid: int, paths_before: set[str]) -> None:
    maps = shared_mappings(pid)
    assert any("aioveo" in path for _, path in maps), maps   # the emulator's mappings exist
    for perms, path in maps:
        assert not path.startswith("/dev/shm"), f"{pid} maps {path}: a guessable shared name"
        if path.startswith("/memfd:") or path in ("", "/dev/zero (deleted)", "/SYSV00000000 (deleted)"):
            continue                          # anonymous: reachable through this pid only
        clean = path.removesuffix(" (deleted)")
        if os.path.exists(clean):
            mode = stat.S_IMODE(os.stat(clean).st_mode)
            if "w" in perms:
                assert mode & 0o077 == 0, f"{pid} maps {clean} writable with mode {mode:o}"
    fds = fd_targets(pid)
    named = named_unix_sockets()
    for fd, target in fds.items():
        if fd <= 2:
            continue                          # the host's stdin/stdout/stderr (kernel output)
        if target.startswith("socket:["):
            inode = int(target[8:-1])
            assert inode not in named, f"fd {fd} is a named socket {named[inode]!r}"
        elif target.startswith("/memfd:") or target.startswith("anon_inode:") or target.startswith("pipe:["):
            continue
        else:
            assert not target.startswith("/dev/shm"), (fd, target)
            assert target not in paths_before, f"fd {fd}: {target} is a file of the host"
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            assert stat.S_IMODE(st.st_mode) & 0o077 == 0, (fd, target, oct(st.st_mode))


def test_helper_shared_memory_is_private_to_the_user(tmp_path):
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    tmp_before = set(os.listdir(tempfile.gettempdir()))
    # A descriptor the host made inheritable must not reach the helper.
    secret = tmp_path / "secret"
    fd = os.open(secret, os.O_CREAT | os.O_RDWR, 0o600)
    os.set_inheritable(fd, True)
    try:
        p = veo.VeoProc(0)
        try:
            c = p.open_context()
            ptr = p.alloc_mem(1 << 20)
            p.write_mem(ptr, b"x" * (1 << 20))
            pid = p.helper_pid
            assert os.stat(f"/proc/{pid}").st_uid == os.getuid()   # runs as the user
            targets = fd_targets(pid)
            assert str(secret) not in targets.values(), targets
            assert len(targets) <= 8, targets    # stdio, shm, VE memory, life socket
            assert_private_shared_memory(pid, {str(secret)})
            # the host side of the same mappings
            host_maps = [path for _, path in shared_mappings(os.getpid()) if "aioveo" in path]
            assert host_maps and all(path.startswith("/memfd:") for path in host_maps), host_maps
            p.close_context(c)
        finally:
            p.destroy()
    finally:
        os.close(fd)
    # nothing with a predictable name was created in /dev/shm or the temp dir
    if os.path.isdir("/dev/shm"):
        new = {n for n in set(os.listdir("/dev/shm")) - shm_before if "veo" in n.lower()}
        assert not new, new
    new_tmp = {n for n in set(os.listdir(tempfile.gettempdir())) - tmp_before
               if re.search("veo|aioveo", n, re.I) and not n.startswith("aioveo-build-")}
    assert not new_tmp, new_tmp


def test_several_procs_do_not_share_their_memory():
    a, b = veo.VeoProc(0), veo.VeoProc(0)
    try:
        ma = {p for _, p in shared_mappings(a.helper_pid) if "aioveo" in p}
        mb = {p for _, p in shared_mappings(b.helper_pid) if "aioveo" in p}
        ia = {os.stat(f"/proc/{a.helper_pid}/fd/{fd}").st_ino
              for fd, t in fd_targets(a.helper_pid).items() if t.startswith("/memfd:")}
        ib = {os.stat(f"/proc/{b.helper_pid}/fd/{fd}").st_ino
              for fd, t in fd_targets(b.helper_pid).items() if t.startswith("/memfd:")}
        assert ma and mb and ia and ib
        assert not ia & ib, "two procs share a memfd"
        # what one proc writes, the other cannot read at the same address
        pa = a.alloc_mem(4096)
        a.write_mem(pa, b"\xab" * 4096)
        out = bytearray(4096)
        try:
            b.read_mem(out, pa.addr, 4096)
        except veo.VeoError:
            pass
        assert out != b"\xab" * 4096
    finally:
        a.destroy()
        b.destroy()


# ---- VeBuild: private build directory ---------------------------------------------------
def test_vebuild_private_build_dir_is_private():
    # The default builds in the current directory, as PyVEO does (the emulator
    # issue); a private directory is the explicit option.
    b1 = VeBuild(backend="emulator", private_dir=True)
    b2 = VeBuild(backend="emulator", private_dir=True)
    try:
        d1, d2 = b1.build_dir, b2.build_dir
        assert d1 != d2                                     # not a predictable, shared name
        for d in (d1, d2):
            st = os.lstat(d)
            assert stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o700
            assert st.st_uid == os.getuid()
            assert os.path.dirname(d) == tempfile.gettempdir()
        b1.set_c_src("seclib", SRC)
        so = b1.build_so()
        assert os.path.dirname(so) == d1
        for f in Path(d1).iterdir():                        # nothing world-writable inside
            assert stat.S_IMODE(f.stat().st_mode) & 0o002 == 0, f
    finally:
        b1.realclean()
        b2.realclean()
    assert not os.path.exists(d1) and not os.path.exists(d2)


# ---- VeBuild: no shell ----------------------------------------------------------------
@pytest.fixture
def no_shell(monkeypatch):
    """Record every command VeBuild runs; fail on any shell use."""
    calls = []
    real_run = subprocess.run

    def run(args, *a, **kw):
        assert not kw.get("shell"), f"shell=True for {args!r}"
        assert isinstance(args, (list, tuple)), f"a command string: {args!r}"
        calls.append(list(args))
        return real_run(args, *a, **kw)

    def forbidden(*a, **kw):
        raise AssertionError(f"a shell was used: {a!r}")

    monkeypatch.setattr(vebuild.subprocess, "run", run)
    monkeypatch.setattr(os, "system", forbidden)
    monkeypatch.setattr(os, "popen", forbidden)
    return calls


def _markers(*dirs) -> list[Path]:
    return [p for d in dirs for p in Path(d).glob("PWNED*")]


INJECTIONS = ["; touch PWNED1", "$(touch PWNED2)", "`touch PWNED3`", "| touch PWNED4",
              "&& touch PWNED5", "\n touch PWNED6"]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_vebuild_label_is_not_shell_code(tmp_path, monkeypatch, no_shell, payload):
    monkeypatch.chdir(tmp_path)
    b = VeBuild(backend="emulator")
    b.set_build_dir(tmp_path / "bld")
    label = "lib" + payload
    b.set_c_src(label, SRC)
    try:
        so = b.build_so()
    except BuildError:
        so = None                     # a compiler may refuse the name; nothing may run
    assert _markers(tmp_path, tmp_path / "bld") == []
    if so is not None:
        assert os.path.basename(so) == label + ".so" and os.path.exists(so)
    assert no_shell and all(isinstance(c, list) for c in no_shell)


@pytest.mark.parametrize("payload", INJECTIONS)
def test_vebuild_flags_libs_and_compiler_are_not_shell_code(tmp_path, monkeypatch, no_shell,
                                                              payload):
    monkeypatch.chdir(tmp_path)
    marker_abs = tmp_path / "PWNED_ABS"
    evil = payload.replace("PWNED", str(marker_abs) + "_")
    attempts = [
        lambda b: b.set_c_src("a", SRC, flags="-O1 " + evil),
        lambda b: (b.set_c_src("b", SRC), b.build_so(flags="-shared " + evil)),
        lambda b: (b.set_c_src("c", SRC), b.build_so(libs=[evil])),
        lambda b: b.set_c_src("d", SRC, compiler="cc " + evil),
        lambda b: (b.set_c_src("e", SRC), b.build_so(linker="cc " + evil)),
    ]
    for attempt in attempts:
        b = VeBuild(backend="emulator")
        b.set_build_dir(tmp_path / "bld")
        try:
            attempt(b)
            b.build_so()
        except (BuildError, ValueError):
            pass
        assert _markers(tmp_path, tmp_path / "bld") == [], attempt
    monkeypatch.setenv("CC", "cc " + evil)        # a compiler from the environment
    b = VeBuild(backend="emulator")
    b.set_build_dir(tmp_path / "bld")
    b.set_c_src("f", SRC)
    with pytest.raises(BuildError):
        b.build_so()
    assert _markers(tmp_path, tmp_path / "bld") == []
    assert all(isinstance(c, list) for c in no_shell)


def test_vebuild_rejects_labels_that_escape_the_build_dir(tmp_path):
    b = VeBuild(backend="emulator")
    b.set_build_dir(tmp_path / "bld")
    for label in ("../escape", "/tmp/abs", "a/b", "..", ".", "", "nul\0byte"):
        with pytest.raises(ValueError):
            b.set_c_src(label, SRC)
    b.set_c_src("ok", SRC)
    with pytest.raises(ValueError):
        b.build_so(label="../out")
    assert not (tmp_path / "escape.c").exists() and not (tmp_path / "out.so").exists()
