"""CrewAI tests: crewai is imported once, here, with a temporary HOME and storage directory.

``import crewai`` writes under ``$HOME`` (a secret key, ``~/.local/share/<cwd name>``, ``~/.config``)
and may phone home: the fixture below points all of it at a temp dir and turns telemetry off
before the first import, and puts the environment back after the last test of this package, so
the rest of the suite is unaffected. Test modules import crewai inside tests or fixtures, never at
module level (collection runs before this fixture).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from agent_coherence import Coordinator

QUIET = {"CREWAI_DISABLE_TELEMETRY": "true", "OTEL_SDK_DISABLED": "true", "CREWAI_TRACING_ENABLED": "false"}


@pytest.fixture(scope="package", autouse=True)
def crewai_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("crewai-home")
    env = dict(QUIET, HOME=str(home), CREWAI_STORAGE_DIR=str(home / "storage"))
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    import crewai  # noqa: F401  (the one import of crewai in the test process)
    import crewai_tools  # noqa: F401

    try:
        yield home
    finally:
        from crewai.hooks import clear_all_global_hooks

        clear_all_global_hooks()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(autouse=True)
def no_leftover_hooks() -> Iterator[None]:
    yield
    from crewai.hooks import clear_all_global_hooks

    clear_all_global_hooks()


def after_fork_in_child() -> None:
    """Call first in a child forked from a process that has already run a crew.

    CrewAI's event bus starts its thread pool and event-loop thread on first use; threads do not
    survive fork, so in the child every event would wait for a thread that is not there (and each
    kickoff would hang in its final flush). Marking the bus uninitialised makes it start fresh ones.
    """
    from crewai.events import crewai_event_bus

    bus: Any = crewai_event_bus
    bus._executor_initialized = False
    bus._pending_futures = set()
    bus._has_pending_events = False


def tool_results(messages: list[dict[str, Any]]) -> list[str]:
    """The tool results (as the model reads them) in a message list."""
    return [str(m.get("content")) for m in messages if m.get("role") == "tool"]


def run_children(children: list[Any], timeout: float = 60.0) -> list[int | None]:
    """Start forked children, wait for them (killing any still running after ``timeout``, so a
    hung child fails the test instead of blocking the suite), and return their exit codes."""
    for child in children:
        child.start()
    for child in children:
        child.join(timeout)
    for child in children:
        if child.is_alive():
            child.kill()
            child.join()
    return [child.exitcode for child in children]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory holding the coordinated root and, beside it, an outside directory."""
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path


@pytest.fixture
def wcoord(work: Path) -> Iterator[Coordinator]:
    coordinator = Coordinator.open(work / "root")
    yield coordinator
    coordinator.close()
