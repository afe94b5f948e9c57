"""Channel figures and liveness read counters and index ranges, not the messages: they must give
exactly what a scan of the messages gives.

The reference below is the scan the backend ran before the counters existed (every row of the
channel read on each call). A hypothesis state machine drives sends (keyed, delayed, with
deadlines, fanned out to groups), receives, acks (also stale ones), nacks, extends, dead-letters
and clock steps, and after every step compares ``channel_stats`` for every channel and the whole
``anomalies()`` list with the reference. Without the maintained count (a send that forgets it, an
ack that forgets to subtract it) the first comparison after it fails.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from agent_coherence import Coordinator
from agent_coherence.errors import StaleReceipt
from agent_coherence.liveness import Liveness

from channel_scan import ScanReference
from conftest import FakeClock, use_fake_clock


def _anomalies(liveness: Liveness) -> list[dict[str, Any]]:
    found = [a.model_dump() for a in liveness.anomalies(report=False)]
    return sorted(found, key=lambda a: (a["kind"], a["subject"], a["since"]))


def _approx(stats: dict[str, Any]) -> dict[str, Any]:
    """Ages rounded: the two sides compute ``now - enqueued_at`` from the same numbers, but keep it robust."""
    def fix(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return round(value, 6) if isinstance(value, float) else value
    return fix(stats)


CHANNELS = ["plain", "grouped"]
CONSUMERS = ["c1", "c2"]


class ChannelFigures(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="ac-depth-")
        self.coord = Coordinator.open(self.directory)
        self.clock: FakeClock = use_fake_clock(self.coord)
        backend = self.coord.backend
        self.ours = Liveness(backend, zero_work_grace=1.0)
        self.reference = Liveness(ScanReference(backend), zero_work_grace=1.0)
        self.plain = self.coord.channel("plain", max_attempts=2, visibility_timeout=5, sla=3, durability="fast")
        grouped = self.coord.channel("grouped", retention=30, visibility_timeout=4, sla=2)
        self.groups = [grouped.group("g1"), grouped.group("g2")]
        self.views = [self.plain, *self.groups]
        self.held: list[tuple[Any, Any]] = []  # (channel view, delivery)
        self.ours.start("idle", channels=["plain", "grouped"])
        self.ours.start("busy", channels=["plain"])

    def teardown(self) -> None:
        self.coord.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @rule(channel=st.sampled_from(CHANNELS), count=st.integers(1, 3), key=st.sampled_from([None, "k1", "k2"]),
          delay=st.sampled_from([0.0, 0.0, 2.0, 8.0]), deadline=st.sampled_from([None, None, 1.0, 6.0]))
    def send(self, channel: str, count: int, key: str | None, delay: float, deadline: float | None) -> None:
        ch = self.coord.channel(channel)
        items = [(f"m{i}", key) if key and i == 0 else f"m{i}" for i in range(count)]
        ch.send_many(items, delay=delay, deadline=deadline)

    @rule(view=st.integers(0, 2), consumer=st.sampled_from(CONSUMERS), limit=st.integers(1, 3),
          timeout=st.sampled_from([None, 0.0, 1.0]))
    def receive(self, view: int, consumer: str, limit: int, timeout: float | None) -> None:
        ch = self.views[view]
        for delivery in ch.receive_many(consumer, limit, visibility_timeout=timeout):
            self.held.append((ch, delivery))

    @rule(index=st.integers(0, 10), many=st.booleans())
    def ack(self, index: int, many: bool) -> None:
        if not self.held:
            return
        ch, delivery = self.held.pop(index % len(self.held))
        batch = [delivery] + ([d for c, d in self.held if c is ch][:2] if many else [])
        self.held = [(c, d) for c, d in self.held if d not in batch]
        try:
            ch.ack_many(batch)
        except StaleReceipt:
            pass

    @rule(index=st.integers(0, 10), delay=st.sampled_from([0.0, 3.0]))
    def nack(self, index: int, delay: float) -> None:
        if not self.held:
            return
        ch, delivery = self.held.pop(index % len(self.held))
        try:
            ch.nack(delivery, delay=delay)
        except StaleReceipt:
            pass

    @rule(index=st.integers(0, 10))
    def extend(self, index: int) -> None:
        if self.held:
            ch, delivery = self.held[index % len(self.held)]
            try:
                ch.extend(delivery, 2.0)
            except StaleReceipt:
                pass

    @rule(seconds=st.sampled_from([0.5, 1.5, 4.0, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def clock_steps_back(self) -> None:
        self.clock.advance(-2.0)

    @rule()
    def busy_worker_works(self) -> None:
        self.ours.record_work("busy")

    @invariant()
    def figures_match_a_scan(self) -> None:
        backend = self.coord.backend
        reference = ScanReference(backend)
        for name in ("plain", "grouped", "plain.dead"):
            assert _approx(backend.channel_stats(name)) == _approx(reference.channel_stats(name)), name
        assert _anomalies(self.ours) == _anomalies(self.reference)


TestChannelFigures = ChannelFigures.TestCase
TestChannelFigures.settings = settings(max_examples=25, stateful_step_count=25, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])


def test_counts_are_rebuilt_when_an_older_database_is_upgraded(root):
    clock = FakeClock()
    with Coordinator.open(root) as coord:
        use_fake_clock(coord, clock)
        ch = coord.channel("tasks")
        ch.send_many(["a", "b", "c"])
        ch.ack(ch.receive("c"))
        before = coord.backend.channel_stats("tasks")
        path = coord.backend.path
    assert (before["depth"], before["ready"]) == (2, 2)
    with sqlite3.connect(path) as conn:  # as schema 3 left it: no counts
        conn.execute("DELETE FROM channel_counts")
        conn.execute("UPDATE meta SET value = '3' WHERE name = 'schema_version'")
    conn.close()
    with Coordinator.open(root) as coord:
        use_fake_clock(coord, clock)
        assert coord.backend.channel_stats("tasks") == before
        coord.journal.verify()


def test_a_durable_channel_still_journals_send_receive_and_ack(coord):
    ch = coord.channel("audit", durability="durable")
    ch.send("x")
    ch.ack(ch.receive("c"))
    assert [e.kind for e in coord.journal.history("channel:audit")] == [
        "message.send", "message.receive", "message.ack"]


@pytest.mark.parametrize("value", [1e13, 1e18])
def test_a_duration_beyond_the_cap_is_refused(coord, value):
    from agent_coherence.errors import ChannelError

    with pytest.raises(ChannelError):
        coord.channel("tasks").send("x", delay=value)
    assert coord.backend.channel_stats("tasks")["depth"] == 0


def _vm_steps(coord: Coordinator, check: Any) -> int:
    """SQLite virtual-machine steps (in hundreds) that ``check()`` runs: a count of the work, not a time."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    conn = coord.backend._connection()
    conn.set_progress_handler(tick, 100)
    try:
        check()
    finally:
        conn.set_progress_handler(None, 100)
    return steps[0]


def test_liveness_reads_the_same_rows_at_any_depth(tmp_path):
    """The shape of the benchmark, without a clock: the checks' SQLite work is the same at 500 and
    at 20,000 queued messages, while the scan's grows with the depth."""
    work: dict[int, tuple[int, int]] = {}
    for depth in (500, 20_000):
        with Coordinator.open(tmp_path / str(depth)) as coord:
            clock = use_fake_clock(coord)
            ch = coord.channel("watched", durability="fast", sla=1)
            ch.send_many(["m"] * depth)
            ch.send_many(["due"] * 3, deadline=0)
            coord.liveness.start("watcher", channels=["watched"])
            ch.receive_many("consumer", 3, visibility_timeout=0)
            clock.advance(10)
            ours = Liveness(coord.backend, zero_work_grace=0.0)
            scan = Liveness(ScanReference(coord.backend), zero_work_grace=0.0)  # type: ignore[arg-type]
            assert _anomalies(ours) == _anomalies(scan)
            assert {a["kind"] for a in _anomalies(ours)} == {
                "zero_work", "stale_channel", "overdue_delivery", "lease_expired_in_flight"}
            work[depth] = (_vm_steps(coord, lambda: ours.anomalies(report=False)),
                           _vm_steps(coord, lambda: scan.anomalies(report=False)))
    (ours_small, scan_small), (ours_deep, scan_deep) = work[500], work[20_000]
    assert ours_deep <= ours_small + 2, work  # flat: the same index ranges and counts
    assert scan_deep > 20 * scan_small, work  # the scan reads every message
