"""Renewal of many run leases from one daemon thread.

A run holds its thread lease for as long as it runs, so the lease is renewed every ttl/3. Most
graph runs are short: starting a renewal thread per run (``Coordinator.keep_alive``) would cost
more than the run's coordination itself. One thread per process renews every lease it is given
when it falls due. A renewal that finds the lease lost records ``LeaseLost`` on the holding; the
run learns of it from the fence checks of its next put, put_writes or hooked node.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from ...errors import BackendUnavailable, LeaseLost
from ...logs import WARNING, log

if TYPE_CHECKING:
    from ...backends.base import Backend
    from ...coordinator import Coordinator
    from ...models import Lease

_RENEWERS: "weakref.WeakKeyDictionary[Coordinator, Renewer]" = weakref.WeakKeyDictionary()
_RENEWERS_LOCK = threading.Lock()


class Holding:
    """One lease being renewed: the lease as of its last renewal, why renewal stopped, and the
    backend's ``closes`` when it was given (renewal ends when the coordinator is closed)."""

    __slots__ = ("lease", "due", "lost", "closes")

    def __init__(self, lease: "Lease", closes: int) -> None:
        self.lease = lease
        self.due = time.monotonic() + lease.ttl / 3
        self.lost: LeaseLost | None = None
        self.closes = closes


class Renewer:
    """Renews the leases it holds, each every ttl/3, on one daemon thread (restarted after fork),
    until the coordinator is closed."""

    def __init__(self, backend: "Backend") -> None:
        self._backend = backend
        self._wake = threading.Condition()
        self._held: set[Holding] = set()
        self._pid = -1
        self._wakes_at = 0.0  # when the renewal thread wakes next on its own (monotonic clock)

    def hold(self, lease: "Lease") -> Holding:
        holding = Holding(lease, self._backend.closes)
        with self._wake:
            self._held.add(holding)
            if self._pid != os.getpid():  # first use in this process (a fork leaves no thread)
                self._pid = os.getpid()
                self._wakes_at = 0.0
                try:
                    threading.Thread(target=self._run, name="langgraph-lease-renewal", daemon=True).start()
                except BaseException:
                    # Interrupted before the thread started (or just after: it then stops at its
                    # next pass, no longer seeing its pid): the next hold starts one. Left set,
                    # no renewal thread would ever run in this process.
                    self._pid = -1
                    raise
            if holding.due < self._wakes_at or self._wakes_at == 0.0:
                # Woken only when this lease falls due before the thread would wake anyway: a run
                # then costs no thread switch when every lease has the same ttl.
                self._wake.notify()
        return holding

    def drop(self, holding: Holding) -> None:
        with self._wake:
            self._held.discard(holding)

    def drop_holder(self, holder: str) -> None:
        """Stop renewing ``holder``'s leases (a holding ``hold`` took in but never returned)."""
        with self._wake:
            self._held = {held for held in self._held if held.lease.holder != holder}

    def _run(self) -> None:
        pid = os.getpid()
        while pid == self._pid:
            with self._wake:
                now = time.monotonic()
                due = [h for h in self._held if h.due <= now]
                if not due:
                    nearest = min((h.due for h in self._held), default=now + 60.0)
                    self._wakes_at = now + max(0.005, nearest - now)
                    self._wake.wait(self._wakes_at - now)
                    self._wakes_at = 0.0  # awake: a lease given now is seen at the next pass
                    continue
            for holding in due:
                self._renew(holding)

    def _renew(self, holding: Holding) -> None:
        if holding.closes != self._backend.closes:  # closed since: the lease expires on its ttl
            self.drop(holding)
            return
        lease = holding.lease
        try:
            renewed = self._backend.renew_lease(lease.key, lease.holder, lease.fence, lease.ttl)
        except LeaseLost as lost:
            holding.lost = lost
            self.drop(holding)
            return
        except Exception as error:
            # Retried soon, whatever it is: this one thread renews every run of the process, and
            # if it ended, every later long run would lose its thread lease at its ttl.
            if not isinstance(error, BackendUnavailable):
                log("langgraph", WARNING, "renewing the lease of %s failed (%r): retrying", lease.key, error)
            holding.due = time.monotonic() + min(1.0, lease.ttl / 10)
            return
        holding.lease = renewed
        holding.due = time.monotonic() + lease.ttl / 3


def renewer_for(coordinator: "Coordinator") -> Renewer:
    """The one Renewer of ``coordinator`` (created on first use)."""
    with _RENEWERS_LOCK:
        renewer = _RENEWERS.get(coordinator)
        if renewer is None:
            renewer = _RENEWERS[coordinator] = Renewer(coordinator.backend)
        return renewer
