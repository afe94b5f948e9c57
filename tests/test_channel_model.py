"""The channel contract against a simple model (hypothesis stateful testing), on both backends.

Producers send (with and without dedup keys, with a delay, in batches with repeated keys),
consumers receive (one or many, with the channel's or their own visibility timeout, zero
included) on the plain channel and on consumer groups, ack (one or many, current or stale
receipts), nack (with a delay), extend, and run ``process()`` blocks (that return, raise, or
outlive their timeout while another consumer takes the message), and time passes on the
backend's controllable clock, so timeouts expire, messages are redelivered and, after
``max_attempts`` deliveries, move to the dead-letter channel. Each example draws its channel's
settings (durability, max_attempts, retention, dedup_ttl) first; they may change on the way.

Checked at every step: each receive returns exactly the messages the model hands out (id,
payload, key, attempt, consumer, group, visible_at), in order, and never one another consumer
holds; every ack, nack, extend and ``process()`` raises StaleReceipt exactly when the model says
its receipt is not the current one (extend: or its timeout has run out); a message whose effect
``process()`` recorded is skipped by the next ``process()`` that receives it; a send returns the model's id (a key within its dedup window returns the
first id and enqueues nothing); ``stats()`` gives the model's ready, in-flight, delayed, overdue
and depth figures per group and in total, and the age of the oldest ready message. At the end of
an example everything left is drained: every message not acknowledged comes out of its channel
or the dead-letter channel (with its payload and key, its ``message.dead`` entry giving the
attempts it had), none is lost and none comes out twice.

Model time is exact on SQLite (a fake clock). On PostgreSQL the server clock runs on in real time
under the test's skew, so every duration here is a multiple of 10 s (deadlines excepted, off that
grid) and an example lasts far less: a time the model calls equal is then a time the server sees
in the order the operations ran, which is what the model's tie-break for PostgreSQL uses.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle, RuleBasedStateMachine, initialize, invariant, multiple, rule, run_state_machine_as_test)

from agent_coherence import Coordinator
from agent_coherence.channel import DEFAULT_EFFECT_TTL
from agent_coherence.errors import StaleReceipt
from agent_coherence.models import Delivery

from conftest import use_fake_clock

pytestmark = pytest.mark.contract

CONSUMERS = ("agent-1", "agent-2", "agent-3")
GROUPS = ("audit", "billing")
KEYS = ("k1", "k2", "k3")
STEPS = (10.0, 20.0, 30.0, 60.0, 150.0)
TIMEOUTS = (None, None, 0.0, 20.0, 60.0)  # None: the channel's (30 s)
CHANNEL_TIMEOUT = 30.0
PG_DRIFT = 5.0  # seconds the server clock may run ahead of model time within one example

_names = itertools.count()


@dataclass
class Copy:
    """One message as one view (the plain channel '' or a group) holds it."""

    mid: int
    group: str
    payload: Any
    key: str | None
    enqueued: float
    available: float
    seq: int  # the model operation that last set ``available`` (PostgreSQL's tie-break)
    deadline: float | None = None
    attempts: int = 0
    receipt: str | None = None
    consumer: str | None = None
    receipts: list[str] = field(default_factory=list)


class ChannelMachine(RuleBasedStateMachine):
    deliveries = Bundle("deliveries")

    def __init__(self, coord: Coordinator, clock: Any) -> None:
        super().__init__()
        self.coord = coord
        self.pg = coord.backend.name == "postgresql"
        self.clock = clock  # one per test: channel time outlives an example, and must never step back
        self.t = self.clock.t  # model time; the backend's clock starts here
        self.name = f"model-{next(_names)}"
        self.seq = 0
        self.copies: dict[tuple[str, int], Copy] = {}
        self.groups: list[str] = []
        self.dedup: dict[str, tuple[int, float]] = {}
        self.dead: list[tuple[Any, str | None, int, str, int]] = []  # payload, key, id, group, attempts
        self.effects: dict[tuple[str, int], float] = {}  # (view, id) -> until when process() skips it
        self.ids: list[int] = []
        self.payloads = itertools.count()
        self.configured = False

    # -- setup ------------------------------------------------------------------------------

    @initialize(durability=st.sampled_from(["durable", "fast"]), max_attempts=st.sampled_from([1, 2, 3]),
                retention=st.sampled_from([0.0, 0.0, 50.0]), dedup_ttl=st.sampled_from([60.0, 300.0]))
    def open_channel(self, durability, max_attempts, retention, dedup_ttl):
        self.max_attempts, self.dedup_ttl = max_attempts, dedup_ttl
        self.ch = self.coord.channel(self.name, visibility_timeout=CHANNEL_TIMEOUT, max_attempts=max_attempts,
                                     dedup_ttl=dedup_ttl, durability=durability, retention=retention)
        self.views = {"": self.ch}
        self.configured = True

    def tick(self) -> int:
        self.seq += 1
        return self.seq

    def payload(self, raw: bool) -> Any:
        n = next(self.payloads)
        return f"raw {n}".encode() if raw else {"n": n}

    def order(self, copy: Copy) -> tuple[float, ...]:
        """The order receive hands out visible messages: by visible time, then id on SQLite,
        where equal model times are equal clock readings; on PostgreSQL equal model times are
        readings in the order the operations ran."""
        return (copy.available, copy.seq, copy.mid) if self.pg else (copy.available, copy.mid)

    # -- producing --------------------------------------------------------------------------

    def model_send(self, items: list[tuple[Any, str | None]], delay: float, deadline: float | None,
                   ids: list[str]) -> None:
        seq, targets = self.tick(), self.groups or [""]
        assert len(ids) == len(items)
        for (payload, key), got in zip(items, ids):
            mid = int(got)
            if key is not None and key in self.dedup and self.dedup[key][1] > self.t:
                event("dedup hit")
                assert mid == self.dedup[key][0], "a key within its dedup window must return the first id"
                continue
            assert all(mid > old for old in self.ids), f"id {mid} is not above every earlier id {self.ids}"
            self.ids.append(mid)
            if key is not None:
                self.dedup[key] = (mid, self.t + self.dedup_ttl)
            for group in targets:
                self.copies[(group, mid)] = Copy(mid, group, payload, key, self.t, self.t + delay, seq,
                                                 None if deadline is None else self.t + deadline)

    @rule(key=st.sampled_from([None, None, *KEYS]), delay=st.sampled_from([0.0, 0.0, 20.0]),
          deadline=st.sampled_from([None, None, 35.0]), raw=st.booleans())
    def send(self, key, delay, deadline, raw):
        payload = self.payload(raw)
        got = self.ch.send(payload, key=key, delay=delay, deadline=deadline)
        self.model_send([(payload, key)], delay, deadline, [got])

    @rule(keys=st.lists(st.sampled_from([None, *KEYS]), min_size=1, max_size=4),
          delay=st.sampled_from([0.0, 20.0]))
    def send_many(self, keys, delay):
        items = [(self.payload(False), key) for key in keys]
        got = self.ch.send_many([(payload, key) if key is not None else payload for payload, key in items],
                                delay=delay)
        self.model_send(items, delay, None, got)

    @rule(group=st.sampled_from(GROUPS))
    def create_group(self, group):
        self.views[group] = self.ch.group(group)
        if group not in self.groups:
            self.groups.append(group)

    # -- consuming --------------------------------------------------------------------------

    def model_receive(self, group: str, consumer: str, timeout: float, limit: int) -> list[Copy]:
        seq, taken = self.tick(), list[Copy]()
        while len(taken) < limit:
            visible = [c for c in self.copies.values()
                       if c.group == group and c.available <= self.t and c not in taken]
            if not visible:
                break
            first = min(visible, key=self.order)
            if first.attempts >= self.max_attempts:
                event("dead-lettered")
                del self.copies[(group, first.mid)]
                self.dead.append((first.payload, first.key, first.mid, group, first.attempts))
                continue
            if first.attempts:
                event("redelivered")
            if group:
                event("group receive")
            first.attempts += 1
            first.available, first.seq, first.consumer = self.t + timeout, seq, consumer
            taken.append(first)
        return taken

    def check_deliveries(self, got: list[Delivery], expected: list[Copy], group: str, consumer: str) -> None:
        assert [int(d.message_id) for d in got] == [c.mid for c in expected], (
            f"received {[d.message_id for d in got]}, the model hands out {[c.mid for c in expected]}")
        for d, c in zip(got, expected):
            assert (d.channel, d.group, d.consumer) == (self.name, group or None, consumer)
            assert (d.payload, d.key, d.attempt) == (c.payload, c.key, c.attempts)
            assert d.receipt and d.receipt not in c.receipts, "a redelivery must carry a fresh receipt"
            c.receipt = d.receipt
            c.receipts.append(d.receipt)
            self.close_to(d.visible_at, c.available, "visible_at")

    def close_to(self, actual: float, model: float, what: str) -> None:
        if self.pg:
            assert 0 <= actual - model < PG_DRIFT, f"{what} {actual} vs model {model}"
        else:
            assert actual == model, f"{what} {actual} vs model {model}"

    @rule(target=deliveries, view=st.sampled_from(["", *GROUPS]), consumer=st.sampled_from(CONSUMERS),
          timeout=st.sampled_from(TIMEOUTS))
    def receive(self, view, consumer, timeout):
        if view not in self.views:
            return multiple()
        delivery = self.views[view].receive(consumer, visibility_timeout=timeout)
        expected = self.model_receive(view, consumer, CHANNEL_TIMEOUT if timeout is None else timeout, 1)
        got = [] if delivery is None else [delivery]
        self.check_deliveries(got, expected, view, consumer)
        return multiple(*got)

    @rule(target=deliveries, view=st.sampled_from(["", *GROUPS]), consumer=st.sampled_from(CONSUMERS),
          timeout=st.sampled_from(TIMEOUTS), limit=st.integers(1, 4))
    def receive_many(self, view, consumer, timeout, limit):
        if view not in self.views:
            return multiple()
        got = self.views[view].receive_many(consumer, limit, visibility_timeout=timeout)
        expected = self.model_receive(view, consumer, CHANNEL_TIMEOUT if timeout is None else timeout, limit)
        self.check_deliveries(got, expected, view, consumer)
        return multiple(*got)

    def current(self, d: Delivery) -> Copy | None:
        """The model's copy if ``d``'s receipt is still the current one, else None."""
        c = self.copies.get((d.group or "", int(d.message_id)))
        return c if c is not None and c.receipt == d.receipt else None

    def view_of(self, d: Delivery):
        return self.views[d.group or ""]

    @rule(d=deliveries)
    def ack(self, d):
        c = self.current(d)
        if c is None:
            event("stale ack")
            with pytest.raises(StaleReceipt):
                self.view_of(d).ack(d)
            return
        self.view_of(d).ack(d)
        del self.copies[(c.group, c.mid)]

    @rule(ds=st.lists(deliveries, min_size=1, max_size=3, unique_by=lambda d: d.receipt))
    def ack_many(self, ds):
        group = ds[0].group
        ds = [d for d in ds if d.group == group]
        valid = [c for c in map(self.current, ds) if c is not None]
        if len(valid) < len(ds):
            with pytest.raises(StaleReceipt):
                self.view_of(ds[0]).ack_many(ds)
        else:
            self.view_of(ds[0]).ack_many(ds)
        for c in valid:  # the valid ones are acknowledged even when a stale one raises
            del self.copies[(c.group, c.mid)]

    @rule(d=deliveries, delay=st.sampled_from([0.0, 20.0]))
    def nack(self, d, delay):
        c = self.current(d)
        if c is None:
            with pytest.raises(StaleReceipt):
                self.view_of(d).nack(d, delay=delay)
            return
        self.view_of(d).nack(d, delay=delay)
        c.receipt, c.available, c.seq = None, self.t + delay, self.tick()

    @rule(d=deliveries, seconds=st.sampled_from([10.0, 60.0]))
    def extend(self, d, seconds):
        c = self.current(d)
        if c is None or c.available <= self.t:
            with pytest.raises(StaleReceipt):
                self.view_of(d).extend(d, seconds)
            return
        self.view_of(d).extend(d, seconds)
        c.available, c.seq = self.t + seconds, self.tick()

    @rule(durability=st.sampled_from([None, "durable", "fast"]), max_attempts=st.sampled_from([None, 1, 2, 3]),
          retention=st.sampled_from([None, 0.0, 50.0]))
    def reconfigure(self, durability, max_attempts, retention):
        self.ch.configure(durability=durability, max_attempts=max_attempts, retention=retention)
        if max_attempts is not None:
            self.max_attempts = max_attempts

    @rule(view=st.sampled_from(["", *GROUPS]), consumer=st.sampled_from(CONSUMERS),
          outcome=st.sampled_from(["done", "raises", "slow"]))
    def process(self, view, consumer, outcome):
        """process(): a message whose effect is recorded is acked and skipped; the block's message
        is acked (its effect recorded) when it returns, nacked when it raises; a block that outlives
        its timeout while another consumer takes the message gets StaleReceipt, and its effect is
        recorded all the same."""
        if view not in self.views:
            return
        failure: BaseException | None = None
        try:
            with self.views[view].process(consumer) as d:
                while True:
                    handed = self.model_receive(view, consumer, CHANNEL_TIMEOUT, 1)
                    c = handed[0] if handed else None
                    if c is None or self.effects.get((view, c.mid), 0.0) <= self.t:
                        break
                    event("effect skip")
                    del self.copies[(view, c.mid)]  # done already: acked, not run
                self.check_deliveries([] if d is None else [d], [] if c is None else [c], view, consumer)
                if d is not None and outcome == "raises":
                    raise RuntimeError("the block failed")
                if d is not None and c is not None and outcome == "slow":
                    self.advance_time(CHANNEL_TIMEOUT + 10.0)
                    other = next(name for name in CONSUMERS if name != consumer)
                    for _ in range(4):  # until the other consumer has the block's message
                        if c.receipt != d.receipt or not self.receive(view, other, None).values:
                            break
        except (RuntimeError, StaleReceipt) as error:  # what the model expects is checked below
            failure = error
        if d is None or c is None:
            assert failure is None and d is None and c is None
            return
        if outcome == "raises":
            assert isinstance(failure, RuntimeError), failure
            c.receipt, c.available, c.seq = None, self.t, self.tick()
            return
        current = self.copies.get((view, c.mid))
        if current is not None:
            self.effects[(view, c.mid)] = self.t + DEFAULT_EFFECT_TTL
        if current is not None and current.receipt == d.receipt:
            assert failure is None, failure
            del self.copies[(view, c.mid)]
        else:
            event("process stale")
            assert isinstance(failure, StaleReceipt), failure

    @rule(step=st.sampled_from(STEPS))
    def advance_time(self, step):
        self.clock.advance(step)
        self.t += step

    # -- invariants -------------------------------------------------------------------------

    def expected_figures(self, group: str) -> dict[str, Any]:
        held = [c for c in self.copies.values() if c.group == group]
        ready = [c for c in held if c.available <= self.t]
        oldest = min(ready, key=lambda c: c.mid).enqueued if ready else None
        return {
            "ready": len(ready),
            "in_flight": sum(1 for c in held if c.available > self.t and c.receipt is not None),
            "delayed": sum(1 for c in held if c.available > self.t and c.receipt is None),
            "overdue": sum(1 for c in held if c.deadline is not None and c.deadline < self.t),
            "oldest_ready_age": None if oldest is None else self.t - oldest,
        }

    @invariant()
    def stats_match_the_model(self):
        if not self.configured:
            return
        stats = self.ch.stats()
        views = list(self.groups)
        if not views or any(c.group == "" for c in self.copies.values()):
            views.append("")
        assert sorted(stats["groups"]) == sorted(views), f"stats groups {stats['groups']}"
        totals = {"ready": 0, "in_flight": 0, "delayed": 0}
        for view in views:
            expected, actual = self.expected_figures(view), stats["groups"][view]
            for name in ("ready", "in_flight", "delayed", "overdue"):
                assert actual[name] == expected[name], f"group {view!r}: {name} {actual} vs model {expected}"
            for name in totals:
                totals[name] += expected[name]
            if expected["oldest_ready_age"] is None:
                assert actual["oldest_ready_age"] is None, f"group {view!r}: {actual}"
            else:
                # On PostgreSQL the age is measured from the server's send time, taken a moment after
                # the model's; either way it is within the drift.
                assert abs(actual["oldest_ready_age"] - expected["oldest_ready_age"]) < (PG_DRIFT if self.pg else 1e-6)
        for name, value in totals.items():
            assert stats[name] == value, f"{name}: {stats}"
        assert stats["depth"] == sum(totals.values())
        dead = self.ch.dead_letters().stats()
        assert (dead["ready"], dead["depth"]) == (len(self.dead), len(self.dead)), f"dead letters: {dead}"

    # -- the end: nothing lost, nothing twice -----------------------------------------------

    def teardown(self) -> None:
        if not self.configured:
            return
        self.advance_time(10_000.0)  # every timeout and delay has run out
        for view in list(self.views):
            while True:
                got = self.views[view].receive_many("drain", 10, visibility_timeout=10_000.0)
                expected = self.model_receive(view, "drain", 10_000.0, 10)
                self.check_deliveries(got, expected, view, "drain")
                if not got:
                    break
                self.views[view].ack_many(got)
                for c in expected:
                    del self.copies[(c.group, c.mid)]
        assert not self.copies, f"left in the channel: {self.copies}"
        dead_channel = self.ch.dead_letters()
        out = []
        while batch := dead_channel.receive_many("drain", 10):
            out.extend(batch)
            dead_channel.ack_many(batch)
        assert sorted(repr((d.payload, d.key)) for d in out) == sorted(
            repr((payload, key)) for payload, key, _, _, _ in self.dead)
        moved = [e.data for e in self.coord.journal.history(f"channel:{self.name}") if e.kind == "message.dead"]
        assert sorted((m["id"], m["group"], m["attempts"]) for m in moved) == sorted(
            (mid, group, attempts) for _, _, mid, group, attempts in self.dead)


MODEL_SETTINGS = settings(
    max_examples=120, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.timeout(120)
def test_channel_matches_the_model(backend_name, root):
    coord = Coordinator.open(root)
    clock = use_fake_clock(coord)
    started = time.monotonic()
    try:
        class OnThisBackend(ChannelMachine):
            def __init__(self) -> None:
                super().__init__(coord, clock)

        run_state_machine_as_test(OnThisBackend, settings=MODEL_SETTINGS)
        coord.journal.verify()
    finally:
        coord.close()
    print(f"{backend_name}: {time.monotonic() - started:.1f}s")
