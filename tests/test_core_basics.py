"""Unit tests of the Coordinator's contract: receipts, leases, versions, foreign edits, recovery."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import threading
import time

import pytest

from agent_coherence import (
    Coordinator, ForeignEdit, LeaseHeld, LeaseLost, VersionConflict,
)
from agent_coherence import coordinator as coordinator_module, faults, recovery
from agent_coherence.backends.base import WriteRequest
from agent_coherence.durable import temp_path_for

from conftest import dead_pid, temp_files, wait_for

pytestmark = pytest.mark.contract

EMPTY = hashlib.sha256(b"").hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- writes, reads, receipts ----------------------------------------------------------------


def test_write_returns_a_receipt_that_matches_the_disk(coord, root):
    receipt = coord.write("plans/plan.md", b"first", holder="planner")
    assert receipt.key == "plans/plan.md"
    assert receipt.path == str(root / "plans" / "plan.md")
    assert (receipt.version, receipt.size, receipt.sha256) == (1, 5, sha(b"first"))
    assert receipt.holder == "planner" and receipt.durable is True and receipt.fence >= 1
    assert (root / "plans" / "plan.md").read_bytes() == b"first"

    second = coord.write("./plans//plan.md", "second", holder="planner")  # str is utf-8 encoded
    assert second.key == "plans/plan.md" and second.version == 2 and second.sha256 == sha(b"second")
    assert second.committed_at >= receipt.committed_at

    snap = coord.read("plans/plan.md")
    assert (snap.data, snap.version, snap.sha256, snap.exists, snap.foreign_edit) == (
        b"second", 2, sha(b"second"), True, False)
    info = coord.version("plans/plan.md")
    assert (info.version, info.sha256, info.size, info.writer) == (2, sha(b"second"), 6, "planner")

    writes = [e for e in coord.journal.history("plans/plan.md") if e.kind == "write"]
    assert [(e.data["version"], e.data["sha256"]) for e in writes] == [(1, sha(b"first")), (2, sha(b"second"))]
    assert coord.journal.verify() == coord.journal.count()
    assert not temp_files(root)


def test_write_without_lease_or_holder_is_refused(coord):
    with pytest.raises(TypeError):
        coord.write("a.txt", b"x")


def test_read_of_a_missing_file(coord):
    snap = coord.read("nothing/here.txt")
    assert (snap.exists, snap.data, snap.version, snap.sha256, snap.foreign_edit) == (False, b"", 0, EMPTY, False)
    assert coord.version("nothing/here.txt") is None


def test_first_write_over_an_untracked_file_takes_it_over(coord, root):
    (root / "pre.txt").write_bytes(b"existing")
    assert coord.read("pre.txt").data == b"existing"
    receipt = coord.write("pre.txt", b"new", holder="h", expect_version=0)
    assert receipt.version == 1 and (root / "pre.txt").read_bytes() == b"new"


def test_replacement_keeps_the_file_mode(coord, root):
    coord.write("script.sh", b"#!/bin/sh\n", holder="h")
    os.chmod(root / "script.sh", 0o750)
    coord.write("script.sh", b"#!/bin/sh\necho\n", holder="h")
    assert (root / "script.sh").stat().st_mode & 0o777 == 0o750


# -- leases ---------------------------------------------------------------------------------


def test_lease_held_carries_the_facts(coord, root):
    lease = coord.acquire("a.txt", "alice", ttl=30)
    with pytest.raises(LeaseHeld) as caught:
        coord.acquire("a.txt", "bob", ttl=30)
    held = caught.value
    assert (held.key, held.holder, held.expires_at, held.acquired_at) == (
        "a.txt", "alice", lease.expires_at, lease.acquired_at)
    assert held.recover

    with pytest.raises(LeaseHeld) as caught_write:
        coord.write("a.txt", b"bob's", holder="bob")
    assert caught_write.value.holder == "alice"
    assert not (root / "a.txt").exists()
    assert coord.journal.count(kind="conflict.lease", key="a.txt") == 2


def test_lease_reentry_by_the_same_holder_keeps_the_fence(coord, clock):
    first = coord.acquire("a.txt", "alice", ttl=10)
    clock.advance(5)
    again = coord.acquire("a.txt", "alice", ttl=10)
    assert again.fence == first.fence
    assert again.expires_at == pytest.approx(first.expires_at + 5)
    # a shorter ttl on re-entry never shortens the lease
    assert coord.acquire("a.txt", "alice", ttl=1).expires_at == pytest.approx(again.expires_at)
    assert coord.journal.count(kind="lease.acquire", key="a.txt") == 1


def test_expired_lease_is_taken_over_with_a_higher_fence(coord, clock):
    alice = coord.acquire("a.txt", "alice", ttl=5)
    clock.advance(4.9)
    with pytest.raises(LeaseHeld):
        coord.acquire("a.txt", "bob", ttl=5)
    clock.advance(0.2)
    bob = coord.acquire("a.txt", "bob", ttl=5)
    assert bob.fence > alice.fence
    takeover = coord.journal.history("a.txt")[-1]
    assert takeover.kind == "lease.acquire" and takeover.data["expired_holder"] == "alice"
    with pytest.raises(LeaseLost) as caught:
        coord.write("a.txt", b"alice's", lease=alice)
    lost = caught.value
    assert (lost.holder, lost.fence, lost.current_holder, lost.current_fence) == (
        "alice", alice.fence, "bob", bob.fence)
    assert coord.write("a.txt", b"bob's", lease=bob).fence == bob.fence


def test_renew_extends_and_fails_once_lost(coord, clock):
    lease = coord.acquire("a.txt", "alice", ttl=5)
    clock.advance(4)
    renewed = coord.renew(lease)
    assert renewed.fence == lease.fence and renewed.expires_at == pytest.approx(clock.t + 5)
    clock.advance(4)  # past the original expiry, inside the renewed one
    assert coord.write("a.txt", b"ok", lease=renewed).version == 1

    clock.advance(1.5)
    with pytest.raises(LeaseLost) as expired:
        coord.renew(renewed)
    assert expired.value.current_holder is None

    bob = coord.acquire("a.txt", "bob", ttl=5)
    with pytest.raises(LeaseLost) as taken:
        coord.renew(renewed)
    assert (taken.value.current_holder, taken.value.current_fence) == ("bob", bob.fence)


def test_release_frees_the_key_and_reports_a_lost_lease(coord, clock):
    alice = coord.acquire("a.txt", "alice", ttl=5)
    assert coord.release(alice) is True
    assert coord.release(alice) is False
    bob = coord.acquire("a.txt", "bob", ttl=5)
    assert bob.fence == alice.fence + 1
    with pytest.raises(LeaseLost):
        coord.write("a.txt", b"x", lease=alice)
    clock.advance(10)
    carol = coord.acquire("a.txt", "carol", ttl=5)
    assert coord.release(bob) is False  # taken over: nothing to release
    assert coord.leases() and [lease.holder for lease in coord.leases()] == ["carol"]
    assert coord.release(carol) is True and coord.leases() == []


def test_a_lost_lease_says_whether_it_was_released_expired_or_taken_over(coord, clock):
    def why(lease):
        with pytest.raises(LeaseLost) as lost:
            coord.write("a.txt", b"x", lease=lease)
        return str(lost.value)

    # a block's lease given up by an explicit release of the same holder
    with coord.lease("a.txt", holder="alice", ttl=5) as outer:
        coord.release(coord.acquire("a.txt", "alice", ttl=5))
        assert "lost: released" in why(outer)
    lease = coord.acquire("a.txt", "alice", ttl=5)
    clock.advance(6)
    assert "lost: expired" in why(lease)
    bob = coord.acquire("a.txt", "bob", ttl=5)
    assert f"now held by 'bob' (fence {bob.fence})" in why(lease)
    coord.release(bob)
    assert f"taken over (fence {bob.fence}), and that lease has since been released" in why(lease)
    coord.acquire("a.txt", "bob", ttl=5)
    clock.advance(6)
    assert "has since expired" in why(lease)


def test_nested_blocks_of_one_holder_share_the_lease_until_the_outermost_ends(coord, root):
    """The inner block is a re-entry: its end must not give up the lease the outer block is still
    writing under (nor may an update() of the same holder inside the block)."""
    with coord.lease("a.txt", holder="alice") as outer:
        with coord.lease("a.txt", holder="alice") as inner:
            assert inner.fence == outer.fence
            coord.write("a.txt", b"inner", lease=inner)
        coord.write("a.txt", b"outer", lease=outer)
        coord.update("a.txt", lambda old: old + b"+update", holder="alice")
        assert coord.write("a.txt", b"still outer", lease=outer).version == 4
        with pytest.raises(LeaseHeld):
            coord.acquire("a.txt", "bob")
    assert coord.write("a.txt", b"bob", holder="bob").version == 5  # the outermost end released it


def test_threads_sharing_a_holder_name_keep_the_lease_until_the_last_block_ends(coord):
    entered, first_out = threading.Event(), threading.Event()
    results = []

    def second():
        with coord.lease("a.txt", holder="alice") as lease:
            entered.set()
            first_out.wait(5)  # the first thread's block has ended: the lease must still be ours
            results.append(coord.write("a.txt", b"second", lease=lease).version)

    with coord.lease("a.txt", holder="alice"):
        thread = threading.Thread(target=second)
        thread.start()
        assert entered.wait(5)
    first_out.set()
    thread.join(5)
    assert results == [1]
    coord.acquire("a.txt", "bob")  # the last block's end released it


def test_lease_context_releases_on_exit(coord):
    with coord.lease("a.txt", holder="alice") as lease:
        coord.write("a.txt", b"inside", lease=lease)
        with pytest.raises(LeaseHeld):
            coord.write("a.txt", b"other", holder="bob")
    assert coord.write("a.txt", b"other", holder="bob").version == 2


def test_write_with_holder_reuses_the_holders_live_lease(coord):
    lease = coord.acquire("a.txt", "alice", ttl=30)
    receipt = coord.write("a.txt", b"x", holder="alice")
    assert receipt.fence == lease.fence
    # the explicit lease survives the write (only a lease taken for the write is released)
    assert coord.backend.get_lease("a.txt").holder == "alice"
    with pytest.raises(LeaseHeld):
        coord.write("a.txt", b"y", holder="bob")


def test_write_with_holder_releases_the_lease_it_took(coord):
    coord.write("a.txt", b"x", holder="alice")
    assert coord.backend.get_lease("a.txt") is None
    assert coord.write("a.txt", b"y", holder="bob").version == 2


def test_wait_for_a_lease_until_it_is_released(coord):
    lease = coord.acquire("a.txt", "alice", ttl=30)
    releaser = threading.Timer(0.2, coord.release, args=(lease,))
    releaser.start()
    taken = coord.acquire("a.txt", "bob", ttl=30, wait=10)
    releaser.join()
    assert taken.holder == "bob" and taken.fence == lease.fence + 1


@pytest.mark.sqlite_only("needs a stopped clock: the server's clock keeps moving under the renewals")
@pytest.mark.timeout(30)
def test_keep_alive_holds_a_lease_past_its_ttl(coord, clock):
    ttl = 0.6  # renewal every 0.2 s of real time; expiry judged by the fake clock
    lease = coord.acquire("a.txt", "alice", ttl=ttl)
    unkept = coord.acquire("b.txt", "alice", ttl=ttl)
    keeper = coord.keep_alive(lease)
    try:
        for _ in range(5):
            clock.advance(0.4)
            now = clock.t
            wait_for(lambda: coord.backend.get_lease("a.txt").expires_at >= now + ttl - 1e-6)
        assert clock.t - lease.expires_at > 1.0  # well past the original expiry
        assert coord.write("a.txt", b"still mine", lease=keeper.lease).fence == lease.fence
        with pytest.raises(LeaseLost):
            coord.write("b.txt", b"expired", lease=unkept)
    finally:
        keeper.stop()
    assert keeper.lost is None


@pytest.mark.timeout(30)
def test_keep_alive_reports_a_lease_taken_over(coord, clock):
    lost: list[LeaseLost] = []
    fired = threading.Event()
    lease = coord.acquire("a.txt", "alice", ttl=0.3)
    keeper = coord.keep_alive(lease, on_lost=lambda error: (lost.append(error), fired.set()))
    try:
        clock.advance(10)  # alice's process stalls past its ttl
        bob = coord.acquire("a.txt", "bob", ttl=30)
        assert fired.wait(10), "on_lost never fired"
    finally:
        keeper.stop()
    assert len(lost) == 1 and isinstance(keeper.lost, LeaseLost)
    assert (lost[0].holder, lost[0].fence) == ("alice", lease.fence)
    assert bob.fence > lease.fence
    with pytest.raises(LeaseLost):
        coord.write("a.txt", b"zombie", lease=keeper.lease)


@pytest.mark.sqlite_only("needs a stopped clock: the server's clock keeps moving under the renewals")
@pytest.mark.timeout(30)
def test_lease_context_auto_renew(coord, clock):
    with coord.lease("a.txt", holder="alice", ttl=0.6, auto_renew=True) as lease:
        for _ in range(3):
            clock.advance(0.4)
            now = clock.t
            wait_for(lambda: coord.backend.get_lease("a.txt").expires_at >= now + 0.6 - 1e-6)
        assert coord.write("a.txt", b"x", lease=lease).version == 1
    assert coord.backend.get_lease("a.txt") is None


# -- versions -------------------------------------------------------------------------------


def test_version_conflict_carries_the_facts(coord, root):
    coord.write("a.txt", b"one", holder="alice")
    with pytest.raises(VersionConflict) as caught:
        coord.write("a.txt", b"stale", holder="bob", expect_version=0)
    conflict = caught.value
    assert (conflict.key, conflict.expected, conflict.actual) == ("a.txt", 0, 1)
    assert (root / "a.txt").read_bytes() == b"one" and coord.version("a.txt").version == 1
    assert coord.journal.count(kind="conflict.version", key="a.txt") == 1
    assert coord.backend.get_lease("a.txt") is None  # the lease taken for the write was given back
    assert coord.write("a.txt", b"two", holder="bob", expect_version=1).version == 2


def test_update_reads_and_writes_together(coord):
    for _ in range(5):
        coord.update("n.txt", lambda old: str(int(old or b"0") + 1), holder="h")
    assert coord.read("n.txt").data == b"5" and coord.version("n.txt").version == 5


def test_update_gives_up_when_the_lease_stays_held(coord):
    coord.acquire("n.txt", "alice", ttl=30)
    calls = []
    with pytest.raises(LeaseHeld):
        coord.update("n.txt", lambda old: calls.append(old) or b"x", holder="bob", attempts=1)
    assert len(calls) == 1 and not coord.read("n.txt").exists


def test_update_retries_a_conflict_then_gives_up(coord):
    coord.write("n.txt", b"0", holder="h")
    calls = []

    def racing(old: bytes) -> bytes:
        calls.append(old)
        coord.write("n.txt", b"moved on", holder="other")  # someone commits between read and write
        return b"mine"

    with pytest.raises(VersionConflict):
        coord.update("n.txt", racing, holder="h", attempts=3)
    assert len(calls) == 3
    assert coord.read("n.txt").data == b"moved on" and coord.version("n.txt").version == 4


# -- foreign edits --------------------------------------------------------------------------


def test_foreign_edit_is_refused_and_reported(coord, root):
    coord.write("a.txt", b"recorded", holder="h")
    (root / "a.txt").write_bytes(b"edited around the layer")
    snap = coord.read("a.txt")
    assert snap.foreign_edit and snap.recorded_sha256 == sha(b"recorded")
    assert snap.data == b"edited around the layer" and snap.version == 1

    with pytest.raises(ForeignEdit) as caught:
        coord.write("a.txt", b"new", holder="h")
    edit = caught.value
    assert (edit.key, edit.recorded_sha256, edit.disk_sha256, edit.version) == (
        "a.txt", sha(b"recorded"), sha(b"edited around the layer"), 1)
    assert edit.path == str(root / "a.txt")
    assert (root / "a.txt").read_bytes() == b"edited around the layer"  # not clobbered
    assert coord.version("a.txt").version == 1
    assert coord.backend.get_lease("a.txt") is None and coord.backend.get_intent("a.txt") is None
    with pytest.raises(ForeignEdit):
        coord.update("a.txt", lambda old: old + b"!", holder="h")


def test_foreign_delete_is_reported(coord, root):
    coord.write("a.txt", b"recorded", holder="h")
    (root / "a.txt").unlink()
    with pytest.raises(ForeignEdit) as caught:
        coord.write("a.txt", b"new", holder="h")
    assert caught.value.disk_sha256 is None
    assert not (root / "a.txt").exists()


def test_foreign_edit_adopt_policy(root):
    with Coordinator.open(root, on_foreign_edit="adopt") as coord:
        coord.write("a.txt", b"recorded", holder="h")
        (root / "a.txt").write_bytes(b"foreign")
        receipt = coord.write("a.txt", b"new", holder="h")
        assert receipt.version == 3  # 2 is the adopted foreign bytes
        kinds = [(e.kind, e.data.get("sha256")) for e in coord.journal.history("a.txt")
                 if e.kind in ("write", "adopt")]
        assert kinds == [("write", sha(b"recorded")), ("adopt", sha(b"foreign")), ("write", sha(b"new"))]
        (root / "a.txt").write_bytes(b"41")
        assert coord.update("a.txt", lambda old: str(int(old) + 1), holder="h").version == 5
        assert (root / "a.txt").read_bytes() == b"42"


def test_foreign_edit_adopt_per_write(coord, root):
    coord.write("a.txt", b"recorded", holder="h")
    (root / "a.txt").write_bytes(b"foreign")
    assert coord.write("a.txt", b"new", holder="h", on_foreign_edit="adopt").version == 3


def test_adopt_accepts_the_bytes_on_disk(coord, root):
    coord.write("a.txt", b"recorded", holder="h")
    (root / "a.txt").write_bytes(b"foreign")
    info = coord.adopt("a.txt", holder="reviewer")
    assert (info.version, info.sha256, info.size, info.writer) == (2, sha(b"foreign"), 7, "reviewer")
    snap = coord.read("a.txt")
    assert not snap.foreign_edit and snap.version == 2
    assert coord.write("a.txt", b"next", holder="h", expect_version=2).version == 3


# -- delete ---------------------------------------------------------------------------------


def test_delete_is_a_new_version(coord, root):
    coord.write("a.txt", b"x", holder="h")
    receipt = coord.delete("a.txt", holder="h")
    assert (receipt.version, receipt.size, receipt.sha256) == (2, 0, EMPTY)
    assert not (root / "a.txt").exists()
    assert coord.version("a.txt").sha256 is None
    snap = coord.read("a.txt")
    assert (snap.exists, snap.version, snap.foreign_edit) == (False, 2, False)
    assert coord.journal.count(kind="delete", key="a.txt") == 1
    # a file recreated around the layer after a delete is a foreign edit
    (root / "a.txt").write_bytes(b"sneaky")
    with pytest.raises(ForeignEdit):
        coord.write("a.txt", b"y", holder="h")
    (root / "a.txt").unlink()
    assert coord.write("a.txt", b"y", holder="h", expect_version=2).version == 3


def test_delete_with_a_stale_lease_is_refused(coord, root, clock):
    coord.write("a.txt", b"x", holder="h")
    lease = coord.acquire("a.txt", "alice", ttl=1)
    clock.advance(2)
    with pytest.raises(LeaseLost):
        coord.delete("a.txt", lease=lease)
    assert (root / "a.txt").read_bytes() == b"x" and coord.version("a.txt").version == 1


# -- recovery of interrupted writes ---------------------------------------------------------


def fabricate_intent(coord: Coordinator, key: str, new: bytes, pid: int, pid_start: str = "1"):
    """Record an intent as a writer with ``pid`` would have, and its half-written temp file."""
    target = os.path.join(coord.root, key)
    request = WriteRequest(key=key, holder="crashed", new_sha256=sha(new), size=len(new),
                           temp_path=temp_path_for(target), host=recovery.HOST, pid=pid,
                           pid_start=pid_start, ttl=30)
    intent = coord.backend.begin_write(request)
    with open(intent.temp_path, "wb") as handle:
        handle.write(new[: len(new) // 2])
    return intent


def test_recovery_rolls_forward_a_dead_writers_renamed_bytes(root):
    with Coordinator.open(root) as coord:
        coord.write("a.txt", b"old", holder="h")
        intent = fabricate_intent(coord, "a.txt", b"new bytes", dead_pid())
        (root / "a.txt").write_bytes(b"new bytes")  # the rename happened; the commit did not
    with Coordinator.open(root) as coord:
        info = coord.version("a.txt")
        assert (info.version, info.sha256) == (2, sha(b"new bytes"))
        assert coord.backend.get_intent("a.txt") is None and not temp_files(root)
        assert coord.backend.get_lease("a.txt") is None  # the write's own lease is released
        last = coord.journal.history("a.txt")[-1]
        assert last.kind == "recover.forward" and last.data["intent"] == intent.intent_id
        assert coord.read("a.txt").data == b"new bytes" and not coord.read("a.txt").foreign_edit
        assert coord.write("a.txt", b"after", holder="h").version == 3
        coord.journal.verify()


def test_recovery_rolls_back_when_the_rename_never_happened(root):
    with Coordinator.open(root) as coord:
        coord.write("a.txt", b"old", holder="h")
        fabricate_intent(coord, "a.txt", b"new bytes", dead_pid())
    with Coordinator.open(root) as coord:
        info = coord.version("a.txt")
        assert (info.version, info.sha256) == (1, sha(b"old"))
        assert (root / "a.txt").read_bytes() == b"old"
        assert coord.journal.history("a.txt")[-1].kind == "recover.back"
        assert not temp_files(root) and coord.backend.get_intent("a.txt") is None


def test_a_later_writer_recovers_a_dead_writers_intent(coord, root):
    coord.write("a.txt", b"old", holder="h")
    fabricate_intent(coord, "a.txt", b"new bytes", dead_pid())
    assert coord.write("a.txt", b"next", holder="h2").version == 2
    assert coord.journal.count(kind="recover.back", key="a.txt") == 1
    assert not temp_files(root)


def test_an_intent_of_a_recycled_pid_is_recovered(coord, root):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        real_start = recovery.process_start(sleeper.pid)
        assert real_start
        live = fabricate_intent(coord, "a.txt", b"new", sleeper.pid, pid_start=real_start)
        assert not recovery.writer_is_dead(coord.backend, live)
        recycled = dataclasses.replace(live, pid_start="12345")
        assert recovery.writer_is_dead(coord.backend, recycled)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert recovery.writer_is_dead(coord.backend, live)


@pytest.mark.timeout(30)
def test_a_live_writers_intent_blocks_other_writes(coord, root):
    coord.write("a.txt", b"old", holder="h")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fabricate_intent(coord, "a.txt", b"new", sleeper.pid, pid_start=recovery.process_start(sleeper.pid))
        assert coord.recover() == []
        with pytest.raises(LeaseHeld) as caught:
            coord.write("a.txt", b"other", holder="h2")
        assert caught.value.holder == "crashed"  # the in-flight write still holds its lease
        assert (root / "a.txt").read_bytes() == b"old"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert [r.rolled_forward for r in coord.recover()] == [False]
    assert coord.write("a.txt", b"other", holder="h2").version == 2


def _read_between_rename_and_commit(coord, other, hold: float):
    """Write b"new" to a.txt with ``coord``; between its rename and its commit, read a.txt with
    ``other`` in a thread and hold the commit back ``hold`` seconds (or until the read returns).
    Asserts the read did not return before the commit; returns (its snapshot, the receipt)."""
    seen = []

    def read_in_the_window(step: str) -> None:
        reader = threading.Thread(target=lambda: seen.append(other.read("a.txt")))
        reader.start()
        reader.join(hold)
        seen.append("commit")

    with faults.inject("commit", read_in_the_window):
        receipt = coord.write("a.txt", b"new", holder="h")
    wait_for(lambda: len(seen) == 2)
    assert seen[0] == "commit", "the reader returned before the write committed"
    return seen[1], receipt


@pytest.mark.parametrize("first", [True, False], ids=["first-write", "later-write"])
def test_a_read_never_pairs_uncommitted_bytes_with_a_version(coord, root, first):
    """A reader that looks between another write's rename and its commit waits for the commit
    rather than return the new bytes under the old version (also for the very first write)."""
    if not first:
        coord.write("a.txt", b"old", holder="h")
    with Coordinator.open(root) as other:
        snap, receipt = _read_between_rename_and_commit(coord, other, hold=0.3)
    assert (snap.data, snap.version, snap.foreign_edit) == (b"new", receipt.version, False)


def test_a_reader_held_up_by_the_backend_still_waits_for_the_write_in_flight(coord, root, monkeypatch):
    """The reader's patience with a write between rename and commit counts only time the backend
    answers: a reader whose own first call waited out an outage (longer than its patience) must
    not then call the write's new bytes a foreign edit the moment it looks."""
    monkeypatch.setattr(coordinator_module, "READ_PATIENCE", 0.5)
    coord.write("a.txt", b"old", holder="h")
    with Coordinator.open(root) as other:
        stalled = []
        real_get_version = other.backend.get_version

        def get_version_after_an_outage(key):
            if not stalled:
                stalled.append(True)
                time.sleep(1.0)  # twice the patience: the backend did not answer
            return real_get_version(key)

        monkeypatch.setattr(other.backend, "get_version", get_version_after_an_outage)
        snap, receipt = _read_between_rename_and_commit(coord, other, hold=1.3)  # the outage, then patience
    assert (snap.data, snap.version, snap.foreign_edit) == (b"new", receipt.version, False)


def test_an_adopt_waits_for_a_write_in_flight_instead_of_taking_its_version_number(coord, root):
    """adopt() in the window between another write's rename and its commit used to record the
    new bytes as an "adopt" version, and the write's commit then took the same number again."""
    coord.write("a.txt", b"old", holder="h")
    other = Coordinator.open(root)
    seen: list = []

    def adopt_in_the_window(step: str) -> None:
        adopter = threading.Thread(target=lambda: seen.append(other.adopt("a.txt")))
        adopter.start()
        adopter.join(0.3)  # the adopter is now waiting for this write to resolve
        seen.append("commit")

    try:
        with faults.inject("commit", adopt_in_the_window):
            receipt = coord.write("a.txt", b"new", holder="h")
        wait_for(lambda: len(seen) == 2)
    finally:
        other.close()
    assert seen[0] == "commit", "the adopt returned before the write committed"
    assert receipt.version == 2 and seen[1].version == 3
    versions = [e.data["version"] for e in coord.journal.history("a.txt") if e.kind in ("write", "adopt")]
    assert versions == [1, 2, 3], "a version number was recorded twice"
    assert coord.journal.verify() and coord.read("a.txt").version == 3


def test_an_adopt_meeting_a_write_that_stays_in_flight_is_refused_with_lease_held(coord, root):
    coord.write("a.txt", b"old", holder="h")
    other = Coordinator.open(root)
    refused: list = []

    def adopt_in_the_window(step: str) -> None:
        try:
            other.adopt("a.txt")
        except LeaseHeld as busy:
            refused.append(busy)

    try:
        with faults.inject("commit", adopt_in_the_window):  # the adopt runs inside the commit step
            coord.write("a.txt", b"new", holder="h")
    finally:
        other.close()
    assert len(refused) == 1 and "in flight" in str(refused[0]) and refused[0].holder == "h"
    assert [e.kind for e in coord.journal.history("a.txt")][-1] == "write"
    assert coord.version("a.txt").version == 2
