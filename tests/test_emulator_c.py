"""The emulator's C test suite: plain VEO C programs (tests/c/*.c) built against
the emulator's libveo, each asserting results and ending with "ALL OK".

By default the programs are built against the installed package, with the
flags a C user gets from ``python -m aioveo config``.  Two knobs:

``AIOVEO_TEST_EMU_BUILD=DIR``
    use the emulator of a meson build directory instead (its libveo.so,
    aioveo-veorun and libveorun.a; headers from the source tree).  If DIR
    was configured with ``-Db_sanitize=address,undefined`` the programs are
    built with the same sanitizers and their stderr must be clean.
``AIOVEO_TEST_VALGRIND=1``
    run each program under valgrind memcheck (slow; timeouts are scaled).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent / "c"
ROOT = SRC.parent.parent
PROGRAMS = ["procs", "libs", "memory", "contexts", "args", "calls", "hmem", "faults",
            "threads", "scale", "output", "badinput", "orphan", "aveo", "inject", "profile"]
EMU_BUILD = os.environ.get("AIOVEO_TEST_EMU_BUILD")
VALGRIND = os.environ.get("AIOVEO_TEST_VALGRIND") == "1"
SLOW = 20 if VALGRIND else 1
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer", "== ERROR SUMMARY: [1-9]")


class Build:
    def __init__(self, root: Path, env: dict[str, str], sanitize: str):
        self.root = root
        self.env = env
        self.sanitize = sanitize

    def exe(self, name: str) -> Path:
        return self.root / f"test_{name}"


def _emulator_flags(tmp: Path) -> tuple[list[str], list[str], list[str], dict[str, str], str]:
    """(cflags, libs, static-helper libs, extra env, sanitize option)."""
    if not EMU_BUILD:
        def config(*opts: str) -> list[str]:
            out = subprocess.check_output([sys.executable, "-m", "aioveo", "config", *opts],
                                          text=True, cwd=tmp)
            return shlex.split(out)
        return (config("--cflags"), config("--libs"), config("--static-helper-libs"), {}, "")
    bld = Path(EMU_BUILD).resolve()
    emu = bld / "_ext" / "emu"
    if not (emu / "libveo.so").exists():
        pytest.fail(f"AIOVEO_TEST_EMU_BUILD={EMU_BUILD}: no _ext/emu/libveo.so "
                    f"(run: ninja -C {EMU_BUILD} _ext/emu/libveo.so _ext/emu/aioveo-veorun "
                    f"_ext/emu/libveorun.a)")
    sanitize = ""
    opts = bld / "meson-info" / "intro-buildoptions.json"
    if opts.exists():
        for o in json.loads(opts.read_text()):
            if o["name"] == "b_sanitize" and o["value"] not in ("none", ""):
                sanitize = o["value"] if isinstance(o["value"], str) else ",".join(o["value"])
    san = [f"-fsanitize={sanitize}"] if sanitize else []
    cflags = [f"-I{ROOT / '_ext' / 'emu'}", *san]
    libs = [f"-L{emu}", f"-Wl,-rpath,{emu}", "-lveo", *san]
    static = ["-rdynamic", str(emu / "libveorun.a"), "-lffi", "-ldl", "-lpthread", *san]
    env = {"VEORUN_BIN": str(emu / "aioveo-veorun")}
    return cflags, libs, static, env, sanitize


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    root = tmp_path_factory.mktemp("emu-c-tests")
    cflags, libs, static, env, sanitize = _emulator_flags(root)
    cc = os.environ.get("CC", "cc")
    if not shutil.which(cc):
        pytest.skip(f"no C compiler ({cc})")
    warn = ["-Wall", "-Wextra", "-g", "-O1"]
    # (the kernels fault on purpose: their warnings are not errors)
    jobs = [[cc, *warn, "-shared", "-fPIC", str(SRC / "kernels.c"),
             "-o", str(root / "libtestkernels.so")],
            [cc, *warn, str(SRC / "static_kernels.c"), *static, "-o", str(root / "static_veorun")]]
    jobs += [[cc, *warn, "-Werror", "-pthread", *cflags, str(SRC / f"{p}.c"), *libs,
              "-o", str(root / f"test_{p}")] for p in PROGRAMS]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True),
                                jobs))
    errors = [f"$ {shlex.join(cmd)}\n{r.stderr}" for cmd, r in zip(jobs, results) if r.returncode]
    if errors:
        pytest.fail("building the C tests failed:\n" + "\n".join(errors))
    run_env = dict(os.environ)
    for k in ("VEORUN_BIN", "VE_NODE_NUMBER", "_VENODELIST", "VEO_EMU_NODES",
              "VEO_EMU_NODE_MEMORY", "VEO_EMU_SPIN_US", "VEO_EMU_POISON", "VEO_EMU_FAULTS",
              "VEO_EMU_PROFILE"):
        run_env.pop(k, None)
    run_env.update(env)
    # The programs open several contexts per proc, which AVEO (and so the
    # emulator) allows only with VE_OMP_NUM_THREADS=1 (tests/c/aveo.c checks
    # the refusal without it).
    run_env["VE_OMP_NUM_THREADS"] = "1"
    if VALGRIND:  # valgrind makes the 48 GiB shared VE memory resident: keep it small
        run_env["VEO_EMU_NODE_MEMORY"] = "1G"
    run_env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:allow_user_segv_handler=1"
    run_env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    return Build(root, run_env, sanitize)


def _command(build: Build, name: str, args: list[str]) -> list[str]:
    cmd = [str(build.exe(name)), *args]
    if VALGRIND:
        cmd = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
               "--show-possibly-lost=no", "--child-silent-after-fork=yes",
               "--errors-for-leak-kinds=definite", "--track-fds=no", *cmd]
    return cmd


def run(build: Build, name: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run test program `name` in the build directory; it must print ALL OK."""
    try:
        r = subprocess.run(_command(build, name, list(args)), cwd=build.root, env=build.env,
                           capture_output=True, text=True, timeout=timeout * SLOW)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"test_{name} timed out after {timeout * SLOW} s\n"
                    f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}")
    report = f"test_{name} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert r.returncode == 0, report
    assert "ALL OK" in r.stdout, report
    for mark in SANITIZER_MARKS:
        assert not re.search(mark, r.stderr), report
    return r


def test_procs(build):
    run(build, "procs")


def test_libs(build):
    run(build, "libs", str(build.root / "static_veorun"))


def test_memory(build):
    run(build, "memory")


def test_contexts(build):
    run(build, "contexts")


def test_args(build):
    run(build, "args")


def test_calls(build):
    run(build, "calls")


def test_hmem_and_hooks(build):
    run(build, "hmem")


def test_faults(build):
    r = run(build, "faults")
    # the helper reports each fault on the host's stderr
    assert "raised signal 11" in r.stderr and "raised signal 8" in r.stderr
    assert "raised signal 6" in r.stderr


def test_injected_faults(build):
    """Every fault kind, from VEO_EMU_FAULTS and from veo_emu_inject."""
    r = run(build, "inject", timeout=60)
    # each fault that acts says so on stderr
    for what in ("the kernel raises a signal", "the kernel never returns",
                 "the VE process dies after this call", "'die:after=300ms': the VE process dies"):
        assert what in r.stderr, r.stderr


def test_timing_profile(build):
    """VEO_EMU_PROFILE=ve10b: AVEO's figures within 25% (timed only without
    valgrind and sanitizers, and on a machine idle enough to time)."""
    timing = not VALGRIND and not build.sanitize
    r = run(build, "profile", *(["--timing"] if timing else []), timeout=120)
    print(r.stdout)
    if timing and "TIMING NOT CHECKED" in r.stdout:
        pytest.skip(r.stdout.splitlines()[0])


def test_threads(build):
    run(build, "threads")


def test_scale(build):
    run(build, "scale", timeout=30)


def test_kernel_output_reaches_host(build):
    r = run(build, "output")
    out = r.stdout.splitlines()
    assert "kernel stdout: hello from the VE" in out
    assert "kernel stderr: warning from the VE" in r.stderr.splitlines()
    # the kernel's line sits between the host's lines around the call
    assert out.index("host: before") < out.index("kernel stdout: hello from the VE") \
        < out.index("host: after")
    # output the kernel left unflushed is flushed when the proc is destroyed
    assert out.index("[partial line]") < out.index("host: end")


def test_aveo_behaviours(build):
    r = run(build, "aveo")
    # the waiter left behind by a peek is reported when its context closes
    assert "still wait in veo_call_wait_result" in r.stderr


def test_bad_input(build):
    run(build, "badinput")


def test_no_orphan_helper_after_sigkill(build):
    proc = subprocess.Popen(_command(build, "orphan", []), cwd=build.root, env=build.env,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"expected the helper pid, got {line!r}"
        helper = int(line)
        assert _alive(helper)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5 * SLOW
        while _alive(helper) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(helper), f"helper {helper} survived its host"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _alive(pid: int) -> bool:
    """True if `pid` runs (a zombie nobody reaps counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"
