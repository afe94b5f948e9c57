"""What liveness watches, on PostgreSQL: holders' views, worker sessions, assignments (a mixin of
PostgresBackend). Times are the server's clock (``ac_now()``)."""

from __future__ import annotations

import json
from typing import Any

from .postgres_retention import take_retention_lock_shared
from .postgres_tx import Tx, TxRunner
from .records import AssignmentRecord, WorkerRecord

LIVENESS_SCHEMA = """
CREATE TABLE IF NOT EXISTS @views (
    holder text NOT NULL, key text NOT NULL, version bigint NOT NULL, sha256 text,
    seen_at double precision NOT NULL, PRIMARY KEY (holder, key));
CREATE TABLE IF NOT EXISTS @workers (
    worker text PRIMARY KEY, started_at double precision NOT NULL, last_seen double precision NOT NULL,
    ended_at double precision, work_done bigint NOT NULL, info text NOT NULL);
CREATE TABLE IF NOT EXISTS @assignments (
    task_id text PRIMARY KEY, worker text NOT NULL, assigned_at double precision NOT NULL,
    deadline double precision, completed_at double precision, info text NOT NULL);
CREATE INDEX IF NOT EXISTS assignments_open ON @assignments(worker) WHERE completed_at IS NULL;
"""

_WORKER_COLUMNS = "worker, started_at, last_seen, ended_at, work_done, info"
_ASSIGNMENT_COLUMNS = "task_id, worker, assigned_at, deadline, completed_at, info"
# Mark a worker seen now and add to its work count (a session starts if there is none).
TOUCH_WORKER = (
    f"INSERT INTO @workers AS w({_WORKER_COLUMNS}) VALUES (%s, @ac_now(), @ac_now(), NULL, %s, '{{}}') "
    "ON CONFLICT (worker) DO UPDATE SET last_seen = excluded.last_seen, "
    "work_done = w.work_done + excluded.work_done"
)


def _worker(row: tuple[Any, ...]) -> WorkerRecord:
    return WorkerRecord(*row[:-1], json.loads(row[-1]))


def _assignment(row: tuple[Any, ...]) -> AssignmentRecord:
    return AssignmentRecord(*row[:-1], json.loads(row[-1]))


class LivenessOps(TxRunner):
    """Views, worker sessions and assignments (see the Backend protocol for the contract)."""

    schema: str

    # -- views ------------------------------------------------------------------------------

    def put_view(self, holder: str, key: str, version: int, sha256: str | None) -> None:
        self.transaction(lambda tx: tx.run(
            "INSERT INTO @views(holder, key, version, sha256, seen_at) VALUES (%s,%s,%s,%s,@ac_now()) "
            "ON CONFLICT (holder, key) DO UPDATE SET version = excluded.version, sha256 = excluded.sha256, "
            "seen_at = excluded.seen_at", (holder, key, version, sha256)), idempotent=True)

    def get_view(self, holder: str, key: str) -> tuple[int, str | None] | None:
        row = self.read(lambda tx: tx.one(
            "SELECT version, sha256 FROM @views WHERE holder = %s AND key = %s", (holder, key)))
        return (row[0], row[1]) if row else None

    def drop_views(self, holder: str) -> int:
        return self.transaction(lambda tx: tx.run("DELETE FROM @views WHERE holder = %s", (holder,)),
                                idempotent=True)

    # -- workers ----------------------------------------------------------------------------

    def worker_start(self, worker: str, info: dict[str, Any]) -> WorkerRecord:
        def work(tx: Tx) -> WorkerRecord:
            row = tx.one(
                f"INSERT INTO @workers({_WORKER_COLUMNS}) VALUES (%s, @ac_now(), @ac_now(), NULL, 0, %s) "
                "ON CONFLICT (worker) DO UPDATE SET started_at = excluded.started_at, "
                "last_seen = excluded.last_seen, ended_at = NULL, work_done = 0, info = excluded.info "
                f"RETURNING {_WORKER_COLUMNS}", (worker, json.dumps(info, default=str)))
            tx.append("worker.start", None, worker, info)
            return _worker(row)  # type: ignore[arg-type]

        return self.transaction(work, idempotent=True)

    def worker_beat(self, worker: str, work: int = 0) -> WorkerRecord:
        def update(tx: Tx) -> WorkerRecord:
            row = tx.one(TOUCH_WORKER + f" RETURNING {_WORKER_COLUMNS}", (worker, work))
            return _worker(row)  # type: ignore[arg-type]

        # After an unanswered commit the beat runs again: the work count may then be counted
        # twice (it is a progress signal, not a ledger); the beat itself is never lost.
        return self.transaction(update, idempotent=True)

    def worker_end(self, worker: str) -> WorkerRecord | None:
        def work(tx: Tx) -> WorkerRecord | None:
            row = tx.one(f"UPDATE @workers SET ended_at = @ac_now(), last_seen = @ac_now() WHERE worker = %s "
                         f"RETURNING {_WORKER_COLUMNS}", (worker,))
            if row is None:
                return None
            record = _worker(row)
            tx.append("worker.end", None, worker, {"work_done": record.work_done})
            return record

        return self.transaction(work, idempotent=True)

    def list_workers(self, include_ended: bool = False) -> list[WorkerRecord]:
        where = "" if include_ended else " WHERE ended_at IS NULL"
        rows = self.read(lambda tx: tx.all(f"SELECT {_WORKER_COLUMNS} FROM @workers{where} ORDER BY worker"))
        return [_worker(row) for row in rows]

    # -- assignments ------------------------------------------------------------------------

    def assign(self, task_id: str, worker: str, deadline: float | None, info: dict[str, Any]) -> AssignmentRecord:
        def work(tx: Tx) -> AssignmentRecord:
            # Before the row exists, so a retention step can't remove the worker meanwhile.
            take_retention_lock_shared(tx, self.schema)
            row = tx.one(
                f"INSERT INTO @assignments({_ASSIGNMENT_COLUMNS}) VALUES (%s,%s,@ac_now(),%s,NULL,%s) "
                "ON CONFLICT (task_id) DO UPDATE SET worker = excluded.worker, assigned_at = excluded.assigned_at, "
                "deadline = excluded.deadline, completed_at = NULL, info = excluded.info "
                f"RETURNING {_ASSIGNMENT_COLUMNS}", (task_id, worker, deadline, json.dumps(info, default=str)))
            tx.append("assignment.open", task_id, worker, {"deadline": deadline, **info})
            return _assignment(row)  # type: ignore[arg-type]

        return self.transaction(work, idempotent=True)

    def complete_assignment(self, task_id: str) -> bool:
        def work(tx: Tx) -> bool:
            row = tx.one("UPDATE @assignments SET completed_at = @ac_now() WHERE task_id = %s "
                         "AND completed_at IS NULL RETURNING worker", (task_id,))
            if row is None:
                return False
            tx.append("assignment.done", task_id, row[0], {})
            return True

        return self.transaction(work)

    def list_assignments(self, worker: str | None = None, open_only: bool = True) -> list[AssignmentRecord]:
        sql, params = f"SELECT {_ASSIGNMENT_COLUMNS} FROM @assignments WHERE true", []
        if open_only:
            sql += " AND completed_at IS NULL"
        if worker is not None:
            sql += " AND worker = %s"
            params.append(worker)
        rows = self.read(lambda tx: tx.all(sql + " ORDER BY assigned_at", params))
        return [_assignment(row) for row in rows]
