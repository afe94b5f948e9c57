"""The common case of a ``fast`` channel in one autocommitted statement each (SQLite).

A ``fast`` channel's plain send (one message, no key, no consumer groups), first delivery of one
message, and batched ack (one delivery, no effect to record) each run as a single statement:
no BEGIN/COMMIT, no read before the write. What the transaction of the full path did besides is
done inside that statement: channel time is the backend clock plus the clock's offset as this
process last saw it, checked in the statement against ``channel_clock`` (``_CLOCK_HOLDS``); a
send goes through the view ``message_sends``, whose trigger inserts the row and advances the id
counter and the unacknowledged count (SEND_SCHEMA); an ack writes only its row: it waits for its
batch at UNCHAINED, still counted, and the batch uncounts it and credits the consumer's work
(sqlite_channel_record), so no trigger writes anything for it. One statement is
atomic, so an interrupt leaves the operation done or not done, never half.

The statement does nothing (and the caller runs the full transaction instead, which handles every
case) whenever the full path has something more to do: the channel clock stepped back or is due
to be recorded (every CLOCK_RECORD_EVERY of channel time), the first ready message is a
redelivery or due for the dead-letter channel, the consumer's ``last_seen`` is due, a batch of
acknowledgements is due to be chained, the channel has groups or was never sent to (no counts
row yet), the receipt does not match, or the channel is empty. So the record is the full path's:
a first delivery was never journaled by a fast channel (only its end is: ``message.redeliver``,
``message.dead``, the batched ``message.ack``), and an ack here keeps its row for the batch
exactly as the full path does.
The first operation of a process on any channel takes the full path (it learns the offset).

A mixin of SQLiteBackend (through ChannelOps): it relies on ``_retry_busy``, ``_conn``, ``_pid``,
``_connection``, ``_run``, ``_lock``, ``maintenance_due``, ``now`` and the batch state of
``AckRecordOps``.
"""

from __future__ import annotations

from os import getpid, register_at_fork, urandom

try:
    from _sqlite3 import DatabaseError  # the C module: the sqlite3 package imports datetime (see sqlite.py)
except ImportError:
    from sqlite3 import DatabaseError  # type: ignore[assignment]

from .sqlite_channel_depth import FREE, HELD, UNCHAINED
from .sqlite_channel_record import batch_due

TYPE_CHECKING = False  # typing is not imported at run time: this module is on the hook path
if TYPE_CHECKING:
    from typing import Any

# Channel time as the full path computes it, checked inside the statement: ``?6`` is the backend
# clock plus the clock's offset as this process last saw it (``?7``), ``?8`` the recording
# interval. True only if the stored offset is still that one (no other process saw a step back
# since), time has not run back, and it was recorded less than the interval ago: otherwise the
# statement changes nothing and the full path records the clock. A scalar subquery, evaluated
# once per statement (a join with the clock row cost about 6 us more per statement).
_CLOCK_HOLDS = "(SELECT ahead = ?7 AND ?6 >= observed AND ?6 < observed + ?8 FROM channel_clock WHERE id = 1)"

# A send of one message to a channel without groups, as one statement: an insert into this view
# does what the full send's transaction does (the row, and the id counter and the count, which
# share the channel's counts row: one page). Only this path uses it; a row trigger on messages
# itself would also run for every row of a batch. Its trigger also checks what makes the send
# valid here, with the values the insert gives it: the message's id is the one after the counts
# row's last id, the channel has no groups, and channel time holds (NEW.enqueued_at, with the
# clock offset ``ahead`` and the recording interval ``every``: as _CLOCK_HOLDS). When any of them
# fails it changes nothing. The insert gives its row as VALUES, not as a SELECT with those
# conditions: SQLite stores a SELECT's rows in a temporary table before it runs the trigger, about
# 3 us more per send. The counts row is updated, not upserted (about 1 us less): it must exist (the
# channel's first send takes the full path, which makes it), and it is updated only if the row was
# inserted (the message with that id exists and the counter is still one below it).
SEND_SCHEMA = (
    "CREATE VIEW IF NOT EXISTS message_sends AS SELECT id, channel, payload, encoding, enqueued_at, "
    "available_at, deadline, NULL AS ahead, NULL AS every FROM messages",
    "CREATE TRIGGER IF NOT EXISTS message_sends_insert INSTEAD OF INSERT ON message_sends BEGIN "
    "INSERT INTO messages(id, channel, grp, key, payload, encoding, enqueued_at, available_at, deadline, "
    "attempts, receipt, consumer, acked_at) SELECT NEW.id, NEW.channel, '', NULL, NEW.payload, NEW.encoding, "
    "NEW.enqueued_at, NEW.available_at, NEW.deadline, 0, NULL, NULL, NULL "
    "WHERE (SELECT last_id FROM channel_counts WHERE channel = NEW.channel AND grp = '') = NEW.id - 1 "
    "AND NOT EXISTS (SELECT 1 FROM channel_groups WHERE channel = NEW.channel) "
    "AND (SELECT ahead = NEW.ahead AND NEW.enqueued_at >= observed AND NEW.enqueued_at < observed + NEW.every "
    "FROM channel_clock WHERE id = 1); "
    "UPDATE channel_counts SET unacked = unacked + 1, last_id = NEW.id WHERE channel = NEW.channel AND grp = '' "
    "AND last_id = NEW.id - 1 AND EXISTS (SELECT 1 FROM messages WHERE channel = NEW.channel AND grp = '' "
    "AND id = NEW.id); END",
)

# Parameters of all three: ?1 the channel, ?6 channel time, ?7 the clock offset, ?8 the interval.
# The send that learns its id (the one after the channel's last): its own conditions are the
# trigger's, in the same statement, so RETURNING gives an id only when the trigger inserted it.
SEND_SQL = (
    "INSERT INTO message_sends(id, channel, payload, encoding, enqueued_at, available_at, deadline, ahead, every) "
    "SELECT last_id + 1, ?1, ?2, ?3, ?6, ?6 + ?4, ?5, ?7, ?8 FROM channel_counts WHERE channel = ?1 AND grp = '' "
    f"AND NOT EXISTS (SELECT 1 FROM channel_groups WHERE channel = ?1) AND {_CLOCK_HOLDS} RETURNING id")
# The same send with the id this process expects (?9: the one after the last it got, while no
# other process sent in between), without RETURNING (about 4 us less, as the view's RETURNING is
# what costs), its conditions left to the trigger. It tells by the rows it changed (the message
# and the counts row; an insert into a view counts none itself, its trigger's rows do): any change
# means it was sent, so it is never sent again by the fallback.
SEND_EXPECTED_SQL = (
    "INSERT INTO message_sends(id, channel, payload, encoding, enqueued_at, available_at, deadline, ahead, every) "
    "VALUES (?9, ?1, ?2, ?3, ?6, ?6 + ?4, ?5, ?7, ?8)")
# The first queued row, if it was never delivered and no delivery has timed out (a redelivery is
# the full path's, which also merges the two in order). The row is found by the rowid that the
# queue index holds (the subquery and the update are one statement, so it cannot change in
# between): the update then goes straight to the row, not through the primary key (about 1 us).
RECEIVE_SQL = (
    "UPDATE messages SET available_at = ?6 + ?3, receipt = ?4, consumer = ?5, attempts = attempts + 1 "
    "WHERE rowid = (SELECT rowid FROM messages WHERE channel = ?1 AND grp = ?2 "
    f"AND {FREE} AND available_at <= ?6 ORDER BY available_at, id LIMIT 1) AND consumer IS NULL "
    f"AND NOT EXISTS (SELECT 1 FROM messages WHERE channel = ?1 AND grp = ?2 AND {HELD} AND available_at <= ?6) "
    f"AND {_CLOCK_HOLDS} RETURNING id, key, payload, encoding, enqueued_at, available_at, deadline, attempts")
# The row waits for its batch at UNCHAINED with its receipt: still counted, its work not credited
# yet (both at the chain, sqlite_channel_record), so no trigger writes anything.
ACK_SQL = (
    f"UPDATE messages SET acked_at = ?6, available_at = {UNCHAINED!r} WHERE id = ?2 AND grp = ?3 AND receipt = ?4 "
    f"AND channel = ?1 AND acked_at IS NULL AND {_CLOCK_HOLDS}")

# Receipts, drawn RECEIPTS_PER_DRAW at a time from one os.urandom call: a receipt is 16 hex
# digits of randomness either way, and one draw per receive cost about 0.5 us. The pool is emptied
# in a forked child, which must never hand out the receipts its parent hands out next (a stale
# holder in one process could then acknowledge the other's redelivery).
RECEIPTS_PER_DRAW = 64
_RECEIPTS: list[str] = []
register_at_fork(after_in_child=_RECEIPTS.clear)


def new_receipt() -> str:
    """A fresh delivery receipt: 8 random bytes in hex (thread-safe: ``list.pop`` is atomic)."""
    try:
        return _RECEIPTS.pop()
    except IndexError:
        block = urandom(8 * RECEIPTS_PER_DRAW).hex()
        _RECEIPTS.extend([block[start:start + 16] for start in range(16, len(block), 16)])
        return block[:16]


class OneStatementOps:
    """The single-statement paths (see the module docstring). Each returns None when the caller
    must run the full transaction instead. They read this process's state (``__dict__``) once
    each and run the statement in one call: at about 30 us a round trip, every call counts."""

    _maintenance_countdown: int  # the retention mixin's (RetentionOps)

    def _one_statement(self, sql: str, params: tuple[Any, ...]) -> Any:
        """Run one autocommitted statement, retried while the database is busy (a refused
        statement changed nothing, so it may run again): the rows of a statement with RETURNING;
        of one without, the rows it and its triggers changed."""
        if self._maintenance_countdown > 1:  # ``maintenance_due`` when it has nothing to do, inline
            self._maintenance_countdown -= 1
        else:
            self.maintenance_due()  # type: ignore[attr-defined]
        try:  # the first try directly: the retrying wrapper only when it is refused
            return self._run_one(sql, params)
        except DatabaseError:
            return self._retry_busy(self._run_one, sql, params)  # type: ignore[attr-defined]

    def _run_one(self, sql: str, params: tuple[Any, ...]) -> Any:
        with self._lock:  # type: ignore[attr-defined]
            conn = self._conn  # type: ignore[attr-defined]
            if conn is None or self._pid != getpid():  # type: ignore[attr-defined]
                conn = self._connection()  # type: ignore[attr-defined]
            if conn.in_transaction:  # left open by an interruption (KeyboardInterrupt) mid-way
                conn.execute("ROLLBACK")
            before = conn.total_changes
            cursor = self._run(sql, params)  # type: ignore[attr-defined]
            return cursor.fetchall() if cursor.description else conn.total_changes - before

    def _note_grouped(self, channel: str) -> None:
        """The channel has consumer groups (they are never removed): its sends take the full path."""
        self.__dict__.setdefault("_grouped_channels", set()).add(channel)

    def _send_one(self, channel: str, payload: bytes, encoding: str, delay: float,
                  deadline: float | None, every: float) -> int | None:
        state = self.__dict__
        ahead = state.get("_channel_ahead")
        if ahead is None:
            return None
        grouped, pending = state.get("_grouped_channels"), state.get("_unchained_acks")
        wall = self.now()  # type: ignore[attr-defined]
        if ((grouped is not None and channel in grouped)
                or (pending is not None and channel in pending and batch_due(pending[channel], wall, 0))):
            return None
        now = wall + ahead
        # ids[channel] = [the id after the last this process sent here, whether it expects it]
        ids = state.get("_next_send_ids")
        if ids is None:
            ids = state["_next_send_ids"] = {}
        expected = ids.get(channel)
        if expected is not None and expected[1]:
            message_id = expected[0]
            if self._one_statement(SEND_EXPECTED_SQL, (channel, payload, encoding, delay, deadline, now, ahead, every,
                                                       message_id)):
                expected[0] = message_id + 1
                return message_id  # type: ignore[no-any-return]
            expected[1] = False  # another process sent (or the full path is due): ask again
        rows = self._one_statement(SEND_SQL, (channel, payload, encoding, delay, deadline, now, ahead, every))
        if not rows:
            return None
        message_id = rows[0][0]
        # Expect the next id only once two sends in a row got consecutive ids: a channel other
        # processes send to as well then costs an expected send that misses now and then, not
        # at every send.
        ids[channel] = [message_id + 1, expected is not None and expected[0] == message_id]
        return message_id

    def _receive_one(self, channel: str, group: str, consumer: str, visibility_timeout: float,
                     receipt: str, every: float, seen_every: float) -> tuple[Any, ...] | None:
        state = self.__dict__
        ahead, seen, pending = state.get("_channel_ahead"), state.get("_receive_seen"), state.get("_unchained_acks")
        if ahead is None or seen is None:
            return None
        last, wall = seen.get(consumer), self.now()  # type: ignore[attr-defined]
        if (last is None or not 0 <= wall - last < seen_every
                or (pending is not None and channel in pending and batch_due(pending[channel], wall, 0))):
            return None
        rows = self._one_statement(RECEIVE_SQL, (channel, group, visibility_timeout, receipt, consumer,
                                                 wall + ahead, ahead, every))
        return rows[0] if rows else None

    def _ack_one(self, channel: str, message_id: int, group: str, receipt: str, every: float) -> bool:
        """True if acknowledged here; False: the full path must run (it also tells a stale receipt)."""
        state = self.__dict__
        ahead, pending = state.get("_channel_ahead"), state.get("_unchained_acks")
        if ahead is None:
            return False
        entry, wall = None if pending is None else pending.get(channel), self.now()  # type: ignore[attr-defined]
        if batch_due(entry, wall, 1):
            return False
        if not self._one_statement(ACK_SQL, (channel, message_id, group, receipt, None, wall + ahead, ahead, every)):
            return False
        if entry is None:  # what _note_unchained does after a full-path ack that kept its row
            self._note_unchained(channel, 1, False)  # type: ignore[attr-defined]
        else:
            entry[0] += 1
        return True

