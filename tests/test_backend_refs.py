"""The Backend protocol's refs (named pointers with a fenced compare-and-set), written against the
protocol only, so the contract fixture runs every test on each backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent_coherence import Coordinator, LeaseLost, VersionConflict
from conftest import FORK, FakeClock

pytestmark = pytest.mark.contract


def test_compare_and_set_creates_moves_and_refuses(coord: Coordinator) -> None:
    backend = coord.backend
    assert backend.get_ref("heads/t") is None
    first = backend.set_ref("heads/t", "c1", expect=None, holder="run-a", kind="test.move", data={"step": 1})
    assert (first.name, first.value, first.version, first.holder, first.fence) == ("heads/t", "c1", 1, "run-a", 0)
    with pytest.raises(VersionConflict) as conflict:
        backend.set_ref("heads/t", "c2", expect=None, holder="run-b", kind="test.move", data={})
    assert (conflict.value.key, conflict.value.expected, conflict.value.actual) == ("heads/t", None, "c1")
    with pytest.raises(VersionConflict):
        backend.set_ref("heads/t", "c2", expect="c0", holder="run-b", kind="test.move", data={})
    assert backend.get_ref("heads/t") == first  # unchanged by the refusals
    second = backend.set_ref("heads/t", "c2", expect="c1", holder="run-a", kind="test.move", data={"step": 2})
    assert (second.value, second.version) == ("c2", 2)
    forced = backend.set_ref("heads/t", "c9", expect="anything", force=True, holder="admin", kind="test.reset", data={})
    assert (forced.value, forced.version) == ("c9", 3)
    entries = [e for e in coord.journal.history("heads/t")]
    assert [e.kind for e in entries] == ["test.move", "conflict.ref", "conflict.ref", "test.move", "test.reset"]
    assert entries[3].data == {"step": 2, "value": "c2", "previous": "c1", "version": 2, "fence": None}
    coord.journal.verify()


def test_the_fence_is_checked_in_the_same_transaction(coord: Coordinator, clock: FakeClock) -> None:
    backend = coord.backend
    lease = coord.acquire("thread/t", "run-a", ttl=10)
    moved = backend.set_ref("heads/t", "c1", expect=None, holder="run-a", kind="test.move", data={},
                            lease_key="thread/t", fence=lease.fence)
    assert moved.fence == lease.fence
    with pytest.raises(LeaseLost):  # not the live fence
        backend.set_ref("heads/t", "c2", expect="c1", holder="run-a", kind="test.move", data={},
                        lease_key="thread/t", fence=lease.fence + 1)
    clock.advance(11)  # the lease expires; another run takes the thread
    coord.acquire("thread/t", "run-b", ttl=10)
    with pytest.raises(LeaseLost):
        backend.set_ref("heads/t", "c2", expect="c1", holder="run-a", kind="test.move", data={},
                        lease_key="thread/t", fence=lease.fence)
    assert backend.get_ref("heads/t") == moved


def test_a_refused_fenced_create_creates_nothing(coord: Coordinator, clock: FakeClock) -> None:
    backend = coord.backend
    lease = coord.acquire("thread/t", "run-a", ttl=10)
    with pytest.raises(LeaseLost):
        backend.set_ref("heads/t", "c1", expect=None, holder="run-a", kind="test.move", data={},
                        lease_key="thread/t", fence=lease.fence + 1)
    assert backend.get_ref("heads/t") is None
    backend.set_ref("heads/t", "c1", expect=None, holder="run-a", kind="test.move", data={},
                    lease_key="thread/t", fence=lease.fence)
    with pytest.raises(VersionConflict):  # a live fence does not make a stale compare pass
        backend.set_ref("heads/t", "c2", expect=None, holder="run-a", kind="test.move", data={},
                        lease_key="thread/t", fence=lease.fence)
    assert [e.kind for e in coord.journal.history("heads/t")] == ["test.move", "conflict.ref"]


def test_a_fenced_read_checks_the_lease_then_reads_the_ref(coord: Coordinator, clock: FakeClock) -> None:
    backend = coord.backend
    lease = coord.acquire("thread/t", "run-a", ttl=10)
    assert backend.get_fenced_ref("heads/t", lease_key="thread/t", holder="run-a", fence=lease.fence) is None
    moved = backend.set_ref("heads/t", "c1", expect=None, holder="run-a", kind="test.move", data={})
    assert backend.get_fenced_ref("heads/t", lease_key="thread/t", holder="run-a", fence=lease.fence) == moved
    with pytest.raises(LeaseLost):
        backend.get_fenced_ref("heads/t", lease_key="thread/t", holder="run-b", fence=lease.fence)
    clock.advance(11)
    with pytest.raises(LeaseLost):  # expired
        backend.get_fenced_ref("heads/t", lease_key="thread/t", holder="run-a", fence=lease.fence)


def test_seal_and_release_resets_the_ref_and_gives_the_lease_back_in_one_commit(coord: Coordinator) -> None:
    backend = coord.backend
    lease = coord.acquire("thread/t", "run-a", ttl=10)
    backend.set_ref("heads/t", "c1", expect=None, holder="run-a", kind="test.move", data={},
                    lease_key="thread/t", fence=lease.fence, durable=False)
    assert backend.seal_ref_and_release("heads/t", holder="run-a", kind="test.end", data={"run": 1},
                                        lease_key="thread/t", fence=lease.fence) is True
    sealed = backend.get_ref("heads/t")
    assert sealed is not None and (sealed.value, sealed.version) == ("c1", 2)
    assert backend.get_lease("thread/t") is None
    end, release = coord.journal.history("heads/t")[-1], coord.journal.history("thread/t")[-1]
    assert (end.kind, end.data) == ("test.end", {"run": 1, "value": "c1", "previous": "c1", "version": 2,
                                                 "fence": None})
    assert (release.kind, release.key, release.data) == ("lease.release", "thread/t", {"fence": lease.fence})
    # the lease already gone: the ref is re-set all the same, no release is journaled
    assert backend.seal_ref_and_release("heads/t", holder="run-a", kind="test.end", data={},
                                        lease_key="thread/t", fence=lease.fence) is False
    assert coord.journal.count(kind="lease.release") == 1 and coord.journal.count(kind="test.end") == 2
    again = coord.acquire("thread/u", "run-b", ttl=10)  # no ref: only the release
    assert backend.seal_ref_and_release("heads/u", holder="run-b", kind="test.end", data={},
                                        lease_key="thread/u", fence=again.fence) is True
    assert backend.get_ref("heads/u") is None and coord.journal.count(kind="test.end") == 2
    coord.journal.verify()


def test_prefixes_list_and_delete_exactly_their_names(coord: Coordinator) -> None:
    backend = coord.backend
    for name in ("h/a/", "h/a/sub", "h/ab/", "h/b", "h/a\U0010ffff", "other"):
        backend.set_ref(name, "v", expect=None, holder="x", kind="test.move", data={})
    assert [r.name for r in backend.list_refs("h/a/")] == ["h/a/", "h/a/sub"]
    assert [r.name for r in backend.list_refs("h/a")] == ["h/a/", "h/a/sub", "h/ab/", "h/a\U0010ffff"]
    assert len(backend.list_refs("")) == 6
    assert len(backend.list_refs("h/", limit=2)) == 2
    assert backend.delete_ref("h/a/", holder="x", kind="test.delete", expect="w") is False  # not its value
    assert [r.name for r in backend.list_refs("h/a/")] == ["h/a/", "h/a/sub"]
    assert backend.delete_ref("h/a/", holder="x", kind="test.delete", expect="v") is True
    assert backend.delete_ref("h/a/", holder="x", kind="test.delete") is False
    assert [r.name for r in backend.list_refs("h/a/")] == ["h/a/sub"]
    assert backend.delete_refs("h/", holder="x", kind="test.delete") == 4
    assert [r.name for r in backend.list_refs("")] == ["other"]
    assert coord.journal.count(kind="test.delete") == 5


def bump(root: str, count: int, barrier: Any) -> None:
    coord = Coordinator.open(root)
    barrier.wait()
    done = 0
    while done < count:
        current = coord.backend.get_ref("counter")
        value = current.value if current else None
        try:
            coord.backend.set_ref("counter", str(int(value or 0) + 1), expect=value, holder=f"p{id(coord)}",
                                  kind="test.bump", data={}, durable=False)
            done += 1
        except VersionConflict:
            continue
    coord.close()


def test_compare_and_set_is_atomic_across_processes(root: Path, coord: Coordinator) -> None:
    coord.close()
    processes, each = 3, 40
    barrier = FORK.Barrier(processes)
    procs = [FORK.Process(target=bump, args=(str(root), each, barrier)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    final = coord.backend.get_ref("counter")
    assert final is not None and final.value == str(processes * each) and final.version == processes * each
    assert coord.journal.count(kind="test.bump") == processes * each
