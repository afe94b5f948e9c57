"""What a channel holds, read in time independent of its depth (PostgreSQL).

The same answers as ``sqlite_channel_depth.py``, from the same kinds of source:

* ``channel_counts`` keeps the unacknowledged messages per (channel, group), maintained by
  triggers on ``messages`` in the transaction that sends, acks, dead-letters or prunes them, so no
  statement of the channel code has to remember it (and clients of an older release that write
  to a migrated schema keep it right too). Each (channel, group) has up to ``COUNT_SHARDS`` rows,
  picked by the server process of the session: a send or ack locks one of them until its commit,
  so writers to one channel from many sessions do not queue on one counter row. Ready = that count
  minus the messages not yet visible (in flight or delayed), a range of ``messages_ready``;
* the oldest ready message is the first visible one in id order (the primary key). Ids and
  channel time are drawn in the same send transaction, so two concurrent sends can be stamped out
  of id order by the time between the two draws (typically well under a millisecond; longer if
  the sender waits on a lock in between): the age is then that much off;
* timed-out deliveries come from the partial index ``messages_inflight``, overdue messages from
  ``messages_due``; both hold unacknowledged rows only.

Cost: O(groups x (shards + messages not yet visible)), not O(depth). Many delayed messages make
it grow with their number, as on SQLite.
"""

from __future__ import annotations

from typing import Any

from .postgres_tx import Tx, TxRunner
from .records import MessageRecord, channel_stats

COUNT_SHARDS = 16
ACKED = 1e18  # available_at of a retained, acknowledged message (as in postgres_channels.py)

DEPTH_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS @channel_counts (
    channel text NOT NULL, grp text NOT NULL, shard int NOT NULL, unacked bigint NOT NULL,
    PRIMARY KEY (channel, grp, shard));
CREATE OR REPLACE FUNCTION @count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO @channel_counts AS c(channel, grp, shard, unacked)
    SELECT channel, grp, pg_backend_pid() % {COUNT_SHARDS}, count(*) FROM inserted WHERE acked_at IS NULL
    GROUP BY channel, grp ORDER BY channel, grp
    ON CONFLICT (channel, grp, shard) DO UPDATE SET unacked = c.unacked + excluded.unacked;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION @count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO @channel_counts AS c(channel, grp, shard, unacked)
    SELECT channel, grp, pg_backend_pid() % {COUNT_SHARDS}, -count(*) FROM deleted WHERE acked_at IS NULL
    GROUP BY channel, grp ORDER BY channel, grp
    ON CONFLICT (channel, grp, shard) DO UPDATE SET unacked = c.unacked + excluded.unacked;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION @count_acked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO @channel_counts AS c(channel, grp, shard, unacked)
    VALUES (NEW.channel, NEW.grp, pg_backend_pid() % {COUNT_SHARDS}, -1)
    ON CONFLICT (channel, grp, shard) DO UPDATE SET unacked = c.unacked - 1;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS messages_count_inserted ON @messages;
CREATE TRIGGER messages_count_inserted AFTER INSERT ON @messages REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION @count_inserted();
DROP TRIGGER IF EXISTS messages_count_deleted ON @messages;
CREATE TRIGGER messages_count_deleted AFTER DELETE ON @messages REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION @count_deleted();
DROP TRIGGER IF EXISTS messages_count_acked ON @messages;
CREATE TRIGGER messages_count_acked AFTER UPDATE OF acked_at ON @messages FOR EACH ROW
    WHEN (OLD.acked_at IS NULL AND NEW.acked_at IS NOT NULL) EXECUTE FUNCTION @count_acked();
CREATE INDEX IF NOT EXISTS messages_inflight ON @messages(available_at) WHERE receipt IS NOT NULL AND acked_at IS NULL;
CREATE INDEX IF NOT EXISTS messages_due ON @messages(deadline) WHERE deadline IS NOT NULL AND acked_at IS NULL;
DROP INDEX IF EXISTS @messages_deadline;
"""
# Schema 2 to 3, in the migration's transaction: the triggers are created first, which locks
# ``messages`` against writers until COMMIT, so the count below misses no concurrent send or ack.
DEPTH_MIGRATION = DEPTH_SCHEMA + """
DELETE FROM @channel_counts;
INSERT INTO @channel_counts(channel, grp, shard, unacked)
SELECT channel, grp, 0, count(*) FROM @messages WHERE acked_at IS NULL GROUP BY channel, grp;
"""

_COLUMNS = ("id, channel, grp, key, payload, encoding, enqueued_at, available_at, deadline, attempts, "
            "receipt, consumer")
# Per group: unacked (the counters), hidden and in flight (messages_ready: the not-yet-visible
# range only), the first visible message by id ('+ 0' keeps the planner on the primary key,
# whose order is the one wanted, instead of reading every ready row), overdue (messages_due).
FIGURES_SQL = f"""
WITH n AS MATERIALIZED (SELECT @ac_channel_now() AS t, @ac_now() AS w)
SELECT g.grp,
    (SELECT coalesce(sum(c.unacked), 0) FROM @channel_counts c WHERE c.channel = %(channel)s AND c.grp = g.grp),
    (SELECT count(*) FROM @messages m WHERE m.channel = %(channel)s AND m.grp = g.grp
        AND m.available_at > n.t AND m.available_at < {ACKED}),
    (SELECT count(*) FROM @messages m WHERE m.channel = %(channel)s AND m.grp = g.grp
        AND m.available_at > n.t AND m.available_at < {ACKED} AND m.receipt IS NOT NULL),
    (SELECT m.enqueued_at FROM @messages m WHERE m.channel = %(channel)s AND m.grp = g.grp
        AND m.available_at + 0 <= n.t ORDER BY m.channel, m.grp, m.id LIMIT 1),
    (SELECT count(*) FROM @messages m WHERE m.deadline IS NOT NULL AND m.acked_at IS NULL AND m.deadline < n.w
        AND m.channel = %(channel)s AND m.grp = g.grp),
    n.t
FROM unnest(%(groups)s::text[]) AS g(grp), n
"""


def _message(row: tuple[Any, ...]) -> MessageRecord:
    return MessageRecord(*row[:4], bytes(row[4]), *row[5:12])


class ChannelDepthOps(TxRunner):
    """channel_stats, overdue_messages and expired_deliveries (see the module docstring)."""

    def channel_stats(self, channel: str) -> dict[str, Any]:
        def work(tx: Tx) -> list[tuple[Any, ...]]:
            groups = [row[0] for row in tx.all("SELECT grp FROM @channel_groups WHERE channel = %s ORDER BY grp",
                                               (channel,))]
            # Messages sent before the first group was created stay with plain receive(): counted
            # while any is left, or they would be in the channel but in no depth, SLA or zero-work check.
            if groups and tx.one("SELECT coalesce(sum(unacked), 0) > 0 FROM @channel_counts "
                                 "WHERE channel = %s AND grp = ''", (channel,))[0]:  # type: ignore[index]
                groups.append("")
            return tx.all(FIGURES_SQL, {"channel": channel, "groups": groups or [""]})

        figures: dict[str, dict[str, Any]] = {}
        for group, unacked, hidden, in_flight, oldest, overdue, now in self.read(work):
            figures[group] = {
                "ready": int(unacked) - int(hidden), "in_flight": int(in_flight),
                "delayed": int(hidden) - int(in_flight), "overdue": int(overdue),
                "oldest_ready_age": (float(now) - oldest) if oldest is not None else None,
            }
        return channel_stats(channel, figures)

    def overdue_messages(self, limit: int = 100) -> list[MessageRecord]:
        """Unacknowledged messages whose deadline has passed (any channel), earliest deadline
        first (a range of ``messages_due``)."""
        rows = self.read(lambda tx: tx.all(
            f"SELECT {_COLUMNS} FROM @messages WHERE deadline IS NOT NULL AND acked_at IS NULL "
            "AND deadline < @ac_now() ORDER BY deadline LIMIT %s", (limit,)))
        return [_message(row) for row in rows]

    def expired_deliveries(self, limit: int = 100) -> list[MessageRecord]:
        """Messages that were delivered, not acknowledged, and whose visibility timeout ran out,
        longest expired first (a range of ``messages_inflight``)."""
        rows = self.read(lambda tx: tx.all(
            f"SELECT {_COLUMNS} FROM @messages WHERE receipt IS NOT NULL AND acked_at IS NULL "
            "AND available_at <= @ac_channel_now() ORDER BY available_at LIMIT %s", (limit,)))
        return [_message(row) for row in rows]
