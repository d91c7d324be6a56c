"""Where the bundled emulator's files are installed."""
from __future__ import annotations

import os
from pathlib import Path

EMU_DIR = Path(__file__).resolve().parent / "_emu"
EMU_LIBVEO = EMU_DIR / "libveo.so"
EMU_HELPER = EMU_DIR / "aioveo-veorun"
EMU_INCLUDE = EMU_DIR / "include"
EMU_STATIC_HELPER_LIB = EMU_DIR / "libveorun.a"


def helper_path() -> Path:
    """The helper program veo_proc_create() starts: $VEORUN_BIN or the bundled one."""
    return Path(os.environ.get("VEORUN_BIN") or EMU_HELPER)
