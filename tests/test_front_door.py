"""The front door: from the checkout root, ``python -m aioveo ...`` and
``import aioveo`` use the installed package, although the current directory
(first on sys.path) holds the source tree's ``aioveo/`` without its compiled
modules (see ``_load_installed_package`` in aioveo/__init__.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import aioveo

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = Path(aioveo.__file__).resolve()

# Prints where the package and its submodules come from.
WHERE = ("import aioveo, aioveo.build, sys\n"
         "print(aioveo.__file__)\n"
         "print(aioveo._core.__file__)\n"
         "print(aioveo.build.__file__)\n"
         "print(sys.modules['aioveo'] is aioveo, aioveo.VeBuild is aioveo.build.VeBuild)\n")


def python(*args: str, cwd: Path, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def env_without_pythonpath() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def test_the_tests_run_on_the_installed_package():
    assert not INSTALLED.is_relative_to(ROOT)
    assert (ROOT / "aioveo" / "__init__.py").is_file()     # the shadowing candidate exists


def test_import_from_the_checkout_root():
    r = python("-c", "import aioveo, sys; print(aioveo.__file__)", cwd=ROOT,
               env=env_without_pythonpath())
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).resolve() == INSTALLED


def test_submodules_come_from_the_installed_package():
    r = python("-c", WHERE, cwd=ROOT, env=env_without_pythonpath())
    assert r.returncode == 0, r.stderr
    package, core, build, same = r.stdout.splitlines()
    assert Path(package).resolve() == INSTALLED
    assert Path(core).resolve().parent == INSTALLED.parent
    assert Path(build).resolve() == INSTALLED.parent / "build.py"
    assert same == "True True"


def test_source_tree_on_pythonpath(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = python("-c", WHERE, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.splitlines()[0]).resolve() == INSTALLED


def test_python_m_aioveo_demo_from_the_checkout_root():
    r = python("-m", "aioveo", "demo", "--size", "1000", cwd=ROOT, env=env_without_pythonpath())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "await ctx.call(add, 40, 2) -> 42" in r.stdout
    assert "result matches numpy" in r.stdout


def test_python_m_aioveo_info_from_the_checkout_root():
    r = python("-m", "aioveo", "info", cwd=ROOT, env=env_without_pythonpath())
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"backend      {aioveo.backend().kind}" in r.stdout


def test_without_an_installed_package_the_error_is_the_plain_one(tmp_path):
    """No built aioveo anywhere (site-packages left out with -S), even with two
    source trees on sys.path: the usual ModuleNotFoundError, no loop between them."""
    other = tmp_path / "other"
    shutil.copytree(ROOT / "aioveo", other / "aioveo",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(other)!r}]; import aioveo"
    r = python("-S", "-c", code, cwd=tmp_path, env=env_without_pythonpath())
    assert r.returncode == 1
    assert "ModuleNotFoundError: No module named 'aioveo._core'" in r.stderr, r.stderr
    assert "RecursionError" not in r.stderr
