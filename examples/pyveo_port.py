"""A PyVEO program, ported by changing one line: ``import veo``.

    python examples/pyveo_port.py

Everything below is PyVEO's synchronous API (VeBuild, VeoProc, load_library,
args_type/ret_type, OnStack, wait_result, alloc_mem/read_mem/write_mem);
with PyVEO installed on a VE machine, ``import veo`` runs it unchanged.
"""
import hashlib
import os

import numpy as np

import aioveo as veo     # the only change; was: import veo

HERE = os.path.dirname(os.path.abspath(__file__))

# Build the kernels with PyVEO's VeBuild, once per source version.
src = open(os.path.join(HERE, "kernels", "pyveo_port.c")).read()
label = "pyveo_port_" + hashlib.sha256(src.encode()).hexdigest()[:12]
build_dir = os.path.join(os.environ.get("AIOVEO_CACHE") or os.path.expanduser("~/.cache/aioveo"),
                         "examples")
ve_so_name = os.path.join(build_dir, label + ".so")
if not os.path.exists(ve_so_name):
    os.makedirs(build_dir, exist_ok=True)         # PyVEO's set_build_dir makes one level only
    bld = veo.VeBuild()
    bld.set_build_dir(build_dir)
    bld.set_c_src(label, src)
    ve_so_name = bld.build_so()
    bld.clean()                                   # keep the .so, drop .c and .o

nodeid = int(os.environ.get("VE_NODE_NUMBER", 0))
proc = veo.VeoProc(nodeid)
ctxt = proc.open_context()
lib = proc.load_library(os.path.abspath(ve_so_name))

n = 128 * 1024
a = np.random.rand(n)

# 1. Pass a host array by value on the VE stack (OnStack), get a double back.
lib.average.args_type("double *", "int")
lib.average.ret_type("double")
req = lib.average(ctxt, veo.OnStack(a), n)
avg = req.wait_result()
print("VE average = %r, numpy average = %r" % (avg, float(np.average(a))))
assert np.isclose(avg, np.average(a))

# 2. Work in VE memory: allocate, write, call with the VE address, read back.
buf = proc.alloc_mem(a.nbytes)
proc.write_mem(buf, a, a.nbytes)
lib.scale.args_type("double *", "int", "double")
lib.scale.ret_type("int")
req = lib.scale(ctxt, buf, n, 3.0)
print("scaled %d elements in VE memory at %r" % (req.wait_result(), buf))
b = np.empty_like(a)
proc.read_mem(b, buf, b.nbytes)
assert np.array_equal(b, 3.0 * a)

# 3. Asynchronous transfers on the context, in order with its calls.
req = ctxt.async_write_mem(buf, a, a.nbytes)
req.wait_result()
req = lib.scale(ctxt, buf, n, 0.5)
req.wait_result()
req = ctxt.async_read_mem(b, buf, b.nbytes)
req.wait_result()
assert np.array_equal(b, 0.5 * a)
print("async write, scale, async read: OK")
proc.free_mem(buf)

# 4. An INOUT stack argument: copied to the VE and back into the array.
c = np.arange(10, dtype=np.float64)
lib.cumsum.args_type("double *", "int")
lib.cumsum.ret_type("void")
lib.cumsum(ctxt, veo.OnStack(c, inout=veo.INTENT_INOUT), c.size).wait_result()
print("cumsum on the VE: %r" % c.tolist())
assert c.tolist() == np.cumsum(np.arange(10.0)).tolist()

proc.close_context(ctxt)
del proc
print("finished")
