"""KeyboardInterrupt at every point one can land inside ``Coordinator.open`` (see
interrupt_points.py), on a root whose state exists and on a fresh one: after each, once the
interrupted call is over, no descriptor of the state database (``state.db``, its WAL and
shared-memory files) is open, and the next open goes through at once and writes.

The garbage collector is off meanwhile: a connection nobody closed stays open until the collector
finds it (its statement cache refers back to it), which may be never in a process that does
little. Without the closing on the way out, an interrupt landing anywhere from the making of the
connection (first point: the return of ``sqlite3.connect``) to the
coordinator's return leaves the database open, with its WAL and shared-memory files, by nobody's
coordinator; so does a failed open (a damaged database, a recovery that raises), checked below.

Not checked: while the interrupt's traceback is kept (a REPL keeps the last one), a frame in it
may still refer to a cursor or to the backend being made, and that keeps the files open until the
traceback goes.
"""

from __future__ import annotations

import gc
import itertools
import os
from pathlib import Path
from typing import Iterator

import pytest

from agent_coherence import Coordinator
from agent_coherence.errors import BackendUnavailable

from interrupt_points import interrupt_points


@pytest.fixture(autouse=True)
def no_garbage_collector() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def state_descriptors(root: Path) -> list[str]:
    """This process's open descriptors on ``root``'s state database and its companion files (not
    the ``.gitignore`` beside it: a descriptor lost with the result of ``os.open`` leaks, as in any
    Python code that opens files, see test_interrupt_points.py)."""
    state = os.path.realpath(root / ".agent-coherence")
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, closed by now
        if target.startswith(os.path.join(state, "state.db")):  # -wal, -shm, -journal too
            found.append(target)
    return found


def assert_reopens_and_writes(root: Path, key: str) -> None:
    with Coordinator.open(root) as coord:
        coord.write(key, b"after the interrupt\n", holder="h")
    assert state_descriptors(root) == []


@pytest.mark.parametrize("state", ["existing", "fresh"])
def test_an_interrupted_open_leaves_no_connection_open_and_the_next_open_works_at_every_point(
        tmp_path: Path, state: str) -> None:
    roots = (tmp_path / f"root-{n}" for n in itertools.count())
    current = [next(roots)]
    opened: list[Coordinator] = []
    if state == "existing":
        Coordinator.open(current[0]).close()

    def open_root() -> None:
        if state == "fresh":
            current[0] = next(roots)
        opened.append(Coordinator.open(current[0]))

    points = 0
    for landed in interrupt_points(open_root):
        points += 1
        assert landed.came_out_as_itself, landed
        while opened:  # the interrupt went nowhere (a garbage-collection callback): it returned
            opened.pop().close()
        where, landed.raised = repr(landed), None  # the call is over: its traceback, and its frames, gone
        assert state_descriptors(current[0]) == [], where
        assert_reopens_and_writes(current[0], f"notes/{points}.md")
    assert points > 50


def test_an_open_of_a_damaged_database_closes_its_connection(tmp_path: Path) -> None:
    root = tmp_path / "root"
    Coordinator.open(root).close()
    database = root / ".agent-coherence" / "state.db"
    database.write_bytes(b"not a database, " * 1024)
    with pytest.raises(BackendUnavailable) as refused:
        Coordinator.open(root)
    del refused  # the call is over
    assert state_descriptors(root) == []
    database.unlink()
    assert_reopens_and_writes(root, "notes/a.md")


def test_an_open_whose_recovery_fails_closes_its_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    Coordinator.open(root).close()

    def busy(self: Coordinator) -> None:
        raise BackendUnavailable("the database stayed busy", backend="sqlite", reason="busy")

    monkeypatch.setattr(Coordinator, "recover", busy)
    with pytest.raises(BackendUnavailable) as failed:
        Coordinator.open(root)
    del failed  # the call is over
    assert state_descriptors(root) == []
    monkeypatch.undo()
    assert_reopens_and_writes(root, "notes/a.md")
