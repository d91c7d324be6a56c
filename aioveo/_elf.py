"""Function names in a shared object's dynamic symbol table, for "did you
mean" hints when a symbol is not found.  Reads the ELF file directly (64-bit
little-endian: the host's and the VE's), so it works for kernels built for
either; any trouble reading it just means no hint."""
from __future__ import annotations

import difflib
import struct

_STT_FUNC, _STT_OBJECT = 2, 1
_SHT_DYNSYM = 11


def symbol_names(path: str) -> list[str]:
    """Defined function and object names of the ELF shared object at `path`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return []
    if data[:6] != b"\x7fELF\x02\x01":   # ELF64, little-endian
        return []
    try:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        names = []
        for i in range(shnum):
            sh = shoff + i * shentsize
            _, sh_type, _, _, off, size, link, _, _, entsize = struct.unpack_from(
                "<IIQQQQIIQQ", data, sh)
            if sh_type != _SHT_DYNSYM or not entsize:
                continue
            str_off, = struct.unpack_from("<Q", data, shoff + link * shentsize + 0x18)
            for s in range(off, off + size, entsize):
                name_off, info, _, shndx = struct.unpack_from("<IBBH", data, s)
                if shndx == 0 or (info & 0xF) not in (_STT_FUNC, _STT_OBJECT):
                    continue   # undefined, or not a function/variable
                end = data.index(b"\0", str_off + name_off)
                names.append(data[str_off + name_off:end].decode(errors="replace"))
        return names
    except (struct.error, ValueError):
        return []


def close_matches(name: str, path: str) -> list[str]:
    """Up to three names in the library at `path` that look like `name`."""
    return difflib.get_close_matches(name, symbol_names(path), n=3, cutoff=0.6)
