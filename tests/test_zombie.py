"""Zombie writers: a process stopped (SIGSTOP) past its lease's TTL must not write when it wakes.

Two cases: stopped while holding the lease between its read and its write, and stopped inside
the write itself, after its last fence check and just before the rename (the worst instant).
"""

from __future__ import annotations

import os
import signal

import pytest

from agent_coherence import Coordinator, LeaseHeld, LeaseLost
from agent_coherence import faults

from conftest import FORK, process_state, temp_files, wait_for

pytestmark = pytest.mark.contract

KEY = "plan.md"
TTL = 1.0


def zombie(root: str, conn, stop_inside_write: bool) -> None:
    """Take the lease, report it, then (when told) write under it; report how the write ended."""
    try:
        with Coordinator.open(root) as coord:
            lease = coord.acquire(KEY, "A", ttl=TTL)
            conn.send(("leased", lease.fence, lease.expires_at))
            if stop_inside_write:
                stopped = []

                def stop_here(step: str) -> None:
                    if not stopped:  # once: the undo of the failed write renames too
                        stopped.append(step)
                        conn.send(("stopping", step))
                        os.kill(os.getpid(), signal.SIGSTOP)

                with faults.inject("rename", stop_here):
                    outcome = write(coord, lease)
            else:
                assert conn.recv() == "write"
                outcome = write(coord, lease)
            conn.send(outcome)
    except BaseException as error:
        conn.send(("crashed", repr(error)))


def write(coord: Coordinator, lease) -> tuple:
    try:
        receipt = coord.write(KEY, b"A's stale plan", lease=lease)
        return ("written", receipt.version, receipt.fence)
    except LeaseLost as lost:
        return ("LeaseLost", lost.fence, lost.current_holder, lost.current_fence)


def stop_past_ttl(pid: int, coord: Coordinator, expires_at: float) -> None:
    wait_for(lambda: process_state(pid) == "T")
    wait_for(lambda: coord.backend.now() > expires_at + 0.05, timeout=TTL + 10, interval=0.02)


def start(root, stop_inside_write: bool):
    parent_end, child_end = FORK.Pipe()
    proc = FORK.Process(target=zombie, args=(str(root), child_end, stop_inside_write))
    proc.start()
    return proc, parent_end


def finish(proc) -> None:
    proc.join(20)
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.join()


@pytest.mark.timeout(60)
def test_zombie_between_read_and_write_is_fenced(root):
    with Coordinator.open(root) as coord:
        coord.write(KEY, b"v1", holder="setup")
    proc, conn = start(root, stop_inside_write=False)
    try:
        assert conn.poll(20)
        tag, fence_a, expires_a = conn.recv()
        assert tag == "leased"
        os.kill(proc.pid, signal.SIGSTOP)
        with Coordinator.open(root) as coord:
            stop_past_ttl(proc.pid, coord, expires_a)
            lease_b = coord.acquire(KEY, "B", ttl=30)
            receipt_b = coord.write(KEY, b"B's plan", lease=lease_b)
            conn.send("write")  # buffered until A runs again
            os.kill(proc.pid, signal.SIGCONT)
            assert conn.poll(20)
            outcome = conn.recv()
            assert outcome == ("LeaseLost", fence_a, "B", lease_b.fence), outcome
            assert (root / KEY).read_bytes() == b"B's plan"
            assert lease_b.fence > fence_a and receipt_b.fence == lease_b.fence
            assert coord.read(KEY).version == receipt_b.version == 2
            assert [e.holder for e in coord.journal.history(KEY) if e.kind == "write"] == ["setup", "B"]
            coord.journal.verify()
    finally:
        finish(proc)
    assert proc.exitcode == 0


@pytest.mark.timeout(60)
def test_zombie_stopped_inside_its_write_is_fenced_and_undone(root):
    with Coordinator.open(root) as coord:
        coord.write(KEY, b"v1", holder="setup")
    proc, conn = start(root, stop_inside_write=True)
    try:
        assert conn.poll(20)
        tag, fence_a, expires_a = conn.recv()
        assert tag == "leased"
        assert conn.poll(20) and conn.recv() == ("stopping", "rename")
        with Coordinator.open(root) as coord:
            stop_past_ttl(proc.pid, coord, expires_a)
            lease_b = coord.acquire(KEY, "B", ttl=30)  # the lease is free: A's expired
            assert lease_b.fence > fence_a
            # A's write is still in flight (its process is alive): B may not start its own yet,
            # and a reader sees the last committed bytes.
            with pytest.raises(LeaseHeld) as in_flight:
                coord.write(KEY, b"B's plan", lease=lease_b)
            assert in_flight.value.holder == "A" and in_flight.value.pid == proc.pid
            assert coord.read(KEY).data == b"v1"
            os.kill(proc.pid, signal.SIGCONT)  # A renames its temp file, then its commit is fenced
            assert conn.poll(20)
            outcome = conn.recv()
            assert outcome == ("LeaseLost", fence_a, "B", lease_b.fence), outcome
            assert (root / KEY).read_bytes() == b"v1"  # A's bytes were taken back out
            receipt_b = coord.write(KEY, b"B's plan", lease=lease_b)
            assert (root / KEY).read_bytes() == b"B's plan" and receipt_b.version == 2
            failed = [e for e in coord.journal.history(KEY) if e.kind == "write.failed"]
            assert [(e.holder, e.data["step"], e.data["fence"]) for e in failed] == [("A", "commit", fence_a)]
            assert [e.holder for e in coord.journal.history(KEY) if e.kind == "write"] == ["setup", "B"]
            coord.journal.verify()
    finally:
        finish(proc)
    assert proc.exitcode == 0
    assert not temp_files(root)

