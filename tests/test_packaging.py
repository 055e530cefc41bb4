"""Issue 14, point 1: ``pip install .`` gives a working, unambiguous installation.

The wheel holds the library only (``viper_rs``, with the repository's ``tools/`` and
``prompts/`` folders installed as ``viper_rs.tools`` and ``viper_rs.prompts``); nothing
top-level named ``tools`` or ``eval``. The wheel is installed (not editable) into a fresh
virtual environment and run from a temporary directory, away from the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
MAPPED = {"viper_rs.tools": "tools", "viper_rs.prompts": "prompts"}


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_package_list_names_every_package() -> None:
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "viper_rs").rglob("__init__.py")
    }
    assert listed == found | set(MAPPED)
    assert pyproject()["tool"]["setuptools"]["package-dir"] == MAPPED
    for folder in MAPPED.values():
        assert (REPO / folder / "__init__.py").is_file()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy of what the wheel is made of, so no build/ folder lands in the tree.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for folder in ("viper_rs", "tools", "prompts"):
        shutil.copytree(REPO / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("viper_rs-*.whl")
    return path


def test_the_wheel_holds_the_library_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"viper_rs"}
    for needed in ("viper_rs/tools/core.py", "viper_rs/tools/registry.py",
                   "viper_rs/prompts/program.md", "viper_rs/prompts/examples.md",
                   "viper_rs/vision/calibration.json", "viper_rs/sandbox/worker.py"):
        assert needed in names, needed


def test_the_installed_wheel_runs_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    # The dependencies come from this test's environment (read after the wheel's own
    # site-packages, so the installed viper_rs wins); the wheel itself is installed.
    deps = sysconfig.get_paths()["purelib"]
    (site / "zz_deps.pth").write_text(deps + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)] if _pip_has_python_flag() else
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["VIPER_RS_CACHE_DIR"] = str(tmp_path / "cache")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), "-m", "viper_rs", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)

    where = subprocess.run([str(python), "-c", "import viper_rs, viper_rs.tools; "
                            "print(viper_rs.__file__); print(viper_rs.tools.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    for line in where.stdout.split():
        assert Path(line).is_relative_to(site), line  # not the checkout
    prompt = run("prompt", "How many ponds are there?")
    assert prompt.returncode == 0, prompt.stderr[-2000:]
    assert "How many ponds are there?" in prompt.stdout and "def find" not in prompt.stdout
    assert "find(name: str)" in prompt.stdout  # the API section from the installed registry
    demo = run("demo", "--n", "1", "--out", str(work / "demo"))
    assert demo.returncode == 0, demo.stderr[-2000:]
    ask = run("ask", str(work / "demo" / "scene.tif"), "How many buildings are there?", "--json")
    assert ask.returncode == 0, ask.stderr[-2000:]
    answer = json.loads(ask.stdout.strip().splitlines()[-1])
    assert answer["error"] is None and answer["kind"] == "count"
    assert isinstance(answer["value"], int)


def _pip_has_python_flag() -> bool:
    """pip >= 22.3 can install into another environment with --python."""
    proc = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True,
                          text=True)
    try:
        major, minor = (int(x) for x in proc.stdout.split()[1].split(".")[:2])
    except (IndexError, ValueError):
        return False
    return (major, minor) >= (22, 3)
