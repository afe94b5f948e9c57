"""Lease steps from several processes, under kill -9, and interrupted at every statement.

A fence is handed out once per key, ever: each acquire reads the row's fence and writes it + 1 in
one BEGIN IMMEDIATE transaction together with its journal entry. The naive way (read the highest
fence from a counter file, then write it + 1) hands fences out
twice as soon as processes overlap; through the backend every fence is handed out exactly once,
the journal holds exactly one entry per step and verifies, a process killed at any moment never
makes a fence be handed out again, and an interrupt between any two statements of a step leaves
the step whole or absent and the database free for the next writer.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time

import pytest

from agent_coherence import Coordinator, Retention
from agent_coherence.backends import default_database

from conftest import FORK

KEY = "shared/resource.txt"
PROCESSES, CYCLES = 4, 40


def _naive_fences(path: str, start, out) -> None:  # type: ignore[no-untyped-def]
    fd = os.open(path, os.O_RDWR)
    start.wait()
    fences = []
    for _ in range(CYCLES):
        fence = int(os.pread(fd, 8, 0)) + 1
        time.sleep(0.0005)  # the time a real caller spends between its read and its write
        os.pwrite(fd, b"%08d" % fence, 0)
        fences.append(fence)
    os.close(fd)
    out.put(fences)


def _leasing(root: str, start, out) -> None:  # type: ignore[no-untyped-def]
    fences = []
    with Coordinator.open(root, recover=False) as coord:
        me = f"worker-{os.getpid()}"
        start.wait()
        for cycle in range(CYCLES):
            lease = coord.acquire(KEY, holder=me, ttl=30, wait=30)
            fences.append(lease.fence)
            coord.journal.append("note", f"own/{me}", me, cycle=cycle)
            assert coord.release(lease)
    out.put(fences)


def _run_all(target, arg: str) -> list[int]:  # type: ignore[no-untyped-def]
    start, out = FORK.Event(), FORK.Queue()
    children = [FORK.Process(target=target, args=(arg, start, out)) for _ in range(PROCESSES)]
    for child in children:
        child.start()
    start.set()
    fences = [fence for _ in children for fence in out.get(timeout=60)]
    for child in children:
        child.join(10)
        assert child.exitcode == 0
    return fences


def test_the_naive_counter_hands_fences_out_twice(tmp_path):
    path = tmp_path / "fence-counter"
    path.write_bytes(b"%08d" % 0)
    fences = _run_all(_naive_fences, str(path))
    assert len(fences) == PROCESSES * CYCLES
    assert len(set(fences)) < len(fences)  # the same fence given to two holders


def test_processes_interleaving_lease_steps_and_appends_get_each_fence_once_and_one_chain(root):
    Coordinator.open(root).close()  # the schema exists before the children race to open it
    fences = _run_all(_leasing, str(root))
    assert sorted(fences) == list(range(1, PROCESSES * CYCLES + 1))
    with Coordinator.open(root) as coord:
        # lease.acquire + note + lease.release per cycle, and nothing else (no call gave up)
        assert coord.journal.verify() == 3 * PROCESSES * CYCLES
        assert coord.journal.count(kind="conflict.lease") == 0
        acquired = [e.data["fence"] for e in coord.journal.history(KEY) if e.kind == "lease.acquire"]
        assert acquired == list(range(1, PROCESSES * CYCLES + 1))  # in journal order, one per fence


def _cycle_until_killed(root: str, report_fd: int) -> None:
    coord = Coordinator.open(root, recover=False)
    while True:
        lease = coord.acquire(KEY, holder="victim", ttl=0.2)
        os.write(report_fd, b"%d\n" % lease.fence)
        coord.release(lease)


def test_a_fence_is_never_handed_out_again_after_a_kill_9_at_any_moment(root):
    Coordinator.open(root).close()
    rng = random.Random()
    for trial in range(6):
        read_fd, write_fd = os.pipe()
        child = FORK.Process(target=_cycle_until_killed, args=(str(root), write_fd))
        child.start()
        os.close(write_fd)
        time.sleep(0.05 + rng.random() * 0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        reported = b""
        while chunk := os.read(read_fd, 65536):
            reported += chunk
        os.close(read_fd)
        handed_out = [int(line) for line in reported.split()]
        assert handed_out, f"trial {trial}: the child got no lease before it was killed"
        with Coordinator.open(root) as coord:
            lease = coord.acquire(KEY, holder="checker", ttl=5, wait=2)  # after a killed holder's TTL
            assert lease.fence > max(handed_out), f"trial {trial}: fence {lease.fence} handed out again"
            coord.journal.verify()
            acquired = [e.data["fence"] for e in coord.journal.history(KEY) if e.kind == "lease.acquire"]
            assert acquired == sorted(set(acquired)) and acquired[-1] == lease.fence
            coord.release(lease)


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt (a real one would stop pytest)."""


def _interrupt_at(backend, statement: int, after: bool):  # type: ignore[no-untyped-def]
    """Make the ``statement``-th statement run through the backend's reused cursor raise
    Interrupted, before it runs or just after it ran."""
    real, seen = backend._run, [0]

    def run(sql, params=()):  # type: ignore[no-untyped-def]
        seen[0] += 1
        if seen[0] == statement and not after:
            raise Interrupted(sql)
        cursor = real(sql, params)
        if seen[0] == statement:
            raise Interrupted(sql)
        return cursor

    backend._run = run
    return real, seen


def _assert_whole_and_unlocked(coord, root) -> tuple[str | None, int]:  # type: ignore[no-untyped-def]
    other = sqlite3.connect(default_database(str(root)), timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # raises "database is locked" if the step kept its lock
        other.execute("ROLLBACK")
    finally:
        other.close()
    coord.journal.verify()
    holder, fence = coord.backend.read(lambda conn: conn.execute(
        "SELECT holder, fence FROM leases WHERE key = ?", (KEY,)).fetchone())
    events = [e for e in coord.journal.history(KEY) if e.kind.startswith("lease.")]
    # the row changes only with its journal entry: the newest one says what the row says
    assert max(e.data["fence"] for e in events if e.kind == "lease.acquire") == fence
    assert events[-1].kind == ("lease.acquire" if holder is not None else "lease.release")
    return holder, fence


@pytest.mark.parametrize("step", ["acquire", "release"])
def test_an_interrupt_at_any_statement_of_a_lease_step_leaves_it_whole_and_unlocked(root, step):
    with Coordinator.open(root, retention=Retention(every=0)) as coord:  # no retention step among them
        coord.release(coord.acquire(KEY, holder="h", ttl=30))
        outcomes = set()
        for statement in range(1, 8):  # an acquire runs 6 statements, a release 5
            for after in (False, True):
                lease = coord.acquire(KEY, holder="h", ttl=30) if step == "release" else None
                fence_before = coord.backend.get_lease(KEY).fence if lease else None
                real, seen = _interrupt_at(coord.backend, statement, after)
                try:
                    if lease is None:
                        coord.acquire(KEY, holder="h", ttl=30)
                    else:
                        coord.release(lease)
                    interrupted = False
                except Interrupted:
                    interrupted = True
                finally:
                    coord.backend._run = real
                holder, fence = _assert_whole_and_unlocked(coord, root)
                outcomes.add((interrupted, holder is not None))
                if fence_before is not None:
                    assert fence == fence_before  # a release never changes the fence
                if holder is not None:  # leave the key free for the next try
                    coord.backend.release_lease(KEY, holder, fence)
        assert seen[0] < statement  # the last tries ran past the step's last statement
        # interrupted before its commit (undone) and after it (kept), and completed
        held_after = step == "acquire"
        assert {(True, not held_after), (True, held_after), (False, held_after)} <= outcomes
