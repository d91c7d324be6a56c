"""The package is typed: mypy passes on the installed package, on the
examples and on the development benchmarks, the stubs of the native modules match the built modules
(mypy.stubtest), and the types are precise enough to catch misuse.

mypy runs in a temporary directory, so it sees the installed package (through
its py.typed marker), never the source tree; the configuration is the
``[tool.mypy]`` section of pyproject.toml.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

import aioveo  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"
PACKAGE = Path(aioveo.__file__).resolve().parent
TIMEOUT = 600

# Names Cython adds to every module and extension type (pickling support,
# doctests), and Engine, initialised by a __cinit__ whose signature Cython
# does not expose.
STUBTEST_ALLOWLIST = r"""
aioveo\._core\.(.*\.)?__(reduce|setstate)_cython__
aioveo\._core\.__test__
aioveo\._core\.Engine\.__init__
"""


def mypy(*args: str, cwd: Path, module: str = "mypy") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
        timeout=TIMEOUT)


def mypy_check(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return mypy("--config-file", str(CONFIG), "--cache-dir", str(cwd / ".mypy_cache"),
                "--no-error-summary", "--hide-error-context", *args, cwd=cwd)


def test_installed_package_is_typed():
    assert not PACKAGE.is_relative_to(ROOT), "the tests must run on the installed package"
    for name in ("py.typed", "_core.pyi"):
        assert (PACKAGE / name).is_file(), f"{name} is not installed"


def test_mypy_passes_on_the_installed_package(tmp_path):
    r = mypy_check("-p", "aioveo", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_passes_on_the_examples_and_benchmarks(tmp_path):
    examples = sorted(str(p) for p in (ROOT / "examples").glob("*.py"))
    benchmarks = sorted(str(p) for p in (ROOT / "benchmarks").glob("*.py"))
    assert examples and benchmarks
    r = mypy_check(*examples, *benchmarks, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_stubs_match_the_native_modules(tmp_path):
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(STUBTEST_ALLOWLIST)
    r = mypy("--allowlist", str(allowlist), "--mypy-config-file", str(CONFIG),
             "aioveo._core", cwd=tmp_path, module="mypy.stubtest")
    assert r.returncode == 0, r.stdout + r.stderr


def test_types_catch_misuse(tmp_path):
    """The stubs carry real types (not Any): wrong uses are reported."""
    good = tmp_path / "good.py"
    good.write_text('''
import numpy as np
import aioveo
import aioveo.trace
from aioveo import VeoProc, VEMemPtr

async def main() -> float:
    async with aioveo.open_proc(0) as proc, proc.open_context() as ctx:
        lib = await proc.load_library("libk.so")
        fn = lib.find_function("double dot(double *, double *, long)")
        x = await ctx.to_ve(np.ones(8))
        with aioveo.trace.record() as rec:
            r = await ctx.call(fn, x, x, 8)
        print(rec.summary())
        ptr: VEMemPtr = await proc.alloc_mem(64)
        addr: int = ptr.addr + (ptr + 8).addr
        await ctx.write_mem(ptr, bytearray(64))
        return float(r) + addr

with VeoProc(0) as p:
    buf = bytearray(8)
    p.read_mem(buf, p.alloc_mem(8))
    req = p.lib["x"].func["f"](p.open_context(), 1)
    req_id: int = req.req_id
    state: int = p.context[0].state()
''')
    r = mypy_check(str(good), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr

    bad = tmp_path / "bad.py"
    bad.write_text('''
import aioveo
from aioveo import VeoProc

p = VeoProc("0")
name: int = p.load_library("x").name
p.read_mem(p.alloc_mem(8), 0)
s: str = aioveo.backend().api_version
q: str = p.alloc_mem(8).addr
t: int = aioveo.trace.start().summary()
''')
    r = mypy_check(str(bad), cwd=tmp_path)
    lines = [line for line in r.stdout.splitlines() if ": error:" in line]
    assert sorted({int(line.split(":")[1]) for line in lines}) == [5, 6, 7, 8, 9, 10], r.stdout
