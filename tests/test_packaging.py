"""Packaging: the distribution names its import packages one by one, every package folder of the repository is
among them (or deliberately not installed), and the console scripts import this repository's packages whatever
the working directory holds.

Why the last one matters: the packages are top-level import names (``model``, ``service``, ...). A console
script (``kws-serve``) is a file in the virtual environment's ``bin/``, so Python puts that folder, not the
working directory, first on ``sys.path``; ``python -m service.cli`` puts the working directory first, where a
user's own ``model.py`` or ``model/`` would shadow ours. The README says to run the console scripts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Package folders that are deliberately not installed: the test suite, and the benchmarks (run from the
# repository root as `python -m benchmarks.NAME`).
NOT_INSTALLED = {"tests", "benchmarks"}
SKIPPED_FOLDERS = {"build", "dist", "runs", "artifacts", "node_modules"}


def listed_packages() -> list[str]:
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    return find["include"]


def package_folders(root: Path = REPO) -> set[str]:
    """Dotted names of every folder with an ``__init__.py`` under ``root``, outside virtual environments,
    hidden folders and build output."""
    found = set()
    for folder, subfolders, files in os.walk(root):
        path = Path(folder)
        subfolders[:] = [s for s in subfolders if not s.startswith(".") and s not in SKIPPED_FOLDERS
                         and not s.endswith(".egg-info") and not (path / s / "pyvenv.cfg").exists()]
        if path != root and "__init__.py" in files:
            found.add(".".join(path.relative_to(root).parts))
    return found


def test_packages_are_named_one_by_one():
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    names = listed_packages()
    assert not any(ch in name for name in names for ch in "*?["), f"a glob in the package list: {names}"
    assert find.get("namespaces") is False, "namespace packages would let any folder in"
    assert len(names) == len(set(names))


def test_every_package_folder_is_listed_and_every_listed_package_exists():
    folders = package_folders()
    installable = {name for name in folders if name.split(".")[0] not in NOT_INSTALLED}
    listed = set(listed_packages())
    assert not installable - listed, (
        f"package folders missing from [tool.setuptools.packages.find] include in pyproject.toml: "
        f"{sorted(installable - listed)}")
    assert not listed - folders, f"listed in pyproject.toml but no such package folder: {sorted(listed - folders)}"
    for name in listed:  # a subpackage without its parent would install as a stray top-level folder
        parent = name.rpartition(".")[0]
        assert not parent or parent in listed, f"{name} is listed without {parent}"


def test_the_folder_walk_sees_subpackages(tmp_path):
    for folder in ("pkg/sub", "pkg/data", ".venv/lib/x", "venv/y"):
        (tmp_path / folder).mkdir(parents=True)
    for init in ("pkg/__init__.py", "pkg/sub/__init__.py", ".venv/lib/x/__init__.py", "venv/y/__init__.py"):
        (tmp_path / init).write_text("")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("")
    assert package_folders(tmp_path) == {"pkg", "pkg.sub"}


# -- what the console scripts import -------------------------------------------------------------------------


def shadowing_folder(where: Path) -> Path:
    """A working directory a user might have: their own ``model/`` package and modules named like ours."""
    where.mkdir()
    (where / "model").mkdir()
    (where / "model" / "__init__.py").write_text("")
    (where / "model" / "features.py").write_text("raise ImportError('the user\\'s model.features was imported')\n")
    for name in {name.split(".")[0] for name in listed_packages()} - {"model"}:
        (where / f"{name}.py").write_text(f"raise ImportError('the user\\'s {name}.py was imported')\n")
    return where


def console_script(name: str) -> Path:
    script = Path(sys.executable).parent / name
    if not script.exists():
        pytest.fail(f"console script {name} is not installed in {script.parent}: scripts/test.sh reinstalls the "
                    f"project when pyproject.toml changes")
    return script


@pytest.mark.parametrize("name", sorted(PYPROJECT["project"]["scripts"]))
def test_console_scripts_start_in_a_folder_that_shadows_our_packages(tmp_path, name):
    cwd = shadowing_folder(tmp_path / "work")
    result = subprocess.run([str(console_script(name)), "--help"], cwd=cwd, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "usage:" in result.stdout and "was imported" not in result.stderr


def test_a_script_imports_this_repositorys_packages_whatever_the_working_directory(tmp_path):
    """What a console script sees (its own folder first on sys.path), with every package we install imported."""
    cwd = shadowing_folder(tmp_path / "work")
    probe = tmp_path / "bin" / "probe.py"
    probe.parent.mkdir()
    probe.write_text(
        "import importlib, json, sys\n"
        "import service.app, model.features\n"  # what kws-serve loads
        f"names = {listed_packages()!r}\n"
        "print(json.dumps({n: importlib.import_module(n).__file__ for n in names}))\n"
    )
    result = subprocess.run([sys.executable, str(probe)], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name, file in json.loads(result.stdout.splitlines()[-1]).items():
        expected = REPO.joinpath(*name.split("."), "__init__.py")
        assert Path(file).resolve() == expected, f"{name} imported from {file}, not from {REPO}"


def test_python_m_puts_the_working_directory_first_and_python_p_does_not(tmp_path):
    """The reason the README points at the console scripts (and, for ``-m``, at ``python -P``)."""
    cwd = shadowing_folder(tmp_path / "work")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    shadowed = subprocess.run([sys.executable, "-m", "service.cli", "--help"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=120)
    assert shadowed.returncode != 0 and "service.py was imported" in shadowed.stderr
    safe = subprocess.run([sys.executable, "-P", "-m", "service.cli", "--help"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert safe.returncode == 0 and "usage:" in safe.stdout, safe.stderr


def test_in_process_imports_are_this_repositorys():
    import model
    import service

    assert Path(model.__file__).resolve() == REPO / "model" / "__init__.py"
    assert Path(service.__file__).resolve() == REPO / "service" / "__init__.py"
