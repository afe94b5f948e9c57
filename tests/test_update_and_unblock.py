"""update()'s fallback to the lease under contention, and leases freed from a dead writer."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from agent_coherence import Coordinator, faults

from conftest import FORK
import pytest

pytestmark = pytest.mark.contract


def _die_mid_write(root: str, ready: "FORK.Event") -> None:  # type: ignore[name-defined]
    coord = Coordinator.open(root)

    def stop_here(step: str) -> None:
        ready.set()
        os.kill(os.getpid(), signal.SIGKILL)

    with faults.inject("rename", stop_here):
        coord.write("plan.md", b"never lands", holder="crasher")


def test_a_dead_writers_write_lease_does_not_block_acquire(root: Path) -> None:
    """The crasher dies holding the lease it took for one write (TTL 30 s). Without recovery on
    the acquire path, LeaseHeld would be raised for the rest of that TTL."""
    Coordinator.open(root).write("plan.md", b"v1", holder="planner")
    ready = FORK.Event()
    child = FORK.Process(target=_die_mid_write, args=(str(root), ready))
    child.start()
    child.join(30)
    assert ready.is_set() and child.exitcode == -signal.SIGKILL

    coord = Coordinator.open(root, recover=False)  # prove acquire itself frees the key
    assert coord.backend.get_lease("plan.md").holder == "crasher"
    lease = coord.acquire("plan.md", holder="planner")  # no wait
    assert lease.holder == "planner"
    assert coord.read("plan.md").data == b"v1"
    assert coord.journal.count(kind="recover.back") == 1


def test_update_falls_back_to_holding_the_lease(root: Path) -> None:
    coord = Coordinator.open(root, optimistic_attempts=0)
    receipt = coord.update("counter.txt", lambda old: b"1", holder="worker")
    assert receipt.version == 1 and coord.read("counter.txt").data == b"1"
    kinds = [event.kind for event in coord.journal.history("counter.txt")]
    assert kinds == ["lease.acquire", "write", "lease.release"]


def _hammer(root: str, count: int) -> None:
    coord = Coordinator.open(root, optimistic_attempts=2)
    for _ in range(count):
        coord.update("counter.txt", lambda old: str(int(old or b"0") + 1).encode(), holder=f"w{os.getpid()}")


def test_update_under_contention_with_early_fallback_loses_nothing(root: Path) -> None:
    Coordinator.open(root).close()
    workers = [FORK.Process(target=_hammer, args=(str(root), 60)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    coord = Coordinator.open(root)
    assert coord.read("counter.txt").data == b"240"
    assert coord.journal.count(kind="write", key="counter.txt") == 240
    coord.journal.verify()
