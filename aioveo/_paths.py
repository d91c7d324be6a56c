"""Where the bundled emulator's files are installed."""
from __future__ import annotations

import os
from pathlib import Path

EMU_DIR = Path(__file__).resolve().parent / "_emu"
EMU_LIBVEO = EMU_DIR / "libveo.so"
# The emulator without its veo_emu_* extensions (as the vendor libveo lacks
# them): AIOVEO_LIBVEO=emulator-noext.
EMU_LIBVEO_NOEXT = EMU_DIR / "libveo-noext.so"
EMU_HELPER = EMU_DIR / "aioveo-veorun"
EMU_INCLUDE = EMU_DIR / "include"
EMU_STATIC_HELPER_LIB = EMU_DIR / "libveorun.a"

VENDOR_LIBVEO = Path("/opt/nec/ve/veos/lib64/libveo.so.1")

def ve_present() -> bool:
    """True when this machine has a Vector Engine (a VE device node)."""
    return any(Path("/dev").glob("veslot*")) or any(Path("/dev").glob("ve[0-9]*"))

def select_libveo() -> tuple[Path, str]:
    """The libveo to load and why: $AIOVEO_LIBVEO (a path, "emulator", or
    "emulator-noext": the emulator without its extensions), else the vendor
    library when it is installed and a VE is present, else the bundled
    emulator."""
    from .settings import current

    explicit = current().libveo
    if explicit == "emulator-noext":
        return EMU_LIBVEO_NOEXT, "AIOVEO_LIBVEO=emulator-noext"
    if explicit and explicit != "emulator":
        return Path(explicit), "AIOVEO_LIBVEO"
    if explicit != "emulator" and VENDOR_LIBVEO.exists() and ve_present():
        return VENDOR_LIBVEO, "vendor libveo and a VE found"
    return EMU_LIBVEO, "bundled emulator" if explicit != "emulator" else "AIOVEO_LIBVEO=emulator"
