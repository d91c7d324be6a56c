"""Command line: ``python -m aioveo {info,config,...}``."""
from __future__ import annotations

import argparse
import sys

from . import _paths


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aioveo",
        description="aioveo: asyncio-native VEO for NEC SX-Aurora, with a host emulator.")
    sub = parser.add_subparsers(dest="command", required=True)

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

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
