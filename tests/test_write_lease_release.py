"""A write's own lease (``write(holder=)``) is given back at its commit. The embedded backend keeps
the holder's name on the released row (so the holder index is not rewritten twice per write) and
marks it released; every reader must still find the key free, and the journal must not call the
release an expiry. A contract test: the same holds on PostgreSQL, which clears the holder."""

from __future__ import annotations

import pytest

from agent_coherence import Coordinator, LeaseHeld

pytestmark = pytest.mark.contract


def test_a_released_write_lease_is_free_to_every_reader(coord: Coordinator) -> None:
    first = coord.write("a.txt", b"1", holder="w")
    assert coord.backend.get_lease("a.txt") is None
    assert coord.leases() == [] and coord.leases("w") == []
    assert coord.backend.release_holder("w") == []

    again = coord.write("a.txt", b"2", holder="w")  # the same holder takes the row again
    assert again.fence == first.fence + 1 and again.version == first.version + 1

    lease = coord.acquire("a.txt", "x", ttl=30)  # another holder: free at once, a fence above
    assert lease.fence == again.fence + 1
    taken = coord.journal.tail(1)[0]
    assert taken.kind == "lease.acquire" and "expired_holder" not in taken.data
    with pytest.raises(LeaseHeld):
        coord.write("a.txt", b"3", holder="w")
    coord.release(lease)


def test_an_expired_lease_is_still_reported_as_expired(coord: Coordinator, clock) -> None:
    coord.write("a.txt", b"1", holder="w")
    coord.acquire("a.txt", "w", ttl=5)  # held by w, then left to expire
    clock.advance(10)
    coord.write("a.txt", b"2", holder="w")  # w's write retakes its own expired row
    coord.acquire("a.txt", "w", ttl=5)
    clock.advance(10)
    taken = coord.acquire("a.txt", "x", ttl=5)
    entry = coord.journal.tail(1)[0]
    assert entry.kind == "lease.acquire" and entry.data["expired_holder"] == "w"
    assert taken.holder == "x"
