"""The record of a fast channel's acknowledgements, kept in batches (SQLite).

A ``fast`` channel without retention does not journal each ack. The ack keeps the message's row,
marked acknowledged (``acked_at`` set, its receipt kept: that pair means "not chained yet",
and ``available_at`` at UNCHAINED, so a channel's batch is one range of ``messages_queue`` per
group), and one ``message.ack`` entry later lists every such row of the channel (``delivered``:
id, group, consumer, attempt, send time, ack time) in the transaction that deletes them. That
transaction also takes the rows off the unacknowledged counts and credits each consumer's work
(``work_done``, ``last_seen`` at its latest ack), so the ack itself writes only its row; until
then liveness adds the waiting rows to both (``pending_work``, ``ChannelDepthOps``). A process chains
its channel's batch at its next operation there once it has kept CHAIN_BATCH rows, or kept one
CHAIN_AFTER seconds before (or the clock stepped back since); ``configure`` chains a channel's
rows when it stops batching; closing the backend chains what this process left. A batch takes
every unchained row of the channel, so the rows of a process killed meanwhile are chained by the
next batch, once: one transaction reads, journals and deletes them.

The limit: until its batch is chained an acknowledged message's row is its record, as a queued
message's row is: committed, but not in the hash chain. A process still using a configuration
cached from before a change (up to CONFIG_CACHE_SECONDS) keeps rows for a batch it chains at its
next operation on the channel or on close; if it is killed first and the channel no longer
batches, those rows stay until the channel batches again (or, with retention, are removed with
the retained rows, unchained).

A mixin of SQLiteBackend (through ChannelOps): it relies on ``transaction``, ``now`` and
``_append``.
"""

from __future__ import annotations

from ..errors import CoherenceError
from ..logs import WARNING, log
from .records import ChannelConfig
from .sqlite_channel_depth import HELD, OLD_COUNT_TRIGGER, UNCHAINED, recount

TYPE_CHECKING = False  # typing is not imported at run time: this module is on the hook path
if TYPE_CHECKING:
    import sqlite3

CHAIN_BATCH = 64  # rows a process keeps before its next operation on the channel chains them
CHAIN_AFTER = 1.0  # seconds after which it chains even fewer


def batches_acks(config: ChannelConfig) -> bool:
    """Whether the channel records acknowledgements in batches (fast, nothing retained)."""
    return not config.durable and config.retention == 0


# The rows of a channel awaiting their batch: a range of messages_queue in each of its groups.
_HELD = HELD.replace("receipt", "m.receipt")
_WAITING_IN = ("m.channel = ?1 AND m.grp IN (SELECT grp FROM channel_groups WHERE channel = ?1 UNION ALL "
               f"SELECT '') AND {_HELD} AND m.available_at = {UNCHAINED!r}")
_WAITING = f"FROM messages AS m WHERE {_WAITING_IN}"


def _credit(source: str, where: str) -> str:
    """Per consumer of the waiting rows of ``source`` (joining ``messages AS m``) that ``where``
    picks: the acks made since its worker session started (a restart resets work_done; earlier
    acks are not the new session's work), and the latest one's time on the backend's clock
    (channel time less the clock's offset)."""
    return ("SELECT m.consumer AS consumer, sum(m.acked_at - k.ahead >= coalesce(w.started_at, 0)) AS n, "
            "max(m.acked_at) - k.ahead AS seen FROM (SELECT coalesce((SELECT ahead FROM channel_clock "
            f"WHERE id = 1), 0) AS ahead) AS k, {source} LEFT JOIN workers AS w ON w.worker = m.consumer "
            f"WHERE {where} AND m.consumer IS NOT NULL GROUP BY m.consumer")


def migrate_to_unchained(conn: sqlite3.Connection) -> None:
    """Schema 8 to 9, inside the migration's transaction, before the caller makes the new
    triggers and ``messages_acked``: rows awaiting their batch move to UNCHAINED and count as
    unacknowledged again, and the work schemas 7 and 8 credited for them at the ack is taken back (the
    chain credits it now). O(rows awaiting a batch) plus one count of the messages."""
    seen = "m.acked_at - coalesce((SELECT ahead FROM channel_clock WHERE id = 1), 0)"
    conn.execute(  # through the older messages_acked, which held every acknowledged row
        "UPDATE workers SET work_done = max(0, work_done - a.n) FROM (SELECT m.consumer AS consumer, count(*) AS n "
        "FROM messages AS m JOIN workers AS w ON w.worker = m.consumer WHERE m.acked_at IS NOT NULL "
        f"AND m.receipt IS NOT NULL AND {seen} >= w.started_at GROUP BY m.consumer) AS a "
        "WHERE workers.worker = a.consumer")
    conn.execute(f"UPDATE messages SET available_at = {UNCHAINED!r} WHERE acked_at IS NOT NULL AND receipt IS NOT NULL")
    for trigger in (OLD_COUNT_TRIGGER, "messages_work_done"):
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    conn.execute("DROP INDEX IF EXISTS messages_acked")
    recount(conn)


def batch_due(pending: list[float] | None, wall: float, adding: int) -> bool:
    """Whether the acknowledgements a process kept in a channel, ``pending`` = [how many, since
    when] (None: none), are due to be chained once ``adding`` more are: CHAIN_BATCH of them, or
    the first CHAIN_AFTER seconds ago (or the clock stepped back since)."""
    if pending is None:
        return adding >= CHAIN_BATCH
    count, since = pending
    return count + adding >= CHAIN_BATCH or not 0 <= wall - since < CHAIN_AFTER


class AckRecordOps:
    """Chaining a fast channel's acknowledged rows (see the module docstring). State per process:
    ``_unchained_acks`` maps a channel to [rows kept here since its last batch, when the first was]."""

    def _chain_if_due(self, conn: sqlite3.Connection, channel: str, wall: float, adding: int) -> bool:
        """Chain the channel's acknowledged rows into the journal (inside the caller's
        transaction) if this process has kept CHAIN_BATCH of them, or kept one CHAIN_AFTER
        seconds ago (or the clock stepped back since). True if it chained."""
        if not batch_due(self.__dict__.get("_unchained_acks", {}).get(channel), wall, adding):
            return False
        self._chain_acks(conn, channel, wall)
        return True

    def _note_unchained(self, channel: str, kept: int, chained: bool) -> None:
        """After the transaction committed: what this process left for the next batch."""
        pending: dict[str, list[float]] = self.__dict__.setdefault("_unchained_acks", {})
        if chained:
            pending.pop(channel, None)
        elif kept:
            entry = pending.get(channel)
            if entry is None:
                pending[channel] = [kept, self.now()]  # type: ignore[attr-defined]
            else:
                entry[0] += kept

    def _chain_acks(self, conn: sqlite3.Connection, channel: str, wall: float) -> int:
        """One ``message.ack`` entry for every acknowledged, not yet chained row of ``channel``
        (whoever acknowledged it, a process killed since included); the rows are uncounted, their
        consumers credited, and they go. Returns how many were chained."""
        rows = conn.execute(
            f"SELECT id, grp, consumer, attempts, enqueued_at, acked_at {_WAITING} ORDER BY acked_at, grp, id",
            (channel,)).fetchall()
        if not rows:
            return 0
        self._append(conn, "message.ack", f"channel:{channel}", None,  # type: ignore[attr-defined]
                     {"delivered": [list(row) for row in rows]}, wall)
        conn.execute("UPDATE channel_counts SET unacked = unacked - w.n FROM (SELECT grp, count(*) AS n "
                     f"{_WAITING} GROUP BY grp) AS w WHERE channel_counts.channel = ?1 "
                     "AND channel_counts.grp = w.grp", (channel,))
        # Seen at its latest ack on the backend's clock (channel time less the clock's offset).
        conn.execute(
            "INSERT INTO workers(worker, started_at, last_seen, ended_at, work_done, info) "
            f"SELECT consumer, seen, seen, NULL, n, '{{}}' FROM ({_credit('messages AS m', _WAITING_IN)}) WHERE true "
            "ON CONFLICT(worker) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen), "
            "work_done = work_done + excluded.work_done", (channel,))
        conn.execute(f"DELETE {_WAITING}", (channel,))  # uncounted above: COUNT_TRIGGERS skip them
        return len(rows)

    def chain_acks(self, channel: str | None = None) -> int:
        """Chain the acknowledged rows of fast channels that are not chained yet into the journal
        now, whoever acknowledged them: of ``channel``, or (None) of every channel this process
        left some in. Returns how many rows. Closing the backend does it; the channel operations
        do it on their own once a batch is due."""
        pending: dict[str, list[float]] = self.__dict__.setdefault("_unchained_acks", {})
        names = [channel] if channel is not None else sorted(pending)
        if not names:
            return 0

        def work(conn: sqlite3.Connection) -> int:
            wall = self.now()  # type: ignore[attr-defined]
            return sum(self._chain_acks(conn, name, wall) for name in names)

        chained: int = self.transaction(work)  # type: ignore[attr-defined]
        for name in names:
            pending.pop(name, None)
        return chained

    def _chain_before_close(self) -> None:
        """Chain what this process left unchained (on close). A failure is logged, not raised:
        the rows stay as the record and the next batch in their channel chains them."""
        if not self.__dict__.get("_unchained_acks"):
            return
        try:
            self.chain_acks()
        except CoherenceError as error:
            log("channels", WARNING, "acknowledgements left for the next batch: %s", error.message)

    def _chain_on_the_way(self, conn: sqlite3.Connection, channel: str, wall: float, chained: list[bool]) -> None:
        """In a send or receive: chain the rows this process left in ``channel`` if they are due."""
        if channel in self.__dict__.get("_unchained_acks", ()):
            chained[0] = self._chain_if_due(conn, channel, wall, 0)

    def _switch_record(self, conn: sqlite3.Connection, old: ChannelConfig, new: ChannelConfig) -> None:
        """Keep the record whole across a change of how acknowledgements are recorded: rows kept
        for the next batch are chained before a channel stops batching. (Rows kept for retention
        are settled already, receipt cleared; rows a process with an older config kept for a
        batch meanwhile wait at UNCHAINED for the next one.)"""
        if batches_acks(old) and not batches_acks(new):
            self._chain_acks(conn, new.name, self.now())  # type: ignore[attr-defined]

    @staticmethod
    def pending_work(conn: sqlite3.Connection, worker: str | None = None) -> dict[str, tuple[int, float]]:
        """Per consumer (or of ``worker``), the acks awaiting their batch: (how many, the latest
        one's time on the backend's clock). Ranges of messages_queue at UNCHAINED, one per group
        of every channel that has counts: bounded by the rows awaiting a batch, not the depth."""
        mine = "" if worker is None else " AND m.consumer = ?1"
        rows = conn.execute(_credit(
            "channel_counts AS c CROSS JOIN messages AS m ON m.channel = c.channel AND m.grp = c.grp "
            f"AND {_HELD} AND m.available_at = {UNCHAINED!r}", f"true{mine}"), () if worker is None else (worker,)).fetchall()
        return {consumer: (count, seen) for consumer, count, seen in rows}

