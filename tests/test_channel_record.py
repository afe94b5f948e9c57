"""The record of a fast channel: each delivery is journaled once, when it ends, and the
acknowledgements in batches: an acknowledged row stays, marked, as the record until a batch of
them is chained into one ``message.ack`` entry (after CHAIN_BATCH acks of a process, CHAIN_AFTER
seconds, a change of the channel's durability, or close). These tests show that nothing
acknowledged is ever missing from the record or in it twice, also when the acknowledging process
is killed before its batch was chained, and that the kept rows are invisible to consumers and to
the counts.
"""

from __future__ import annotations

import os
import signal
import sqlite3

from agent_coherence import Coordinator
from agent_coherence.backends.sqlite_channel_record import CHAIN_AFTER, CHAIN_BATCH

from conftest import FORK, use_fake_clock


def _acked(coord: Coordinator, channel: str) -> list[list[object]]:
    """Every delivery the journal says was acknowledged in ``channel``, in journal order."""
    return [item for entry in coord.journal.history(f"channel:{channel}") if entry.kind == "message.ack"
            for item in entry.data["delivered"]]


def _kept_rows(coord: Coordinator) -> int:
    with sqlite3.connect(coord.backend.path) as conn:
        return conn.execute("SELECT count(*) FROM messages WHERE acked_at IS NOT NULL").fetchone()[0]


def test_a_fast_channel_journals_each_delivery_once_when_it_ends(coord, clock):
    ch = coord.channel("quick", durability="fast", visibility_timeout=5, max_attempts=3)
    ch.send("a")
    first = ch.receive("c1")
    sent = clock.t
    clock.advance(6)  # c1's delivery times out
    again = ch.receive("c2")
    assert again.message_id == first.message_id
    ch.ack(again)
    ch.send("b")
    second = ch.receive("c2")
    ch.ack(second)
    # Acknowledged, not chained yet: the rows are the record, out of every count and every receive.
    assert [e.kind for e in coord.journal.history("channel:quick")] == ["message.redeliver"]
    assert _kept_rows(coord) == 2
    assert ch.stats()["depth"] == 0 and ch.receive("c3") is None
    clock.advance(CHAIN_AFTER)
    assert ch.receive("c3") is None  # the next operation after CHAIN_AFTER chains them
    entries = list(coord.journal.history("channel:quick"))
    assert [e.kind for e in entries] == ["message.redeliver", "message.ack"]
    assert entries[0].data["previous"] == [[int(first.message_id), "c1", 1]]
    assert [item[:4] for item in entries[1].data["delivered"]] == [
        [int(again.message_id), "", "c2", 2], [int(second.message_id), "", "c2", 1]]
    assert entries[1].data["delivered"][0][4] == sent  # the send time; [5] is the ack time
    assert _kept_rows(coord) == 0
    assert coord.journal.verify() == coord.journal.count()


def test_a_batch_is_one_entry_after_chain_batch_acks(coord):
    ch = coord.channel("batch", durability="fast")
    ids = ch.send_many(list(range(CHAIN_BATCH + 1)))
    for _ in range(CHAIN_BATCH - 1):
        ch.ack(ch.receive("c"))
    assert _acked(coord, "batch") == []
    ch.ack(ch.receive("c"))
    assert [item[0] for item in _acked(coord, "batch")] == [int(i) for i in ids[:CHAIN_BATCH]]
    ch.ack(ch.receive("c"))
    coord.close()  # the last one is chained on close
    with Coordinator.open(coord.root) as again:
        assert [item[0] for item in _acked(again, "batch")] == [int(i) for i in ids]
        assert _kept_rows(again) == 0
        assert again.journal.verify() == again.journal.count()


def test_a_change_of_durability_chains_what_was_kept(coord):
    ch = coord.channel("switch", durability="fast")
    ch.send_many(["a", "b"])
    ch.ack(ch.receive("c"))
    ch.configure(durability="durable")
    assert len(_acked(coord, "switch")) == 1 and _kept_rows(coord) == 0
    ch.ack(ch.receive("c"))  # durable: its own entry, at once
    assert [e.kind for e in coord.journal.history("channel:switch")][-1] == "message.ack"


def test_retained_rows_are_not_recorded_again_when_retention_is_switched_off(coord):
    ch = coord.channel("kept", durability="fast", retention=3600)
    ch.send("a")
    ch.ack(ch.receive("c"))  # journaled at once, and kept for retention
    ch.configure(retention=0)
    ch.send("b")
    ch.ack(ch.receive("c"))
    assert coord.backend.chain_acks("kept") == 1  # only b: a is on record already
    assert len([e for e in coord.journal.history("channel:kept") if e.kind == "message.ack"]) == 2


def _ack_and_die(root: str, count: int, ready: object) -> None:
    coord = Coordinator.open(root)
    ch = coord.channel("work", durability="fast")
    for _ in range(count):
        ch.ack(ch.receive("doomed"))
    ready.set()  # type: ignore[attr-defined]
    signal.pause()  # killed here: no close, nothing chained


def test_acks_of_a_killed_process_are_chained_once_by_the_next_batch(root):
    with Coordinator.open(root) as coord:
        ids = [int(i) for i in coord.channel("work", durability="fast").send_many(list(range(20)))]
    ready = FORK.Event()
    child = FORK.Process(target=_ack_and_die, args=(str(root), 5, ready))
    child.start()
    assert ready.wait(30)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    with Coordinator.open(root) as coord:
        ch = coord.channel("work")
        assert _acked(coord, "work") == [] and _kept_rows(coord) == 5  # the rows hold the record
        assert ch.stats()["depth"] == 15
        clock = use_fake_clock(coord)
        for _ in range(15):
            ch.ack(ch.receive("survivor"))
        assert _acked(coord, "work") == []
        clock.advance(CHAIN_AFTER)
        assert ch.receive("survivor") is None  # due: chains its own 15 and the killed process's 5
        acked = _acked(coord, "work")
        assert sorted(item[0] for item in acked) == ids  # every message once: 0 lost, 0 twice
        assert [item[2] for item in acked].count("doomed") == 5
        assert _kept_rows(coord) == 0 and ch.stats()["depth"] == 0
        assert coord.journal.verify() == coord.journal.count()
