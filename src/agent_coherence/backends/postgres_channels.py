"""Acknowledged channels on PostgreSQL (a mixin of PostgresBackend).

The layout is the embedded one: one ``messages`` row per (message, consumer group), visible when
``available_at`` (server clock) has passed; a receive moves ``available_at`` to the end of the
visibility timeout and stamps a fresh receipt. Receives claim rows with ``FOR UPDATE SKIP
LOCKED``, so consumers on any host never wait for each other and never get the same delivery;
delivery order across consumers is by ``available_at, id`` but not strictly FIFO (a row another
consumer has locked is skipped, then claimed later).

Message ids come from one SEQUENCE (unique and increasing across channels, with gaps), so sends
to one channel do not serialise on a counter row. Dedup keys are rows guarded by their primary
key: two senders of one key at once get one message. Sends and acks wait for their flush;
receives do not (losing one to a server crash only means a redelivery, with an attempt uncounted).
What a channel holds (``channel_stats``, overdue and timed-out messages) is read from counters and
index ranges in ``postgres_channel_depth.py``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

from .postgres_liveness import TOUCH_WORKER
from .postgres_tx import Tx, TxRunner
from ..logs import WARNING, log
from .records import CLOCK_KEY, ChannelConfig, MessageRecord, effect_key

D = TypeVar("D")

CHANNEL_SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS @message_ids;
CREATE TABLE IF NOT EXISTS @channels (
    name text PRIMARY KEY, visibility_timeout double precision NOT NULL, max_attempts int NOT NULL,
    dedup_ttl double precision NOT NULL, durable boolean NOT NULL, sla double precision,
    retention double precision NOT NULL);
CREATE TABLE IF NOT EXISTS @channel_groups (channel text NOT NULL, grp text NOT NULL, PRIMARY KEY (channel, grp));
CREATE TABLE IF NOT EXISTS @messages (
    id bigint NOT NULL, channel text NOT NULL, grp text NOT NULL, key text, payload bytea NOT NULL,
    encoding text NOT NULL, enqueued_at double precision NOT NULL, available_at double precision NOT NULL,
    deadline double precision, attempts int NOT NULL, receipt text, consumer text, acked_at double precision,
    PRIMARY KEY (channel, grp, id));
CREATE INDEX IF NOT EXISTS messages_ready ON @messages(channel, grp, available_at, id);
CREATE INDEX IF NOT EXISTS messages_acked ON @messages(channel, acked_at) WHERE acked_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS @dedup (
    channel text NOT NULL, key text NOT NULL, message_id bigint NOT NULL,
    expires_at double precision NOT NULL, PRIMARY KEY (channel, key));
CREATE TABLE IF NOT EXISTS @effects (
    channel text NOT NULL, effect_key text NOT NULL, expires_at double precision NOT NULL,
    PRIMARY KEY (channel, effect_key));
""" + """
CREATE TABLE IF NOT EXISTS @channel_clock (
    id int PRIMARY KEY CHECK (id = 1), observed double precision NOT NULL, ahead double precision NOT NULL);
INSERT INTO @channel_clock(id, observed, ahead) VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING;
CREATE OR REPLACE FUNCTION @ac_channel_now() RETURNS double precision LANGUAGE sql VOLATILE AS
$$ SELECT coalesce(nullif(current_setting('ac.channel_now', true), '')::double precision,
                   (SELECT greatest(@ac_now() + ahead, observed) FROM @channel_clock WHERE id = 1), @ac_now()) $$;
"""
CHANNEL_CLOCK_SCHEMA = CHANNEL_SCHEMA[CHANNEL_SCHEMA.index("CREATE TABLE IF NOT EXISTS @channel_clock"):]
CLOCK_STEP_REPORTED = 1.0  # a step back of at least this many seconds is journaled and logged
# One statement: read the clock, hold channel time through a step back (ahead grows by the step),
# move the high-water mark unless another transaction holds its row (SKIP LOCKED: never waits, so
# no lock order to keep), and pin this transaction's channel time for ac_channel_now().
_ADVANCE = (
    "WITH t AS (SELECT w.wall, c.observed, c.ahead, greatest(c.ahead, c.observed - w.wall) AS held "
    "FROM (SELECT @ac_now() AS wall) w, @channel_clock c WHERE c.id = 1), "
    "u AS (UPDATE @channel_clock k SET observed = greatest(t.wall + t.held, k.observed), ahead = t.held FROM t "
    "WHERE k.id IN (SELECT id FROM @channel_clock WHERE id = 1 FOR UPDATE SKIP LOCKED) "
    "AND (t.wall + t.held > k.observed OR t.held > k.ahead) RETURNING k.ahead) "
    "SELECT t.wall, t.wall + t.held, t.held - t.ahead, (SELECT count(*) FROM u), "
    "set_config('ac.channel_now', (t.wall + t.held)::text, true) FROM t")

CONFIG_CACHE_SECONDS = 1.0
ACKED = 1e18  # available_at of a retained, acknowledged message: never visible again
_COLUMNS = ("id, channel, grp, key, payload, encoding, enqueued_at, available_at, deadline, attempts, "
            "receipt, consumer")
_M_COLUMNS = ", ".join(f"m.{column.strip()}" for column in _COLUMNS.split(","))
_CONFIG_COLUMNS = "name, visibility_timeout, max_attempts, dedup_ttl, durable, sla, retention"


def dead_letter_name(channel: str) -> str:
    return f"{channel}.dead"


def _message(row: tuple[Any, ...]) -> MessageRecord:
    return MessageRecord(*row[:4], bytes(row[4]), *row[5:12])


def _ids_data(ids: list[int], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"ids": ids} if len(ids) > 1 else {"id": ids[0]}
    data.update(extra or {})
    return data


class ChannelOps(TxRunner):
    """Channel operations (see the Backend protocol for the contract)."""

    _config_cache: dict[str, tuple[ChannelConfig, float]]

    # -- channel time -----------------------------------------------------------------------

    @staticmethod
    def _advance_channel_time(tx: Tx) -> float:
        """Channel time for this write transaction (also what ``ac_channel_now()`` returns in it);
        journals a step back of the server clock (``clock.step``) once, by the transaction that
        records it."""
        row = tx.one(_ADVANCE)
        assert row is not None, "channel_clock row missing"
        wall, now, step, recorded = float(row[0]), float(row[1]), float(row[2]), int(row[3])
        if recorded and step >= CLOCK_STEP_REPORTED:
            tx.append("clock.step", CLOCK_KEY, None, {"step": step, "clock": wall, "channel_time": now})
            log("channels", WARNING,
                "the server clock stepped back %.3fs: channel time holds at %.3f and runs on from there", step, now)
        return now

    # -- configuration ----------------------------------------------------------------------

    @staticmethod
    def _config_row(tx: Tx, name: str, lock: bool = False) -> ChannelConfig | None:
        row = tx.one(f"SELECT {_CONFIG_COLUMNS} FROM @channels WHERE name = %s" + (" FOR UPDATE" if lock else ""),
                     (name,))
        return ChannelConfig(*row) if row else None

    def _config(self, tx: Tx, name: str) -> ChannelConfig:
        config = self._config_row(tx, name)
        if config is None:
            tx.run(f"INSERT INTO @channels({_CONFIG_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s) "
                   "ON CONFLICT (name) DO NOTHING", tuple(ChannelConfig(name)._asdict().values()))
            config = self._config_row(tx, name)
        return config  # type: ignore[return-value]

    @staticmethod
    def _store_config(tx: Tx, config: ChannelConfig) -> None:
        tx.run(f"INSERT INTO @channels({_CONFIG_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (name) "
               "DO UPDATE SET visibility_timeout = excluded.visibility_timeout, max_attempts = excluded.max_attempts, "
               "dedup_ttl = excluded.dedup_ttl, durable = excluded.durable, sla = excluded.sla, "
               "retention = excluded.retention", tuple(config._asdict().values()))

    def _cache(self) -> dict[str, tuple[ChannelConfig, float]]:
        return self.__dict__.setdefault("_config_cache", {})  # type: ignore[no-any-return]

    def channel_config(self, name: str, update: ChannelConfig | None = None) -> ChannelConfig:
        """The stored config, cached per process for CONFIG_CACHE_SECONDS: a change made by another
        process takes effect here within that time (a change made here, at once)."""
        cache = self._cache()
        if update is None:
            cached = cache.get(name)
            if cached is not None and time.monotonic() - cached[1] < CONFIG_CACHE_SECONDS:
                return cached[0]

        def work(tx: Tx) -> ChannelConfig:
            if update is not None:
                self._store_config(tx, update)
                return update
            return self._config(tx, name)

        config = self.transaction(work, idempotent=True)
        cache[name] = (config, time.monotonic())
        return config

    def configure_channel(self, name: str, changes: dict[str, Any]) -> ChannelConfig:
        def work(tx: Tx) -> ChannelConfig:
            self._config(tx, name)
            # Locked: two processes changing different fields at once must both keep theirs.
            fields = self._config_row(tx, name, lock=True)._asdict()  # type: ignore[union-attr]
            fields.update(changes)
            config = ChannelConfig(**fields)
            self._store_config(tx, config)
            return config

        config = self.transaction(work, idempotent=True)
        self._cache()[name] = (config, time.monotonic())
        return config

    def list_channels(self) -> list[ChannelConfig]:
        rows = self.read(lambda tx: tx.all(f"SELECT {_CONFIG_COLUMNS} FROM @channels ORDER BY name"))
        return [ChannelConfig(*row) for row in rows]

    def add_group(self, channel: str, group: str) -> None:
        def work(tx: Tx) -> None:
            self._config(tx, channel)
            if tx.run("INSERT INTO @channel_groups(channel, grp) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                      (channel, group)):
                tx.append("channel.group", f"channel:{channel}", None, {"group": group})

        self.transaction(work, idempotent=True)

    # -- send -------------------------------------------------------------------------------

    def send_messages(
        self, channel: str, items: list[tuple[bytes, str, str | None, float, float | None]]
    ) -> list[tuple[int, bool]]:
        config = self.channel_config(channel)

        def work(tx: Tx) -> list[tuple[int, bool]]:
            self._advance_channel_time(tx)
            groups = [row[0] for row in tx.all("SELECT grp FROM @channel_groups WHERE channel = %s", (channel,))]
            ids = [row[0] for row in tx.all("SELECT nextval('@message_ids') FROM generate_series(1, %s)",
                                            (len(items),))]
            results: list[tuple[int, bool]] = []
            new: list[tuple[int, bytes, str, str | None, float, float | None]] = []
            for (payload, encoding, key, delay, deadline), message_id in zip(items, ids):
                if key is not None:
                    claimed = tx.one(
                        "INSERT INTO @dedup AS d(channel, key, message_id, expires_at) VALUES (%s,%s,%s,@ac_channel_now() + %s) "
                        "ON CONFLICT (channel, key) DO UPDATE SET message_id = excluded.message_id, "
                        "expires_at = excluded.expires_at WHERE d.expires_at <= @ac_channel_now() RETURNING message_id",
                        (channel, key, message_id, config.dedup_ttl))
                    if claimed is None:
                        original = tx.one("SELECT message_id FROM @dedup WHERE channel = %s AND key = %s",
                                          (channel, key))
                        results.append((original[0], False))  # type: ignore[index]
                        continue
                new.append((message_id, payload, encoding, key, delay, deadline))
                results.append((message_id, True))
            if new:
                columns: list[list[Any]] = [[] for _ in range(7)]
                for group in groups or [""]:
                    for message_id, payload, encoding, key, delay, deadline in new:
                        for column, value in zip(columns, (message_id, group, key, payload, encoding, delay, deadline)):
                            column.append(value)
                tx.run(
                    f"WITH n AS MATERIALIZED (SELECT @ac_channel_now() AS t) INSERT INTO @messages({_COLUMNS}) "
                    "SELECT i, %s, g, k, p, e, n.t, n.t + d, dl, 0, NULL, NULL "
                    "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bytea[], %s::text[], %s::float8[], "
                    "%s::float8[]) AS u(i, g, k, p, e, d, dl), n", (channel, *columns))
                tx.append("message.send", f"channel:{channel}", None, _ids_data([m[0] for m in new]))
            return results

        return self.transaction(work, durable=config.durable)

    # -- receive ----------------------------------------------------------------------------

    def receive_one(
        self, channel: str, group: str, consumer: str,
        build: Callable[[int, str | None, bytes, str, int, str, str, float], D],
    ) -> D | None:
        records = self.receive_messages(channel, group, consumer, self.channel_config(channel).visibility_timeout, 1)
        if not records:
            return None
        message = records[0]
        return build(message.id, message.key, message.payload, message.encoding, message.attempts,
                     message.receipt or "", consumer, message.available_at)

    def receive_messages(
        self, channel: str, group: str, consumer: str, visibility_timeout: float, limit: int
    ) -> list[MessageRecord]:
        def work(tx: Tx) -> list[MessageRecord]:
            self._advance_channel_time(tx)
            config = self._config(tx, channel)
            received: list[MessageRecord] = []
            taken: list[int] = []
            while len(received) < limit:
                wanted = limit - len(received)
                rows = [_message(row) for row in tx.all(
                    f"SELECT {_COLUMNS} FROM @messages WHERE channel = %s AND grp = %s AND available_at <= @ac_channel_now() "
                    "AND NOT (id = ANY(%s)) ORDER BY available_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
                    (channel, group, taken, wanted))]
                dead = [m for m in rows if m.attempts >= config.max_attempts]
                for message in dead:
                    self._dead_letter(tx, message)
                deliver = [m.id for m in rows if m.attempts < config.max_attempts]
                if deliver:
                    updated = {row[0]: _message(row) for row in tx.all(
                        "UPDATE @messages m SET available_at = @ac_channel_now() + %s, consumer = %s, attempts = m.attempts + 1, "
                        "receipt = substr(md5(random()::text || clock_timestamp()::text || m.id::text), 1, 16) "
                        f"WHERE m.channel = %s AND m.grp = %s AND m.id = ANY(%s) RETURNING {_M_COLUMNS}",
                        (visibility_timeout, consumer, channel, group, deliver))}
                    received.extend(updated[message_id] for message_id in deliver)
                    taken.extend(deliver)
                if not dead or len(rows) < wanted:
                    break  # look again only to refill the places of dead-lettered messages
            if received:
                tx.run(TOUCH_WORKER, (consumer, 0))
                ids = [m.id for m in received]
                tx.append("message.receive", f"channel:{channel}", consumer,
                          {"ids": ids, "group": group} if len(ids) > 1 else
                          {"id": ids[0], "group": group, "attempt": received[0].attempts})
            return received

        # Not flushed: a receive lost to a server crash is a redelivery.
        return self.transaction(work, durable=False, idempotent=True)

    def _dead_letter(self, tx: Tx, message: MessageRecord) -> None:
        dead = dead_letter_name(message.channel)
        self._config(tx, dead)
        # Enqueued now, in the dead-letter channel: its ids then follow channel time, as the
        # depth figures assume (postgres_channel_depth.py).
        row = tx.one(
            f"INSERT INTO @messages({_COLUMNS}) VALUES (nextval('@message_ids'), %s, '', %s, %s, %s, @ac_channel_now(), "
            "@ac_channel_now(), %s, 0, NULL, NULL) RETURNING id",
            (dead, message.key, message.payload, message.encoding, message.deadline))
        tx.run("DELETE FROM @messages WHERE id = %s AND grp = %s AND channel = %s",
               (message.id, message.group, message.channel))
        tx.append("message.dead", f"channel:{message.channel}", message.consumer,
                  {"id": message.id, "group": message.group, "attempts": message.attempts,
                   "dead_letter_id": row[0], "sent": message.enqueued_at})  # type: ignore[index]
        log("channels", WARNING, "message %s on %r moved to %r after %d delivery attempts", message.id,
            message.channel, dead, message.attempts)

    # -- acknowledge ------------------------------------------------------------------------

    def ack_messages(
        self, channel: str, acks: list[tuple[int, str, str]], effect_ttl: float | None = None,
        effect_scope: str | None = None,
    ) -> list[bool]:
        config = self.channel_config(channel)

        def work(tx: Tx) -> list[bool]:
            self._advance_channel_time(tx)
            match = ("FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS a(id, grp, receipt) "
                     "WHERE m.channel = %s AND m.id = a.id AND m.grp = a.grp AND m.receipt = a.receipt "
                     "AND m.acked_at IS NULL RETURNING m.id, m.grp, m.receipt, m.consumer, m.key")
            params = ([a[0] for a in acks], [a[1] for a in acks], [a[2] for a in acks], channel)
            if config.retention > 0:
                rows = tx.all(f"UPDATE @messages m SET acked_at = @ac_channel_now(), available_at = {ACKED} {match}", params)
            else:
                rows = tx.all(f"DELETE FROM @messages m USING {match.replace('FROM ', '', 1)}", params)
            matched = {(row[0], row[1], row[2]): row for row in rows}
            results: list[bool] = []
            done: list[int] = []
            work_by_consumer: dict[str, int] = {}
            for ack in acks:
                row = matched.pop(tuple(ack), None)  # type: ignore[arg-type]
                results.append(row is not None)
                if row is None:
                    if effect_ttl is not None:
                        # The work is done even though the receipt went stale: record it, so a
                        # redelivery that has not started yet is skipped instead of repeated.
                        late = tx.one("SELECT key FROM @messages WHERE id = %s AND grp = %s AND channel = %s "
                                      "AND acked_at IS NULL", (ack[0], ack[1], channel))
                        if late is not None:
                            self._record_effect(tx, effect_scope or channel, effect_key(late[0], ack[0]), effect_ttl)
                    continue
                done.append(ack[0])
                if row[3] is not None:
                    work_by_consumer[row[3]] = work_by_consumer.get(row[3], 0) + 1
                if effect_ttl is not None:
                    self._record_effect(tx, effect_scope or channel, effect_key(row[4], ack[0]), effect_ttl)
            for consumer in sorted(work_by_consumer):
                tx.run(TOUCH_WORKER, (consumer, work_by_consumer[consumer]))
            if done:
                tx.append("message.ack", f"channel:{channel}", None, _ids_data(done))
                if config.retention > 0:
                    tx.run("DELETE FROM @messages WHERE channel = %s AND acked_at IS NOT NULL "
                           "AND acked_at < @ac_channel_now() - %s", (channel, config.retention))
            return results

        return self.transaction(work, durable=config.durable, idempotent=True)

    @staticmethod
    def _record_effect(tx: Tx, scope: str, key: str, ttl: float) -> None:
        tx.run("INSERT INTO @effects(channel, effect_key, expires_at) VALUES (%s, %s, @ac_channel_now() + %s) "
               "ON CONFLICT (channel, effect_key) DO UPDATE SET expires_at = excluded.expires_at", (scope, key, ttl))

    def nack_message(self, channel: str, message_id: int, group: str, receipt: str, delay: float) -> bool:
        def work(tx: Tx) -> bool:
            self._advance_channel_time(tx)
            changed = tx.run("UPDATE @messages SET available_at = @ac_channel_now() + %s, receipt = NULL WHERE id = %s "
                             "AND grp = %s AND receipt = %s AND channel = %s AND acked_at IS NULL",
                             (delay, message_id, group, receipt, channel))
            if changed:
                tx.append("message.nack", f"channel:{channel}", None, {"id": message_id, "delay": delay})
            return bool(changed)

        return self.transaction(work, idempotent=True)

    def extend_message(self, channel: str, message_id: int, group: str, receipt: str, seconds: float) -> bool:
        def work(tx: Tx) -> bool:
            self._advance_channel_time(tx)
            return bool(tx.run(
                "UPDATE @messages SET available_at = @ac_channel_now() + %s WHERE id = %s AND grp = %s "
                "AND receipt = %s AND channel = %s AND acked_at IS NULL AND available_at > @ac_channel_now()",
                (seconds, message_id, group, receipt, channel)))

        return self.transaction(work, idempotent=True)

    def effect_seen(self, scope: str, effect_key: str) -> bool:
        row = self.read(lambda tx: tx.one(
            "SELECT expires_at > @ac_channel_now() FROM @effects WHERE channel = %s AND effect_key = %s", (scope, effect_key)))
        return bool(row and row[0])
