"""A backend clock stepped back must not stall a channel: ready messages stay ready, visibility
timeouts and delays run out on schedule, and the step is journaled and reported as a
``clock_step`` anomaly. The fake clock (conftest.FakeClock; on PostgreSQL the server clock's
skew) makes the step. On PostgreSQL real time also passes between two operations, so a measured
step is the step less a few milliseconds."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.contract

CLOCK_KEY = "clock:channels"  # the documented journal key of clock steps
STEP = 3600.0  # an hour back, as a badly set clock or a VM restored from a snapshot does


def test_a_ready_message_stays_ready_after_the_clock_steps_back(coord, clock):
    ch = coord.channel("tasks")
    ch.send("ready")
    clock.advance(-STEP)
    delivery = ch.receive("c")
    assert delivery is not None and delivery.payload == "ready"  # not an hour later
    ch.ack(delivery)
    assert ch.stats()["depth"] == 0


def test_redelivery_and_delays_run_on_schedule_after_the_clock_steps_back(coord, clock):
    ch = coord.channel("tasks", visibility_timeout=5.0)
    ch.send("lost consumer")
    ch.send("later", delay=10.0)
    assert ch.receive("dead-consumer").attempt == 1
    clock.advance(-STEP)
    assert ch.receive("c") is None  # in flight, and "later" is still delayed
    clock.advance(6)
    again = ch.receive("c", visibility_timeout=30.0)
    assert (again.payload, again.attempt) == ("lost consumer", 2)  # 6 s later, not an hour
    clock.advance(5)
    assert ch.receive("c", visibility_timeout=30.0).payload == "later"
    stats = ch.stats()
    assert (stats["ready"], stats["in_flight"], stats["delayed"]) == (0, 2, 0)


def test_a_clock_step_is_journaled_and_reported_once(coord, clock):
    reported = []
    coord.liveness.on_anomaly = reported.append
    ch = coord.channel("tasks")
    ch.send("x")
    clock.advance(-STEP)
    ch.send("y")  # the first channel operation after the step notices it
    steps = [e for e in coord.journal.history(CLOCK_KEY) if e.kind == "clock.step"]
    assert len(steps) == 1 and steps[0].data["step"] == pytest.approx(STEP, abs=1.0)
    found = [a for a in coord.liveness.anomalies() if a.kind == "clock_step"]
    assert len(found) == 1 and "stepped back 3" in found[0].detail and "s; channel time held" in found[0].detail
    assert [a.kind for a in reported] == ["clock_step"]
    coord.liveness.anomalies()
    assert len(reported) == 1  # once per step
    ch.send("z")
    assert coord.journal.count(kind="clock.step") == 1  # no new step: the clock only ran on
    coord.journal.verify()


def test_small_steps_are_absorbed_without_a_report(coord, clock):
    ch = coord.channel("tasks")
    ch.send("x")
    clock.advance(-0.5)
    assert ch.receive("c").payload == "x"
    assert coord.journal.count(kind="clock.step") == 0
