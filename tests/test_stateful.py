"""Lease, version and fence semantics against a simple model (hypothesis stateful testing).

Holders acquire, renew and release leases, write under a lease (live or stale), write with only a
holder name (the lease is taken for the write), write with an expected version, delete, and let
time pass on a controllable clock (the backend's ``now``). After every step the file on disk, the
recorded version and the live lease must equal the model's, and every call must raise LeaseHeld,
LeaseLost or VersionConflict exactly when the model says so.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from agent_coherence import Coordinator, LeaseHeld, LeaseLost, VersionConflict

from conftest import FakeClock, temp_files, use_fake_clock

KEYS = ("plan.md", "notes/todo.md")
HOLDERS = ("alice", "bob", "carol")
TTLS = (1.0, 2.0, 5.0)
STEPS = (0.25, 1.0, 2.5, 6.0)


@dataclass
class KeyModel:
    holder: str | None = None  # None: free (never taken, released, or given back)
    fence: int = 0  # the last fence issued for the key (0: no lease row yet)
    acquired_at: float = 0.0
    expires_at: float = 0.0
    version: int = 0
    data: bytes | None = None  # None: no file
    fences_seen: list[int] = field(default_factory=list)

    def live(self, now: float) -> bool:
        return self.holder is not None and self.expires_at > now

    def lost_facts(self, now: float) -> tuple[str | None, int]:
        return (self.holder if self.live(now) else None), self.fence


class LeaseMachine(RuleBasedStateMachine):
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ac-stateful-")
        self.root = Path(self.dir) / "root"
        self.coord = Coordinator.open(self.root)
        self.clock: FakeClock = use_fake_clock(self.coord)
        self.model = {key: KeyModel() for key in KEYS}
        self.counter = 0

    def teardown(self) -> None:
        try:
            self.coord.journal.verify()
            assert not temp_files(self.root)
        finally:
            self.coord.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def payload(self) -> bytes:
        self.counter += 1
        return f"content {self.counter}\n".encode()

    def issue_fence(self, m: KeyModel) -> int:
        m.fence += 1
        assert all(m.fence > seen for seen in m.fences_seen)
        m.fences_seen.append(m.fence)
        return m.fence

    # -- leases -----------------------------------------------------------------------------

    @rule(target=leases, key=st.sampled_from(KEYS), holder=st.sampled_from(HOLDERS), ttl=st.sampled_from(TTLS))
    def acquire(self, key, holder, ttl):
        m, now = self.model[key], self.clock.t
        if m.live(now) and m.holder != holder:
            with pytest.raises(LeaseHeld) as caught:
                self.coord.acquire(key, holder, ttl=ttl)
            assert (caught.value.holder, caught.value.expires_at) == (m.holder, m.expires_at)
            return None
        lease = self.coord.acquire(key, holder, ttl=ttl)
        if m.live(now):  # re-entry: same fence, never shortened
            m.expires_at = max(m.expires_at, now + ttl)
        else:
            self.issue_fence(m)
            m.holder, m.acquired_at, m.expires_at = holder, now, now + ttl
        assert (lease.holder, lease.fence, lease.expires_at) == (holder, m.fence, m.expires_at)
        return lease

    @rule(lease=leases)
    def release(self, lease):
        if lease is None:
            return
        m, now = self.model[lease.key], self.clock.t
        expected = m.holder == lease.holder and m.fence == lease.fence
        assert self.coord.release(lease) is expected
        if expected:
            m.holder, m.expires_at = None, now

    @rule(target=leases, lease=leases)
    def renew(self, lease):
        if lease is None:
            return None
        m, now = self.model[lease.key], self.clock.t
        if not (m.live(now) and (m.holder, m.fence) == (lease.holder, lease.fence)):
            with pytest.raises(LeaseLost) as caught:
                self.coord.renew(lease)
            assert (caught.value.current_holder, caught.value.current_fence) == m.lost_facts(now)
            return None
        renewed = self.coord.renew(lease)
        m.expires_at = now + lease.ttl
        assert (renewed.fence, renewed.expires_at) == (m.fence, m.expires_at)
        return renewed

    @rule(step=st.sampled_from(STEPS))
    def advance_time(self, step):
        self.clock.advance(step)

    # -- writes -----------------------------------------------------------------------------

    def expect_version_for(self, m: KeyModel, choice: str) -> int | None:
        return {"none": None, "current": m.version, "stale": m.version - 1, "ahead": m.version + 1}[choice]

    def committed(self, m: KeyModel, receipt, data: bytes | None, fence: int) -> None:
        m.version += 1
        m.data = data
        assert (receipt.version, receipt.fence) == (m.version, fence)
        assert receipt.sha256 == hashlib.sha256(data or b"").hexdigest()

    @rule(lease=leases, choice=st.sampled_from(["none", "none", "current", "stale", "ahead"]),
          delete=st.booleans())
    def write_with_lease(self, lease, choice, delete):
        """A live lease writes; an expired or taken-over (stale) one gets LeaseLost."""
        if lease is None:
            return
        m, now = self.model[lease.key], self.clock.t
        expect = self.expect_version_for(m, choice)
        data = None if delete else self.payload()
        call = (lambda: self.coord.delete(lease.key, lease=lease, expect_version=expect)) if delete else (
            lambda: self.coord.write(lease.key, data, lease=lease, expect_version=expect))
        if expect is not None and expect < 0:  # "stale" before the first version: refused as input
            with pytest.raises(ValueError):
                call()
            return
        if not (m.live(now) and (m.holder, m.fence) == (lease.holder, lease.fence)):
            with pytest.raises(LeaseLost) as caught:
                call()
            assert (caught.value.holder, caught.value.fence) == (lease.holder, lease.fence)
            assert (caught.value.current_holder, caught.value.current_fence) == m.lost_facts(now)
            return
        if expect is not None and expect != m.version:
            with pytest.raises(VersionConflict) as caught:
                call()
            assert (caught.value.expected, caught.value.actual) == (expect, m.version)
            return
        self.committed(m, call(), data, lease.fence)

    @rule(key=st.sampled_from(KEYS), holder=st.sampled_from(HOLDERS), ttl=st.sampled_from(TTLS),
          choice=st.sampled_from(["none", "current", "current", "stale", "ahead"]))
    def write_with_holder(self, key, holder, ttl, choice):
        """No lease in hand: the write takes one for itself (or reuses the holder's live one)."""
        m, now = self.model[key], self.clock.t
        expect = self.expect_version_for(m, choice)
        data = self.payload()
        if expect is not None and expect < 0:  # "stale" before the first version: refused as input
            with pytest.raises(ValueError):
                self.coord.write(key, data, holder=holder, ttl=ttl, expect_version=expect)
            return
        if m.live(now) and m.holder != holder:
            with pytest.raises(LeaseHeld) as caught:
                self.coord.write(key, data, holder=holder, ttl=ttl, expect_version=expect)
            assert caught.value.holder == m.holder
            return
        reused = m.live(now)
        if reused:
            m.expires_at = max(m.expires_at, now + ttl)
        else:
            self.issue_fence(m)  # taken for this write: a fence is spent even if the write fails
        if expect is not None and expect != m.version:
            with pytest.raises(VersionConflict) as caught:
                self.coord.write(key, data, holder=holder, ttl=ttl, expect_version=expect)
            assert (caught.value.expected, caught.value.actual) == (expect, m.version)
            if not reused:
                m.holder = None
            return
        receipt = self.coord.write(key, data, holder=holder, ttl=ttl, expect_version=expect)
        self.committed(m, receipt, data, m.fence)
        if not reused:  # the lease taken for the write is released at commit
            m.holder, m.expires_at = None, now

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def disk_versions_and_leases_match_the_model(self):
        now = self.clock.t
        for key, m in self.model.items():
            path = self.root / key
            assert (path.read_bytes() if path.exists() else None) == m.data
            info = self.coord.version(key)
            assert (info.version if info else 0) == m.version
            snap = self.coord.read(key)
            assert (snap.version, snap.exists, snap.foreign_edit) == (m.version, m.data is not None, False)
            lease = self.coord.backend.get_lease(key)
            expected = (m.holder, m.fence, m.expires_at) if m.live(now) else None
            assert (None if lease is None else (lease.holder, lease.fence, lease.expires_at)) == expected
        assert self.coord.backend.list_intents() == []

    @invariant()
    def journal_versions_are_gap_free(self):
        if self.counter % 7:  # the whole history is cheap but not free: check now and then
            return
        for key, m in self.model.items():
            versions = [e.data["version"] for e in self.coord.journal.history(key)
                        if e.kind in ("write", "delete")]
            assert versions == list(range(1, m.version + 1))
            fences = [e.data["fence"] for e in self.coord.journal.history(key) if e.kind == "lease.acquire"]
            assert fences == sorted(set(fences))


LeaseMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_lease_version_fence_model = pytest.mark.slow(pytest.mark.timeout(300)(LeaseMachine.TestCase))
