"""Closing a coordinator ends the background renewal of its leases.

Before, a lease renewed in the background (``keep_alive``, ``lease(auto_renew=True)``, the
LangGraph adapter's run leases) went on being renewed by its daemon thread after the coordinator
was closed, for the life of the process: every other holder was locked out of the key although
nothing held it any more. Now the lease expires on its ttl once renewal stops, and the closed
coordinator still works for a caller that uses it again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_coherence import Coordinator, LeaseHeld
from agent_coherence.adapters.langgraph.renewal import renewer_for

pytestmark = pytest.mark.contract

TTL = 0.3  # renewed every 0.1 s while renewal runs
WAIT = 5.0  # far longer than the ttl: without the fix the lease stays held all along


def taken_by_another(root: Path, key: str) -> bool:
    """Whether another coordinator gets the lease on ``key`` within ``WAIT`` seconds."""
    with Coordinator.open(root) as other:
        lease = other.acquire(key, holder="other", ttl=5, wait=WAIT)
        other.release(lease)
        return True


def test_keep_alive_stops_at_close_and_the_lease_expires(root: Path) -> None:
    coord = Coordinator.open(root)
    keeper = coord.keep_alive(coord.acquire("kept.md", holder="a", ttl=TTL))
    coord.close()
    try:
        assert taken_by_another(root, "kept.md")
        assert keeper.lost is None  # not lost: no longer renewed
    finally:
        keeper.stop()
    assert coord.write("after-close.md", b"still usable", holder="a").version == 1
    coord.close()


def test_an_auto_renewed_lease_block_stops_renewing_at_close(root: Path) -> None:
    coord = Coordinator.open(root)
    with coord.lease("block.md", holder="a", ttl=TTL, auto_renew=True):
        coord.close()
        assert taken_by_another(root, "block.md")
    coord.close()


def test_the_langgraph_renewer_drops_a_closed_coordinators_leases(root: Path) -> None:
    coord = Coordinator.open(root)
    renewer = renewer_for(coord)
    renewer.hold(coord.acquire("run.md", holder="run", ttl=TTL))
    coord.close()
    assert taken_by_another(root, "run.md")
    # Leases given after the close are renewed again: the coordinator was reopened by its use.
    holding = renewer.hold(coord.acquire("again.md", holder="run", ttl=TTL))
    try:
        with Coordinator.open(root) as other:
            with pytest.raises(LeaseHeld):
                other.acquire("again.md", holder="other", ttl=5, wait=3 * TTL)
    finally:
        renewer.drop(holding)
        coord.close()
