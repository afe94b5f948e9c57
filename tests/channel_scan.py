"""The reference for channel figures: a scan of every message, as the SQLite backend computed them
before it kept counts. tests/test_channel_depth.py compares the backend with it, and
benchmarks/bench_channels.py times it beside the backend ("before")."""

from __future__ import annotations

import sqlite3
from typing import Any

from agent_coherence.backends.records import MessageRecord
from agent_coherence.backends.sqlite_channel_depth import MESSAGE_COLUMNS


class ScanReference:
    """The backend, except that channel figures, overdue messages and timed-out deliveries are
    computed by scanning every message (what the backend did before its counters)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def channel_stats(self, channel: str) -> dict[str, Any]:
        backend = self._backend

        def work(conn: sqlite3.Connection) -> dict[str, Any]:
            wall, now = backend.now(), backend._channel_time(conn)
            groups = [r[0] for r in conn.execute("SELECT grp FROM channel_groups WHERE channel = ?", (channel,))]
            stats: dict[str, Any] = {"channel": channel, "groups": {}}
            for group in groups or [""]:
                ready, in_flight, delayed, oldest, overdue = conn.execute(
                    "SELECT sum(available_at <= ?), sum(available_at > ? AND receipt IS NOT NULL AND acked_at IS NULL), "
                    "sum(available_at > ? AND receipt IS NULL AND acked_at IS NULL), "
                    "min(CASE WHEN available_at <= ? THEN enqueued_at END), "
                    "sum(deadline IS NOT NULL AND deadline < ? AND acked_at IS NULL) "
                    "FROM messages NOT INDEXED WHERE channel = ? AND grp = ?",
                    (now, now, now, now, wall, channel, group)).fetchone()
                stats["groups"][group] = {
                    "ready": ready or 0, "in_flight": in_flight or 0, "delayed": delayed or 0,
                    "overdue": overdue or 0, "oldest_ready_age": (now - oldest) if oldest is not None else None}
            for name in ("ready", "in_flight", "delayed"):
                stats[name] = sum(g[name] for g in stats["groups"].values())
            stats["depth"] = stats["ready"] + stats["in_flight"] + stats["delayed"]
            ages = [g["oldest_ready_age"] for g in stats["groups"].values() if g["oldest_ready_age"] is not None]
            stats["oldest_ready_age"] = max(ages) if ages else None
            return stats

        return backend.read(work)

    def overdue_messages(self, limit: int = 100) -> list[MessageRecord]:
        now = self._backend.now()
        rows = self._backend.read(lambda conn: conn.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages NOT INDEXED WHERE deadline IS NOT NULL AND deadline < ? "
            "AND acked_at IS NULL", (now,)).fetchall())
        return [MessageRecord(*row) for row in rows]

    def expired_deliveries(self, limit: int = 100) -> list[MessageRecord]:
        backend = self._backend
        rows = backend.read(lambda conn: conn.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages NOT INDEXED WHERE receipt IS NOT NULL AND acked_at IS NULL "
            "AND available_at <= ?", (backend._channel_time(conn),)).fetchall())
        return [MessageRecord(*row) for row in rows]
