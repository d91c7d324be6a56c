"""Command line: ``python -m aioveo {info,config,demo,bench,selftest}`` (also ``aioveo ...``)."""
from __future__ import annotations

import argparse
import json
import sys
import textwrap

from . import _paths

DESCRIPTION = """\
aioveo drives NEC SX-Aurora Vector Engines (VEs) from Python, with asyncio.
Without a VE it runs everything on its host emulator.

commands:
  info     which libveo is in use (emulator or NEC's), its version, the devices (--watch)
  config   compiler flags to build C programs against the emulator's libveo
  demo     a 1-second tour: build a kernel, call it, move a numpy array, with timings
  bench    measure this machine: call latency, throughput, bandwidth, CPU (--quick, --json)
  selftest check the libveo in use where AVEO's behaviour matters; a report to send back

examples:
  python -m aioveo info
  python -m aioveo demo
  cc prog.c $(python -m aioveo config --cflags --libs) -o prog
"""


# ---- info -------------------------------------------------------------------------
def _size(n: int) -> str:
    for unit, div in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:g} {unit}"
    return f"{n} B"


def _info_dict() -> dict:
    from . import __version__, backend, emulator_info
    from .devices import devices
    b = backend()
    info = {
        "aioveo_version": __version__,
        "backend": b.kind,
        "library": b.path,
        "selected_because": b.reason,
        "version": b.version,
        "api_version": b.api_version,
        "emulator": emulator_info(),   # None on NEC's libveo
        "devices": [d.as_dict() for d in devices()],
    }
    if info["emulator"] is not None:
        info.update(_test_bench())
    return info


def _test_bench() -> dict:
    """The emulator's timing profile and the faults a new proc gets (an
    emulator without the functions reports none; a wrong setting, its error)."""
    from . import emulator
    out: dict = {}
    for key, get in (("timing_profile", emulator.profile), ("faults", emulator.faults)):
        try:
            out[key] = get()
        except ValueError as e:
            out[key] = f"error: {e}"
        except NotImplementedError:
            out[key] = None
    return out


def _cell(value: object, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def device_table(devs: list) -> str:
    """The devices as a table, one row per VE (``python -m aioveo info``)."""
    head = ("node", "state", "arch", "cores", "memory used / total", "procs", "temp C",
            "power W", "firmware", "sysfs")
    rows = [head]
    for d in devs:
        if d.memory_total is not None and d.memory_used is not None:
            pct = 100 * d.memory_used / d.memory_total if d.memory_total else 0
            mem = f"{_size(d.memory_used)} / {_size(d.memory_total)} ({pct:.0f}%)"
        elif d.memory_total is not None:
            mem = f"? / {_size(d.memory_total)}"
        else:
            mem = "-"
        temp = f"{max(d.temperatures):.0f} max" if d.temperatures else "-"
        rows.append((str(d.node), d.state, _cell(d.architecture), _cell(d.cores), mem,
                     _cell(d.processes), temp, _cell(d.power_w, "{:.0f}"), _cell(d.firmware),
                     _cell(d.sysfs_index, "ve{}")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _watch(seconds: float, count: int | None) -> int:
    """Redraw the device table every `seconds` (in place on a terminal)."""
    import time

    from .devices import devices
    tty = sys.stdout.isatty()
    n = 0
    try:
        while count is None or n < count:
            if n:
                time.sleep(seconds)
            table = device_table(devices())
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J")   # home, clear: redraw in place
            elif n:
                sys.stdout.write("\n")
            sys.stdout.write(f"aioveo devices, every {seconds:g} s ({stamp}; Ctrl-C stops)\n"
                             f"{table}\n")
            sys.stdout.flush()
            n += 1
    except KeyboardInterrupt:
        pass
    return 0


def _info(args: argparse.Namespace) -> int:
    try:
        if args.watch is not None:
            if args.watch <= 0:
                print("aioveo info: --watch needs a positive number of seconds",
                      file=sys.stderr)
                return 2
            return _watch(args.watch, args.count)
        info = _info_dict()
    except ImportError as e:   # no usable libveo (e.g. AIOVEO_LIBVEO names a missing file)
        print(f"aioveo info: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"aioveo       {info['aioveo_version']}")
    print(f"backend      {info['backend']}")
    print(f"library      {info['library']}")
    print(f"             ({info['selected_because']}; set AIOVEO_LIBVEO to choose)")
    print(f"version      {info['version']}")
    print(f"API version  {info['api_version']}")
    emu = info["emulator"]
    if emu is not None:
        print(f"nodes        {emu['nodes']} (VEO_EMU_NODES)")
        print(f"memory/node  {_size(emu['node_memory'])} (VEO_EMU_NODE_MEMORY)")
        print(f"helper       {emu['helper']} (VEORUN_BIN)")
        prof = info.get("timing_profile")
        print(f"timing       {prof or 'host speed (no VEO_EMU_PROFILE)'}")
        faults = info.get("faults")
        if isinstance(faults, str):
            print(f"faults       {faults}")
        elif faults:
            for i, f in enumerate(faults):
                print(f"{'faults' if i == 0 else '':13}{f}")
            print("             (VEO_EMU_FAULTS: armed on every proc created)")
        else:
            print("faults       none (VEO_EMU_FAULTS)")
    from .devices import devices
    print()
    print(device_table(devices()))
    return 0


# ---- config -----------------------------------------------------------------------
def _config(args: argparse.Namespace) -> int:
    emu = _paths.EMU_DIR
    words = []
    if args.cflags:
        words.append(f"-I{_paths.EMU_INCLUDE}")
    if args.libs:
        words.append(f"-L{emu} -Wl,-rpath,{emu} -lveo")
    if args.include:
        words.append(str(_paths.EMU_INCLUDE))
    if args.helper:
        words.append(str(_paths.EMU_HELPER))
    if args.static_helper_libs:
        words.append(f"-rdynamic {_paths.EMU_STATIC_HELPER_LIB} -lffi -ldl -lpthread")
    if not words:
        print("nothing asked: give one of --cflags --libs --include --helper "
              "--static-helper-libs", file=sys.stderr)
        return 2
    print(" ".join(words))
    return 0


# ---- demo -------------------------------------------------------------------------
DEMO_KERNEL = """\
long add(long a, long b) { return a + b; }

/* x *= f in VE memory; returns the sum of the scaled values */
double scale(double *x, long n, double f)
{
    double s = 0;
    for (long i = 0; i < n; i++)
        s += (x[i] *= f);
    return s;
}
"""

DEMO_PYTHON = """\
async with aioveo.open_proc({node}) as proc:
    lib = await proc.load_library(so)
    add = lib.find_function("long add(long a, long b)")
    scale = lib.find_function("double scale(double *x, long n, double f)")
    async with proc.open_context() as ctx:
        await ctx.call(add, 40, 2)
        ve = await ctx.to_ve(x)
        await ctx.call(scale, ve.ptr, x.size, 2.0)
        y = await ctx.from_ve(ve)
"""


def _demo(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile
    import time

    import numpy as np

    from . import BuildError, VeBuild, VeoError, backend, open_proc

    b = backend()
    print(f"aioveo demo on the {b.kind} ({b.version})\n")
    print("The kernel, C for the VE:\n")
    print(textwrap.indent(DEMO_KERNEL, "    "))

    with tempfile.TemporaryDirectory(prefix="aioveo-demo-") as tmp:
        bld = VeBuild()
        bld.set_build_dir(tmp)
        bld.set_c_src("demo", DEMO_KERNEL)
        t0 = time.perf_counter()
        try:
            so = bld.build_so()
        except BuildError as e:
            print(f"aioveo demo: building the kernel failed:\n{e}", file=sys.stderr)
            return 1
        print(f"1. built it with VeBuild ({bld.backend} compiler) into {so} "
              f"in {(time.perf_counter() - t0) * 1e3:.0f} ms")
        print("\nThe Python side:\n")
        print(textwrap.indent(DEMO_PYTHON.format(node=args.node), "    "))

        async def run() -> None:
            t0 = time.perf_counter()
            async with open_proc(args.node) as proc:
                lib = await proc.load_library(so)
                add = lib.find_function("long add(long a, long b)")
                scale = lib.find_function("double scale(double *x, long n, double f)")
                async with proc.open_context() as ctx:
                    t1 = time.perf_counter()
                    print(f"2. opened a VE process on node {args.node}, loaded the library and "
                          f"opened a context in {(t1 - t0) * 1e3:.1f} ms")

                    r = await ctx.call(add, 40, 2)
                    assert r == 42
                    n = 1000
                    t0 = time.perf_counter()
                    for i in range(n):
                        await ctx.call(add, i, 1)
                    dt = (time.perf_counter() - t0) / n
                    print(f"3. await ctx.call(add, 40, 2) -> {r}; {n} awaited calls: "
                          f"{dt * 1e6:.1f} us per call")

                    x = np.arange(args.size, dtype=np.float64)
                    mb = x.nbytes / 1e6
                    t0 = time.perf_counter()
                    ve = await ctx.to_ve(x)
                    t1 = time.perf_counter()
                    total = await ctx.call(scale, ve.ptr, x.size, 2.0)
                    t2 = time.perf_counter()
                    y = await ctx.from_ve(ve)
                    t3 = time.perf_counter()
                    await ve.free()
                    ok = np.array_equal(y, 2.0 * x) and total == 2.0 * x.sum()
                    print(f"4. numpy array of {x.size} doubles ({mb:.1f} MB): to_ve "
                          f"{(t1 - t0) * 1e3:.2f} ms, scale on the VE {(t2 - t1) * 1e3:.2f} ms, "
                          f"from_ve {(t3 - t2) * 1e3:.2f} ms; result "
                          f"{'matches numpy' if ok else 'WRONG'} (sum {total:g})")
                    if not ok:
                        raise AssertionError("the VE's result differs from numpy's")
            print("5. closed the context and destroyed the VE process")

        t0 = time.perf_counter()
        try:
            asyncio.run(run())
        except VeoError as e:
            print(f"aioveo demo: {e}", file=sys.stderr)
            return 1
        print(f"\ndone in {time.perf_counter() - t0:.2f} s. Next: examples/ in the aioveo "
              "sources, or python -m aioveo info")
    return 0


# ---- bench ------------------------------------------------------------------------
def _bench(argv: list[str]) -> int:
    """Forward everything after ``bench`` to aioveo.bench.main (imported only now)."""
    from . import bench
    rc = bench.main(argv)
    return 0 if rc is None else int(rc)


# ---- selftest ---------------------------------------------------------------------
def _selftest(args: argparse.Namespace) -> int:
    from . import selftest
    return selftest.run(args.node)


# ---- main -------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aioveo", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser(
        "info", help="which libveo is in use, its version, the devices",
        description="Show which libveo aioveo loads (the emulator's or NEC's, chosen with "
                    "AIOVEO_LIBVEO or automatically), its version and VEO API version, "
                    "for the emulator its number of nodes, memory per node and helper "
                    "program, and a table of the VEs (or emulated nodes): state, "
                    "architecture, cores, memory in use, VE processes, temperature, power.")
    info.add_argument("--json", action="store_true", help="print it as JSON")
    info.add_argument("--watch", type=float, metavar="SECONDS",
                      help="redraw the device table every SECONDS (in place on a terminal)")
    info.add_argument("--count", type=int, metavar="N",
                      help="with --watch: stop after N tables (default: until Ctrl-C)")
    info.set_defaults(func=_info)

    cfg = sub.add_parser(
        "config", help="compiler flags to build C programs against the emulator's libveo",
        description="Print compiler flags for C programs using the emulator, e.g.\n"
                    "  cc prog.c $(python -m aioveo config --cflags --libs)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    cfg.add_argument("--cflags", action="store_true", help="-I flag for ve_offload.h")
    cfg.add_argument("--libs", action="store_true", help="linker flags for -lveo (with rpath)")
    cfg.add_argument("--include", action="store_true", help="the include directory")
    cfg.add_argument("--helper", action="store_true", help="path of the helper program")
    cfg.add_argument("--static-helper-libs", action="store_true",
                     help="what to link with your kernels to make a static helper "
                          "(see VEORUN_BIN)")
    cfg.set_defaults(func=_config)

    demo = sub.add_parser(
        "demo", help="build a kernel, call it, move a numpy array; print what it did",
        description="A self-contained tour of the asyncio API: writes a tiny C kernel, builds "
                    "it with VeBuild into a temporary directory, opens a VE process and a "
                    "context, makes awaited calls and a numpy round trip, and prints each step "
                    "with its timing. Needs a C compiler (cc) on the emulator.")
    demo.add_argument("--node", type=int, default=0, help="VE node to use (default 0)")
    demo.add_argument("--size", type=int, default=1_000_000,
                      help="doubles in the numpy array (default 1000000)")
    demo.set_defaults(func=_demo)

    st = sub.add_parser(
        "selftest", help="check the libveo in use where AVEO's behaviour matters; print a report",
        description="Checks, on the libveo in use (AVEO on a VH, else the emulator), each point "
                    "listed in docs/vendor-checklist.md: the main context, VE_OMP_NUM_THREADS, "
                    "sync calls queued behind the main context, faults, the stack-argument "
                    "limit, destroy and its grace, the VE process's pid, one waiter per "
                    "request, Ctrl-C, fresh memory, leaving `async with` by a timeout. Builds a "
                    "small kernel library (ncc on a VH, cc on the emulator); a few seconds.")
    st.add_argument("--node", type=int, default=0, help="VE node to use (default 0)")
    st.set_defaults(func=_selftest)

    # Parsed by aioveo.bench itself (see main); listed here for --help.
    sub.add_parser("bench", add_help=False,
                   help="measure call latency, throughput, bandwidth and CPU on this machine "
                        "(python -m aioveo bench --help)")
    sub.add_parser("dask-worker", add_help=False,
                   help="start one Dask worker per VE of this host against a scheduler, as "
                        "`dask ve worker` does (needs aioveo[dask]; "
                        "python -m aioveo dask-worker --help)")
    return parser


def _dask_worker(argv: list[str]) -> int:
    try:
        from .dask import main as dask_main
    except ImportError as e:
        print(f"aioveo dask-worker needs Dask distributed: pip install \"aioveo[dask]\" ({e})",
              file=sys.stderr)
        return 2
    return dask_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "bench":
        return _bench(argv[1:])
    if argv and argv[0] == "dask-worker":
        return _dask_worker(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
