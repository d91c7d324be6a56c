"""The core's one-home rules, checked: the libveo table is generated from its
one list, constants come from ve_offload.h, every failure carries where it
happened, and a missing optional function raises a named error (tried with a
libveo that has only the required functions)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import aioveo
from aioveo import _core
from aioveo._ctype import EmuType

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "_ext" / "emu" / "ve_offload.h"


def test_api_table_is_generated_from_its_one_list():
    r = subprocess.run([sys.executable, str(ROOT / "_ext" / "core" / "gen_api.py"), "--check"])
    assert r.returncode == 0, "_ext/core/api.pxi is stale: run python _ext/core/gen_api.py"
    sys.path.insert(0, str(ROOT / "_ext" / "core"))
    try:
        import gen_api
    finally:
        sys.path.pop(0)
    assert _core.API_FUNCTIONS == {name: req for name, _, _, req in gen_api.FUNCTIONS}


def _enum(name: str) -> dict[str, int]:
    body = re.search(r"enum %s \{(.*?)\};" % name, HEADER.read_text(), re.S).group(1)
    values, nxt = {}, 0
    for item in re.sub(r"/\*.*?\*/", "", body, flags=re.S).split(","):
        item = item.strip()
        if not item:
            continue
        key, _, val = item.partition("=")
        nxt = int(val) if val.strip() else nxt
        values[key.strip()] = nxt
        nxt += 1
    return values


def test_constants_and_type_codes_come_from_the_header():
    for c_name, value in {**_enum("veo_command_state"), **_enum("veo_context_state"),
                          **_enum("veo_args_intent")}.items():
        assert getattr(aioveo, c_name) == value
        assert getattr(aioveo, c_name[4:]) == value
    codes = {k.removeprefix("VEO_EMU_TYPE_"): v for k, v in _enum("veo_emu_type").items()}
    assert _core.TYPE_CODES == codes
    assert {e.name: int(e) for e in EmuType} == codes


def test_a_failed_call_names_its_function_code_and_node():
    with aioveo.VeoProc(0) as p:
        with pytest.raises(aioveo.VeoError) as info:
            p.alloc_mem(1 << 62)
        e = info.value
        assert e.func == "veo_alloc_mem" and e.code not in (None, 0) and e.node == 0
        c = p.open_context()
        p.close_context(c)
        with pytest.raises(aioveo.ClosedError, match="closed"):
            c.async_read_mem(bytearray(8), 0)


def test_a_failed_request_names_its_id_node_and_context(build_kernel):
    with aioveo.VeoProc(0) as p:
        lib = p.load_library(build_kernel("core_kernels"))
        crash = lib.find_function("long crash(void)")
        c = p.open_context()
        req = crash(c)
        with pytest.raises(aioveo.VeoException) as info:
            req.wait_result()
        e = info.value
        assert e.req_id == req.req_id and e.node == 0 and e.context == c.handle
        assert e.code == aioveo.VEO_COMMAND_EXCEPTION and e.signal
        with pytest.raises(aioveo.VeoError, match="already collected"):
            req.wait_result()


SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stddef.h>
typedef struct veo_proc_handle veo_proc_handle;
typedef struct veo_thr_ctxt veo_thr_ctxt;
typedef struct veo_args veo_args;
typedef int veo_args_intent;
static void *real;
static void *fn(const char *name) {
  if (!real) real = dlopen(REAL, RTLD_NOW | RTLD_LOCAL);
  return dlsym(real, name);
}
"""


def _shim_source(real: str) -> str:
    """A libveo that forwards only the required functions to the emulator."""
    sys.path.insert(0, str(ROOT / "_ext" / "core"))
    try:
        import gen_api
    finally:
        sys.path.pop(0)
    out = [SHIM.replace("REAL", '"%s"' % real),
           # (reports a vendor version: the backend's kind follows the version string)
           'const char *veo_version_string(void) { return "3.0.2 (shim)"; }']
    for name, ret, params, required in gen_api.FUNCTIONS:
        if not required or name == "veo_version_string":
            continue
        types = [t.strip() for t in params.split(",") if t.strip()]
        decl = ", ".join(f"{t} a{i}" for i, t in enumerate(types)) or "void"
        call = ", ".join(f"a{i}" for i in range(len(types)))
        ptr = f"{ret} (*)({', '.join(types) or 'void'})"
        ret_kw = "" if ret == "void" else "return "
        out.append(f"{ret} {name}({decl}) {{ {ret_kw}(({ptr})fn(\"{name}\"))({call}); }}")
    return "\n".join(out)


def test_a_libveo_with_only_the_required_functions(tmp_path, build_kernel):
    """The vendor path without extensions or optional functions: the core runs
    on it, and each missing optional function raises MissingFunctionError
    naming it.  (Issue 11: veo_context_sync, veo_proc_identifier, the pid's
    hmem functions and the version functions are required now, as every AVEO
    has them: a libveo without them is refused, see test_fidelity.py.)"""
    src = tmp_path / "shim.c"
    src.write_text(_shim_source(aioveo.backend().path))
    shim = tmp_path / "libveo_shim.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-w", str(src), "-o", str(shim), "-ldl"], check=True)
    prog = textwrap.dedent(f"""
        import aioveo
        b = aioveo.backend()
        assert b.kind == "vendor" and b.api_version == 16 and not b.extensions, b
        with aioveo.VeoProc(0) as p:
            assert p.helper_pid is None and p.pid > 0
            f = p.load_library({build_kernel("core_kernels")!r}).find_function("long add(long, long)")
            c = p.open_context()
            assert f(c, 40, 2).wait_result() == 42
            c.context_sync()
            assert p.proc_identifier() >= 0
            for call, name in ((lambda: p.alloc_hmem(8), "veo_alloc_hmem"),):
                try:
                    call()
                except aioveo.MissingFunctionError as e:
                    assert name in str(e) and e.func == name, e
                else:
                    raise AssertionError(name + " did not raise")
        print("OK")
    """)
    env = {**os.environ, "AIOVEO_LIBVEO": str(shim)}
    r = subprocess.run([sys.executable, "-c", prog], env=env, capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stdout + r.stderr
