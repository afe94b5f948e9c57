"""A renewal that fails with an unexpected error is retried; the lease stays held.

Before, only ``LeaseLost`` and ``BackendUnavailable`` were caught by the background renewers: any
other error of one renewal (a disk fault, a driver error) ended the renewal thread. For
``keep_alive`` the lease then lapsed at its ttl with ``lost`` never set; for the LangGraph
adapter's one renewal thread per process it was worse: the thread was gone for good, and every
later long run of that process lost its thread lease at its ttl. The failure here is one renewal
of the real backend failing with EIO, as a disk fault would.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from agent_coherence import Coordinator, LeaseHeld
from agent_coherence.adapters.langgraph.renewal import Renewer

pytestmark = pytest.mark.contract

TTL = 0.3  # renewed every 0.1 s


def fail_one_renewal(coord: Coordinator) -> list[int]:
    """Make the next renewal of ``coord``'s backend raise EIO; the ones after it work. Returns
    the count of failed renewals (one, once it has happened)."""
    backend: Any = coord.backend
    real = backend.renew_lease
    failed: list[int] = []

    def renew_lease(*args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(1)
            raise OSError(errno.EIO, "Input/output error")
        return real(*args, **kwargs)

    backend.renew_lease = renew_lease
    return failed


def still_held(root: Path, key: str) -> bool:
    """Whether ``key`` stays held through five ttls of another holder trying to take it."""
    with Coordinator.open(root) as other:
        try:
            other.release(other.acquire(key, holder="other", ttl=5, wait=5 * TTL))
        except LeaseHeld:
            return True
        return False


def test_keep_alive_retries_after_an_unexpected_error(root: Path) -> None:
    with Coordinator.open(root) as coord:
        failed = fail_one_renewal(coord)
        keeper = coord.keep_alive(coord.acquire("kept.md", holder="a", ttl=TTL))
        try:
            assert still_held(root, "kept.md")
            assert failed == [1] and keeper.lost is None
        finally:
            keeper.stop()


def test_the_langgraph_renewer_keeps_renewing_after_an_unexpected_error(root: Path) -> None:
    with Coordinator.open(root) as coord:
        failed = fail_one_renewal(coord)
        renewer = Renewer(coord.backend)
        first = renewer.hold(coord.acquire("run.md", holder="run", ttl=TTL))
        try:
            assert still_held(root, "run.md")
            assert failed == [1] and first.lost is None
            later = renewer.hold(coord.acquire("later.md", holder="run", ttl=TTL))  # the thread still runs
            try:
                assert still_held(root, "later.md")
            finally:
                renewer.drop(later)
        finally:
            renewer.drop(first)
