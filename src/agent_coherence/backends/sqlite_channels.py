"""SQLite storage for acknowledged channels.

One ``messages`` row per (message, consumer group). A message is visible when ``available_at`` is
in the past; receiving it moves ``available_at`` to the end of its visibility timeout and stamps a
fresh receipt, so "ready" and "in flight" are one index range and receive costs O(log depth).

Channel time: ``available_at``, ``enqueued_at``, dedup and effect expiry are judged by the
backend's clock made monotonic (``channel_clock``): if the clock steps back, channel time holds at
the latest value any channel operation saw and runs on from there at the clock's pace, so ready
messages stay ready and timeouts run out on schedule instead of stalling for the size of the step.
The step is journaled (``clock.step``, key ``clock:channels``) and logged; liveness reports it as
a ``clock_step`` anomaly. A step back that happens and is overtaken between two channel operations
goes unseen (only timeouts already running then are delayed, by at most the step). Channel time
is recorded at most every CLOCK_RECORD_EVERY (50 ms) while it runs on, so after a step back a
message that became visible, or a timeout that ran out, in the last 50 ms before the step may be
hidden for up to 50 ms more. Deadlines, journal times and worker times stay on the backend's clock.

The record: a ``durable`` channel journals every send, receive and ack as it happens. A ``fast``
channel journals each delivery once, when it ends: the receive that delivers the message again
(``message.redeliver``: the previous consumer and attempt) or the move to the dead-letter channel
(``message.dead``) at once, and its acks in batches (``sqlite_channel_record``: the acknowledged
row is the record until one ``message.ack`` entry chains a batch of them). A fast channel with
``retention`` journals each ack at once (its rows stay anyway).

Unacknowledged messages are counted per (channel, group) in the transactions (or statements)
that change them (``sqlite_channel_depth``), so liveness reads counts, not messages. A fast channel's
plain send, first delivery and batched ack each run as one statement (``sqlite_channel_fast``);
everything else, and every case those decline, runs here in one transaction.

A mixin of SQLiteBackend: it relies on ``transaction``, ``read``, ``now`` and ``_append``.
Durable channels commit sends and acks with synchronous=FULL; receives (and everything in a
``fast`` channel) commit with NORMAL: losing a receive to power loss only means a redelivery.
"""

from __future__ import annotations

from time import monotonic

from ..logs import INFO, WARNING, log
from .records import CLOCK_KEY, ChannelConfig, MessageRecord, effect_key
from .sqlite_channel_depth import (
    ACKED, FREE, HELD, MESSAGE_COLUMNS as _COLUMNS, UNCHAINED, ChannelDepthOps, count_messages)
from .sqlite_channel_fast import OneStatementOps, new_receipt
from .sqlite_channel_record import AckRecordOps, batches_acks

TYPE_CHECKING = False  # typing is not imported at run time: this module is on the hook path
if TYPE_CHECKING:
    import sqlite3
    from typing import Any, Callable, TypeVar

    D = TypeVar("D")

# Settled acknowledged rows kept for retention, by age (rows awaiting their batch are found
# through messages_queue instead: an ack writes no page here). Schema 9; schemas 7 and 8 held both.
ACKED_INDEX = ("CREATE INDEX IF NOT EXISTS messages_acked ON messages(channel, acked_at) "
               "WHERE acked_at IS NOT NULL AND receipt IS NULL")
CHANNEL_SCHEMA = """
CREATE TABLE IF NOT EXISTS channels (
    name TEXT PRIMARY KEY, visibility_timeout REAL NOT NULL, max_attempts INTEGER NOT NULL,
    dedup_ttl REAL NOT NULL, durable INTEGER NOT NULL, sla REAL, retention REAL NOT NULL);
CREATE TABLE IF NOT EXISTS channel_groups (channel TEXT NOT NULL, grp TEXT NOT NULL, PRIMARY KEY (channel, grp));
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER NOT NULL, channel TEXT NOT NULL, grp TEXT NOT NULL, key TEXT, payload BLOB NOT NULL,
    encoding TEXT NOT NULL, enqueued_at REAL NOT NULL, available_at REAL NOT NULL, deadline REAL,
    attempts INTEGER NOT NULL, receipt TEXT, consumer TEXT, acked_at REAL,
    PRIMARY KEY (channel, grp, id));
CREATE TABLE IF NOT EXISTS dedup (
    channel TEXT NOT NULL, key TEXT NOT NULL, message_id INTEGER NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (channel, key));
CREATE TABLE IF NOT EXISTS effects (
    channel TEXT NOT NULL, effect_key TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (channel, effect_key));
CREATE TABLE IF NOT EXISTS channel_clock (
    id INTEGER PRIMARY KEY CHECK (id = 1), observed REAL NOT NULL, ahead REAL NOT NULL);
""" + ACKED_INDEX + ";\n"
# The first visible rows of a (channel, group), in (available_at, id) order: the first of each
# section of messages_queue (queued, and timed out), merged.
_FIRST_VISIBLE = " UNION ALL ".join(
    f"SELECT * FROM (SELECT {_COLUMNS} FROM messages WHERE channel = ?1 AND grp = ?2 AND {section} "
    "AND available_at <= ?3 ORDER BY available_at, id LIMIT ?4)" for section in (FREE, HELD)
) + " ORDER BY available_at, id LIMIT ?4"
CLOCK_STEP_REPORTED = 1.0  # a step back of at least this many seconds is journaled and logged
# Channel time is recorded when it has run on this long since it was last recorded (and at every
# step): a statement and a page less per operation at high rates. The price, after a step back:
# what became visible in the last CLOCK_RECORD_EVERY seconds before it may wait that long again.
CLOCK_RECORD_EVERY = 0.05

CONFIG_CACHE_SECONDS = 1.0
RECEIVE_SEEN_EVERY = 1.0  # seconds: how stale a receiving consumer's last_seen may be (see _seen_receiving)


def dead_letter_name(channel: str) -> str:
    return f"{channel}.dead"


def _ended_deliveries(delivered: list[list[Any]]) -> dict[str, Any]:
    """The data of a fast channel's ack entry: per message [id, group, consumer, attempt, sent]."""
    if len(delivered) == 1:
        message_id, group, consumer, attempt, sent = delivered[0]
        return {"id": message_id, "group": group, "consumer": consumer, "attempt": attempt, "sent": sent}
    return {"delivered": delivered}


class ChannelOps(ChannelDepthOps, AckRecordOps, OneStatementOps):
    """Channel operations (see the Backend protocol for the contract)."""

    # -- channel time -----------------------------------------------------------------------

    def _advance_channel_time(self, conn: sqlite3.Connection,
                              clock: tuple[float | None, float | None] | None = None) -> tuple[float, float]:
        """(backend clock, channel time) inside a write transaction; notices a step back.
        ``clock``: the stored (observed, ahead), when the caller read it with its own first
        statement ((None, None) when there is none yet)."""
        wall = self.now()  # type: ignore[attr-defined]
        row = clock if clock is not None else conn.execute("SELECT observed, ahead FROM channel_clock WHERE id = 1").fetchone()
        if row is not None and row[0] is None:
            row = None
        observed, ahead = row if row is not None else (wall, 0.0)
        now, stored_ahead = wall + ahead, ahead
        if now < observed:
            step = observed - now
            ahead, now = ahead + step, observed
            if step >= CLOCK_STEP_REPORTED:
                self._append(conn, "clock.step", CLOCK_KEY, None,  # type: ignore[attr-defined]
                             {"step": step, "clock": wall, "channel_time": now}, wall)
                log("channels", WARNING,
                    "the backend clock stepped back %.3fs: channel time holds at %.3f and runs on from there",
                    step, now)
        if row is None or ahead != stored_ahead or now - observed >= CLOCK_RECORD_EVERY:
            conn.execute("INSERT OR REPLACE INTO channel_clock(id, observed, ahead) VALUES (1, ?, ?)", (now, ahead))
        # For the single statements (sqlite_channel_fast), which check it still holds. Kept even
        # if this transaction rolls back: a stale value only makes them decline.
        self.__dict__["_channel_ahead"] = ahead
        return wall, now

    def _channel_time(self, conn: sqlite3.Connection) -> float:
        """Channel time for a read: as ``_advance_channel_time`` would give, without recording anything."""
        wall = self.now()  # type: ignore[attr-defined]
        row = conn.execute("SELECT observed, ahead FROM channel_clock WHERE id = 1").fetchone()
        return wall if row is None else max(wall + row[1], row[0])

    # -- configuration ----------------------------------------------------------------------

    @staticmethod
    def _config_row(conn: sqlite3.Connection, name: str) -> ChannelConfig | None:
        row = conn.execute(
            "SELECT name, visibility_timeout, max_attempts, dedup_ttl, durable, sla, retention "
            "FROM channels WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return ChannelConfig(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])

    def _config(self, conn: sqlite3.Connection, name: str) -> ChannelConfig:
        config = self._config_row(conn, name)
        if config is None:
            config = ChannelConfig(name)
            self._store_config(conn, config)
        return config

    @staticmethod
    def _store_config(conn: sqlite3.Connection, config: ChannelConfig) -> None:
        conn.execute(
            "INSERT INTO channels(name, visibility_timeout, max_attempts, dedup_ttl, durable, sla, retention) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET visibility_timeout=excluded.visibility_timeout, "
            "max_attempts=excluded.max_attempts, dedup_ttl=excluded.dedup_ttl, durable=excluded.durable, "
            "sla=excluded.sla, retention=excluded.retention",
            (config.name, config.visibility_timeout, config.max_attempts, config.dedup_ttl,
             int(config.durable), config.sla, config.retention))

    def channel_config(self, name: str, update: ChannelConfig | None = None) -> ChannelConfig:
        """The stored config, cached per process for CONFIG_CACHE_SECONDS: a change made by another
        process takes effect here within that time (a change made here, at once)."""
        cache = self.__dict__.get("_config_cache")
        if update is None and cache is not None:  # the hit first: every send, receive and ack asks
            cached = cache.get(name)  # (config, until when it holds)
            if cached is not None and monotonic() < cached[1]:
                return cached[0]  # type: ignore[no-any-return]

        def work(conn: sqlite3.Connection) -> ChannelConfig:
            if update is not None:
                self._switch_record(conn, self._config(conn, name), update)
                self._store_config(conn, update)
                return update
            return self._config(conn, name)

        cache = self.__dict__.setdefault("_config_cache", {})
        if update is None:
            existing = self.read(lambda conn: self._config_row(conn, name))  # type: ignore[attr-defined]
            if existing is not None:
                cache[name] = (existing, monotonic() + CONFIG_CACHE_SECONDS)
                return existing
        config = self.transaction(work)  # type: ignore[attr-defined]
        cache[name] = (config, monotonic() + CONFIG_CACHE_SECONDS)
        return config

    def configure_channel(self, name: str, changes: dict[str, Any]) -> ChannelConfig:
        def work(conn: sqlite3.Connection) -> ChannelConfig:
            old = self._config(conn, name)
            fields = old._asdict()
            fields.update(changes)
            config = ChannelConfig(**fields)
            self._switch_record(conn, old, config)
            self._store_config(conn, config)
            return config

        config = self.transaction(work)  # type: ignore[attr-defined]
        self.__dict__.setdefault("_config_cache", {})[name] = (config, monotonic() + CONFIG_CACHE_SECONDS)
        return config

    def list_channels(self) -> list[ChannelConfig]:
        names = self.read(lambda conn: [r[0] for r in conn.execute(  # type: ignore[attr-defined]
            "SELECT name FROM channels ORDER BY name")])
        return [self.channel_config(name) for name in names]

    def add_group(self, channel: str, group: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            self._config(conn, channel)
            if conn.execute("INSERT OR IGNORE INTO channel_groups(channel, grp) VALUES (?, ?)",
                            (channel, group)).rowcount:
                self._append(conn, "channel.group", f"channel:{channel}", None, {"group": group})  # type: ignore[attr-defined]

        self.transaction(work)  # type: ignore[attr-defined]

    # -- send -------------------------------------------------------------------------------

    def send_messages(
        self, channel: str, items: list[tuple[bytes, str, str | None, float, float | None]]
    ) -> list[tuple[int, bool]]:
        # Read before the transaction: its sync level must be set before BEGIN. The dedup TTL
        # comes from the same read (reading it again inside would cost a statement per send).
        config = self.channel_config(channel)
        if not config.durable and len(items) == 1 and items[0][2] is None:
            payload, encoding, _, delay, deadline = items[0]
            message_id = self._send_one(channel, payload, encoding, delay, deadline, CLOCK_RECORD_EVERY)
            if message_id is not None:
                return [(message_id, True)]
        chained = [False]

        def work(conn: sqlite3.Connection) -> list[tuple[int, bool]]:
            # One read for the channel clock, the id counter and the groups: a row per group (one
            # with NULL if none).
            rows = conn.execute(
                "SELECT k.observed, k.ahead, s.last_id, g.grp FROM (SELECT ? AS channel) AS c "
                "LEFT JOIN channel_clock AS k ON k.id = 1 "
                "LEFT JOIN channel_counts AS s ON s.channel = c.channel AND s.grp = '' "
                "LEFT JOIN channel_groups AS g ON g.channel = c.channel", (channel,)).fetchall()
            first = rows[0]
            wall, now = self._advance_channel_time(conn, (first[0], first[1]))
            self._chain_on_the_way(conn, channel, wall, chained)
            last_id = first[2] or 0
            groups = [row[3] for row in rows if row[3] is not None]
            if groups:
                self._note_grouped(channel)
            results: list[tuple[int, bool]] = []
            for payload, encoding, key, delay, deadline in items:
                if key is not None:
                    seen = conn.execute("SELECT message_id, expires_at FROM dedup WHERE channel = ? AND key = ?",
                                        (channel, key)).fetchone()
                    if seen is not None and seen[1] > now:
                        results.append((seen[0], False))
                        continue
                last_id += 1
                for group in groups or [""]:
                    conn.execute(
                        f"INSERT INTO messages({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,0,NULL,NULL)",
                        (last_id, channel, group, key, payload, encoding, now, now + delay, deadline))
                if key is not None:
                    conn.execute("INSERT INTO dedup(channel, key, message_id, expires_at) VALUES (?,?,?,?) "
                                 "ON CONFLICT(channel, key) DO UPDATE SET message_id = excluded.message_id, "
                                 "expires_at = excluded.expires_at",
                                 (channel, key, last_id, now + config.dedup_ttl))
                results.append((last_id, True))
            sent = [mid for mid, new in results if new]
            if not sent:
                return results
            if groups:
                self._store_last_id(conn, channel, last_id)
                count_messages(conn, channel, groups, len(sent))
            else:  # the id counter and the count share the row: one statement
                count_messages(conn, channel, [""], len(sent), last_id)
            if config.durable:
                self._append(conn, "message.send", f"channel:{channel}", None,  # type: ignore[attr-defined]
                             {"ids": sent} if len(sent) > 1 else {"id": sent[0]}, wall)
            return results

        results: list[tuple[int, bool]] = self.transaction(work, durable=config.durable)  # type: ignore[attr-defined]
        if chained[0]:
            self._note_unchained(channel, 0, True)
        return results

    # -- receive ----------------------------------------------------------------------------

    def receive_messages(
        self, channel: str, group: str, consumer: str, visibility_timeout: float, limit: int
    ) -> list[MessageRecord]:
        config = self.channel_config(channel)  # max_attempts: cached like the send's dedup TTL
        if not config.durable and limit == 1:
            receipt = new_receipt()
            row = self._receive_one(channel, group, consumer, visibility_timeout, receipt, CLOCK_RECORD_EVERY,
                                    RECEIVE_SEEN_EVERY)
            if row is not None:
                message_id, key, payload, encoding, enqueued_at, visible_until, deadline, attempts = row
                return [MessageRecord(message_id, channel, group, key, payload, encoding, enqueued_at,
                                      visible_until, deadline, attempts, receipt, consumer)]
        return self._receive_in_transaction(channel, group, consumer, visibility_timeout, limit, config)

    def receive_one(
        self, channel: str, group: str, consumer: str,
        build: Callable[[int, str | None, bytes, str, int, str, str, float], D],
    ) -> D | None:
        config = self.channel_config(channel)
        timeout = config.visibility_timeout
        if not config.durable:  # the single statement, and no MessageRecord between it and ``build``
            receipt = new_receipt()
            row = self._receive_one(channel, group, consumer, timeout, receipt, CLOCK_RECORD_EVERY,
                                    RECEIVE_SEEN_EVERY)
            if row is not None:
                message_id, key, payload, encoding, _, visible_until, _, attempts = row
                return build(message_id, key, payload, encoding, attempts, receipt, consumer, visible_until)
        records = self._receive_in_transaction(channel, group, consumer, timeout, 1, config)
        if not records:
            return None
        message = records[0]
        return build(message.id, message.key, message.payload, message.encoding, message.attempts,
                     message.receipt or "", consumer, message.available_at)

    def _receive_in_transaction(self, channel: str, group: str, consumer: str, visibility_timeout: float,
                                limit: int, config: ChannelConfig) -> list[MessageRecord]:
        """The full receive: every case, in one transaction."""
        chained = [False]

        def work(conn: sqlite3.Connection) -> list[MessageRecord]:
            wall, now = self._advance_channel_time(conn)
            self._chain_on_the_way(conn, channel, wall, chained)
            received: list[MessageRecord] = []
            redelivered: list[list[Any]] = []  # [id, previous consumer, previous attempt]
            taken: set[int] = set()
            while len(received) < limit:
                wanted = limit - len(received)
                # A zero visibility timeout leaves what this call took visible, and first in line when
                # it was first before: look past those (once per call), or a refill after a
                # dead-letter move finds only them and the call returns short of what is ready.
                rows = [row for row in conn.execute(_FIRST_VISIBLE, (channel, group, now, wanted + len(taken)))
                        if row[0] not in taken][:wanted]
                moved = 0
                visible_until = now + visibility_timeout
                for message_id, _, _, key, payload, encoding, enqueued_at, visible_at, deadline, attempts, held, previous \
                        in rows:
                    if attempts >= config.max_attempts:
                        self._dead_letter(conn, MessageRecord(
                            message_id, channel, group, key, payload, encoding, enqueued_at, visible_at, deadline,
                            attempts, held, previous), now, wall)
                        moved += 1
                        continue
                    taken.add(message_id)
                    if previous is not None:
                        redelivered.append([message_id, previous, attempts])
                    receipt = new_receipt()
                    conn.execute(
                        "UPDATE messages SET available_at = ?, receipt = ?, consumer = ?, attempts = attempts + 1 "
                        "WHERE id = ? AND grp = ? AND channel = ?",
                        (visible_until, receipt, consumer, message_id, group, channel))
                    received.append(MessageRecord(
                        message_id, channel, group, key, payload, encoding, enqueued_at, visible_until, deadline,
                        attempts + 1, receipt, consumer))
                if not moved or len(rows) < wanted:
                    break  # look again only to refill the places of dead-lettered messages
            if not received:
                return received
            self._seen_receiving(conn, consumer, wall)
            if config.durable:
                ids = [m.id for m in received]
                self._append(conn, "message.receive", f"channel:{channel}", consumer,  # type: ignore[attr-defined]
                             {"ids": ids, "group": group} if len(ids) > 1 else
                             {"id": ids[0], "group": group, "attempt": received[0].attempts}, wall)
            elif redelivered:
                # A fast channel records a delivery when it ends: these ended unacknowledged.
                self._append(conn, "message.redeliver", f"channel:{channel}", consumer,  # type: ignore[attr-defined]
                             {"group": group, "previous": redelivered}, wall)
            return received

        records: list[MessageRecord] = self.transaction(work)  # type: ignore[attr-defined]
        if chained[0]:
            self._note_unchained(channel, 0, True)
        return records

    @staticmethod
    def _store_last_id(conn: sqlite3.Connection, channel: str, last_id: int) -> None:
        # In the channel's own counts row (its group ''), which a send writes anyway; updated in
        # place (not INSERT OR REPLACE, which deletes and reinserts the row under a new rowid).
        conn.execute("INSERT INTO channel_counts(channel, grp, unacked, last_id) VALUES (?, '', 0, ?) "
                     "ON CONFLICT(channel, grp) DO UPDATE SET last_id = excluded.last_id", (channel, last_id))

    def _dead_letter(self, conn: sqlite3.Connection, message: MessageRecord, now: float, wall: float) -> None:
        dead = dead_letter_name(message.channel)
        self._config(conn, dead)
        row = conn.execute("SELECT last_id FROM channel_counts WHERE channel = ? AND grp = ''", (dead,)).fetchone()
        dead_id = (row[0] if row else 0) + 1
        # Enqueued now, in the dead-letter channel: its ids then follow channel time, as the
        # oldest-ready lookup needs (sqlite_channel_depth); the original send time is journaled.
        conn.execute(
            f"INSERT INTO messages({_COLUMNS}) VALUES (?,?,'',?,?,?,?,?,?,0,NULL,NULL)",
            (dead_id, dead, message.key, message.payload, message.encoding, now, now, message.deadline))
        conn.execute("DELETE FROM messages WHERE id = ? AND grp = ? AND channel = ?",
                     (message.id, message.group, message.channel))  # uncounted by COUNT_TRIGGERS
        count_messages(conn, dead, [""], 1, dead_id)
        self._append(conn, "message.dead", f"channel:{message.channel}", message.consumer,  # type: ignore[attr-defined]
                     {"id": message.id, "group": message.group, "attempts": message.attempts,
                      "dead_letter_id": dead_id, "sent": message.enqueued_at}, wall)
        log("channels", WARNING, "message %s on %r moved to %r after %d delivery attempts", message.id,
            message.channel, dead, message.attempts)

    def _seen_receiving(self, conn: sqlite3.Connection, consumer: str, wall: float) -> None:
        """Advance the consumer's ``last_seen`` on receive at most every RECEIVE_SEEN_EVERY
        seconds per process (an ack always does, with the work it counts): liveness judges
        "alive" in tens of seconds, and a statement and a page per receive buy it nothing."""
        touched = self.__dict__.setdefault("_receive_seen", {})
        last = touched.get(consumer)
        if last is not None and 0 <= wall - last < RECEIVE_SEEN_EVERY:
            return
        self._touch_worker(conn, consumer, 0, wall)
        if len(touched) > 10_000:
            touched.clear()  # bounded: a process with many short-lived consumer names
        touched[consumer] = wall

    @staticmethod
    def _touch_worker(conn: sqlite3.Connection, worker: str, work: int, now: float) -> None:
        conn.execute(
            "INSERT INTO workers(worker, started_at, last_seen, ended_at, work_done, info) "
            "VALUES (?,?,?,NULL,?,'{}') ON CONFLICT(worker) DO UPDATE SET last_seen=excluded.last_seen, "
            "work_done=work_done + excluded.work_done", (worker, now, now, work))

    # -- acknowledge ------------------------------------------------------------------------

    def ack_messages(
        self, channel: str, acks: list[tuple[int, str, str]], effect_ttl: float | None = None,
        effect_scope: str | None = None,
    ) -> list[bool]:
        config = self.channel_config(channel)
        # A fast channel without retention keeps each acknowledged row as its record until a
        # batch of them is chained into one journal entry (see the module docstring).
        batched = batches_acks(config)
        if batched and len(acks) == 1 and effect_ttl is None:
            message_id, group, receipt = acks[0]
            if self._ack_one(channel, message_id, group, receipt, CLOCK_RECORD_EVERY):
                return [True]
        kept = [0]  # rows this transaction kept for the next batch
        chained = [False]

        def work(conn: sqlite3.Connection) -> list[bool]:
            wall, now = self._advance_channel_time(conn)
            kept[0], chained[0] = 0, False
            results: list[bool] = []
            delivered: list[list[Any]] = []  # [id, group, consumer, attempt, sent] of each ack
            for message_id, group, receipt in acks:
                match = (message_id, group, receipt, channel)
                row = conn.execute("SELECT consumer, key, attempts, enqueued_at FROM messages WHERE id = ? "
                                   "AND grp = ? AND receipt = ? AND channel = ? AND acked_at IS NULL",
                                   match).fetchone()
                if row is None:
                    if effect_ttl is not None:
                        # The work is done even though the receipt went stale: record it, so a
                        # redelivery that has not started yet is skipped instead of repeated.
                        late = conn.execute("SELECT key FROM messages WHERE id = ? AND grp = ? AND channel = ? "
                                            "AND acked_at IS NULL", (message_id, group, channel)).fetchone()
                        if late is not None:
                            self._record_effect(conn, effect_scope or channel, effect_key(late[0], message_id),
                                                now + effect_ttl)
                    results.append(False)
                    continue
                if batched:
                    # The receipt stays: an acknowledged row with a receipt is one not chained yet
                    # (still counted, its work credited by the chain).
                    conn.execute("UPDATE messages SET acked_at = ?, available_at = ? WHERE id = ? AND grp = ? "
                                 "AND receipt = ? AND channel = ?", (now, UNCHAINED) + match)
                elif config.retention > 0:
                    # Settled and kept: uncounted and credited to its consumer here (not by a
                    # trigger on the update, which every fast ack would test, see COUNT_TRIGGERS).
                    conn.execute("UPDATE messages SET acked_at = ?, available_at = ?, receipt = NULL WHERE id = ? "
                                 "AND grp = ? AND receipt = ? AND channel = ?", (now, ACKED) + match)
                    count_messages(conn, channel, [group], -1)
                    self._touch_worker(conn, row[0], 1, wall)
                else:
                    conn.execute("DELETE FROM messages WHERE id = ? AND grp = ? AND receipt = ? AND channel = ?", match)
                    self._touch_worker(conn, row[0], 1, wall)
                if effect_ttl is not None:
                    self._record_effect(conn, effect_scope or channel, effect_key(row[1], message_id),
                                        now + effect_ttl)
                delivered.append([message_id, group, row[0], row[2], row[3]])
                results.append(True)
            if not delivered:
                chained[0] = self._chain_if_due(conn, channel, wall, 0)
                return results
            done = [d[0] for d in delivered]
            if batched:
                kept[0] = len(delivered)
            elif config.durable:
                self._append(conn, "message.ack", f"channel:{channel}", None,  # type: ignore[attr-defined]
                             {"ids": done} if len(done) > 1 else {"id": done[0]}, wall)
            else:
                self._append(conn, "message.ack", f"channel:{channel}", None,  # type: ignore[attr-defined]
                             _ended_deliveries(delivered), wall)
            chained[0] = self._chain_if_due(conn, channel, wall, kept[0])
            if config.retention > 0:
                # Through messages_acked: touches only what expired, however many are retained.
                # Rows awaiting a batch (a process with an older config) wait for it instead.
                # Retention steps remove the rest (an idle channel's, or after retention went to 0).
                conn.execute("DELETE FROM messages WHERE channel = ? AND acked_at IS NOT NULL AND receipt IS NULL "
                             "AND acked_at < ?", (channel, now - config.retention))
            return results

        results = self.transaction(work, durable=config.durable)  # type: ignore[attr-defined]
        self._note_unchained(channel, kept[0], chained[0])
        return results

    @staticmethod
    def _record_effect(conn: sqlite3.Connection, scope: str, key: str, expires_at: float) -> None:
        conn.execute("INSERT INTO effects(channel, effect_key, expires_at) VALUES (?,?,?) "
                     "ON CONFLICT(channel, effect_key) DO UPDATE SET expires_at = excluded.expires_at",
                     (scope, key, expires_at))

    def nack_message(self, channel: str, message_id: int, group: str, receipt: str, delay: float) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            wall, now = self._advance_channel_time(conn)
            changed = conn.execute(
                "UPDATE messages SET available_at = ?, receipt = NULL WHERE id = ? AND grp = ? AND receipt = ? "
                "AND channel = ? AND acked_at IS NULL", (now + delay, message_id, group, receipt, channel)).rowcount
            if changed:
                self._append(conn, "message.nack", f"channel:{channel}", None,  # type: ignore[attr-defined]
                             {"id": message_id, "delay": delay}, wall)
            return bool(changed)

        return self.transaction(work)  # type: ignore[attr-defined]

    def extend_message(self, channel: str, message_id: int, group: str, receipt: str, seconds: float) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            _, now = self._advance_channel_time(conn)
            return bool(conn.execute(
                "UPDATE messages SET available_at = ? WHERE id = ? AND grp = ? AND receipt = ? AND channel = ? "
                "AND acked_at IS NULL AND available_at > ?",
                (now + seconds, message_id, group, receipt, channel, now)).rowcount)

        return self.transaction(work)  # type: ignore[attr-defined]

    def effect_seen(self, scope: str, effect_key: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT expires_at FROM effects WHERE channel = ? AND effect_key = ?",
                               (scope, effect_key)).fetchone()
            return row is not None and row[0] > self._channel_time(conn)

        return self.read(work)  # type: ignore[attr-defined]
