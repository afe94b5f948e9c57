"""Acknowledged channels: each semantic the docs promise, one test each.

Timing semantics (visibility timeout, nack delay, extend, dedup TTL, retention) run on a fake
backend clock, so they are exact and never sleep. Consumer groups and process-crash survival use
real processes (fork); a test that would pass with a broken channel is a bug in the test.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from agent_coherence import Coordinator
from agent_coherence.errors import ChannelError, StaleReceipt

from conftest import FORK

pytestmark = pytest.mark.contract

WAIT = 120  # seconds any child may take before the test fails


def _rows(coord: Coordinator, channel: str, where: str = "1=1") -> int:
    """Stored message rows of ``channel`` (acknowledged-and-retained ones included)."""
    if coord.backend.name == "postgresql":
        return coord.backend.read(lambda tx: tx.one(
            f"SELECT count(*) FROM @messages WHERE channel = %s AND {where}", (channel,))[0])
    return coord.backend.read(lambda conn: conn.execute(
        f"SELECT count(*) FROM messages WHERE channel = ? AND {where}", (channel,)).fetchone()[0])


# -- payloads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    b"\x00\xffraw bytes\n", b"", bytearray(b"ba"), {"task": "plan", "n": [1, 2.5, None]}, "text", 7, [1, "two"],
    None,
])
def test_bytes_come_back_as_bytes_and_json_as_json(coord, payload):
    ch = coord.channel("payloads")
    ch.send(payload)
    delivery = ch.receive("c")
    expected = bytes(payload) if isinstance(payload, (bytes, bytearray)) else payload
    assert delivery.payload == expected
    assert type(delivery.payload) is type(expected)
    ch.ack(delivery)


def test_a_payload_that_is_neither_bytes_nor_json_is_refused_and_nothing_is_sent(coord):
    ch = coord.channel("payloads")
    with pytest.raises(ChannelError):
        ch.send_many([{"ok": 1}, object()])
    assert ch.receive("c") is None


# -- durability modes ----------------------------------------------------------------------------


def _send_then_die(root: str, channel: str, durability: str, count: int) -> None:
    coord = Coordinator.open(root)
    ch = coord.channel(channel, durability=durability)
    for i in range(count):
        ch.send({"i": i}, key=f"m{i}")
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("durability", ["durable", "fast"])
def test_both_durability_modes_deliver_everything_a_killed_producer_sent(root, durability):
    """Every send that returned survives the producer's kill -9, in both modes."""
    child = FORK.Process(target=_send_then_die, args=(str(root), "jobs", durability, 50))
    child.start()
    child.join(WAIT)
    assert child.exitcode == -signal.SIGKILL
    with Coordinator.open(root) as coord:
        ch = coord.channel("jobs")
        assert ch.config.durable is (durability == "durable")
        got = ch.receive_many("c", 100)
        assert [d.payload["i"] for d in got] == list(range(50))
        assert [d.key for d in got] == [f"m{i}" for i in range(50)]
        ch.ack_many(got)
        assert ch.stats()["depth"] == 0


def test_durability_is_validated(coord):
    with pytest.raises(ChannelError):
        coord.channel("x", durability="sometimes")


# -- visibility timeout, stale receipts, nack, extend -------------------------------------------------


def test_unacknowledged_message_comes_back_after_its_visibility_timeout(coord, clock):
    ch = coord.channel("vt", visibility_timeout=10.0)
    ch.send("job")
    first = ch.receive("a")
    assert first.attempt == 1
    clock.advance(9.9)
    assert ch.receive("b") is None  # still leased to a
    clock.advance(0.2)
    second = ch.receive("b")
    assert (second.message_id, second.attempt, second.consumer) == (first.message_id, 2, "b")
    assert second.receipt != first.receipt
    ch.ack(second)
    clock.advance(100)
    assert ch.receive("c") is None


def test_receive_timeout_argument_overrides_the_channel_default(coord, clock):
    ch = coord.channel("vt", visibility_timeout=100.0)
    ch.send("job")
    ch.receive("a", visibility_timeout=2.0)
    clock.advance(2.1)
    assert ch.receive("b") is not None


def test_a_stale_receipt_cannot_ack_nack_or_extend(coord, clock):
    ch = coord.channel("stale", visibility_timeout=5.0)
    ch.send("job")
    old = ch.receive("slow")
    clock.advance(5.1)
    new = ch.receive("fast")
    for operation in (ch.ack, ch.nack, lambda d: ch.extend(d, 30)):
        with pytest.raises(StaleReceipt) as caught:
            operation(old)
        assert (caught.value.channel, caught.value.message_id) == ("stale", old.message_id)
    ch.ack(new)  # the current holder is unaffected
    with pytest.raises(StaleReceipt):
        ch.ack(new)  # acknowledging twice is stale too
    assert ch.receive("any") is None


def test_ack_after_timeout_but_before_redelivery_still_counts(coord, clock):
    """SQS semantics: the receipt stays valid until someone else receives the message."""
    ch = coord.channel("late", visibility_timeout=5.0)
    ch.send("job")
    delivery = ch.receive("a")
    clock.advance(6)
    ch.ack(delivery)
    assert ch.receive("b") is None


def test_nack_returns_the_message_now_or_after_its_delay(coord, clock):
    ch = coord.channel("nack", visibility_timeout=60.0)
    ch.send("job")
    ch.nack(ch.receive("a"))
    again = ch.receive("b")
    assert again.attempt == 2
    ch.nack(again, delay=5.0)
    clock.advance(4.9)
    assert ch.receive("c") is None
    clock.advance(0.2)
    third = ch.receive("c")
    assert third.attempt == 3
    with pytest.raises(StaleReceipt):
        ch.ack(again)  # the nacked receipt is gone
    ch.ack(third)


def test_extend_keeps_a_message_invisible_longer(coord, clock):
    ch = coord.channel("extend", visibility_timeout=10.0)
    ch.send("job")
    delivery = ch.receive("a")
    clock.advance(8)
    ch.extend(delivery, 10.0)  # now invisible until t = 18
    clock.advance(9)  # t = 17: past the original timeout
    assert ch.receive("b") is None
    ch.ack(delivery)
    assert ch.receive("b") is None


def test_extend_after_the_timeout_passed_is_stale(coord, clock):
    ch = coord.channel("extend", visibility_timeout=10.0)
    ch.send("job")
    delivery = ch.receive("a")
    clock.advance(10.5)
    with pytest.raises(StaleReceipt):
        ch.extend(delivery, 10.0)
    assert ch.receive("b").attempt == 2


def test_zero_visibility_timeout_delivers_each_message_once_per_receive(coord, clock):
    ch = coord.channel("zero")
    ch.send_many(["a", "b"])
    batch = ch.receive_many("c", 10, visibility_timeout=0.0)
    assert sorted(d.payload for d in batch) == ["a", "b"]
    assert [d.attempt for d in batch] == [1, 1]
    assert ch.dead_letters().stats()["depth"] == 0


def test_delayed_send_is_invisible_until_its_delay_passes(coord, clock):
    ch = coord.channel("delay")
    ch.send("later", delay=30.0)
    ch.send("now")
    assert ch.receive("c").payload == "now"
    clock.advance(29.9)
    assert ch.receive("c") is None
    clock.advance(0.2)
    assert ch.receive("c").payload == "later"


# -- dead letters ------------------------------------------------------------------------------------


def test_message_is_dead_lettered_after_max_attempts_never_dropped(coord, clock):
    ch = coord.channel("work", visibility_timeout=1.0, max_attempts=3)
    ch.send({"task": "poison"}, key="poison-1")
    ch.send({"task": "fine"})
    attempts = []
    for _ in range(3):
        for delivery in ch.receive_many("c", 10):
            if delivery.payload["task"] == "poison":
                attempts.append(delivery.attempt)  # never acknowledged: the timeout runs out
            else:
                ch.ack(delivery)
        clock.advance(1.5)
    assert attempts == [1, 2, 3]
    ch.send({"task": "after"})
    assert [d.payload["task"] for d in ch.receive_many("c", 10)] == ["after"]  # poison is gone from here
    dead = ch.dead_letters()
    assert dead.name == "work.dead"
    letter = dead.receive("inspector")
    assert (letter.payload, letter.key, letter.attempt) == ({"task": "poison"}, "poison-1", 1)
    dead.ack(letter)
    kinds = [e.kind for e in coord.journal.history("channel:work")]
    assert kinds.count("message.dead") == 1


def test_nacked_message_is_dead_lettered_too(coord, clock):
    ch = coord.channel("nacks", max_attempts=2)
    ch.send(b"bad")
    ch.nack(ch.receive("c"))
    ch.nack(ch.receive("c"))
    assert ch.receive("c") is None
    assert ch.dead_letters().receive("c").payload == b"bad"


def test_a_zero_timeout_receive_many_that_dead_letters_on_the_way_still_fills_its_batch(coord, clock):
    ch = coord.channel("refill", max_attempts=1)
    ch.send("poison")
    ch.receive("c", visibility_timeout=10)  # its only attempt
    clock.advance(10)  # it times out as the next two arrive: first in line, and moved aside
    ch.send_many(["a", "b"])
    got = ch.receive_many("c", 2, visibility_timeout=0)
    assert [d.payload for d in got] == ["a", "b"]
    assert ch.dead_letters().stats()["depth"] == 1


# -- dedup -----------------------------------------------------------------------------------------------


def test_same_key_within_the_dedup_ttl_is_enqueued_once(coord, clock):
    ch = coord.channel("dedup", dedup_ttl=60.0)
    first = ch.send({"v": 1}, key="task-42")
    assert ch.send({"v": 2}, key="task-42") == first
    delivery = ch.receive("c")
    assert (delivery.message_id, delivery.payload) == (first, {"v": 1})
    ch.ack(delivery)
    clock.advance(59)
    assert ch.send({"v": 3}, key="task-42") == first  # acknowledged, still inside the window
    assert ch.receive("c") is None
    assert ch.send({"v": 4}, key="other") != first


def test_resend_after_dedup_ttl_expiry_enqueues_again(coord, clock):
    ch = coord.channel("dedup", dedup_ttl=60.0)
    first = ch.send("v1", key="task-42")
    ch.ack(ch.receive("c"))
    clock.advance(60.5)
    second = ch.send("v2", key="task-42")
    assert second != first
    delivery = ch.receive("c")
    assert (delivery.message_id, delivery.payload, delivery.key) == (second, "v2", "task-42")


def test_send_many_dedups_within_one_batch(coord):
    ch = coord.channel("dedup")
    ids = ch.send_many([("a", "k1"), ("b", "k2"), ("c", "k1"), "no-key", "no-key"])
    assert ids[0] == ids[2] and len(set(ids)) == 4
    assert sorted(d.payload for d in ch.receive_many("c", 10)) == ["a", "b", "no-key", "no-key"]


# -- batches -----------------------------------------------------------------------------------------------


def test_send_many_receive_many_ack_many_in_order(coord):
    ch = coord.channel("batch")
    ids = ch.send_many([{"i": i} for i in range(250)])
    assert len(ids) == len(set(ids)) == 250
    seen = []
    while batch := ch.receive_many("c", 100):
        assert len(batch) <= 100
        seen += [d.payload["i"] for d in batch]
        ch.ack_many(batch)
    assert seen == list(range(250))  # FIFO, each exactly once
    assert ch.stats()["depth"] == 0
    assert _rows(coord, "batch") == 0
    assert ch.send_many([]) == []


def test_ack_many_acks_the_valid_ones_then_reports_the_stale_one(coord, clock):
    ch = coord.channel("batch", visibility_timeout=5.0)
    ch.send_many(["a", "b", "c"])
    batch = ch.receive_many("slow", 3)
    clock.advance(6)
    stolen = ch.receive_many("other", 1)  # "a" is redelivered: slow's receipt for it is stale
    assert [d.payload for d in stolen] == ["a"]
    with pytest.raises(StaleReceipt) as caught:
        ch.ack_many(batch)
    assert caught.value.message_id == batch[0].message_id
    assert ch.receive_many("x", 10) == []  # b and c were acknowledged
    ch.ack_many(stolen)
    assert ch.stats()["depth"] == 0


def test_a_delivery_cannot_be_acked_on_another_channel(coord):
    a, b = coord.channel("a"), coord.channel("b")
    a.send("x")
    delivery = a.receive("c")
    with pytest.raises(ChannelError) as caught:
        b.ack(delivery)
    assert caught.value.facts == {"value": delivery}
    a.ack(delivery)  # refused without a change: still acknowledgeable where it came from


# -- consumer groups ---------------------------------------------------------------------------------------


def _group_consumer(root: str, group: str, out: str, go) -> None:
    coord = Coordinator.open(root)
    ch = coord.channel("events").group(group)
    go.wait(WAIT)
    got = []
    while True:
        batch = ch.receive_many(f"{group}-{os.getpid()}", 5, wait=0.3)
        if not batch:
            break
        got += [d.message_id for d in batch]
        time.sleep(0.001)  # a little work, so the group's two consumers really interleave
        ch.ack_many(batch)
    with open(out, "w") as handle:
        json.dump(got, handle)
    os._exit(0)


def test_every_group_gets_every_message_and_each_message_goes_to_one_consumer_of_a_group(root, tmp_path):
    count = 1000
    with Coordinator.open(root) as coord:
        ch = coord.channel("events")
        ch.group("audit")
        ch.group("billing")
        ids = ch.send_many([{"i": i} for i in range(count)])
    go = FORK.Event()
    workers = {}
    for group in ("audit", "billing"):
        for n in range(2):
            out = str(tmp_path / f"{group}-{n}.json")
            workers[out] = (group, FORK.Process(target=_group_consumer, args=(str(root), group, out, go)))
    for _, process in workers.values():
        process.start()
    go.set()
    for _, process in workers.values():
        process.join(WAIT)
    assert [p.exitcode for _, p in workers.values()] == [0] * 4
    received: dict[str, list[list[str]]] = {"audit": [], "billing": []}
    for out, (group, _) in workers.items():
        with open(out) as handle:
            received[group].append(json.load(handle))
    for group, (one, two) in received.items():
        assert sorted(one + two, key=int) == ids, group  # every message, exactly once in the group
        assert not set(one) & set(two), group  # never to both consumers
        assert one and two, group  # and both consumers took part
    with Coordinator.open(root) as coord:
        ch = coord.channel("events")
        assert ch.stats()["depth"] == 0
        assert ch.receive("ungrouped") is None  # once there are groups, messages go to them only


def test_a_group_sees_messages_sent_after_it_was_created(coord):
    ch = coord.channel("events")
    early = ch.group("early")
    ch.send("one")
    late = ch.group("late")
    ch.send("two")
    assert [d.payload for d in early.receive_many("e", 10)] == ["one", "two"]
    assert [d.payload for d in late.receive_many("l", 10)] == ["two"]


def test_group_delivery_must_be_acked_on_its_group(coord):
    ch = coord.channel("events")
    audit, billing = ch.group("audit"), ch.group("billing")
    ch.send("x")
    delivery = audit.receive("a")
    assert delivery.group == "audit"
    with pytest.raises(ChannelError):
        billing.ack(delivery)
    audit.ack(delivery)
    assert billing.receive("b").payload == "x"  # the other group's copy is untouched


# -- retention -----------------------------------------------------------------------------------------------


def test_acked_messages_are_deleted_by_default(coord):
    ch = coord.channel("gone")
    ch.send_many(["a", "b"])
    ch.ack_many(ch.receive_many("c", 2))
    assert _rows(coord, "gone") == 0


def test_retention_keeps_acked_messages_for_its_window_then_prunes_them(coord, clock):
    ch = coord.channel("kept", retention=60.0)
    ch.send_many(["a", "b"])
    ch.ack_many(ch.receive_many("c", 2))
    assert _rows(coord, "kept", "acked_at IS NOT NULL") == 2
    assert ch.receive("c") is None  # retained, never redelivered
    assert ch.stats()["depth"] == 0
    clock.advance(61)
    ch.send("c")
    ch.ack(ch.receive("c"))  # an ack prunes what outlived the retention window
    assert _rows(coord, "kept", "acked_at IS NOT NULL") == 1


# -- the process() helper -----------------------------------------------------------------------------------------


def test_process_acks_on_success_and_nacks_on_error(coord):
    ch = coord.channel("proc")
    ch.send("ok")
    with ch.process("c") as delivery:
        assert delivery.payload == "ok"
    assert ch.stats()["depth"] == 0
    ch.send("boom")
    with pytest.raises(RuntimeError):
        with ch.process("c") as delivery:
            raise RuntimeError("handler failed")
    again = ch.receive("c")
    assert (again.payload, again.attempt) == ("boom", 2)
    with ch.process("c") as nothing:
        assert nothing is None


def test_a_key_sent_again_after_the_dedup_window_is_delivered_and_processed(coord, clock):
    """send() accepted the second job-1 (new id): process() must run it, not ack it unseen
    because the first job-1's effect record (24 h) outlived the dedup window (10 s here)."""
    ch = coord.channel("proc", dedup_ttl=10.0)
    first = ch.send("first", key="job-1")
    assert ch.send("first again", key="job-1") == first  # within the window: not enqueued
    runs = []
    with ch.process("c") as delivery:
        runs.append(delivery.payload)
    clock.advance(11)
    second = ch.send("again", key="job-1")  # dedup window passed: a new message
    assert second != first
    ch.send("next", key="job-2")
    while True:
        with ch.process("c") as delivery:
            if delivery is None:
                break
            runs.append(delivery.payload)
    assert runs == ["first", "again", "next"]
    assert ch.effect_key(_delivery(ch, first, "job-1")) == f"job-1#{first}"  # the key and the id
    assert ch.stats()["depth"] == 0


def _delivery(ch, message_id: str, key: str):
    from agent_coherence import Delivery

    return Delivery(message_id=message_id, channel=ch.name, payload=None, attempt=1, receipt="r",
                    consumer="c", key=key, visible_at=0.0)


def test_process_records_a_finished_blocks_effect_even_when_its_receipt_went_stale(coord, clock):
    """The block outlived its visibility timeout and the message went to b meanwhile: a's ack is
    refused (StaleReceipt), but a's work is done, so the next redelivery (b died without acking)
    is skipped, not run a third time."""
    ch = coord.channel("slow", visibility_timeout=5.0)
    ch.send("job", key="k")
    runs = []
    with pytest.raises(StaleReceipt):
        with ch.process("a") as delivery:
            runs.append(delivery.attempt)
            clock.advance(6)  # the timeout runs out while the block works
            assert ch.receive("b").attempt == 2  # b takes it, then dies without an ack
    clock.advance(6)
    with ch.process("c") as again:
        assert again is None  # skipped (and acknowledged) as done
    assert runs == [1]
    assert ch.stats()["depth"] == 0


def test_process_with_seen_skips_a_redelivery_whose_effect_committed_before_the_ack_was_lost(
        coord, clock, monkeypatch):
    ch = coord.channel("proc", visibility_timeout=5.0)
    ch.send("one", key="k1")
    effects: list[str] = []
    real_ack = coord.backend.ack_messages

    def lost_ack(*args, **kwargs):
        raise ConnectionError("ack lost")  # the consumer dies between its effect and its ack

    monkeypatch.setattr(coord.backend, "ack_messages", lost_ack)
    with pytest.raises(ConnectionError):
        with ch.process("c", seen=effects.__contains__) as delivery:
            effects.append(ch.effect_key(delivery))
    monkeypatch.setattr(coord.backend, "ack_messages", real_ack)
    clock.advance(5.5)  # k1 comes back
    ch.send("two", key="k2")
    with ch.process("c", seen=effects.__contains__) as delivery:
        assert delivery.key == "k2"  # k1 was acknowledged and skipped, not handed out again
        effects.append(ch.effect_key(delivery))
    assert effects == ["k1#1", "k2#2"]
    assert ch.stats()["depth"] == 0


# -- observation -------------------------------------------------------------------------------------------------


def test_stats_report_ready_in_flight_delayed_and_oldest_age(coord, clock):
    ch = coord.channel("stats")
    ch.send_many(["a", "b", "c", "d"])
    ch.send("later", delay=60)
    clock.advance(4)
    ch.receive("c")
    ch.nack(ch.receive("c"), delay=30)
    stats = ch.stats()
    assert (stats["depth"], stats["ready"], stats["in_flight"], stats["delayed"]) == (5, 2, 1, 2)
    assert stats["oldest_ready_age"] == pytest.approx(4, abs=0.5)  # the server clock moves on
    clock.advance(60)
    assert (ch.stats()["depth"], ch.stats()["ready"]) == (5, 5)  # delays and the timeout all ran out


def test_channel_traffic_is_journaled(coord):
    ch = coord.channel("audit")
    ch.send("x")
    ch.ack(ch.receive("c"))
    kinds = [e.kind for e in coord.journal.history("channel:audit")]
    assert kinds == ["message.send", "message.receive", "message.ack"]
    coord.journal.verify()


def test_messages_sent_before_the_first_group_stay_counted_in_stats_and_liveness(coord):
    ch = coord.channel("fanned", sla=0.0)
    ch.send("before-1")
    ch.send("before-2")
    audit = ch.group("audit")
    ch.send("after")
    stats = ch.stats()
    assert (stats["depth"], stats["ready"]) == (3, 3)
    assert (stats["groups"][""]["ready"], stats["groups"]["audit"]["ready"]) == (2, 1)
    coord.liveness.start("idle", channels=["fanned"])
    assert any(a.kind == "stale_channel" and a.subject == "fanned" for a in coord.liveness.anomalies(report=False))
    for _ in range(2):
        ch.ack(ch.receive("plain"))
    audit.ack(audit.receive("a"))
    assert ch.stats()["depth"] == 0 and "" not in ch.stats()["groups"]


def test_a_fast_channels_pre_group_messages_leave_stats_when_acked_before_their_batch_is_chained(coord):
    ch = coord.channel("fanned-fast", durability="fast")
    ch.send("before")
    ch.group("audit")
    ch.ack(ch.receive("plain"))  # awaits its batch (a fast channel), but is no longer in the channel
    stats = ch.stats()
    assert stats["depth"] == 0 and sorted(stats["groups"]) == ["audit"]


def test_a_dead_letter_keeps_its_original_send_time_in_the_journal_and_is_logged(coord, clock, caplog):
    ch = coord.channel("poisoned", max_attempts=1)
    before = clock.t
    ch.send(b"bad")
    after = clock.t  # the server's clock runs on meanwhile; the fake one does not
    ch.receive("c")
    clock.advance(100)
    with caplog.at_level("WARNING", logger="agent_coherence.channels"):
        assert ch.receive("c") is None  # the attempts are used up: to the dead-letter channel
    [entry] = [e for e in coord.journal.history("channel:poisoned") if e.kind == "message.dead"]
    assert before - 0.001 <= entry.data["sent"] <= after + 0.001
    assert ch.dead_letters().stats()["oldest_ready_age"] < 50  # enqueued there when it moved, 100 s on
    assert any("moved to 'poisoned.dead'" in record.getMessage() for record in caplog.records)
