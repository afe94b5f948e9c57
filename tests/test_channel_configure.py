"""Channel settings changed by two processes at once, forked from a parent that still has the
database open: neither change overwrites the other, and nothing the children commit is lost.

The parent's open connection matters. SQLite's record of which files a process has open and
locked is inherited across fork, the locks themselves are not; a parent that closes its
connection while forked children are writing would delete the WAL under them (their commits
silently vanish) unless every connection is closed before the fork.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_coherence import Coordinator

from conftest import FORK

pytestmark = pytest.mark.contract

ROUNDS = 300


def _set_visibility(root: str, started: "FORK.Event") -> None:  # type: ignore[name-defined]
    tasks = Coordinator.open(root).channel("tasks")
    for i in range(1, ROUNDS + 1):
        tasks.configure(visibility_timeout=float(i))
        started.set()


def _set_attempts(root: str, started: "FORK.Event") -> None:  # type: ignore[name-defined]
    tasks = Coordinator.open(root).channel("tasks")
    for i in range(1, ROUNDS + 1):
        tasks.configure(max_attempts=i)
        started.set()


def test_concurrent_configure_of_different_fields_keeps_both(root: Path) -> None:
    parent = Coordinator.open(root)  # deliberately still open when the children are forked
    parent.channel("tasks").configure(sla=60.0)
    started = [FORK.Event(), FORK.Event()]
    workers = [FORK.Process(target=_set_visibility, args=(str(root), started[0])),
               FORK.Process(target=_set_attempts, args=(str(root), started[1]))]
    for worker in workers:
        worker.start()
    for event in started:
        assert event.wait(30)
    parent.close()  # while the children write
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    config = Coordinator.open(root).channel("tasks").config
    assert (config.visibility_timeout, config.max_attempts, config.sla) == (float(ROUNDS), ROUNDS, 60.0)
