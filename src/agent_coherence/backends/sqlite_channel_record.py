"""The record of a fast channel's acknowledgements, kept in batches (SQLite).

A ``fast`` channel without retention does not journal each ack. The ack keeps the message's row,
marked acknowledged (``acked_at`` set, its receipt kept: that pair means "not chained yet"), and
one ``message.ack`` entry later lists every such row of the channel (``delivered``: id, group,
consumer, attempt, send time, ack time) in the transaction that deletes them. A process chains
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

TYPE_CHECKING = False  # typing is not imported at run time: this module is on the hook path
if TYPE_CHECKING:
    import sqlite3

CHAIN_BATCH = 64  # rows a process keeps before its next operation on the channel chains them
CHAIN_AFTER = 1.0  # seconds after which it chains even fewer


def batches_acks(config: ChannelConfig) -> bool:
    """Whether the channel records acknowledgements in batches (fast, nothing retained)."""
    return not config.durable and config.retention == 0


class AckRecordOps:
    """Chaining a fast channel's acknowledged rows (see the module docstring). State per process:
    ``_unchained_acks`` maps a channel to [rows kept here since its last batch, when the first was]."""

    def _chain_if_due(self, conn: sqlite3.Connection, channel: str, wall: float, adding: int) -> bool:
        """Chain the channel's acknowledged rows into the journal (inside the caller's
        transaction) if this process has kept CHAIN_BATCH of them, or kept one CHAIN_AFTER
        seconds ago (or the clock stepped back since). True if it chained."""
        pending = self.__dict__.get("_unchained_acks", {}).get(channel)
        count, since = pending if pending is not None else (0, wall)
        if count + adding < CHAIN_BATCH and (count == 0 or 0 <= wall - since < CHAIN_AFTER):
            return False
        self._chain_acks(conn, channel, wall)
        return True

    def _note_unchained(self, channel: str, kept: int, chained: bool) -> None:
        """After the transaction committed: what this process left for the next batch."""
        pending: dict[str, list[float]] = self.__dict__.setdefault("_unchained_acks", {})
        if chained:
            pending.pop(channel, None)
        elif kept:
            entry = pending.setdefault(channel, [0, self.now()])  # type: ignore[attr-defined]
            entry[0] += kept

    def _chain_acks(self, conn: sqlite3.Connection, channel: str, wall: float) -> int:
        """One ``message.ack`` entry for every acknowledged, not yet chained row of ``channel``
        (whoever acknowledged it, a process killed since included), then the rows go. Through
        messages_acked: only acknowledged rows are read. Returns how many were chained."""
        rows = conn.execute(
            "SELECT id, grp, consumer, attempts, enqueued_at, acked_at FROM messages WHERE channel = ? "
            "AND acked_at IS NOT NULL AND receipt IS NOT NULL ORDER BY acked_at, grp, id", (channel,)).fetchall()
        if not rows:
            return 0
        self._append(conn, "message.ack", f"channel:{channel}", None,  # type: ignore[attr-defined]
                     {"delivered": [list(row) for row in rows]}, wall)
        conn.execute("DELETE FROM messages WHERE channel = ? AND acked_at IS NOT NULL AND receipt IS NOT NULL",
                     (channel,))
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
        for the next batch are chained before a channel stops batching; acknowledged rows kept
        for retention lose their receipt before it starts (they are on record already)."""
        was, will = batches_acks(old), batches_acks(new)
        if was and not will:
            self._chain_acks(conn, new.name, self.now())  # type: ignore[attr-defined]
        elif will and not was:
            conn.execute("UPDATE messages SET receipt = NULL WHERE channel = ? AND acked_at IS NOT NULL "
                         "AND receipt IS NOT NULL", (new.name,))

