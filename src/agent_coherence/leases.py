"""Lease helpers on top of the backend: waiting for a lease, the ``with`` form, and renewal.

A lease is only a promise until the commit checks its fence. Renewal keeps the promise alive for
long work; if renewal fails the holder learns it from ``LeaseLost`` on its next write (and from
the optional ``on_lost`` callback), never by silently writing on.
"""

from __future__ import annotations

import random
import threading
import time
from typing import TYPE_CHECKING, Callable

from .errors import BackendUnavailable, LeaseHeld, LeaseLost

if TYPE_CHECKING:
    from .backends.base import Backend
    from .models import Lease


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
    from .models import Lease

    started = time.monotonic()
    deadline = started + wait
    delay = 0.005
    while True:
        last = time.monotonic() >= deadline  # only the try that gives up journals the conflict
        try:
            record = backend.acquire_lease(key, holder, ttl, record_conflict=last,
                                           waited=time.monotonic() - started if wait else 0.0)
            return Lease.from_record(record, ttl)
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
    taken over. Transient backend errors are retried at the next tick.
    """

    def __init__(
        self, backend: "Backend", lease: "Lease", on_lost: Callable[[LeaseLost], None] | None = None
    ) -> None:
        self._backend = backend
        self.lease = lease
        self._on_lost = on_lost
        self._stop = threading.Event()
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
        record = self._backend.renew_lease(lease.key, lease.holder, lease.fence, lease.ttl)
        self.lease = lease.model_copy(update={"expires_at": record.expires_at})

    def _run(self) -> None:
        interval = max(0.01, self.lease.ttl / 3)
        while not self._stop.wait(interval):
            try:
                self.renew_now()
            except LeaseLost as error:
                self.lost = error
                if self._on_lost is not None:
                    self._on_lost(error)
                return
            except BackendUnavailable:
                continue


class LeaseContext:
    """``with coord.lease(key, holder=...) as lease:`` acquires on entry and releases on exit.

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
        self.lease = acquire(self._backend, *self._args)
        if self._auto_renew:
            self.keeper = LeaseKeeper(self._backend, self.lease, self._on_lost).start()
        return self.lease

    def __exit__(self, *exc_info: object) -> None:
        if self.keeper is not None:
            self.keeper.stop()
        if self.lease is not None:
            self._backend.release_lease(self.lease.key, self.lease.holder, self.lease.fence)
