"""The command line, as a user runs it: ``python -m aioveo ...`` (and ``aioveo``).

Subprocesses run with cwd in a temporary directory (test_demo checks that the
demo leaves nothing there); tests/test_front_door.py runs them from the
checkout root.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import aioveo
from aioveo import __main__ as cli


def aioveo_cmd(*args: str, cwd: Path, env: dict | None = None, check: bool = True,
               timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "aioveo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_help_lists_every_command(tmp_path):
    out = aioveo_cmd("--help", cwd=tmp_path).stdout
    for command in ("info", "config", "demo", "bench"):
        assert f"\n  {command} " in out
    assert "emulator" in out and "python -m aioveo demo" in out


def test_no_command_prints_help_and_fails(tmp_path):
    proc = aioveo_cmd(cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "commands:" in proc.stdout


@pytest.mark.parametrize("command", ["info", "config", "demo"])
def test_subcommand_help(tmp_path, command):
    out = aioveo_cmd(command, "--help", cwd=tmp_path).stdout
    assert out.startswith(f"usage: python -m aioveo {command}")


def test_unknown_command_is_an_error(tmp_path):
    proc = aioveo_cmd("frobnicate", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_info(tmp_path):
    out = aioveo_cmd("info", cwd=tmp_path).stdout
    b = aioveo.backend()
    assert f"backend      {b.kind}" in out
    assert f"library      {b.path}" in out
    assert f"version      {b.version}" in out
    assert f"API version  {b.api_version}" in out
    assert f"aioveo       {aioveo.__version__}" in out
    if b.is_emulator:
        emu = aioveo.emulator_info()
        assert f"nodes        {emu['nodes']} " in out
        assert "memory/node  " in out
        assert f"helper       {emu['helper']} " in out


def test_info_json(tmp_path):
    info = json.loads(aioveo_cmd("info", "--json", cwd=tmp_path).stdout)
    b = aioveo.backend()
    assert info["backend"] == b.kind
    assert info["library"] == b.path
    assert info["version"] == b.version
    assert info["api_version"] == b.api_version == 16
    assert info["aioveo_version"] == aioveo.__version__
    assert info["emulator"] == aioveo.emulator_info()
    if b.is_emulator:
        assert info["emulator"]["nodes"] >= 1 and info["emulator"]["node_memory"] > 0
        assert os.access(info["emulator"]["helper"], os.X_OK)


def test_info_follows_the_emulator_knobs(tmp_path):
    env = dict(os.environ, AIOVEO_LIBVEO="emulator", VEO_EMU_NODES="3",
               VEO_EMU_NODE_MEMORY="2G")
    info = json.loads(aioveo_cmd("info", "--json", cwd=tmp_path, env=env).stdout)
    assert info["backend"] == "emulator"
    assert info["selected_because"] == "AIOVEO_LIBVEO=emulator"
    assert info["emulator"]["nodes"] == 3
    assert info["emulator"]["node_memory"] == 2 * 2**30
    out = aioveo_cmd("info", cwd=tmp_path, env=env).stdout
    assert "memory/node  2 GiB" in out


def test_info_without_a_usable_libveo(tmp_path):
    env = dict(os.environ, AIOVEO_LIBVEO=str(tmp_path / "no-such-libveo.so"))
    proc = aioveo_cmd("info", cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 1
    assert "no-such-libveo.so" in proc.stderr and "Traceback" not in proc.stderr


def test_console_script(tmp_path):
    script = Path(sys.executable).with_name("aioveo")
    if not script.exists():
        pytest.skip("the aioveo console script is not installed next to this python")
    proc = subprocess.run([str(script), "info", "--json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["api_version"] == aioveo.backend().api_version


def test_config(tmp_path):
    words = aioveo_cmd("config", "--cflags", "--libs", cwd=tmp_path).stdout.split()
    include = Path(aioveo_cmd("config", "--include", cwd=tmp_path).stdout.strip())
    assert f"-I{include}" in words and "-lveo" in words
    assert (include / "ve_offload.h").exists()
    helper = aioveo_cmd("config", "--helper", cwd=tmp_path).stdout.strip()
    assert os.access(helper, os.X_OK)
    static = aioveo_cmd("config", "--static-helper-libs", cwd=tmp_path).stdout.split()
    assert any(w.endswith("libveorun.a") for w in static)


def test_config_needs_a_flag(tmp_path):
    proc = aioveo_cmd("config", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "--cflags" in proc.stderr


def test_demo(tmp_path):
    out = aioveo_cmd("demo", "--size", "10000", cwd=tmp_path).stdout
    assert out.startswith(f"aioveo demo on the {aioveo.backend().kind}")
    assert "1. built it with VeBuild" in out
    assert "2. opened a VE process on node 0" in out
    assert "await ctx.call(add, 40, 2) -> 42" in out and "us per call" in out
    assert "numpy array of 10000 doubles" in out and "result matches numpy" in out
    assert "5. closed the context and destroyed the VE process" in out
    assert list(tmp_path.iterdir()) == []          # built in its own temporary directory


def test_bench_forwards_its_arguments(monkeypatch):
    seen = []
    fake = types.ModuleType("aioveo.bench")
    fake.main = lambda argv: seen.append(argv) or 7
    monkeypatch.setitem(sys.modules, "aioveo.bench", fake)
    monkeypatch.setattr(aioveo, "bench", fake, raising=False)
    assert cli.main(["bench", "--quick", "--help", "--only", "x"]) == 7
    assert seen == [["--quick", "--help", "--only", "x"]]
    fake.main = lambda argv: None
    assert cli.main(["bench"]) == 0


def test_bench_help_from_the_command_line(tmp_path):
    out = aioveo_cmd("bench", "--help", cwd=tmp_path).stdout
    assert out.startswith("usage: python -m aioveo bench")
    assert "--quick" in out and "--json" in out


def test_demo_on_a_missing_node_is_a_clear_error(tmp_path):
    env = dict(os.environ, VEO_EMU_NODES="2")
    proc = aioveo_cmd("demo", "--node", "5", "--size", "10", cwd=tmp_path, env=env, check=False)
    if not aioveo.backend().is_emulator:
        pytest.skip("node numbers are the machine's")
    assert proc.returncode == 1
    assert "aioveo demo: cannot create a VE process on node 5" in proc.stderr
    assert "Traceback" not in proc.stderr
