"""Build and run a plain VEO C program against the emulator.

    python examples/c_program.py

It runs the two commands a C user types (see examples/c/hello_veo.c):
    cc -shared -fPIC -O2 vector_kernels.c -o libvector_kernels.so
    cc hello_veo.c $(python -m aioveo config --cflags --libs) -o hello_veo
"""
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parent / "c"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="aioveo-c-example-") as tmp:
        flags = subprocess.check_output(
            [sys.executable, "-m", "aioveo", "config", "--cflags", "--libs"], text=True, cwd=tmp)
        kernels = Path(tmp) / "libvector_kernels.so"
        exe = Path(tmp) / "hello_veo"
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", str(SRC / "vector_kernels.c"),
                        "-o", str(kernels)], check=True)
        subprocess.run(["cc", "-O2", str(SRC / "hello_veo.c"), *flags.split(), "-o", str(exe)],
                       check=True)
        return subprocess.run([str(exe), str(kernels)]).returncode


if __name__ == "__main__":
    sys.exit(main())
