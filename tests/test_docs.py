"""The documentation cannot rot: its code runs, its reference is complete.

- Every ```python block of the guides (docs/**/*.md) and of README.md runs,
  in document order, each as its own program in a scratch directory that
  holds the docs' kernels (docs/kernels.c, built into ./libkernels.so as
  the Getting started page says).  A block before which the page says
  ``<!-- doctest: file NAME -->`` is written to NAME there instead (a C
  source, say), and a shell block marked ``<!-- doctest: run -->`` runs with
  bash.  Other shell blocks (installing, CI) are not run here.
- Every public name of aioveo (``aioveo.__all__``, and the ``__all__`` of
  aioveo.aio, aioveo.trace, aioveo.settings, aioveo.emulator and aioveo.dask) has an entry in
  the API reference (docs/api/*.md), and has a docstring.
- The settings and emulator knobs are all in the docs; the README is the
  front door: short, with the two set-up commands and working links.
- With Sphinx installed (pip install ".[docs]"), the site builds with
  warnings as errors and every internal cross-reference resolved, and its
  inventory holds every public name (.ci/run installs the docs extra).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
TIMEOUT = 60

MARK = re.compile(r"<!--\s*doctest:\s*(\w[\w-]*)\s*(\S*)\s*-->")
FENCE = re.compile(r"^(`{3,}|~{3,})\s*(\{[\w:-]+\})?\s*([\w+-]*)")


@dataclass
class Block:
    page: Path
    line: int          # 1-based line of the opening fence
    lang: str          # "python", "bash", "c", ... ("" when none)
    code: str
    mark: str = ""     # "run", "file" or ""
    arg: str = ""      # the file name of a "file" block


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page (and ``{code-block}`` fences)."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    mark = ("", "")
    while i < len(lines):
        m = MARK.search(lines[i])
        if m:
            mark = (m.group(1), m.group(2))
            i += 1
            continue
        f = FENCE.match(lines[i])
        if not f:
            if lines[i].strip():
                mark = ("", "")
            i += 1
            continue
        fence, directive, lang = f.groups()
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        if directive in (None, "{code-block}", "{code}"):
            while directive and body and body[0].startswith(":"):   # directive options
                body.pop(0)
            blocks.append(Block(path, start + 1, lang, "\n".join(body) + "\n", *mark))
        mark = ("", "")
    return blocks


@pytest.fixture(scope="session")
def doc_kernels(tmp_path_factory) -> Path:
    """docs/kernels.c built as the docs say: cc -shared -fPIC -O2 kernels.c -o libkernels.so"""
    d = tmp_path_factory.mktemp("doc-kernels")
    shutil.copy(DOCS / "kernels.c", d / "kernels.c")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "kernels.c", "-o", "libkernels.so"],
                   cwd=d, check=True)
    return d


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, AIOVEO_CACHE=str(cache), PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    return env


def run_page(path: Path, workdir: Path, kernels: Path) -> list[Block]:
    """Run the page's blocks in order in `workdir`; returns the blocks run."""
    for name in ("kernels.c", "libkernels.so"):
        shutil.copy(kernels / name, workdir / name)
    env = _env(workdir / ".cache")
    ran = []
    for b in code_blocks(path):
        where = f"{path.relative_to(ROOT)}:{b.line}"
        if b.mark == "file":
            assert b.arg, f"{where}: doctest: file needs a name"
            (workdir / b.arg).write_text(b.code)
            continue
        if b.lang in ("python", "py"):
            cmd = [sys.executable, "-c", b.code]
        elif b.lang in ("bash", "sh", "console") and b.mark == "run":
            cmd = ["bash", "-euo", "pipefail", "-c", b.code]
        else:
            assert b.mark != "run", f"{where}: only python and shell blocks can run"
            continue
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert proc.returncode == 0, (f"{where}: the block failed ({proc.returncode}):\n"
                                      f"{b.code}\n--- stdout\n{proc.stdout}\n--- stderr\n"
                                      f"{proc.stderr}")
        assert "Traceback" not in proc.stderr, f"{where}:\n{proc.stderr}"
        ran.append(b)
    return ran


GUIDES = [p for p in PAGES if any(b.lang in ("python", "py") or b.mark
                                  for b in code_blocks(p))]


@pytest.mark.parametrize("page", GUIDES + [README],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(page, doc_kernels, tmp_path):
    assert run_page(page, tmp_path, doc_kernels)


def test_every_python_block_is_found():
    """The block parser sees every fence: no ```python hides in a form it skips."""
    for page in PAGES + [README]:
        text = page.read_text()
        fences = len(re.findall(r"^(?:`{3,}|~{3,})\s*(?:\{code-block\}\s*)?python\s*$", text,
                                re.M))
        found = sum(b.lang == "python" for b in code_blocks(page))
        assert found == fences, page


# ---- the API reference -------------------------------------------------------------
# Top-level directives only: an indented one documents a member of the object above.
DIRECTIVE = re.compile(r"^\.\. (?:py:)?(auto\w+|function|class|exception|data|attribute|"
                       r"method|module|currentmodule)::\s*([\w.]+)", re.M)


def documented_names() -> set[str]:
    """Fully qualified names that docs/api/*.md document (autodoc or py: directives,
    not indented; the pages' reST is in ``{eval-rst}`` blocks starting at column 0)."""
    names: set[str] = set()
    for page in sorted((DOCS / "api").glob("*.md")):
        module = "aioveo"
        for kind, target in DIRECTIVE.findall(page.read_text()):
            if kind in ("currentmodule", "module", "automodule"):
                module = target
                if kind != "currentmodule":
                    names.add(target)
                continue
            names.add(target if target.startswith("aioveo") else f"{module}.{target}")
    return names


def public_names() -> dict[str, object]:
    """Every public name to document -> its object."""
    import aioveo
    import aioveo.aio
    import aioveo.emulator
    import aioveo.settings
    import aioveo.trace

    modules = [aioveo, aioveo.aio, aioveo.trace, aioveo.settings, aioveo.emulator]
    try:
        import aioveo.dask          # the dask extra (in the test extras)
    except ImportError:
        pass
    else:
        modules.append(aioveo.dask)
    out: dict[str, object] = {}
    for mod in modules:
        for name in mod.__all__:
            out[f"{mod.__name__}.{name}"] = getattr(mod, name)
    return out


def _is_documented(qualname: str, obj: object, names: set[str]) -> bool:
    """Documented under this name, or (aioveo.aio re-exports) under aioveo.NAME."""
    if qualname in names:
        return True
    short = qualname.rsplit(".", 1)[1]
    import aioveo
    return getattr(aioveo, short, None) is obj and f"aioveo.{short}" in names


def test_every_public_name_is_in_the_api_reference():
    names = documented_names()
    missing = [q for q, obj in public_names().items() if not _is_documented(q, obj, names)]
    assert not missing, f"public names missing from docs/api/*.md: {missing}"


def test_every_public_class_and_function_has_a_docstring():
    import inspect
    bare = [q for q, obj in public_names().items()
            if (inspect.isclass(obj) or inspect.isroutine(obj)) and not (obj.__doc__ or "").strip()]
    assert not bare, f"public names without a docstring: {bare}"


def test_the_api_reference_documents_nothing_that_does_not_exist():
    import importlib
    for name in documented_names():
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj: object = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                assert hasattr(obj, attr), f"docs/api documents {name}, which does not exist"
                obj = getattr(obj, attr)
            break


# ---- facts the docs state ------------------------------------------------------------
def _all_docs_text() -> str:
    return "\n".join(p.read_text() for p in PAGES)


def test_every_setting_is_documented():
    import aioveo.settings
    text = (DOCS / "asyncio.md").read_text()
    for var, (field, _) in aioveo.settings.ENV.items():
        assert f"`{var}`" in text and f"`{field}`" in text, var


def test_every_emulator_knob_is_documented():
    """Each environment variable the emulator's C code reads is in its page."""
    text = (DOCS / "emulator.md").read_text()
    c = "\n".join(p.read_text() for p in (ROOT / "_ext" / "emu").glob("*.c"))
    knobs = set(re.findall(r'(?:getenv|env_long)\("([A-Z_]+)"', c))
    assert {"VEO_EMU_NODES", "VEORUN_BIN"} <= knobs
    missing = [k for k in knobs if f"`{k}`" not in text]
    assert not missing, missing


def test_cli_commands_are_documented():
    from aioveo.__main__ import _parser
    text = (DOCS / "cli.md").read_text()
    sub = next(a for a in _parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert f"python -m aioveo {name}" in text, name
        for action in parser._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help":
                    assert opt in text, f"{name} {opt}"


# ---- the README: the front door --------------------------------------------------------
def test_readme_is_the_front_door():
    text = README.read_text()
    assert len(text.splitlines()) < 200
    assert "pip install . && python -m aioveo demo" in text
    assert 'pip install ".[test]" && pytest -q' in text


def test_links_resolve():
    """Relative links of the README and the docs name files that exist."""
    for page in [README, *PAGES]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = target.split("#")[0]
            assert (page.parent / path).exists(), f"{page.relative_to(ROOT)}: {target}"


# ---- the site ------------------------------------------------------------------------
def test_site_builds_and_lists_every_public_name(tmp_path):
    """sphinx-build -W -n (as .ci/run does): no warning, every reference resolved."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    pytest.importorskip("pydata_sphinx_theme")
    out = tmp_path / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-n", "-q", "-b", "html",
                           "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from sphinx.util.inventory import InventoryFile
    with open(out / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda base, uri: uri)
    listed = {name for kind, entries in inv.items() if kind.startswith("py:") for name in entries}
    missing = [q for q, obj in public_names().items() if not _is_documented(q, obj, listed)]
    assert not missing, f"public names missing from the built reference: {missing}"
