"""Shared fixtures and helpers for the test suite.

Multi-process tests fork (``FORK``) from a parent that has already imported the package, so a
child starts in milliseconds; a child always opens its own Coordinator (a SQLite connection is
never carried across fork) and the parent closes its own before forking.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from agent_coherence import Coordinator
from agent_coherence.durable import TEMP_MARKER

FORK = multiprocessing.get_context("fork")


class FakeClock:
    """A controllable stand-in for the backend's clock (epoch seconds)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def use_fake_clock(coord: Coordinator, clock: FakeClock | None = None) -> FakeClock:
    """Make every expiry decision of ``coord``'s backend use ``clock``."""
    clock = clock or FakeClock()
    coord.backend.now = clock  # type: ignore[method-assign]
    return clock


def temp_files(root: str | os.PathLike[str]) -> list[str]:
    """Every leftover temp file under ``root``."""
    return [str(p) for p in Path(root).rglob(f"*{TEMP_MARKER}")]


def tree_snapshot(directory: str | os.PathLike[str], skip: str | None = None) -> dict[str, object]:
    """Path -> (type, bytes or link target, mode) of everything under ``directory``."""
    snapshot: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        if skip is not None:
            dirnames[:] = [d for d in dirnames if d != skip]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.islink(path):
                snapshot[path] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                snapshot[path] = ("dir", st.st_mode)
            else:
                with open(path, "rb") as handle:
                    snapshot[path] = ("file", handle.read(), st.st_mode)
    return snapshot


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.005) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def process_state(pid: int) -> str:
    """The kernel's one-letter state of ``pid`` (``T`` stopped, ``S`` sleeping, ...)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    return stat[stat.rfind(b")") + 2:].split()[0].decode()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def coord(root: Path) -> Iterator[Coordinator]:
    coordinator = Coordinator.open(root)
    yield coordinator
    coordinator.close()


@pytest.fixture
def clock(coord: Coordinator) -> FakeClock:
    return use_fake_clock(coord)
