"""KeyboardInterrupt at every point one can land inside a compaction (``Coordinator.compact``, the
work of ``agent-coherence journal compact``) and inside an automatic retention step (see
interrupt_points.py), on both backends: after each, the journal verifies, nothing retention must
keep is gone (a live lease, the lease row of a key with an unresolved intent, an unacknowledged
message, a dedup key inside its window), a removed lease row's key gets a fence above every fence
it had, and the next compaction (or the next automatic step) goes through.

Before the fix this found, an interrupt landing in the automatic step's schedule before it read the
policy (first point: the call of ``retention`` in ``StepSchedule.maintenance_due``) left the
process's countdown at the "policy is off" recheck (5,000 transactions), not at the policy's
``every``: that process ran no retention step for 25 times as long as the policy says.

On PostgreSQL the schema is made with one journal chain (as in test_retention.py): the steps over
64 chains run the same transaction code per chain, at 64 times the points.
"""

from __future__ import annotations

import os
import time
from typing import Iterator

import pytest

from agent_coherence import Coordinator
from agent_coherence.backends.base import WriteRequest
from agent_coherence.backends.postgres import PostgresBackend
from agent_coherence.recovery import process_start
from agent_coherence.retention import Retention

from conftest import FakeClock, use_fake_clock
from interrupt_points import Landed, interrupt_points

pytestmark = pytest.mark.contract

# Everything that may go goes at once (ages of 0 days) and a few journal entries are kept. One
# step does a run's work: an interrupt between two steps of ``compact`` is one after a step.
POLICY = Retention(journal_days=None, journal_entries=4, lease_days=0, worker_days=0, assignment_days=0,
                   every=0, batch=16)


def open_kept(backend_name: str, root: str, policy: Retention) -> Coordinator:
    """A coordinator under ``policy``, past its process's first step countdown, compacted."""
    if backend_name == "postgres":
        PostgresBackend(os.environ["AGENT_COHERENCE_URL"], journal_chains=1).close()
    coord = Coordinator.open(root, retention=policy)
    use_fake_clock(coord, FakeClock(time.time()))
    for n in range(Retention().every + 1):  # past the first countdown (random, up to 200; see quiet_coord)
        coord.journal.append("warm-up", None, "test", n=n)
    coord.compact()
    return coord


@pytest.fixture
def kept_coord(backend_name: str, root: str) -> Iterator[Coordinator]:
    with open_kept(backend_name, root, POLICY) as coord:
        yield coord


class Needed:
    """What retention must keep, made once, checked after every interrupt."""

    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        self.clock = use_fake_clock(coord)
        self.live = coord.acquire("live.md", "keeper", ttl=10**6)
        pending = coord.acquire("pending.md", "writer", ttl=1)  # expires: only its intent keeps the row
        self.intent = coord.backend.begin_write(WriteRequest(
            key="pending.md", holder="writer", new_sha256="0" * 64, size=1,
            temp_path=os.path.join(coord.root, ".pending.md.tmp"), host=os.uname().nodename,
            pid=os.getpid(), pid_start=process_start(os.getpid()), fence=pending.fence))
        self.channel = coord.channel("kept", dedup_ttl=10**6)
        self.message_id = self.channel.send({"task": "unacked"}, key="once")
        self.fences: list[int] = []

    def garbage(self) -> None:
        """Rows retention removes: a released lease row, the journal entries of its grant and release."""
        coord = self.coord
        lease = coord.acquire("gone.md", "h", ttl=600)  # the same key each time: its row goes each time
        assert not self.fences or lease.fence > max(self.fences)  # never a fence twice, row or not
        self.fences.append(lease.fence)
        coord.release(lease)
        self.clock.advance(2)

    def assert_kept(self, landed: Landed) -> None:
        coord = self.coord
        assert landed.came_out_as_itself, landed
        coord.journal.verify()  # raises JournalCorrupt
        live = coord.backend.get_lease("live.md")
        assert live is not None and (live.holder, live.fence) == ("keeper", self.live.fence), landed
        assert coord.backend.get_intent("pending.md") is not None, landed
        assert self.channel.stats()["depth"] == 1, landed
        assert self.channel.send({"task": "again"}, key="once") == self.message_id, landed  # deduplicated


def test_an_interrupted_compaction_keeps_the_journal_verifiable_and_what_is_needed_at_every_point(
        kept_coord: Coordinator) -> None:
    coord = kept_coord
    needed = Needed(coord)
    needed.garbage()
    points = 0
    for landed in interrupt_points(coord.compact):
        points += 1
        needed.assert_kept(landed)
        assert not coord.compact().more, landed  # the next compaction finishes the work
        needed.garbage()
    assert coord.compact(dry_run=True).leases == 0  # the released lease rows did go
    assert points > 100


@pytest.mark.sqlite_only("the schedule is above the backend; the step's transaction is the test above's, on both")
def test_an_interrupted_automatic_step_keeps_the_schedule_and_what_is_needed_at_every_point(
        backend_name: str, root: str) -> None:
    every = 3  # a step before every third transaction of this process
    with open_kept(backend_name, root, Retention(**{**POLICY.as_dict(), "every": every})) as coord:
        needed = Needed(coord)

        def appends() -> None:
            for n in range(every):
                coord.journal.append("trigger", None, "test", n=n)

        needed.garbage()
        points = 0
        for landed in interrupt_points(appends):  # one of the three runs a step first
            points += 1
            needed.assert_kept(landed)
            needed.garbage()  # the next run's garbage
            for _ in range(2 * every):  # the schedule goes on: within a few steps the policy holds
                coord.journal.append("after", None, "test")
            assert coord.compact(dry_run=True).leases == 0, landed  # "gone.md"'s released row: swept
        assert points > 50
