"""Build and run the emulator benchmark (benchmarks/bench_emulator.c).

    python benchmarks/run_emulator.py [--quick]

Compiles the kernels and the C benchmark against the installed emulator
(flags from ``python -m aioveo config``) in a temporary directory, then runs it.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="aioveo-bench-") as tmp:
        flags = subprocess.check_output(
            [sys.executable, "-m", "aioveo", "config", "--cflags", "--libs"],
            text=True, cwd=tmp).split()
        lib = Path(tmp) / "libbench_kernels.so"
        exe = Path(tmp) / "bench_emulator"
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", str(HERE / "kernels.c"), "-o", str(lib)],
                       check=True)
        subprocess.run(["cc", "-O2", str(HERE / "bench_emulator.c"), *flags, "-o", str(exe)],
                       check=True)
        return subprocess.run([str(exe), str(lib), *sys.argv[1:]]).returncode


if __name__ == "__main__":
    sys.exit(main())
