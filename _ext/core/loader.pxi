# Finding and opening libveo (see aioveo._paths.select_libveo for the choice).

cdef bint api_loaded = False
cdef bint _is_emu = False      # the loaded libveo is aioveo's emulator
cdef object _backend = None
_load_lock = threading.Lock()
cdef list _missing = []        # required functions the libveo lacks (_fill_api)

#: The version string of aioveo's emulator starts with this (with or without
#: its veo_emu_* extensions).
EMULATOR_VERSION_PREFIX = "aioveo-emulator"


cdef void *_sym(void *h, const char *name, bint required) except? NULL:
    cdef void *f = dlsym(h, name)
    if f == NULL and required:
        _missing.append(name.decode())
    return f


class Backend:
    """Which libveo aioveo drives: ``kind`` is "emulator" or "vendor";
    ``extensions``: whether it has the emulator's veo_emu_* functions."""

    __slots__ = ("kind", "path", "version", "api_version", "reason", "extensions")

    def __init__(self, kind, path, version, api_version, reason, extensions=False):
        self.kind, self.path, self.version = kind, path, version
        self.api_version, self.reason = api_version, reason
        self.extensions = extensions

    @property
    def is_emulator(self):
        return self.kind == "emulator"

    def __repr__(self):
        return (f"Backend(kind={self.kind!r}, path={self.path!r}, version={self.version!r}, "
                f"api_version={self.api_version}, extensions={self.extensions})")


cdef int _ensure_api() except -1:
    global api_loaded, _backend, _is_emu
    if api_loaded:
        return 0
    with _load_lock:
        if api_loaded:
            return 0
        from ._paths import select_libveo
        path, reason = select_libveo()
        h = dlopen(os.fsencode(path), RTLD_NOW | RTLD_GLOBAL)
        if h == NULL:
            raise ImportError(f"cannot load libveo {path} ({reason}): {dlerror().decode()}")
        _missing.clear()
        _fill_api(h)
        version = (api.version_string().decode(errors="replace")
                   if api.version_string != NULL else "unknown")
        api_ver = api.api_version() if api.api_version != NULL else 0
        if _missing:
            raise ImportError(
                f"the libveo at {os.fspath(path)} ({reason}; version {version}, VEO API "
                f"{api_ver or 'unknown'}) lacks functions aioveo needs: {', '.join(_missing)}. "
                f"It is older than AVEO (the pre-AVEO libveo lacks veo_context_sync and the "
                f"hmem functions); install AVEO, or point AIOVEO_LIBVEO at its libveo.so.1")
        # The kind follows the library, not its extensions: the emulator
        # built without them is still the emulator (float results need them).
        _is_emu = version.startswith(EMULATOR_VERSION_PREFIX)
        kind = "emulator" if _is_emu else "vendor"
        _backend = Backend(kind, os.fspath(path), version, api_ver, reason,
                           api.emu_helper_path != NULL)
        api_loaded = True
        log.debug("aioveo: loaded %r", _backend)
    return 0


def backend():
    """The loaded libveo (loading it on first use): a ``Backend``."""
    _ensure_api()
    return _backend


def emulator_info():
    """The emulator's nodes, memory per node and helper path (None on vendor
    libveo and on the emulator built without its extensions)."""
    _ensure_api()
    if api.emu_helper_path == NULL:
        return None
    return {"nodes": api.emu_num_nodes(), "node_memory": api.emu_node_memory(),
            "helper": api.emu_helper_path().decode()}


def emulator_node_usage(int node):
    """(procs alive, VE memory bytes they hold) on an emulated node; None on
    vendor libveo or an emulator without veo_emu_node_usage."""
    _ensure_api()
    if api.emu_node_usage == NULL:
        return None
    cdef uint64_t used = 0
    cdef int procs = api.emu_node_usage(node, &used)
    if procs < 0:
        raise ValueError(_emu_message() or f"no emulated node {node}")
    return procs, used
