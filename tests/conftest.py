"""Shared fixtures: kernels compiled for the host (the emulator runs them) and
the event loops every asyncio test runs on (asyncio's default loop and uvloop)."""
from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL_SRC = ROOT / "tests" / "kernels"

# AVEO opens a second context of a proc only with VE_OMP_NUM_THREADS=1 in the
# environment (ProcHandle::openContext), and so does the emulator: many tests
# use several contexts per proc.  (tests/test_fidelity.py unsets it where it
# checks the refusal.)
os.environ["VE_OMP_NUM_THREADS"] = "1"


def pytest_asyncio_loop_factories(config, item):
    factories = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:  # the test extras install it; a bare checkout may not
        pass
    else:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture(scope="session")
def build_kernel(tmp_path_factory):
    """``build_kernel("core_kernels")`` -> path of tests/kernels/core_kernels.c
    compiled into a shared object (once per session)."""
    out_dir = tmp_path_factory.mktemp("kernels")
    built: dict[str, str] = {}

    def build(name: str) -> str:
        if name not in built:
            out = out_dir / f"lib{name}.so"
            subprocess.run(["cc", "-shared", "-fPIC", "-O1", str(KERNEL_SRC / f"{name}.c"),
                            "-o", str(out), "-lm"], check=True)
            built[name] = str(out)
        return built[name]

    return build


def pytest_addoption(parser):
    parser.addoption("--soak-long", action="store_true", default=False,
                     help="run the long soak (tests/test_soak.py): >= 1,000,000 calls and "
                          ">= 10 GB of transfers; same as AIOVEO_SOAK=long")


def pytest_configure(config):
    config.addinivalue_line("markers", "soak: load and soak tests (tests/test_soak.py); "
                                       "long form with --soak-long or AIOVEO_SOAK=long")


@pytest.fixture(scope="session")
def aio_lib(build_kernel) -> str:
    """The test kernels, as the asyncio tests load them (a path)."""
    return build_kernel("core_kernels")


# ---- the PyVEO API's objects, one set per test module (test_core, test_messages) ----
@pytest.fixture(scope="module")
def kernels(build_kernel):
    return build_kernel("core_kernels")


@pytest.fixture(scope="module")
def proc():
    import aioveo

    p = aioveo.VeoProc(0)
    yield p
    p.destroy()


@pytest.fixture(scope="module")
def lib(proc, kernels):
    return proc.load_library(kernels)


@pytest.fixture(scope="module")
def ctx(proc):
    return proc.open_context()
