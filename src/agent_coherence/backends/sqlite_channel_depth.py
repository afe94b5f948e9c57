"""What a channel holds, read in time independent of its depth (SQLite).

Liveness asks, for every watched channel, how many messages are ready, how old the oldest ready
one is, which deliveries timed out and which messages are overdue. Scanning the messages for that
costs O(depth) (1.5 s at a million queued); here each answer comes from a maintained counter or an
index range that holds only the messages that are *not* plain ready ones:

* ``channel_counts`` keeps the unacknowledged messages per (channel, group), changed in the same
  transaction or statement as the send, ack and dead-letter that change it: a send counts its
  messages itself (once per batch), as does an ack that settles a row (a retained ack); a delete
  is counted by a trigger (COUNT_TRIGGERS). An ack kept for its batch (``UNCHAINED``,
  sqlite_channel_record) stays counted until its batch is chained, which uncounts the batch in
  one statement: so a fast ack writes no count. Unacknowledged = that count minus the rows
  awaiting their batch (a range of ``messages_queue`` at UNCHAINED, at most a batch or two).
  Ready = that minus the messages not yet visible (in flight or delayed), which are two ranges of
  ``messages_queue`` too;
* the oldest ready message is the first visible one in id order (the primary key): channel time
  never runs back, so within a channel a later id never has an earlier ``enqueued_at`` (a
  dead-lettered message is stamped with the time it entered the dead-letter channel for that
  reason). Two exceptions make the age approximate: messages written before schema 3 (no channel
  clock yet) around a clock step, and a step back shorter than the channel clock's recording
  interval (50 ms, ``CLOCK_RECORD_EVERY``), which can order two sends up to that much out of
  time;
* timed-out deliveries are the visible range of ``messages_queue``'s section of rows with a
  receipt, per (channel, group) (its visible part holds only unacknowledged rows); overdue
  messages come from ``messages_due``, which holds unacknowledged rows only.

Cost: O(groups x messages not yet visible), not O(depth). Many delayed messages (sent with a
delay, or nacked with one) make it grow with their number.

A mixin of SQLiteBackend (through ChannelOps): it relies on ``read``, ``now`` and
``_channel_time``.
"""

from __future__ import annotations

from .records import MessageRecord, channel_stats

TYPE_CHECKING = False  # typing is not imported at run time: this module is on the hook path
if TYPE_CHECKING:
    import sqlite3
    from typing import Any

ACKED = 1e18  # available_at of a settled, acknowledged message kept for retention: never visible again
# available_at of an acknowledged row awaiting its batch (sqlite_channel_record): never visible
# again either, and apart from ACKED, so a batch is one range of messages_queue per group.
UNCHAINED = 2e18
# The two sections of messages_queue in a (channel, group), each in (available_at, id) order:
# rows without a receipt (queued, nacked, delayed; settled at ACKED) and rows with one (in flight,
# timed out; awaiting their batch at UNCHAINED). A receive moves a row from the first to the
# second, an ack within the second: one index written by each, where a ready index and an
# in-flight index took two. A query names its section with exactly this expression (SQLite uses an
# index on an expression only for the same expression).
FREE, HELD = "(receipt IS NOT NULL) = 0", "(receipt IS NOT NULL) = 1"

DEPTH_SCHEMA = """
CREATE TABLE IF NOT EXISTS channel_counts (
    channel TEXT NOT NULL, grp TEXT NOT NULL, unacked INTEGER NOT NULL, last_id INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel, grp));
CREATE INDEX IF NOT EXISTS messages_queue ON messages(channel, grp, receipt IS NOT NULL, available_at, id);
CREATE INDEX IF NOT EXISTS messages_due ON messages(deadline) WHERE deadline IS NOT NULL AND acked_at IS NULL;
"""

# A row counts from its send until it is settled: acknowledged with its receipt cleared (a
# retained ack, whose transaction uncounts it, sqlite_channels) or deleted while unacknowledged
# (acked, dead-lettered), which this trigger uncounts in the statement that deletes. A batched ack
# keeps its receipt, so it stays counted: its batch is uncounted by the chain (uncount_chained),
# the only statement that deletes such rows. Neither a send nor an ack is counted by a row trigger
# on an update or insert: a batch of 100 sends would pay it 100 times (about 3x the time of the
# batch), and a trigger on the ack's update is tested by every fast ack, which it never concerns
# (about 1.5 us of a 20 us statement).
COUNT_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS messages_count_delete AFTER DELETE ON messages WHEN OLD.acked_at IS NULL "
    "BEGIN UPDATE channel_counts SET unacked = unacked - 1 WHERE channel = OLD.channel AND grp = OLD.grp; END",
)
# Schema 7's and 8's trigger, replaced by messages_count_settled (schema 9).
OLD_COUNT_TRIGGER = "messages_count_ack"
# Schema 9's triggers on a settling ack (the count, the consumer's work), done by the retained
# ack's transaction since schema 10.
SETTLED_ACK_TRIGGERS = ("messages_count_settled", "messages_work_done")

MESSAGE_COLUMNS = ("id, channel, grp, key, payload, encoding, enqueued_at, available_at, deadline, attempts, "
                   "receipt, consumer")
_QUALIFIED = ", ".join(f"m.{name}" for name in MESSAGE_COLUMNS.split(", "))


def migrate_to_counts(conn: sqlite3.Connection) -> None:
    """Schema 3 to 4, inside the migration's transaction: count what every channel holds now and
    replace the deadline index by one without acknowledged rows."""
    for statement in filter(str.strip, DEPTH_SCHEMA.split(";")):
        conn.execute(statement)
    conn.execute("DROP INDEX IF EXISTS messages_deadline")
    conn.execute("DELETE FROM channel_counts")
    conn.execute("INSERT INTO channel_counts(channel, grp, unacked) SELECT channel, grp, count(*) FROM messages "
                 "WHERE acked_at IS NULL GROUP BY channel, grp")


def recount(conn: sqlite3.Connection) -> None:
    """Count what every channel holds now, rows awaiting their batch included (schema 8 to 9,
    inside the migration's transaction: O(messages), once)."""
    conn.execute("UPDATE channel_counts SET unacked = 0")  # the rows keep their channel's last id
    conn.execute("INSERT INTO channel_counts(channel, grp, unacked) SELECT channel, grp, count(*) FROM messages "
                 "WHERE acked_at IS NULL OR receipt IS NOT NULL GROUP BY channel, grp ORDER BY 1, 2 "
                 "ON CONFLICT(channel, grp) DO UPDATE SET unacked = excluded.unacked")


def migrate_last_ids(conn: sqlite3.Connection) -> None:
    """Schema 7 to 8, inside the migration's transaction: each channel's id counter moves from
    ``message_seq`` into its counts row (group ''), which a send writes anyway."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(channel_counts)")]
    if "last_id" not in columns:
        conn.execute("ALTER TABLE channel_counts ADD COLUMN last_id INTEGER NOT NULL DEFAULT 0")
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'message_seq'").fetchone():
        conn.execute("INSERT INTO channel_counts(channel, grp, unacked, last_id) SELECT channel, '', 0, last_id "
                     "FROM message_seq WHERE true ON CONFLICT(channel, grp) DO UPDATE SET last_id = excluded.last_id")
        conn.execute("DROP TABLE message_seq")


def count_messages(conn: sqlite3.Connection, channel: str, groups: list[str], change: int,
                   last_id: int | None = None) -> None:
    """Add ``change`` to the unacknowledged count of each of ``groups`` (inside the transaction
    that sends the messages); with ``last_id``, also store the channel's id counter, which lives
    in the row of group '' (then ``groups`` must be ``[""]``)."""
    if last_id is not None:
        conn.execute("INSERT INTO channel_counts(channel, grp, unacked, last_id) VALUES (?,'',?,?) "
                     "ON CONFLICT(channel, grp) DO UPDATE SET unacked = unacked + excluded.unacked, "
                     "last_id = excluded.last_id", (channel, change, last_id))
        return
    for group in groups:
        conn.execute("INSERT INTO channel_counts(channel, grp, unacked) VALUES (?,?,?) "
                     "ON CONFLICT(channel, grp) DO UPDATE SET unacked = unacked + excluded.unacked",
                     (channel, group, change))


class ChannelDepthOps:
    """channel_stats, overdue_messages and expired_deliveries (see the module docstring)."""

    def _group_figures(self, conn: sqlite3.Connection, channel: str, group: str, now: float,
                       wall: float) -> dict[str, Any]:
        row = conn.execute("SELECT unacked FROM channel_counts WHERE channel = ? AND grp = ?",
                           (channel, group)).fetchone()
        # Rows awaiting their batch are still counted (COUNT_TRIGGERS); the rest are ranges of
        # messages_queue holding only rows not visible yet (acknowledged ones sit at ACKED and above).
        waiting, delayed, in_flight = conn.execute(
            f"SELECT (SELECT count(*) FROM messages WHERE channel = ?1 AND grp = ?2 AND {HELD} AND available_at = ?5), "
            f"(SELECT count(*) FROM messages WHERE channel = ?1 AND grp = ?2 AND {FREE} AND available_at > ?3 "
            "AND available_at < ?4), "
            f"(SELECT count(*) FROM messages WHERE channel = ?1 AND grp = ?2 AND {HELD} AND available_at > ?3 "
            "AND available_at < ?4)", (channel, group, now, ACKED, UNCHAINED)).fetchone()
        unacked = (row[0] if row else 0) - waiting
        hidden = delayed + in_flight
        # The first visible message by id is the oldest (see the module docstring); the '+'
        # keeps SQLite on the primary key, whose order is the one wanted, instead of sorting.
        oldest = conn.execute(
            "SELECT enqueued_at FROM messages WHERE channel = ? AND grp = ? AND +available_at <= ? "
            "ORDER BY id LIMIT 1", (channel, group, now)).fetchone()
        # Through messages_due (the '+' keeps SQLite off the channel's own indexes): only overdue rows.
        overdue = conn.execute(
            "SELECT count(*) FROM messages WHERE deadline IS NOT NULL AND deadline < ? AND acked_at IS NULL "
            "AND +channel = ? AND +grp = ?", (wall, channel, group)).fetchone()[0]
        return {"ready": unacked - hidden, "in_flight": in_flight, "delayed": delayed,
                "overdue": overdue, "oldest_ready_age": (now - oldest[0]) if oldest is not None else None}

    def channel_stats(self, channel: str) -> dict[str, Any]:
        def work(conn: sqlite3.Connection) -> dict[str, Any]:
            wall, now = self.now(), self._channel_time(conn)  # type: ignore[attr-defined]
            groups = [r[0] for r in conn.execute("SELECT grp FROM channel_groups WHERE channel = ?", (channel,))]
            # Messages sent before the first group was created stay with plain receive(): counted
            # while any is left, or they would be in the channel but in no depth, SLA or zero-work check.
            # Acknowledged rows awaiting their batch are still in the count but are no longer left.
            if groups and conn.execute(
                    "SELECT 1 FROM channel_counts WHERE channel = ?1 AND grp = '' AND unacked > (SELECT count(*) "
                    f"FROM messages WHERE channel = ?1 AND grp = '' AND {HELD} AND available_at = ?2)",
                    (channel, UNCHAINED)).fetchone():
                groups.append("")
            figures = {group: self._group_figures(conn, channel, group, now, wall) for group in groups or [""]}
            return channel_stats(channel, figures)

        return self.read(work)  # type: ignore[attr-defined,no-any-return]

    def overdue_messages(self, limit: int = 100) -> list[MessageRecord]:
        """Unacknowledged messages whose deadline has passed (any channel), earliest deadline first."""
        now = self.now()  # type: ignore[attr-defined]
        rows = self.read(lambda conn: conn.execute(  # type: ignore[attr-defined]
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE deadline IS NOT NULL AND deadline < ? "
            "AND acked_at IS NULL ORDER BY deadline LIMIT ?", (now, limit)).fetchall())
        return [MessageRecord(*row) for row in rows]

    def expired_deliveries(self, limit: int = 100) -> list[MessageRecord]:
        """Messages that were delivered, not acknowledged, and whose visibility timeout ran out
        (longest expired first)."""
        # The timed-out range of each (channel, group) that has counts (every one that has rows).
        rows = self.read(lambda conn: conn.execute(  # type: ignore[attr-defined]
            f"SELECT {_QUALIFIED} FROM channel_counts AS c CROSS JOIN messages AS m ON m.channel = c.channel "
            f"AND m.grp = c.grp AND {HELD.replace('receipt', 'm.receipt')} AND m.available_at <= ? "
            "WHERE m.acked_at IS NULL ORDER BY m.available_at LIMIT ?",
            (self._channel_time(conn), limit)).fetchall())  # type: ignore[attr-defined]
        return [MessageRecord(*row) for row in rows]
