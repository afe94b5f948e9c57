"""A fast channel's common case in one statement per operation, and the schemas' triggers.

The plain send, the first delivery and the batched ack of a ``fast`` channel each run as one
autocommitted statement (no BEGIN/COMMIT); the send's id counter and count are kept by the
trigger of the view it inserts into, a batched ack's count and work by the chain of its batch.
These tests show the shape (the statements SQLite runs), that the record and the counts are the
ones the full transaction keeps, that every case the statement declines still works through the
full path, and that databases of schemas 6, 7, 9 and 10 are upgraded with their counts and ids intact.
"""

from __future__ import annotations

import sqlite3

import pytest

from agent_coherence import Coordinator
from agent_coherence.errors import StaleReceipt
from agent_coherence.backends.sqlite_channel_fast import new_receipt
from agent_coherence.backends.sqlite_schema import SCHEMA_VERSION

from conftest import FORK, open_quiet


def _statements(coord: Coordinator) -> list[str]:
    """Every statement the backend's connection runs from now on."""
    seen: list[str] = []
    coord.backend._connection().set_trace_callback(seen.append)
    return seen


def _counts(path: str) -> dict[tuple[str, str], int]:
    with sqlite3.connect(path) as conn:
        return {(c, g): n for c, g, n in conn.execute("SELECT channel, grp, unacked FROM channel_counts")}


def _as_schema(path: str, version: int, statements: list[str]) -> None:
    """Give the database an older schema's shape: run ``statements``, mark it ``version``."""
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(version),))
    conn.close()


def test_a_fast_round_trip_is_three_statements_and_no_transaction(quiet_coord):
    coord = quiet_coord
    ch = coord.channel("quick", durability="fast")
    ch.send("warm")
    ch.ack(ch.receive("c"))  # the first receive of a consumer records it as seen (full path)
    seen = _statements(coord)
    ch.send({"n": 1})
    delivery = ch.receive("c")
    ch.ack(delivery)
    assert delivery.payload == {"n": 1} and delivery.attempt == 1
    # SQLite traces a statement again as each trigger it fires starts: count it once.
    statements = [sql for i, sql in enumerate(seen) if i == 0 or sql != seen[i - 1]]
    assert [sql.split(" ", 3)[:3] for sql in statements] == [
        ["INSERT", "INTO", "message_sends(id,"], ["UPDATE", "messages", "SET"], ["UPDATE", "messages", "SET"]]
    assert not any("BEGIN" in sql for sql in seen)
    coord.backend.chain_acks("quick")
    acked = [item for entry in coord.journal.history("channel:quick") if entry.kind == "message.ack"
             for item in entry.data["delivered"]]
    assert [(item[0], item[2], item[3]) for item in acked] == [(1, "c", 1), (2, "c", 1)]
    assert ch.stats()["depth"] == 0
    [worker] = coord.backend.list_workers()
    assert (worker.worker, worker.work_done) == ("c", 2)


def test_the_triggers_keep_counts_and_ids_on_every_path(coord, clock):
    fast = coord.channel("f", durability="fast")
    durable = coord.channel("d")
    grouped = coord.channel("g", durability="fast")
    one, two = grouped.group("one"), grouped.group("two")
    ids = [fast.send(i) for i in range(3)] + fast.send_many([3, 4]) + [fast.send("k", key="k")]
    assert ids == [str(i) for i in range(1, 7)]
    assert [durable.send(i) for i in range(2)] == ["1", "2"]
    assert grouped.send("x") == "1" and grouped.send("y") == "2"
    fast.ack(fast.receive("a"))
    dying = coord.channel("dying", durability="fast", visibility_timeout=5, max_attempts=2)
    dying.send("poison")
    for _ in range(2):
        assert dying.receive("a") is not None
        clock.advance(6)
    assert dying.receive("a") is None  # the third delivery: moved to the dead-letter channel
    taken = fast.receive_many("b", 2)
    durable.ack(durable.receive("a"))
    one.ack(one.receive("a"))
    fast.nack(taken[0])
    path = coord.backend.path
    with sqlite3.connect(path) as conn:  # what the counts must be: the unacknowledged rows and
        # the acknowledged ones awaiting their batch (uncounted when it is chained)
        truth = {(c, g): n for c, g, n in conn.execute(
            "SELECT channel, grp, count(*) FROM messages WHERE acked_at IS NULL OR receipt IS NOT NULL "
            "GROUP BY channel, grp")}
    assert {k: v for k, v in _counts(path).items() if v} == truth
    assert truth[("f", "")] == 5 and truth[("dying.dead", "")] == 1 and truth[("d", "")] == 1
    assert ("dying", "") not in truth
    assert truth[("g", "one")] == 2 and truth[("g", "two")] == 2
    unacked = {"f": 5, "g": 3, "d": 1}  # what stats report: the awaiting rows taken off
    assert {name: coord.channel(name).stats()["depth"] for name in unacked} == unacked
    coord.backend.chain_acks()
    assert {k: v for k, v in _counts(path).items() if v} == {**truth, ("g", "one"): 1}
    assert fast.send("next") == "7" and dying.dead_letters().send("z") == "2"


def test_the_statement_declines_what_only_the_transaction_handles(coord, clock):
    ch = coord.channel("quick", durability="fast", visibility_timeout=5)
    ch.send("a")
    first = ch.receive("c1")
    clock.advance(6)
    again = ch.receive("c1")  # a redelivery: journaled by the full path
    assert again.message_id == first.message_id and again.attempt == 2
    ch.ack(again)
    kinds = [e.kind for e in coord.journal.history("channel:quick")]
    assert kinds == ["message.redeliver"]
    stale = ch.receive("c1")
    assert stale is None
    with pytest.raises(StaleReceipt):
        ch.ack(again)  # acknowledged already: the statement matches nothing, the full path says why


def test_a_schema_6_database_is_upgraded_with_its_counts_and_ids(root):
    with Coordinator.open(root) as coord:
        ch = coord.channel("tasks", durability="fast")
        ch.send_many(["a", "b", "c"])
        ch.ack(ch.receive("c"))
        path = coord.backend.path
    before = _counts(path)  # after close, which chained the ack
    with sqlite3.connect(path) as conn:  # as schema 6 left it: the same tables, no triggers
        for kind, name in conn.execute("SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view') "
                                       "ORDER BY type").fetchall():
            conn.execute(f"DROP {kind.upper()} {name}")
        conn.execute("UPDATE meta SET value = '6' WHERE name = 'schema_version'")
    conn.close()
    with Coordinator.open(root) as coord:
        ch = coord.channel("tasks")
        assert _counts(path) == before == {("tasks", ""): 2}
        assert ch.send("d") == "4"
        ch.ack(ch.receive("c"))
        assert coord.backend.channel_stats("tasks")["depth"] == 2
        coord.journal.verify()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        made = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('trigger', 'view')")}
    conn.close()
    assert made == {"messages_count_delete", "message_sends", "message_sends_insert"}


# Schema 7's definitions (schema 8 kept them) that schema 9 replaced: every acknowledged row in messages_acked, an ack
# uncounted and credited at once by triggers, an ack awaiting its batch at ACKED, the id counters
# in their own table.
_SCHEMA_7 = (
    "CREATE TABLE message_seq (channel TEXT PRIMARY KEY, last_id INTEGER NOT NULL)",
    "INSERT INTO message_seq SELECT channel, last_id FROM channel_counts WHERE grp = ''",
    "ALTER TABLE channel_counts DROP COLUMN last_id",
    "CREATE TRIGGER message_sends_insert INSTEAD OF INSERT ON message_sends BEGIN "
    "INSERT INTO messages(id, channel, grp, key, payload, encoding, enqueued_at, available_at, deadline, "
    "attempts, receipt, consumer, acked_at) VALUES (NEW.id, NEW.channel, '', NULL, NEW.payload, NEW.encoding, "
    "NEW.enqueued_at, NEW.available_at, NEW.deadline, 0, NULL, NULL, NULL); "
    "INSERT INTO message_seq(channel, last_id) VALUES (NEW.channel, NEW.id) "
    "ON CONFLICT(channel) DO UPDATE SET last_id = excluded.last_id; "
    "INSERT INTO channel_counts(channel, grp, unacked) VALUES (NEW.channel, '', 1) "
    "ON CONFLICT(channel, grp) DO UPDATE SET unacked = unacked + 1; END",
    "CREATE INDEX messages_acked ON messages(channel, acked_at) WHERE acked_at IS NOT NULL",
    "CREATE TRIGGER messages_count_ack AFTER UPDATE OF acked_at ON messages "
    "WHEN OLD.acked_at IS NULL AND NEW.acked_at IS NOT NULL "
    "BEGIN UPDATE channel_counts SET unacked = unacked - 1 WHERE channel = NEW.channel AND grp = NEW.grp; END",
    "CREATE TRIGGER messages_work_done AFTER UPDATE OF acked_at ON messages "
    "WHEN OLD.acked_at IS NULL AND NEW.acked_at IS NOT NULL AND NEW.consumer IS NOT NULL "
    "BEGIN INSERT INTO workers(worker, started_at, last_seen, ended_at, work_done, info) "
    "SELECT NEW.consumer, NEW.acked_at, NEW.acked_at, NULL, 1, '{}' WHERE true "
    "ON CONFLICT(worker) DO UPDATE SET last_seen = excluded.last_seen, work_done = work_done + 1; END",
)


def test_a_schema_7_database_is_upgraded_with_its_awaiting_acks_counted_once(root):
    """Acks a killed process left for their batch under schema 7 (at ACKED, uncounted, credited)
    are chained once after the upgrade, neither counted nor credited twice."""
    coord = Coordinator.open(root)
    ch = coord.channel("tasks", durability="fast")
    ch.send_many(["a", "b", "c"])
    for _ in range(2):
        ch.ack(ch.receive("c"))
    path = coord.backend.path
    coord.backend.__dict__["_unchained_acks"].clear()  # as if killed: close chains nothing
    coord.close()
    with sqlite3.connect(path) as conn:  # the same state as schema 7 kept it
        waiting = conn.execute("SELECT count(*) FROM messages WHERE available_at = 2e18").fetchone()[0]
        assert waiting == 2
        conn.execute("UPDATE messages SET available_at = 1e18 WHERE available_at = 2e18")
        conn.execute("UPDATE channel_counts SET unacked = unacked - 2")
        conn.execute("UPDATE workers SET work_done = work_done + 2 WHERE worker = 'c'")
        for name in ("messages_count_settled", "messages_work_done", "message_sends_insert"):
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
        conn.execute("DROP INDEX messages_acked")
        for statement in _SCHEMA_7:
            conn.execute(statement)
        conn.execute("UPDATE meta SET value = '7' WHERE name = 'schema_version'")
    conn.close()
    assert _counts(path) == {("tasks", ""): 1}
    with Coordinator.open(root) as coord:
        assert _counts(path) == {("tasks", ""): 3}  # the two awaiting acks count until chained
        assert coord.channel("tasks").stats()["depth"] == 1
        assert [(w.worker, w.work_done) for w in coord.backend.list_workers()] == [("c", 2)]
        assert coord.backend.chain_acks("tasks") == 2
        assert _counts(path) == {("tasks", ""): 1}
        ch = coord.channel("tasks")
        assert [ch.send("d"), ch.send_many(["e"])[0]] == ["4", "5"]  # the id counter carried over
        assert [(w.worker, w.work_done) for w in coord.backend.list_workers()] == [("c", 2)]
        acked = [item[0] for entry in coord.journal.history("channel:tasks") if entry.kind == "message.ack"
                 for item in entry.data["delivered"]]
        assert acked == [1, 2]
        coord.journal.verify()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        index = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'messages_acked'").fetchone()[0]
    conn.close()
    assert "receipt IS NULL" in index
    assert _counts(path) == {("tasks", ""): 3}


def test_a_send_that_expects_its_id_never_takes_one_another_sender_took(root):
    # Two coordinators on one database: two connections, each with its own expected next id. A
    # run of sends from one makes it expect the next id; the other's send in between makes that
    # expectation wrong, and the statement must then insert nothing (the fallback asks for the id).
    first, second = open_quiet(root), Coordinator.open(root)  # no retention step among first's statements
    try:
        a, b = first.channel("shared", durability="fast"), second.channel("shared", durability="fast")
        seen = _statements(first)
        sent = []
        for run in (4, 1, 3, 1, 2):
            sent += [a.send(f"a{run}.{i}") for i in range(run)]
            sent += [b.send(f"b{run}")]
            sent += a.send_many([f"m{run}"])
        assert sent == [str(i) for i in range(1, len(sent) + 1)]
        assert any(sql.startswith("INSERT INTO message_sends") and "RETURNING" not in sql for sql in seen)
        received = []
        while (delivery := a.receive("c")) is not None:
            received.append(delivery.message_id)
            a.ack(delivery)
        assert received == sent
        assert a.stats()["depth"] == 0
    finally:
        first.close()
        second.close()


# Schema 9's triggers that schema 10 dropped: a settling ack (a retained one) uncounted and credited
# by triggers on the update of acked_at, and the send view's trigger upserting the counts row.
_SCHEMA_9 = (
    "CREATE TRIGGER messages_count_settled AFTER UPDATE OF acked_at ON messages "
    "WHEN OLD.acked_at IS NULL AND NEW.acked_at IS NOT NULL AND NEW.receipt IS NULL "
    "BEGIN UPDATE channel_counts SET unacked = unacked - 1 WHERE channel = NEW.channel AND grp = NEW.grp; END",
    "CREATE TRIGGER messages_work_done AFTER UPDATE OF acked_at ON messages "
    "WHEN OLD.acked_at IS NULL AND NEW.acked_at IS NOT NULL AND NEW.consumer IS NOT NULL AND NEW.receipt IS NULL "
    "BEGIN INSERT INTO workers(worker, started_at, last_seen, ended_at, work_done, info) "
    "SELECT NEW.consumer, seen, seen, NULL, 1, '{}' FROM (SELECT NEW.acked_at - "
    "coalesce((SELECT ahead FROM channel_clock WHERE id = 1), 0) AS seen) WHERE true "
    "ON CONFLICT(worker) DO UPDATE SET last_seen = excluded.last_seen, work_done = work_done + 1; END",
    "CREATE TRIGGER message_sends_insert INSTEAD OF INSERT ON message_sends BEGIN "
    "INSERT INTO messages(id, channel, grp, key, payload, encoding, enqueued_at, available_at, deadline, "
    "attempts, receipt, consumer, acked_at) VALUES (NEW.id, NEW.channel, '', NULL, NEW.payload, NEW.encoding, "
    "NEW.enqueued_at, NEW.available_at, NEW.deadline, 0, NULL, NULL, NULL); "
    "INSERT INTO channel_counts(channel, grp, unacked, last_id) VALUES (NEW.channel, '', 1, NEW.id) "
    "ON CONFLICT(channel, grp) DO UPDATE SET unacked = unacked + 1, last_id = excluded.last_id; END",
)


@pytest.mark.parametrize("durability", ["fast", "durable"])
def test_a_schema_9_database_is_upgraded_and_a_retained_ack_is_counted_and_credited_once(root, durability):
    """A retained ack is uncounted and credited by its own transaction since schema 10: once the
    upgrade has dropped schema 9's triggers, exactly once (with them left in place, twice)."""
    with Coordinator.open(root) as coord:
        ch = coord.channel("kept", durability=durability, retention=60)
        ch.send_many(["a", "b", "c", "d"])
        ch.ack(ch.receive("w"))
        path = coord.backend.path
    _as_schema(path, 9, ["DROP TRIGGER message_sends_insert", *_SCHEMA_9])
    with Coordinator.open(root) as coord:
        ch = coord.channel("kept")
        for _ in range(2):
            ch.ack(ch.receive("w"))
        assert ch.send("e") == "5"
        assert _counts(path) == {("kept", ""): 2}
        assert ch.stats()["depth"] == 2
        assert [(w.worker, w.work_done) for w in coord.backend.list_workers()] == [("w", 3)]
    with sqlite3.connect(path) as conn:
        made = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        sends = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'message_sends_insert'").fetchone()[0]
    conn.close()
    assert made == {"messages_count_delete", "message_sends_insert"}
    assert "ON CONFLICT" not in sends


# Schema 10's send view and trigger: the view had no columns for the trigger's conditions.
_SCHEMA_10_SENDS = (
    "CREATE VIEW message_sends AS SELECT id, channel, payload, encoding, enqueued_at, available_at, deadline "
    "FROM messages",
    "CREATE TRIGGER message_sends_insert INSTEAD OF INSERT ON message_sends BEGIN "
    "INSERT INTO messages(id, channel, grp, key, payload, encoding, enqueued_at, available_at, deadline, "
    "attempts, receipt, consumer, acked_at) VALUES (NEW.id, NEW.channel, '', NULL, NEW.payload, NEW.encoding, "
    "NEW.enqueued_at, NEW.available_at, NEW.deadline, 0, NULL, NULL, NULL); "
    "UPDATE channel_counts SET unacked = unacked + 1, last_id = NEW.id WHERE channel = NEW.channel AND grp = ''; END",
)


def test_a_schema_10_database_is_upgraded_and_sends_in_one_statement_again(root):
    """Schema 11's single-statement send gives the view the trigger's columns: a schema 10
    database gets the new view and trigger (its sends would fail on the old view: no column
    ``ahead``), with its ids and counts intact."""
    with Coordinator.open(root) as coord:
        ch = coord.channel("old", durability="fast")
        for payload in ("a", "b", "c"):
            ch.send(payload)
        ch.ack(ch.receive("w"))
        path = coord.backend.path
    _as_schema(path, 10, ["DROP TRIGGER message_sends_insert", "DROP VIEW message_sends", *_SCHEMA_10_SENDS])
    with open_quiet(root) as coord:  # no retention step among the statements counted
        ch = coord.channel("old")
        assert ch.send("d") == "4"  # the full path (this process's first send), then the statement
        seen = _statements(coord)
        assert [ch.send("e"), ch.send("f"), ch.send("g")] == ["5", "6", "7"]
        statements = [sql for i, sql in enumerate(seen) if i == 0 or sql != seen[i - 1]]  # see above
        assert [sql.split(" ", 3)[2] for sql in statements] == ["message_sends(id,"] * 3
        assert " VALUES " in statements[2]  # the third expects its id
        assert _counts(path) == {("old", ""): 6}
        assert [ch.receive("w").payload for _ in range(6)] == ["b", "c", "d", "e", "f", "g"]
    with sqlite3.connect(path) as conn:
        view = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'message_sends'").fetchone()[0]
        version = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0]
    conn.close()
    assert "AS ahead" in view and version == str(SCHEMA_VERSION) == "11"


def _draw_receipts(conn: object) -> None:
    conn.send([new_receipt() for _ in range(3)])  # type: ignore[attr-defined]


def test_a_forked_child_never_hands_out_its_parents_next_receipts():
    # Receipts come from a pool drawn 64 at a time; a child forked with the pool half used would
    # hand out exactly the receipts its parent hands out next, unless the fork empties it.
    new_receipt()  # the pool now holds 63
    parent_end, child_end = FORK.Pipe()
    child = FORK.Process(target=_draw_receipts, args=(child_end,))
    child.start()
    theirs = parent_end.recv()
    child.join(10)
    ours = [new_receipt() for _ in range(3)]
    assert child.exitcode == 0
    assert len(set(theirs) | set(ours)) == 6 and all(len(r) == 16 for r in theirs + ours)
