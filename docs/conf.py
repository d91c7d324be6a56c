"""Sphinx configuration of aioveo's documentation.

    pip install ".[docs]"
    sphinx-build -W -b html docs docs/_build/html

The API reference is generated from the *installed* package (its docstrings,
type hints and the native core's embedded signatures), so install aioveo
first; the checkout's aioveo/ has no compiled core and must not shadow it.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "docs")]

import aioveo  # noqa: E402  (the installed package)

if Path(aioveo.__file__).resolve().parent == ROOT / "aioveo":
    raise RuntimeError("the docs need the installed aioveo (pip install '.[docs]'), "
                       "not the source tree's aioveo/")

project = "aioveo"
author = "the aioveo authors"
copyright = "the aioveo authors"
release = version = aioveo.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- every internal cross-reference must resolve (sphinx-build -W) -------------------
nitpicky = True
# No network at build time, so no intersphinx: names from Python's standard
# library, NumPy and typing are not checked; every aioveo.* reference is.
_EXTERNAL = (
    r"(builtins\.)?(int|float|str|bytes|bool|object|list|dict|tuple|set|type|None"
    r"|BaseException|Exception|RuntimeError|ArithmeticError|NameError|AttributeError"
    r"|NotImplementedError|ValueError|TypeError|SupportsIndex|Ellipsis)"
    r"|(asyncio|_asyncio|os|typing|types|collections|contextlib|logging|weakref|numpy|np|"
    r"typing_extensions|collections\.abc|distributed)\..*"
    r"|Any|Callable|Iterable|Iterator|Sequence|Awaitable|Generator|Literal|Final|Self|T"
    r"|aioveo\.aio\.T"   # the TypeVar of aioveo.aio._Opener
)
nitpick_ignore_regex = [(r"py:.*", _EXTERNAL)]

# -- autodoc ----------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "show-inheritance": True}

# -- HTML -----------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"aioveo {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"**": ["sidebar-nav-bs"]}
html_static_path: list[str] = []


# -- aliases: the classes are documented where users import them from ---------------
# Type hints name where a class is defined (aioveo._core.VeoProc, aioveo.pool.Pool,
# aioveo.build.VeBuild); the reference documents it under its public name
# (aioveo.VeoProc).  Resolve such a reference to the public name when that is
# the same object; anything else stays unresolved, and -W fails the build.
_DEFINED_IN = ("aioveo._core.", "aioveo.aio.", "aioveo.build.", "aioveo._ctype.",
               "aioveo.pool.", "aioveo.memory.", "aioveo.devices.")


def _public_alias(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    for prefix in _DEFINED_IN:
        if target.startswith(prefix):
            name = target[len(prefix):]
            head = name.split(".")[0]
            if head in aioveo.__all__:
                domain = env.get_domain("py")
                node = node.deepcopy()
                node["reftarget"] = f"aioveo.{name}"
                return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                           f"aioveo.{name}", node, contnode)
    return None


# C types of the native core's parameters, as the Python types they accept.
_C_TYPES = {"int": "int", "long": "int", "unsigned": "int", "int64_t": "int",
            "uint64_t": "int", "size_t": "int", "uintptr_t": "int", "double": "float",
            "bint": "bool", "object": ""}


def _python_param(param: str) -> str:
    """``int nodeid=-1`` -> ``nodeid: int = -1``; ``VeoCtxt ctx`` -> ``ctx: VeoCtxt``."""
    m = re.fullmatch(r"\s*(?:(?:unsigned\s+)?(\w+)\s+)?(\*{0,2}\w+)\s*(?:=\s*(.+?))?\s*", param)
    if not m:
        return param.strip()
    ctype, name, default = m.groups()
    annotation = _C_TYPES.get(ctype, ctype) if ctype else ""
    if annotation:
        return f"{name}: {annotation}" + (f" = {default}" if default else "")
    return name + (f"={default}" if default else "")


def _core_signature(app, what, name, obj, options, signature, return_annotation):
    """The native core embeds Cython signatures in its docstrings (C parameter
    types, ``self``); show them as Python signatures."""
    parts = name.split(".")
    owner = getattr(aioveo, parts[1], None) if len(parts) > 1 and parts[0] == "aioveo" else None
    if not signature or getattr(owner, "__module__", None) != "aioveo._core":
        return None
    params = [p for p in signature.strip()[1:-1].split(",") if p.strip()]
    if params and params[0].strip() == "self":
        params = params[1:]
    return "(" + ", ".join(_python_param(p) for p in params) + ")", return_annotation


def setup(app):
    app.connect("missing-reference", _public_alias)
    app.connect("autodoc-process-signature", _core_signature)
