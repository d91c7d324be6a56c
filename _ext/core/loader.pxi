# Finding and opening libveo (see aioveo._paths.select_libveo for the choice).

cdef bint api_loaded = False
cdef object _backend = None
_load_lock = threading.Lock()


cdef void *_sym(void *h, const char *name, bint required) except? NULL:
    cdef void *f = dlsym(h, name)
    if f == NULL and required:
        raise ImportError(f"libveo lacks the required function {name.decode()}")
    return f


class Backend:
    """Which libveo aioveo drives: ``kind`` is "emulator" or "vendor"."""

    __slots__ = ("kind", "path", "version", "api_version", "reason")

    def __init__(self, kind, path, version, api_version, reason):
        self.kind, self.path, self.version = kind, path, version
        self.api_version, self.reason = api_version, reason

    @property
    def is_emulator(self):
        return self.kind == "emulator"

    def __repr__(self):
        return (f"Backend(kind={self.kind!r}, path={self.path!r}, version={self.version!r}, "
                f"api_version={self.api_version})")


cdef int _ensure_api() except -1:
    global api_loaded, _backend
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
        _fill_api(h)
        version = api.version_string().decode() if api.version_string != NULL else "unknown"
        api_ver = api.api_version() if api.api_version != NULL else 0
        kind = "emulator" if api.emu_helper_path != NULL else "vendor"
        _backend = Backend(kind, os.fspath(path), version, api_ver, reason)
        api_loaded = True
        log.debug("aioveo: loaded %r", _backend)
    return 0


def backend():
    """The loaded libveo (loading it on first use): a ``Backend``."""
    _ensure_api()
    return _backend


def emulator_info():
    """The emulator's nodes, memory per node and helper path (None on vendor libveo)."""
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
