"""The reference for channel figures on PostgreSQL: a scan of every message of the channel, as the
PostgreSQL backend computed them before it kept counters. tests/test_postgres_depth.py compares
the backend with it, and benchmarks/bench_postgres.py times it beside the backend."""

from __future__ import annotations

from typing import Any

from agent_coherence.backends.records import MessageRecord

_COLUMNS = ("id, channel, grp, key, payload, encoding, enqueued_at, available_at, deadline, attempts, "
            "receipt, consumer")
SCAN_FIGURES = (
    "WITH n AS MATERIALIZED (SELECT @ac_channel_now() AS t, @ac_now() AS w) SELECT grp, "
    "count(*) FILTER (WHERE available_at <= n.t), "
    "count(*) FILTER (WHERE available_at > n.t AND receipt IS NOT NULL AND acked_at IS NULL), "
    "count(*) FILTER (WHERE available_at > n.t AND receipt IS NULL AND acked_at IS NULL), "
    "min(enqueued_at) FILTER (WHERE available_at <= n.t), "
    "count(*) FILTER (WHERE deadline IS NOT NULL AND deadline < n.w AND acked_at IS NULL), n.t "
    "FROM @messages, n WHERE channel = %s GROUP BY grp, n.t, n.w")


def _message(row: tuple[Any, ...]) -> MessageRecord:
    return MessageRecord(*row[:4], bytes(row[4]), *row[5:12])


class PostgresScanReference:
    """The backend, except that channel figures, overdue messages and timed-out deliveries are
    computed by scanning the messages."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def channel_stats(self, channel: str) -> dict[str, Any]:
        def work(tx: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
            groups = [row[0] for row in tx.all("SELECT grp FROM @channel_groups WHERE channel = %s", (channel,))]
            return groups, tx.all(SCAN_FIGURES, (channel,))

        groups, rows = self._backend.read(work)
        by_group = {row[0]: row for row in rows}
        stats: dict[str, Any] = {"channel": channel, "groups": {}}
        for group in groups or [""]:
            row = by_group.get(group)
            ready, in_flight, delayed, oldest, overdue, now = row[1:] if row else (0, 0, 0, None, 0, 0.0)
            stats["groups"][group] = {
                "ready": ready, "in_flight": in_flight, "delayed": delayed, "overdue": overdue,
                "oldest_ready_age": (now - oldest) if oldest is not None else None}
        for name in ("ready", "in_flight", "delayed"):
            stats[name] = sum(g[name] for g in stats["groups"].values())
        stats["depth"] = stats["ready"] + stats["in_flight"] + stats["delayed"]
        ages = [g["oldest_ready_age"] for g in stats["groups"].values() if g["oldest_ready_age"] is not None]
        stats["oldest_ready_age"] = max(ages) if ages else None
        return stats

    def overdue_messages(self, limit: int = 100) -> list[MessageRecord]:
        rows = self._backend.read(lambda tx: tx.all(
            f"SELECT {_COLUMNS} FROM @messages WHERE deadline IS NOT NULL AND deadline < @ac_now() "
            "AND acked_at IS NULL"))
        return [_message(row) for row in rows]

    def expired_deliveries(self, limit: int = 100) -> list[MessageRecord]:
        rows = self._backend.read(lambda tx: tx.all(
            f"SELECT {_COLUMNS} FROM @messages WHERE receipt IS NOT NULL AND acked_at IS NULL "
            "AND available_at <= @ac_channel_now()"))
        return [_message(row) for row in rows]
