"""Liveness watches the work, not the workers: each anomaly kind is detected, a worker that did
its work raises nothing, and every anomaly is journaled, logged and passed to the callback once.

Timing runs on a fake backend clock. One test uses real processes that both exit 0 -- one did
the work, one did none -- to show that the exit code cannot tell them apart and liveness can.
"""

from __future__ import annotations

import logging
import os

import pytest

from agent_coherence import Coordinator
from agent_coherence.backends.base import WriteRequest
from agent_coherence.liveness import Liveness, watch_main
from agent_coherence.recovery import process_start

from conftest import FORK

pytestmark = pytest.mark.contract

WAIT = 60


def _kinds(anomalies) -> list[tuple[str, str]]:
    return sorted((a.kind, a.subject) for a in anomalies)


@pytest.fixture
def live(coord, clock) -> Liveness:
    return coord.liveness


# -- zero work ---------------------------------------------------------------------------------------


def test_started_worker_that_did_nothing_while_its_channel_had_work_is_zero_work(coord, clock, live):
    coord.channel("tasks").send_many(["a", "b"])
    live.start("idle", channels=["tasks"])
    clock.advance(live.zero_work_grace - 0.1)
    assert live.anomalies() == []  # still inside its grace period
    clock.advance(0.2)
    [anomaly] = live.anomalies()
    assert (anomaly.kind, anomaly.subject, anomaly.facts["ended"]) == ("zero_work", "idle", False)
    assert "2 message(s) were ready in channel 'tasks'" in anomaly.detail


def test_fast_acks_awaiting_their_batch_are_the_consumers_work(coord, clock, live):
    """An ack of a fast channel is chained into the journal (and credited to the consumer's row)
    with its batch, up to a second later and only at the process's next operation there: until
    then it still counts as the consumer's work, so the worker that acked is not reported idle
    while the one that did nothing is."""
    tasks = coord.channel("tasks", durability="fast")
    tasks.send_many(["a", "b", "c"])
    live.start("busy", channels=["tasks"])
    live.start("idle", channels=["tasks"])
    tasks.ack(tasks.receive("busy"))
    clock.advance(live.zero_work_grace + 1)  # the batch is due, but nothing here operates on it
    assert _kinds(live.anomalies()) == [("zero_work", "idle")]
    assert {w.worker: w.work_done for w in coord.backend.list_workers()} == {"busy": 1, "idle": 0}
    assert tasks.stats()["depth"] == 2
    tasks.send("d")  # the next operation chains the batch: the same figures from the rows
    assert {w.worker: w.work_done for w in coord.backend.list_workers()} == {"busy": 1, "idle": 0}
    assert tasks.stats()["depth"] == 3


def test_worker_that_ended_with_zero_work_while_work_was_pending_is_zero_work(coord, clock, live):
    coord.channel("tasks").send("a")
    live.start("quitter", channels=["tasks"])
    live.end("quitter")  # exited cleanly, did nothing
    clock.advance(live.zero_work_grace + 1)
    [anomaly] = live.anomalies()
    assert (anomaly.kind, anomaly.subject, anomaly.facts["ended"]) == ("zero_work", "quitter", True)


def test_worker_with_an_assigned_task_and_no_work_is_zero_work(coord, clock, live):
    live.start("assignee")
    live.assign("task-7", "assignee")
    clock.advance(live.zero_work_grace + 1)
    [anomaly] = live.anomalies()
    assert anomaly.kind == "zero_work" and "task 'task-7' was assigned to it" in anomaly.detail


def test_idle_worker_with_nothing_to_do_is_not_an_anomaly(coord, clock, live):
    coord.channel("tasks")
    live.start("idle", channels=["tasks"])
    clock.advance(live.zero_work_grace + 60)
    assert live.anomalies() == []


def test_worker_that_received_and_acked_raises_nothing(coord, clock, live):
    ch = coord.channel("tasks", sla=60.0)
    ch.send("job", deadline=30.0)
    ch.send("more")
    live.start("worker", channels=["tasks"], heartbeat_every=5.0)
    live.assign("task-1", "worker", deadline=30.0)
    clock.advance(1)
    for delivery in ch.receive_many("worker", 10):
        ch.ack(delivery)
    live.complete("task-1")
    live.heartbeat("worker")
    clock.advance(live.zero_work_grace)
    assert live.anomalies() == []
    live.end("worker")
    clock.advance(600)
    assert live.anomalies() == []
    assert [w.work_done for w in coord.backend.list_workers(include_ended=True)] == [2]


def test_record_work_counts_as_work(coord, clock, live):
    coord.channel("tasks").send("a")
    live.start("writer", channels=["tasks"])
    live.record_work("writer")
    clock.advance(live.zero_work_grace + 1)
    assert live.anomalies() == []


def _lazy_worker(root: str) -> None:
    with Coordinator.open(root) as coord:
        coord.liveness.start("lazy", channels=["tasks"])
        coord.liveness.end("lazy")
    os._exit(0)


def _busy_worker(root: str) -> None:
    with Coordinator.open(root) as coord:
        coord.liveness.start("busy", channels=["tasks"])
        ch = coord.channel("tasks")
        ch.ack(ch.receive("busy"))
        coord.liveness.end("busy")
    os._exit(0)


def test_exit_code_zero_does_not_hide_a_worker_that_did_no_work(root):
    with Coordinator.open(root) as coord:
        coord.channel("tasks").send_many(["one", "two"])
    for target in (_busy_worker, _lazy_worker):
        child = FORK.Process(target=target, args=(str(root),))
        child.start()
        child.join(WAIT)
        assert child.exitcode == 0
    with Coordinator.open(root) as coord:
        found = Liveness(coord.backend, zero_work_grace=0.0).anomalies()
    assert _kinds(found) == [("zero_work", "lazy")]


# -- deliveries, channels, assignments, leases, heartbeats ---------------------------------------------


def test_message_past_its_deadline_is_an_overdue_delivery(coord, clock, live):
    ch = coord.channel("jobs")
    late = ch.send("late", deadline=10.0)
    ch.send("on time", deadline=10.0)
    ch.ack(next(d for d in ch.receive_many("c", 10) if d.payload == "on time"))
    clock.advance(9.9)
    assert live.anomalies() == []
    clock.advance(0.2)
    [anomaly] = live.anomalies()
    assert (anomaly.kind, anomaly.subject) == ("overdue_delivery", f"jobs#{late}")
    assert anomaly.facts["attempts"] == 1


def test_each_consumer_groups_copy_of_a_late_message_is_reported_on_its_own(coord, clock, live):
    ch = coord.channel("fanout", visibility_timeout=5.0)
    audit, billing = ch.group("audit"), ch.group("billing")
    message_id = ch.send("late", deadline=10.0)
    audit.receive("auditor")
    billing.receive("biller")
    clock.advance(11)
    found = live.anomalies()
    assert sorted((a.kind, a.subject, a.facts["group"]) for a in found) == [
        ("lease_expired_in_flight", f"fanout#{message_id}@audit", "audit"),
        ("lease_expired_in_flight", f"fanout#{message_id}@billing", "billing"),
        ("overdue_delivery", f"fanout#{message_id}@audit", "audit"),
        ("overdue_delivery", f"fanout#{message_id}@billing", "billing"),
    ]
    assert all(f"group {a.facts['group']!r}" in a.detail for a in found)
    journaled = coord.journal.count("anomaly.overdue_delivery") + coord.journal.count("anomaly.lease_expired_in_flight")
    assert journaled == 4  # one per group's copy, none swallowed as a repeat of the other


def test_channel_whose_oldest_ready_message_exceeds_its_sla_is_stale(coord, clock, live):
    ch = coord.channel("inbox", sla=30.0)
    coord.channel("no-sla").send("ignored")
    ch.send("waiting")
    clock.advance(29)
    assert live.anomalies() == []
    clock.advance(2)
    [anomaly] = live.anomalies()
    assert (anomaly.kind, anomaly.subject) == ("stale_channel", "inbox")
    assert anomaly.facts["age"] == pytest.approx(31, abs=0.5)  # the server clock moves on


def test_assignment_past_its_deadline_is_overdue(coord, clock, live):
    live.assign("report", "writer", deadline=60.0)
    live.assign("done-in-time", "writer", deadline=60.0)
    live.complete("done-in-time")
    clock.advance(61)
    [anomaly] = live.anomalies()
    assert (anomaly.kind, anomaly.subject, anomaly.facts["worker"]) == ("overdue_assignment", "report", "writer")


def test_write_whose_explicit_lease_expired_in_flight_is_detected(coord, clock, live):
    lease = coord.acquire("plan.md", "planner", ttl=10.0)
    coord.backend.begin_write(WriteRequest(
        key=lease.key, holder="planner", new_sha256="0" * 64, size=3,
        temp_path=os.path.join(coord.root, ".plan.md.tmp"), host=os.uname().nodename, pid=os.getpid(),
        pid_start=process_start(os.getpid()), fence=lease.fence))
    clock.advance(9)
    assert live.anomalies() == []  # lease still live: the write may yet commit
    clock.advance(2)
    [anomaly] = live.anomalies()
    assert (anomaly.kind, anomaly.subject) == ("lease_expired_in_flight", lease.key)
    assert (anomaly.facts["holder"], anomaly.facts["fence"]) == ("planner", lease.fence)


def test_delivery_whose_visibility_timeout_ran_out_while_its_consumer_lived_is_detected(coord, clock, live):
    ch = coord.channel("jobs", visibility_timeout=5.0)
    message_id = ch.send("slow job")
    ch.receive("slowpoke")
    clock.advance(4)
    assert live.anomalies() == []
    clock.advance(2)
    [anomaly] = live.anomalies()
    assert (anomaly.kind, anomaly.subject) == ("lease_expired_in_flight", f"jobs#{message_id}")
    assert anomaly.facts["consumer"] == "slowpoke"


def test_worker_that_stopped_its_promised_heartbeats_is_detected(coord, clock, live):
    coord.channel("tasks")
    live.start("beater", channels=["tasks"], heartbeat_every=5.0)
    clock.advance(12)
    live.heartbeat("beater")
    clock.advance(14)
    assert live.anomalies() == []
    clock.advance(2)
    [anomaly] = live.anomalies()
    assert (anomaly.kind, anomaly.subject) == ("missed_heartbeat", "beater")


# -- reporting --------------------------------------------------------------------------------------------


def test_anomalies_are_journaled_logged_and_called_back_once(coord, clock, caplog):
    received = []
    live = Liveness(coord.backend, on_anomaly=received.append)
    coord.channel("tasks", sla=10.0).send("x", deadline=5.0)
    live.start("idle", channels=["tasks"])
    live.assign("t1", "someone", deadline=1.0)
    clock.advance(11)
    expected = [("overdue_assignment", "t1"), ("overdue_delivery", "tasks#1"), ("stale_channel", "tasks"),
                ("zero_work", "idle")]
    with caplog.at_level(logging.WARNING, logger="agent_coherence.liveness"):
        assert _kinds(live.anomalies()) == expected
        assert _kinds(live.anomalies()) == expected  # still visible...
    assert _kinds(received) == expected  # ...but reported once
    logged = sorted(r.getMessage().split(":")[0] for r in caplog.records if r.name == "agent_coherence.liveness")
    assert logged == sorted(kind for kind, _ in expected)
    journaled = sorted(e.kind for e in coord.journal.tail(50) if e.kind.startswith("anomaly."))
    assert journaled == sorted(f"anomaly.{kind}" for kind, _ in expected)
    coord.journal.verify()


def test_anomalies_without_report_are_silent(coord, clock, caplog):
    received = []
    live = Liveness(coord.backend, on_anomaly=received.append)
    live.assign("t1", "someone", deadline=1.0)
    clock.advance(2)
    with caplog.at_level(logging.WARNING, logger="agent_coherence.liveness"):
        assert len(live.anomalies(report=False)) == 1
    assert received == [] and caplog.records == []
    assert coord.journal.count(kind="anomaly.overdue_assignment") == 0


def test_watch_once_prints_anomalies_and_exits_nonzero(coord, clock, capsys):
    assert watch_main(coord, once=True) == 0
    coord.liveness.assign("t1", "someone", deadline=1.0)
    clock.advance(2)
    assert watch_main(coord, once=True) == 1
    out = capsys.readouterr().out
    assert "overdue_assignment" in out and "'t1'" in out


@pytest.mark.parametrize("call,error", [
    (lambda live: live.start("w", channels="tasks"), TypeError),  # would watch "t", "a", "s", "k"
    (lambda live: live.start("w", channels=[5]), TypeError),
    (lambda live: live.start(""), ValueError),
    (lambda live: live.start(5), TypeError),
    (lambda live: live.start("w", heartbeat_every=0), ValueError),
    (lambda live: live.start("w", heartbeat_every=float("nan")), ValueError),
    (lambda live: live.heartbeat("w", work=-1), ValueError),
    (lambda live: live.record_work("w", 1.5), TypeError),
    (lambda live: live.end(None), TypeError),
    (lambda live: live.assign("", "w"), ValueError),
    (lambda live: live.assign("t", "w", deadline=float("inf")), ValueError),
    (lambda live: live.complete(7), TypeError),
])
def test_liveness_refuses_malformed_arguments_before_recording_anything(coord, call, error):
    with pytest.raises(error):
        call(coord.liveness)
    assert coord.journal.count() == 0 and coord.backend.list_workers() == []


def test_a_worker_watching_one_channel_named_as_a_list_is_reported(coord):
    coord.channel("tasks").send({"n": 1})
    coord.liveness.start("w", channels=["tasks"])
    assert [w.info["channels"] for w in coord.backend.list_workers()] == [["tasks"]]
