"""SQLite storage for what liveness watches: holders' views, worker sessions, assignments.

A worker's ``work_done`` and ``last_seen`` as read here include its fast-channel acks that await
their batch (credited to the row when the batch is chained, sqlite_channel_record), so a consumer
that acked is never reported as idle while its batch is pending.

A mixin of SQLiteBackend: it relies on ``transaction``, ``read``, ``now``, ``_append`` and
``pending_work``.
"""

from __future__ import annotations

from .. import json_text  # json.loads/dumps without importing the json package (hook start-up)
from .records import AssignmentRecord, WorkerRecord

TYPE_CHECKING = False  # typing is not imported at run time: this module is on the hook path
if TYPE_CHECKING:
    import sqlite3
    from typing import Any

LIVENESS_SCHEMA = """
CREATE TABLE IF NOT EXISTS views (
    holder TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT,
    seen_at REAL NOT NULL, PRIMARY KEY (holder, key));
CREATE TABLE IF NOT EXISTS workers (
    worker TEXT PRIMARY KEY, started_at REAL NOT NULL, last_seen REAL NOT NULL, ended_at REAL,
    work_done INTEGER NOT NULL, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (
    task_id TEXT PRIMARY KEY, worker TEXT NOT NULL, assigned_at REAL NOT NULL, deadline REAL,
    completed_at REAL, info TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS assignments_open ON assignments(worker) WHERE completed_at IS NULL;
"""

_WORKER_COLUMNS = "worker, started_at, last_seen, ended_at, work_done, info"
_ASSIGNMENT_COLUMNS = "task_id, worker, assigned_at, deadline, completed_at, info"


def _worker(row: tuple, pending: dict[str, tuple[int, float]]) -> WorkerRecord:
    worker, started_at, last_seen, ended_at, work_done, info = row
    waiting = pending.get(worker)
    if waiting is not None:
        work_done, last_seen = work_done + waiting[0], max(last_seen, waiting[1])
    return WorkerRecord(worker, started_at, last_seen, ended_at, work_done, json_text.loads(info))


def _assignment(row: tuple) -> AssignmentRecord:
    return AssignmentRecord(*row[:-1], json_text.loads(row[-1]))


class LivenessOps:
    """Views, worker sessions and assignments (see the Backend protocol for the contract)."""

    # -- views ------------------------------------------------------------------------------

    def put_view(self, holder: str, key: str, version: int, sha256: str | None) -> None:
        self.transaction(lambda conn: conn.execute(  # type: ignore[attr-defined]
            "INSERT INTO views(holder, key, version, sha256, seen_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT(holder, key) DO UPDATE SET version=excluded.version, sha256=excluded.sha256, "
            "seen_at=excluded.seen_at", (holder, key, version, sha256, self.now())))  # type: ignore[attr-defined]

    def get_view(self, holder: str, key: str) -> tuple[int, str | None] | None:
        row = self.read(lambda conn: conn.execute(  # type: ignore[attr-defined]
            "SELECT version, sha256 FROM views WHERE holder = ? AND key = ?", (holder, key)).fetchone())
        return (row[0], row[1]) if row else None

    def drop_views(self, holder: str) -> int:
        return self.transaction(lambda conn: conn.execute(  # type: ignore[attr-defined]
            "DELETE FROM views WHERE holder = ?", (holder,)).rowcount)

    # -- workers ----------------------------------------------------------------------------

    def _worker_row(self, conn: sqlite3.Connection, worker: str) -> WorkerRecord | None:
        row = conn.execute(f"SELECT {_WORKER_COLUMNS} FROM workers WHERE worker = ?", (worker,)).fetchone()
        return _worker(row, self.pending_work(conn, worker)) if row else None  # type: ignore[attr-defined]

    def worker_start(self, worker: str, info: dict[str, Any]) -> WorkerRecord:
        def work(conn: sqlite3.Connection) -> WorkerRecord:
            now = self.now()  # type: ignore[attr-defined]
            conn.execute(
                "INSERT INTO workers(worker, started_at, last_seen, ended_at, work_done, info) "
                "VALUES (?,?,?,NULL,0,?) ON CONFLICT(worker) DO UPDATE SET started_at=excluded.started_at, "
                "last_seen=excluded.last_seen, ended_at=NULL, work_done=0, info=excluded.info",
                (worker, now, now, json_text.dumps(info, default=str)),
            )
            self._append(conn, "worker.start", None, worker, info, now)  # type: ignore[attr-defined]
            return WorkerRecord(worker, now, now, None, 0, info)

        return self.transaction(work)  # type: ignore[attr-defined]

    def worker_beat(self, worker: str, work: int = 0) -> WorkerRecord:
        def update(conn: sqlite3.Connection) -> WorkerRecord:
            now = self.now()  # type: ignore[attr-defined]
            conn.execute(
                "INSERT INTO workers(worker, started_at, last_seen, ended_at, work_done, info) "
                "VALUES (?,?,?,NULL,?,'{}') ON CONFLICT(worker) DO UPDATE SET last_seen=excluded.last_seen, "
                "work_done=work_done + excluded.work_done",
                (worker, now, now, work),
            )
            return self._worker_row(conn, worker)  # type: ignore[return-value]

        return self.transaction(update)  # type: ignore[attr-defined]

    def worker_end(self, worker: str) -> WorkerRecord | None:
        def work(conn: sqlite3.Connection) -> WorkerRecord | None:
            now = self.now()  # type: ignore[attr-defined]
            if conn.execute("UPDATE workers SET ended_at = ?, last_seen = ? WHERE worker = ?",
                            (now, now, worker)).rowcount:
                record = self._worker_row(conn, worker)
                self._append(conn, "worker.end", None, worker,  # type: ignore[attr-defined]
                             {"work_done": record.work_done if record else 0}, now)
                return record
            return None

        return self.transaction(work)  # type: ignore[attr-defined]

    def list_workers(self, include_ended: bool = False) -> list[WorkerRecord]:
        where = "" if include_ended else " WHERE ended_at IS NULL"

        def work(conn: sqlite3.Connection) -> list[WorkerRecord]:
            rows = conn.execute(f"SELECT {_WORKER_COLUMNS} FROM workers{where} ORDER BY worker").fetchall()
            pending = self.pending_work(conn) if rows else {}  # type: ignore[attr-defined]
            return [_worker(row, pending) for row in rows]

        return self.read(work)  # type: ignore[attr-defined,no-any-return]

    # -- assignments ------------------------------------------------------------------------

    def assign(self, task_id: str, worker: str, deadline: float | None, info: dict[str, Any]) -> AssignmentRecord:
        def work(conn: sqlite3.Connection) -> AssignmentRecord:
            now = self.now()  # type: ignore[attr-defined]
            conn.execute(
                "INSERT INTO assignments(task_id, worker, assigned_at, deadline, completed_at, info) "
                "VALUES (?,?,?,?,NULL,?) ON CONFLICT(task_id) DO UPDATE SET worker=excluded.worker, "
                "assigned_at=excluded.assigned_at, deadline=excluded.deadline, completed_at=NULL, "
                "info=excluded.info",
                (task_id, worker, now, deadline, json_text.dumps(info, default=str)),
            )
            self._append(conn, "assignment.open", task_id, worker,  # type: ignore[attr-defined]
                         {"deadline": deadline, **info}, now)
            return AssignmentRecord(task_id, worker, now, deadline, None, info)

        return self.transaction(work)  # type: ignore[attr-defined]

    def complete_assignment(self, task_id: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            now = self.now()  # type: ignore[attr-defined]
            row = conn.execute("SELECT worker FROM assignments WHERE task_id = ? AND completed_at IS NULL",
                               (task_id,)).fetchone()
            if row is None:
                return False
            conn.execute("UPDATE assignments SET completed_at = ? WHERE task_id = ?", (now, task_id))
            self._append(conn, "assignment.done", task_id, row[0], {}, now)  # type: ignore[attr-defined]
            return True

        return self.transaction(work)  # type: ignore[attr-defined]

    def list_assignments(self, worker: str | None = None, open_only: bool = True) -> list[AssignmentRecord]:
        sql, params = f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments WHERE 1=1", []
        if open_only:
            sql += " AND completed_at IS NULL"
        if worker is not None:
            sql += " AND worker = ?"
            params.append(worker)
        rows = self.read(lambda conn: conn.execute(sql + " ORDER BY assigned_at", params).fetchall())  # type: ignore[attr-defined]
        return [_assignment(row) for row in rows]
