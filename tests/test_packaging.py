"""What ships with the package for its users: the py.typed marker and any other data file, the
public error names, and the README's list of them."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

import agent_coherence
from agent_coherence import errors

PROJECT = Path(__file__).resolve().parent.parent


def test_the_package_is_marked_typed_and_ships_the_marker():
    assert (Path(agent_coherence.__file__).parent / "py.typed").is_file()
    config = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["agent_coherence"]
    assert "mypy" in " ".join(config["project"]["optional-dependencies"]["dev"])


def test_every_file_in_the_package_besides_modules_is_declared_package_data():
    # Editable installs (every test here) see the whole source tree; a wheel carries a non-.py
    # file only when package-data names it, so an undeclared one goes missing for users alone.
    declared = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    source = PROJECT / "src"
    for path in (source / "agent_coherence").rglob("*"):
        if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        parts = path.relative_to(source).parts
        # A pattern is relative to the directory of the package it is declared for ("*": any).
        covered = any(fnmatch("/".join(parts[depth:]), pattern)
                      for depth in range(1, len(parts))
                      for pattern in declared.get(".".join(parts[:depth]), []) + declared.get("*", []))
        assert covered, f"{'/'.join(parts)} is not declared in [tool.setuptools.package-data]: the wheel would lack it"


def test_every_error_is_exported_and_listed_in_the_readme():
    readme = (PROJECT / "README.md").read_text()
    for name in errors.__all__:
        error = getattr(agent_coherence, name)
        assert issubclass(error, errors.CoherenceError) and error is getattr(errors, name)
        assert f"`{name}`" in readme, f"README's error list lacks {name}"
    from agent_coherence.spool import SlotOccupied

    assert SlotOccupied is agent_coherence.SlotOccupied


def test_every_public_name_is_an_explicit_re_export_for_type_checkers():
    # __all__ is computed at run time, so mypy --strict (no implicit re-export) and pyright see a
    # public name only through "import X as X" in the TYPE_CHECKING block: without it the README's
    # own "from agent_coherence import Coordinator" fails their checks
    import ast

    tree = ast.parse((PROJECT / "src" / "agent_coherence" / "__init__.py").read_text())
    exported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names if alias.asname == alias.name}
    missing = sorted(set(agent_coherence.__all__) - exported - {"__version__"})
    assert not missing, f"not re-exported for type checkers: {missing}"


@pytest.mark.slow
def test_the_readme_imports_type_check_under_mypy_strict(tmp_path):
    user = tmp_path / "user.py"
    user.write_text("from agent_coherence import Coordinator, KeyIsADirectory, LeaseHeld, Retention, "
                    "VersionConflict, WriteReceipt\n"
                    "coord: Coordinator = Coordinator.open(root='.')\n"
                    "receipt: WriteReceipt = coord.write('a.txt', b'x', holder='h')\n")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental", str(user)],
        capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(PROJECT / "src")})
    assert checked.returncode == 0, checked.stdout + checked.stderr
