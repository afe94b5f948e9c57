"""What ships with the package for its users: the py.typed marker, the public error names, and
the README's list of them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import agent_coherence
from agent_coherence import errors

PROJECT = Path(__file__).resolve().parent.parent


def test_the_package_is_marked_typed_and_ships_the_marker():
    assert (Path(agent_coherence.__file__).parent / "py.typed").is_file()
    config = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["agent_coherence"]
    assert "mypy" in " ".join(config["project"]["optional-dependencies"]["dev"])


def test_every_error_is_exported_and_listed_in_the_readme():
    readme = (PROJECT / "README.md").read_text()
    for name in errors.__all__:
        error = getattr(agent_coherence, name)
        assert issubclass(error, errors.CoherenceError) and error is getattr(errors, name)
        assert f"`{name}`" in readme, f"README's error list lacks {name}"
    from agent_coherence.spool import SlotOccupied

    assert SlotOccupied is agent_coherence.SlotOccupied
