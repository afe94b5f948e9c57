"""A fork while another thread is opening its SQLite connection.

Before a fork every SQLite connection of the process is closed (see ``backends/sqlite.py``). The
hook used to take a backend's lock only when the backend had a connection, so a connection that
another thread was still opening under that lock was closed under it: its next statement failed
("Cannot operate on a closed database"), or, when the close landed during a running statement,
the process crashed. The hook now takes every backend's lock and holds it until the fork is done.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

from agent_coherence import Coordinator

from conftest import FORK


def child_writes(root: str) -> None:
    with Coordinator.open(root) as coord:
        coord.write("child.md", b"from the child", holder="child")


def test_a_fork_waits_for_the_thread_opening_a_connection(root: Path) -> None:
    coord = Coordinator.open(root)
    backend = coord.backend
    coord.close()  # the next use opens a new connection
    opening = threading.Event()
    real_retry = backend._retry_busy  # type: ignore[attr-defined]
    calls: list[int] = []

    def slow_first_retry(operation: Callable[..., Any], *args: Any) -> Any:
        # The first call is read()'s own; the second is _connection()'s, for "PRAGMA
        # journal_mode=WAL", after the connection was opened and made findable by the fork hook:
        # pause there, holding the backend's lock.
        calls.append(1)
        if len(calls) == 2:
            opening.set()
            time.sleep(0.5)
        return real_retry(operation, *args)

    backend._retry_busy = slow_first_retry  # type: ignore[attr-defined]
    outcome: list[object] = []

    def read_once() -> None:
        try:
            outcome.append(backend.read(lambda conn: conn.execute("SELECT 1").fetchone()[0]))
        except BaseException as error:  # what the test reports
            outcome.append(error)

    reader = threading.Thread(target=read_once)
    reader.start()
    try:
        assert opening.wait(5)
        child = FORK.Process(target=child_writes, args=(str(root),))
        child.start()
        child.join(30)
    finally:
        reader.join(10)
        del backend._retry_busy  # type: ignore[attr-defined]
    assert outcome == [1]  # without the fix: ProgrammingError, the connection closed under the reader
    assert child.exitcode == 0
    assert coord.read("child.md").data == b"from the child"
    coord.close()
