"""KeyboardInterrupt (or any BaseException) inside write() or delete(): the write is undone (or, if
it had committed, left complete) before the exception propagates. No temp file stays, the record
agrees with the disk, and the next write, from this process or another, goes through at once,
while the interrupted process is still alive (so no recovery of a dead writer is involved).

Without the undo, the intent stays: every other process is refused ("still in flight") for the
interrupted process's lifetime, after waiting 2 s for it."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from agent_coherence import Coordinator, faults

from conftest import FORK, temp_files, wait_for

KEY = "notes/plan.md"
OLD = b"the committed plan\n"
NEW = b"an interrupted plan\n" * 50
STEPS = ["intent", "open_temp", "write", "fsync", "rename", "fsync_dir", "read_back", "commit"]
AT_ONCE = 1.0  # seconds; a blocked key costs a writer 2 s of waiting, then LeaseHeld


class Interrupt(BaseException):
    """Stands for any BaseException that is not an Exception (SystemExit, GeneratorExit, ...)."""


def _write_once(root: str, result: "FORK.Queue") -> None:  # type: ignore[name-defined]
    started = time.monotonic()
    try:
        with Coordinator.open(root) as coord:
            receipt = coord.write(KEY, b"from another process", holder="other")
        result.put(("ok", receipt.version, time.monotonic() - started))
    except Exception as error:
        result.put((type(error).__name__, str(error), time.monotonic() - started))


def write_from_another_process(root) -> tuple:
    result = FORK.Queue()
    child = FORK.Process(target=_write_once, args=(str(root), result))
    child.start()
    child.join(30)
    return result.get(timeout=5)


def assert_consistent(coord, root, data: bytes | None, version: int) -> None:
    path = root / KEY
    assert (path.read_bytes() if path.exists() else None) == data
    info = coord.version(KEY)
    assert (info.version if info else 0) == version
    assert coord.backend.get_intent(KEY) is None
    assert not temp_files(root)
    snap = coord.read(KEY)
    assert not snap.foreign_edit and snap.version == version


def raiser(kind: type[BaseException], times: int = 1):
    """Raise ``kind`` at the first ``times`` checks of the step (one Ctrl-C is one interrupt: the
    undo that follows may pass the same step again)."""
    left = [times]

    def act(step: str) -> None:
        if left[0] > 0:
            left[0] -= 1
            raise kind(f"interrupted at {step}")

    return act


@pytest.mark.parametrize("kind", [KeyboardInterrupt, Interrupt])
@pytest.mark.parametrize("step", STEPS)
def test_an_interrupted_overwrite_is_undone_before_the_exception_propagates(coord, root, step, kind):
    coord.write(KEY, OLD, holder="h")
    with faults.inject(step, raiser(kind)):
        with pytest.raises(kind):
            coord.write(KEY, NEW, holder="h")
    assert_consistent(coord, root, OLD, 1)
    assert coord.leases() == []  # the lease taken for the write is given back
    outcome = write_from_another_process(root)
    assert outcome[:2] == ("ok", 2) and outcome[2] < AT_ONCE, outcome
    coord.journal.verify()


@pytest.mark.parametrize("step", STEPS)
def test_an_interrupted_first_write_leaves_no_file(coord, root, step):
    with faults.inject(step, raiser(KeyboardInterrupt)):
        with pytest.raises(KeyboardInterrupt):
            coord.write(KEY, NEW, holder="h")
    assert_consistent(coord, root, None, 0)
    assert coord.write(KEY, NEW, holder="h").version == 1  # the same process, at once


@pytest.mark.parametrize("step", ["intent", "fsync_dir", "read_back", "commit"])
def test_an_interrupted_delete_keeps_the_file(coord, root, step):
    coord.write(KEY, OLD, holder="h")
    with faults.inject(step, raiser(KeyboardInterrupt)):
        with pytest.raises(KeyboardInterrupt):
            coord.delete(KEY, holder="h")
    assert_consistent(coord, root, OLD, 1)


@pytest.mark.parametrize("step", ["rename", "fsync_dir"])
def test_a_second_interrupt_during_the_undo_is_finished_in_the_background(coord, root, step):
    """The first interrupt lands after the old bytes were replaced; the second lands in the undo
    that puts them back. The rest of the undo runs in the background, within a second."""
    coord.write(KEY, OLD, holder="h")
    with faults.inject(step, raiser(KeyboardInterrupt, times=2)):
        with pytest.raises(KeyboardInterrupt):
            coord.write(KEY, NEW, holder="h")
    wait_for(lambda: coord.backend.get_intent(KEY) is None, timeout=AT_ONCE)
    assert_consistent(coord, root, OLD, 1)
    outcome = write_from_another_process(root)
    assert outcome[:2] == ("ok", 2) and outcome[2] < AT_ONCE, outcome


def test_an_interrupt_under_an_explicit_lease_keeps_the_lease(coord, root):
    coord.write(KEY, OLD, holder="h")
    lease = coord.acquire(KEY, "h", ttl=30)
    with faults.inject("rename", raiser(KeyboardInterrupt)):
        with pytest.raises(KeyboardInterrupt):
            coord.write(KEY, NEW, lease=lease)
    assert_consistent(coord, root, OLD, 1)
    assert coord.write(KEY, NEW, lease=lease).version == 2


# -- a real SIGINT ----------------------------------------------------------------------------


def _write_until_interrupted(root: str, ready, report, release) -> None:  # type: ignore[no-untyped-def]
    """Write in a loop with the steps slowed down a little, until SIGINT; then report where the
    interrupt landed and stay alive until the parent has checked."""
    coord = Coordinator.open(root)
    in_write = False
    pause = lambda step: time.sleep(0.002)  # noqa: E731
    try:
        with faults.inject("fsync", pause), faults.inject("rename", pause), faults.inject("commit", pause):
            ready.set()
            n = 0
            while True:
                n += 1
                in_write = True
                coord.write(KEY, b"child write %d\n" % n * 40, holder="child")
                in_write = False
    except KeyboardInterrupt:
        report.put(in_write)
        release.wait(30)


@pytest.mark.parametrize("trial", range(8))
def test_a_real_sigint_mid_write_leaves_the_key_free_and_consistent(root, trial):
    with Coordinator.open(root) as coord:
        coord.write(KEY, OLD, holder="h")
    ready, release, report = FORK.Event(), FORK.Event(), FORK.Queue()
    child = FORK.Process(target=_write_until_interrupted, args=(str(root), ready, report, release))
    child.start()
    try:
        assert ready.wait(10)
        time.sleep(0.05 + random.Random(trial).uniform(0, 0.05))
        os.kill(child.pid, signal.SIGINT)
        in_write = report.get(timeout=10)
        assert child.is_alive()  # recovery of a dead writer plays no part below
        with Coordinator.open(root, recover=False) as coord:
            info = coord.version(KEY)
            assert coord.backend.get_intent(KEY) is None
            assert not temp_files(root)
            snap = coord.read(KEY)
            assert not snap.foreign_edit and snap.version == info.version
            started = time.monotonic()
            receipt = coord.write(KEY, b"parent", holder="parent")
            assert time.monotonic() - started < AT_ONCE
            assert receipt.version == info.version + 1
            coord.journal.verify()
        # most interrupts land inside write(): the loop does little else
        print(f"trial {trial}: interrupt inside write() = {in_write}")
    finally:
        release.set()
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()


# -- an intent this process left behind ---------------------------------------------------------


def test_an_intent_no_thread_of_this_process_is_on_is_recovered_here(coord, root):
    """An intent of this very process that no thread is writing (an interrupt landed where the
    undo could not run) is recovered by recover() and by the next writer, not left until exit."""
    import threading

    from agent_coherence import recovery
    from agent_coherence.backends.base import WriteRequest
    from agent_coherence.durable import temp_path_for

    coord.write(KEY, OLD, holder="h")
    pid, start = recovery.own_identity()
    left = coord.backend.begin_write(WriteRequest(
        key=KEY, holder="h", new_sha256="0" * 64, size=1, temp_path=temp_path_for(str(root / KEY)),
        host=recovery.HOST, pid=pid, pid_start=start, ttl=30))
    assert [r.key for r in coord.recover()] == [KEY]
    assert coord.backend.get_intent(KEY) is None

    # ... while a write another thread is performing is left alone
    in_rename, go_on = threading.Event(), threading.Event()

    def hold(step: str) -> None:
        in_rename.set()
        go_on.wait(10)

    receipts = []
    with faults.inject("rename", hold):
        writer = threading.Thread(target=lambda: receipts.append(coord.write(KEY, NEW, holder="h")))
        writer.start()
        assert in_rename.wait(10)
        assert coord.recover() == []
        go_on.set()
        writer.join(10)
    assert receipts[0].version == 2 and left.intent_id
    assert_consistent(coord, root, NEW, 2)


def test_a_transaction_an_interrupt_left_open_is_rolled_back_at_the_next_use(coord, root):
    """An interrupt landing between ``BEGIN IMMEDIATE`` and its handler leaves the connection in a
    transaction that holds the database's write lock (every other process then waits, and gives
    up after its busy deadline). The next use of the connection rolls it back first."""
    coord.write(KEY, OLD, holder="h")
    coord.backend.read(lambda conn: conn.execute("BEGIN IMMEDIATE"))  # as an interrupt leaves it
    assert coord.write(KEY, NEW, holder="h").version == 2
    outcome = write_from_another_process(root)
    assert outcome[:2] == ("ok", 3) and outcome[2] < AT_ONCE, outcome
