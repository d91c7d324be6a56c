"""Build an example's C kernels once and cache the shared object.

    from _kernels import kernel_library
    lib = await proc.load_library(kernel_library("blas"))   # examples/kernels/blas.c

The source is compiled with ``aioveo.VeBuild`` (the host compiler on the
emulator, NEC's ncc on a real VE) into ``$AIOVEO_CACHE/examples`` (default
``~/.cache/aioveo/examples``).  The file name carries a hash of the source and
the backend, so editing a kernel rebuilds it and an unchanged one is reused.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import aioveo

KERNELS = Path(__file__).resolve().parent / "kernels"
LIBS = "-lm"


def cache_dir() -> Path:
    root = os.environ.get("AIOVEO_CACHE")
    if root:
        return Path(root) / "examples"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "aioveo" / "examples"


def kernel_library(name: str) -> str:
    """Path of the shared object built from ``examples/kernels/<name>.c``."""
    source = (KERNELS / f"{name}.c").read_text()
    bld = aioveo.VeBuild()
    key = hashlib.sha256(f"{bld.backend}\0{LIBS}\0{source}".encode()).hexdigest()[:16]
    cache = cache_dir()
    target = cache / f"lib{name}-{key}.so"
    if target.exists():
        return str(target)

    cache.mkdir(parents=True, exist_ok=True)
    # Build in a private directory and rename into place: two examples
    # starting at once never load a half-written library.
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=cache)
    try:
        bld.set_build_dir(tmp)
        bld.set_c_src(name, source)
        os.replace(bld.build_so(name, libs=LIBS), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in cache.glob(f"lib{name}-*.so"):  # older builds of this source
        if stale != target:
            stale.unlink(missing_ok=True)
    return str(target)
