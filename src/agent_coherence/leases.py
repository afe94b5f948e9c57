"""Lease helpers on top of the backend: the keys of leases, waiting for a lease, the ``with``
form, and renewal.

A lease is only a promise until the commit checks its fence. Renewal keeps the promise alive for
long work; if renewal fails the holder learns it from ``LeaseLost`` on its next write (and from
the optional ``on_lost`` callback), never by silently writing on. The ``Lease`` handed out is the
backend's own record (no copy is made of it).
"""

from __future__ import annotations

import random
import threading
import time
from typing import TYPE_CHECKING, Callable

from .errors import BackendUnavailable, LeaseHeld, LeaseLost
from .logs import WARNING, log
from .paths import normalize_key

if TYPE_CHECKING:
    from .backends.base import Backend
    from .models import Lease


class LeaseKeys:
    """The canonical key of each lease name, remembered (for at most ``size`` names, then
    forgotten all at once) so that taking a lease does not resolve the same path every time.

    Resolving a file key (confining it to the root through the symlinks on its path) costs more
    than the lease itself. Remembering the answer is safe because a lease only names a key:
    nothing is written under it without the write resolving the path again, at write time, and
    walking it from the root with ``O_NOFOLLOW`` (see :mod:`rooted`), so a directory swapped for a
    symlink after the lease was taken is refused by the write, never followed. What remembering
    changes: a spelling whose meaning changed since (a directory on its path replaced by a
    symlink within the root) keeps the key it first resolved to, and a write that names the file
    by the new path then refuses that lease as one for another key. Refused names
    (PathOutsideRoot) are not remembered, and only ``str`` spellings are.
    """

    def __init__(self, root: str, size: int = 1024) -> None:
        self.root = root
        self.size = size
        self._known: dict[str, str] = {}

    def __call__(self, key: object) -> str:
        if type(key) is not str:
            return normalize_key(self.root, key)
        known = self._known.get(key)
        if known is None:
            known = normalize_key(self.root, key)
            if len(self._known) >= self.size:
                self._known.clear()
            self._known[key] = known
        return known


def acquire(
    backend: "Backend", key: str, holder: str, ttl: float, wait: float,
    unblock: Callable[[str], bool] | None = None,
) -> "Lease":
    """Take the lease on ``key``, polling with jittered backoff for up to ``wait`` seconds.

    ``unblock(key)`` is asked, when the lease is held, whether it could free it (a dead writer's
    write lease is freed by recovering its intent); if it did, the lease is tried again at once.
    One call journals at most one ``conflict.lease``: the refusal of its last try, once ``wait``
    has run out (the tries before it are not events of their own).
    """
    if not wait:  # one try (again only after ``unblock`` freed the lease), no clock to read
        while True:
            try:
                return backend.acquire_lease(key, holder, ttl)
            except LeaseHeld:
                if unblock is None or not unblock(key):
                    raise
    started = time.monotonic()
    deadline = started + wait
    delay = 0.005
    while True:
        last = time.monotonic() >= deadline  # only the try that gives up journals the conflict
        try:
            return backend.acquire_lease(key, holder, ttl, record_conflict=last,
                                         waited=time.monotonic() - started if wait else 0.0)
        except LeaseHeld as held:
            if unblock is not None and unblock(key):
                continue
            if last:
                raise
            remaining = max(0.0, deadline - time.monotonic())
            until_expiry = max(0.001, held.expires_at - backend.now())
            time.sleep(min(remaining, until_expiry, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, 0.25)


class LeaseKeeper:
    """Renews a lease every ``ttl / 3`` on a daemon thread until stopped or lost.

    ``lost`` is set (and ``on_lost(error)`` called once) when a renewal finds the lease expired or
    taken over. Any other error of a renewal (the backend unreachable, a disk fault) is retried at
    the next tick, and logged on ``agent_coherence.leases`` unless it is BackendUnavailable.
    Renewal ends when the coordinator is closed: the lease then expires on its ttl unless released
    first.
    """

    def __init__(
        self, backend: "Backend", lease: "Lease", on_lost: Callable[[LeaseLost], None] | None = None
    ) -> None:
        self._backend = backend
        self.lease = lease
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._closes = backend.closes
        self.lost: LeaseLost | None = None
        self._thread = threading.Thread(target=self._run, name=f"lease-keeper:{lease.key}", daemon=True)

    def start(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def renew_now(self) -> None:
        """Renew once, on the caller's thread. Raises LeaseLost."""
        lease = self.lease
        self.lease = self._backend.renew_lease(lease.key, lease.holder, lease.fence, lease.ttl)

    def _run(self) -> None:
        interval = max(0.01, self.lease.ttl / 3)
        while not self._stop.wait(interval):
            if self._backend.closes != self._closes:
                return
            try:
                self.renew_now()
            except LeaseLost as error:
                self.lost = error
                if self._on_lost is not None:
                    self._on_lost(error)
                return
            except Exception as error:  # retried at the next tick: a keeper that ended would let the lease lapse
                if not isinstance(error, BackendUnavailable):
                    log("leases", WARNING, "renewing the lease of %s failed (%r): retrying", self.lease.key, error)


# How many ``with coord.lease(...)`` blocks of this process are in each lease, by (backend, key,
# holder, fence). Blocks of one holder and key share one lease (re-entry keeps the fence): only the
# last of them to end releases it, so an inner block, or a thread's block, does not end the lease
# under another block still writing. Per backend object: another coordinator's blocks (or another
# process's) are not counted, and an explicit ``release`` still releases at once.
_blocks: dict[tuple[int, str, str, int], int] = {}
_blocks_lock = threading.Lock()


class LeaseContext:
    """``with coord.lease(key, holder=...) as lease:`` acquires on entry and releases on exit,
    unless another block of this coordinator still holds the same lease (nested blocks of one
    holder and key, or threads sharing a holder name): then the last block to end releases it.

    With ``auto_renew=True`` a LeaseKeeper renews it while the block runs.
    """

    def __init__(
        self, backend: "Backend", key: str, holder: str, ttl: float, wait: float,
        auto_renew: bool, on_lost: Callable[[LeaseLost], None] | None,
        unblock: Callable[[str], bool] | None = None,
    ) -> None:
        self._backend = backend
        self._args = (key, holder, ttl, wait, unblock)
        self._auto_renew = auto_renew
        self._on_lost = on_lost
        self.keeper: LeaseKeeper | None = None
        self.lease: Lease | None = None

    def __enter__(self) -> "Lease":
        lease = acquire(self._backend, *self._args)
        block = (id(self._backend), lease.key, lease.holder, lease.fence)
        with _blocks_lock:
            _blocks[block] = _blocks.get(block, 0) + 1
            self.lease = lease
        if self._auto_renew:
            self.keeper = LeaseKeeper(self._backend, lease, self._on_lost).start()
        return lease

    def __exit__(self, *exc_info: object) -> None:
        if self.keeper is not None:
            self.keeper.stop()
        lease = self.lease
        if lease is None:
            return
        block = (id(self._backend), lease.key, lease.holder, lease.fence)
        with _blocks_lock:
            others = _blocks.pop(block, 1) - 1
            if others:
                _blocks[block] = others
        if not others:
            self._backend.release_lease(lease.key, lease.holder, lease.fence)
