"""Leases, versions and write intents on PostgreSQL (a mixin of PostgresBackend).

Every decision about time is made in SQL against ``ac_now()`` (the server's clock). A lease row is
locked (``FOR UPDATE``) by whatever depends on it inside a transaction — an acquire, a fence
check before a commit — so a takeover and a fenced write are ordered by the row lock: a write
whose fence check passed commits before any new holder can be granted the next fence.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..errors import LeaseHeld, LeaseLost, VersionConflict
from .postgres_tx import Tx, TxRunner
from .records import IntentPending, IntentRecord, LeaseRecord, VersionRecord, WriteRequest, lost_reason
from .sqlite_tx import Deferred

WRITES_SCHEMA = """
CREATE TABLE IF NOT EXISTS @leases (
    key text PRIMARY KEY, holder text, fence bigint NOT NULL,
    acquired_at double precision NOT NULL, expires_at double precision NOT NULL);
CREATE INDEX IF NOT EXISTS leases_by_holder ON @leases(holder) WHERE holder IS NOT NULL;
CREATE TABLE IF NOT EXISTS @artifacts (
    key text PRIMARY KEY, version bigint NOT NULL, sha256 text, size bigint NOT NULL,
    writer text NOT NULL, fence bigint NOT NULL, updated_at double precision NOT NULL);
CREATE INDEX IF NOT EXISTS artifacts_by_update ON @artifacts(updated_at);
CREATE TABLE IF NOT EXISTS @intents (
    key text PRIMARY KEY, intent_id text NOT NULL, holder text NOT NULL, fence bigint NOT NULL,
    base_version bigint NOT NULL, base_sha256 text, new_version bigint NOT NULL, new_sha256 text,
    size bigint NOT NULL, temp_path text NOT NULL, host text NOT NULL, pid bigint NOT NULL,
    pid_start text NOT NULL, created_at double precision NOT NULL, auto_lease boolean NOT NULL,
    synced boolean NOT NULL DEFAULT false);
"""

# Take the lease or re-enter it, in one statement: ``old`` locks the row and shows it as it was.
_TAKE = """
WITH old AS (SELECT holder, fence, acquired_at, expires_at FROM @leases WHERE key = %(key)s FOR UPDATE),
up AS (
    UPDATE @leases l SET
        fence = CASE WHEN old.holder = %(holder)s AND old.expires_at > @ac_now() THEN old.fence
                     ELSE old.fence + 1 END,
        acquired_at = CASE WHEN old.holder = %(holder)s AND old.expires_at > @ac_now() THEN old.acquired_at
                           ELSE @ac_now() END,
        expires_at = CASE WHEN old.holder = %(holder)s AND old.expires_at > @ac_now()
                          THEN greatest(old.expires_at, @ac_now() + %(ttl)s) ELSE @ac_now() + %(ttl)s END,
        holder = %(holder)s
    FROM old
    WHERE l.key = %(key)s AND (old.holder IS NULL OR old.expires_at <= @ac_now() OR old.holder = %(holder)s)
    RETURNING l.fence, l.acquired_at, l.expires_at)
SELECT old.holder, old.fence, old.acquired_at, old.expires_at, up.fence, up.acquired_at, up.expires_at
FROM old LEFT JOIN up ON true
"""
# A new lease row starts above the highest fence of a row retention removed (``fence_floor``).
# This runs as a statement of its own after _TAKE found no row: when _TAKE waited for a retention
# step that deleted the row, this statement's snapshot already sees the raised floor.
_INSERT_LEASE = (
    "WITH n AS MATERIALIZED (SELECT @ac_now() AS t) INSERT INTO @leases(key, holder, fence, acquired_at, "
    "expires_at) SELECT %(key)s, %(holder)s, coalesce((SELECT value::bigint FROM @meta WHERE name = 'fence_floor'), 0) "
    "+ 1, t, t + %(ttl)s FROM n "
    "ON CONFLICT (key) DO NOTHING RETURNING fence, acquired_at, expires_at"
)
_VERSION_COLUMNS = "key, version, sha256, size, writer, fence, updated_at"
_INTENT_COLUMNS = ("key, intent_id, holder, fence, base_version, base_sha256, new_version, new_sha256, size, "
                   "temp_path, host, pid, pid_start, created_at, auto_lease")


class Contended(Exception):
    """Another transaction created the same row at the same moment: run the transaction again."""


def _intent(row: tuple[Any, ...]) -> IntentRecord:
    return IntentRecord(*row[:-1], bool(row[-1]))


def _lost(key: str, holder: str, fence: int, row: tuple[Any, ...] | None, why: str | None = None) -> LeaseLost:
    """LeaseLost from the lease row as it is: (holder, fence, live)."""
    current_holder = row[0] if row is not None and row[2] else None
    current_fence = row[1] if row is not None else 0
    if why is None:
        why = lost_reason(row, fence, current_holder, current_fence)
    return LeaseLost(
        f"lease on {key!r} (holder {holder!r}, fence {fence}) is lost: {why}",
        key=key, holder=holder, fence=fence, current_holder=current_holder, current_fence=current_fence,
    )


def _resolved(intent: IntentRecord, when: str) -> LeaseLost:
    return LeaseLost(
        f"write to {intent.key!r} was resolved by recovery {when}",
        key=intent.key, holder=intent.holder, fence=intent.fence, current_holder=None, current_fence=None,
    )


class WriteOps(TxRunner):
    """Lease and write operations (see the Backend protocol for the contract)."""

    # -- leases -----------------------------------------------------------------------------

    @staticmethod
    def take_lease(tx: Tx, key: str, holder: str, ttl: float, journal: bool) -> tuple[LeaseRecord, bool]:
        """Acquire or re-enter inside ``tx``; returns (lease, newly acquired). Raises LeaseHeld."""
        params = {"key": key, "holder": holder, "ttl": ttl}
        row = tx.one(_TAKE, params)
        if row is None:
            inserted = tx.one(_INSERT_LEASE, params)
            if inserted is None:
                raise Contended(key)
            if journal:
                tx.append("lease.acquire", key, holder, {"fence": inserted[0], "ttl": ttl})
            return LeaseRecord(key, holder, *inserted, ttl), True
        old_holder, old_fence, old_acquired, old_expires, fence, acquired, expires = row
        if fence is None:
            raise LeaseHeld(
                f"{key!r} is leased by {old_holder!r} until {time.ctime(old_expires)}",
                key=key, holder=old_holder, acquired_at=old_acquired, expires_at=old_expires,
            )
        newly = fence != old_fence
        if newly and journal:
            data: dict[str, Any] = {"fence": fence, "ttl": ttl}
            if old_holder is not None:
                data["expired_holder"] = old_holder
            tx.append("lease.acquire", key, holder, data)
        return LeaseRecord(key, holder, fence, acquired, expires, ttl), newly

    def acquire_lease(self, key: str, holder: str, ttl: float, *, record_conflict: bool = True,
                      waited: float = 0.0) -> LeaseRecord:
        def work(tx: Tx) -> LeaseRecord | Deferred:
            try:
                return self.take_lease(tx, key, holder, ttl, journal=True)[0]
            except LeaseHeld as held:
                if not record_conflict:
                    raise
                data: dict[str, Any] = {"held_by": getattr(held, "holder")}
                if waited:
                    data["waited"] = round(waited, 3)
                tx.append("conflict.lease", key, holder, data)
                return Deferred(held)

        # A re-entry writes no journal entry: running it again is harmless.
        return self.transaction(work, idempotent=True)

    @staticmethod
    def lock_live_lease(tx: Tx, key: str, holder: str, fence: int, lock: bool = True) -> tuple[Any, ...]:
        """The lease row (holder, fence, live), locked; raises LeaseLost unless (holder, fence) is live."""
        row = tx.one("SELECT holder, fence, holder IS NOT NULL AND expires_at > @ac_now() FROM @leases "
                     "WHERE key = %s" + (" FOR UPDATE" if lock else ""), (key,))
        if row is None or row[0] != holder or row[1] != fence or not row[2]:
            raise _lost(key, holder, fence, row)
        return row

    def renew_lease(self, key: str, holder: str, fence: int, ttl: float) -> LeaseRecord:
        def work(tx: Tx) -> LeaseRecord:
            row = tx.one("UPDATE @leases SET expires_at = @ac_now() + %s WHERE key = %s AND holder = %s "
                         "AND fence = %s AND expires_at > @ac_now() RETURNING acquired_at, expires_at",
                         (ttl, key, holder, fence))
            if row is None:
                raise _lost(key, holder, fence, tx.one(
                    "SELECT holder, fence, holder IS NOT NULL AND expires_at > @ac_now() FROM @leases "
                    "WHERE key = %s", (key,)))
            return LeaseRecord(key, holder, fence, row[0], row[1], ttl)

        return self.transaction(work, idempotent=True)

    def check_fence(self, key: str, holder: str, fence: int) -> None:
        self.read(lambda tx: self.lock_live_lease(tx, key, holder, fence, lock=False))

    def release_lease(self, key: str, holder: str, fence: int) -> bool:
        # A lost release only delays the next holder until the lease expires: no flush wait.
        return self.transaction(lambda tx: self.release_lease_in(tx, key, holder, fence), durable=False,
                                idempotent=True)

    @staticmethod
    def release_lease_in(tx: Tx, key: str, holder: str, fence: int) -> bool:
        """Release the lease inside ``tx`` and journal it; False (nothing journaled) when it was
        already lost: expired and taken, or released."""
        changed = tx.run("UPDATE @leases SET holder = NULL, expires_at = @ac_now() "
                         "WHERE key = %s AND holder = %s AND fence = %s", (key, holder, fence))
        if changed:
            tx.append("lease.release", key, holder, {"fence": fence})
        return bool(changed)

    def release_holder(self, holder: str) -> list[str]:
        def work(tx: Tx) -> list[str]:
            keys = [row[0] for row in tx.all(
                "UPDATE @leases SET holder = NULL, expires_at = @ac_now() WHERE key IN "
                "(SELECT key FROM @leases WHERE holder = %s AND expires_at > @ac_now() ORDER BY key FOR UPDATE) "
                "RETURNING key", (holder,))]
            for key in sorted(keys):
                tx.append("lease.release", key, holder, {"reason": "holder released all"})
            return sorted(keys)

        return self.transaction(work, idempotent=True)

    def get_lease(self, key: str) -> LeaseRecord | None:
        row = self.read(lambda tx: tx.one(
            "SELECT key, holder, fence, acquired_at, expires_at FROM @leases WHERE key = %s "
            "AND holder IS NOT NULL AND expires_at > @ac_now()", (key,)))
        return LeaseRecord(*row) if row else None

    def list_leases(self, holder: str | None = None) -> list[LeaseRecord]:
        sql = ("SELECT key, holder, fence, acquired_at, expires_at FROM @leases WHERE holder IS NOT NULL "
               "AND expires_at > @ac_now()")
        params: list[Any] = []
        if holder is not None:
            sql += " AND holder = %s"
            params.append(holder)
        rows = self.read(lambda tx: tx.all(sql + " ORDER BY key", params))
        return [LeaseRecord(*row) for row in rows]

    # -- versions ---------------------------------------------------------------------------

    @staticmethod
    def version_row(tx: Tx, key: str) -> VersionRecord | None:
        row = tx.one(f"SELECT {_VERSION_COLUMNS} FROM @artifacts WHERE key = %s", (key,))
        return VersionRecord(*row) if row else None

    def get_version(self, key: str) -> VersionRecord | None:
        return self.read(lambda tx: self.version_row(tx, key))

    def list_versions(self, limit: int = 100) -> list[VersionRecord]:
        rows = self.read(lambda tx: tx.all(
            f"SELECT {_VERSION_COLUMNS} FROM @artifacts ORDER BY updated_at DESC LIMIT %s", (limit,)))
        return [VersionRecord(*row) for row in rows]

    @staticmethod
    def _store_version(tx: Tx, key: str, version: int, sha: str | None, size: int, writer: str,
                       fence: int) -> VersionRecord:
        row = tx.one(
            f"INSERT INTO @artifacts({_VERSION_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,@ac_now()) "
            "ON CONFLICT (key) DO UPDATE SET version = excluded.version, sha256 = excluded.sha256, "
            "size = excluded.size, writer = excluded.writer, fence = excluded.fence, "
            f"updated_at = excluded.updated_at RETURNING {_VERSION_COLUMNS}",
            (key, version, sha, size, writer, fence))
        return VersionRecord(*row)  # type: ignore[misc]

    # -- writes -----------------------------------------------------------------------------

    @staticmethod
    def intent_row(tx: Tx, key: str, intent_id: str | None = None) -> IntentRecord | None:
        sql, params = f"SELECT {_INTENT_COLUMNS} FROM @intents WHERE key = %s", [key]
        if intent_id is not None:
            sql += " AND intent_id = %s"
            params.append(intent_id)
        row = tx.one(sql, params)
        return _intent(row) if row else None

    def begin_write(self, request: WriteRequest) -> IntentRecord:
        intent_id = os.urandom(8).hex()  # chosen once: an unanswered commit is checked by it
        key, holder = request.key, request.holder

        def work(tx: Tx) -> IntentRecord | Deferred:
            if request.fence is not None:
                self.lock_live_lease(tx, key, holder, request.fence)
                fence, auto = request.fence, False
            else:
                try:
                    lease, auto = self.take_lease(tx, key, holder, request.ttl, journal=False)
                except LeaseHeld as held:
                    tx.append("conflict.lease", key, holder, {"held_by": getattr(held, "holder")})
                    return Deferred(held)
                fence = lease.fence
            pending = self.intent_row(tx, key)
            if pending is not None:
                raise IntentPending(pending)  # rolls back: the lease taken above is undone too
            current = self.version_row(tx, key)
            actual = current.version if current else 0
            if request.expect_version is not None and request.expect_version != actual:
                if auto:  # give the lease back: the write will not happen
                    tx.run("UPDATE @leases SET holder = NULL WHERE key = %s", (key,))
                tx.append("conflict.version", key, holder, {"expected": request.expect_version, "actual": actual})
                return Deferred(VersionConflict(
                    f"{key!r} is at version {actual}, not the expected {request.expect_version}",
                    key=key, expected=request.expect_version, actual=actual))
            row = tx.one(
                f"INSERT INTO @intents({_INTENT_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,@ac_now(),%s) "
                f"RETURNING {_INTENT_COLUMNS}",
                (key, intent_id, holder, fence, actual, current.sha256 if current else None, actual + 1,
                 request.new_sha256, request.size, request.temp_path, request.host, request.pid,
                 request.pid_start, auto))
            return _intent(row)  # type: ignore[arg-type]

        return self.transaction(work, check=lambda tx: self.intent_row(tx, key, intent_id))

    def _drop_intent(self, tx: Tx, intent: IntentRecord) -> bool:
        dropped = tx.run("DELETE FROM @intents WHERE key = %s AND intent_id = %s", (intent.key, intent.intent_id))
        if dropped and intent.auto_lease:
            tx.run("UPDATE @leases SET holder = NULL, expires_at = @ac_now() WHERE key = %s AND holder = %s "
                   "AND fence = %s", (intent.key, intent.holder, intent.fence))
        return bool(dropped)

    def sync_intent(self, intent: IntentRecord) -> None:
        def work(tx: Tx) -> None:
            if not tx.run("UPDATE @intents SET synced = true WHERE key = %s AND intent_id = %s",
                          (intent.key, intent.intent_id)):
                raise _resolved(intent, "before it could proceed")

        self.transaction(work, idempotent=True)

    def commit_write(self, intent: IntentRecord, durable: bool = True) -> VersionRecord:
        # ``durable`` is not relaxed here: with a shared server, a lost commit could let the same
        # version be granted twice, so every version commit waits for its flush.
        def work(tx: Tx) -> VersionRecord:
            self.lock_live_lease(tx, intent.key, intent.holder, intent.fence)
            if not self._drop_intent(tx, intent):
                raise _resolved(intent, "before it committed")
            record = self._store_version(tx, intent.key, intent.new_version, intent.new_sha256, intent.size,
                                         intent.holder, intent.fence)
            tx.append("write" if intent.new_sha256 is not None else "delete", intent.key, intent.holder,
                      {"version": intent.new_version, "sha256": intent.new_sha256, "size": intent.size,
                       "fence": intent.fence})
            return record

        return self.transaction(work)

    def abort_write(self, intent: IntentRecord, step: str, detail: str, *, journal: bool = True) -> None:
        def work(tx: Tx) -> None:
            if self._drop_intent(tx, intent) and journal:
                tx.append("write.failed", intent.key, intent.holder,
                          {"step": step, "detail": detail, "version": intent.base_version, "fence": intent.fence,
                           "intent": intent.intent_id})

        self.transaction(work)

    def get_intent(self, key: str) -> IntentRecord | None:
        return self.read(lambda tx: self.intent_row(tx, key))

    def list_intents(self) -> list[IntentRecord]:
        rows = self.read(lambda tx: tx.all(f"SELECT {_INTENT_COLUMNS} FROM @intents ORDER BY key"))
        return [_intent(row) for row in rows]

    def resolve_intent(self, intent: IntentRecord, roll_forward: bool) -> VersionRecord | None:
        def work(tx: Tx) -> VersionRecord | None:
            current = self.version_row(tx, intent.key)
            if not self._drop_intent(tx, intent):
                return current  # someone else resolved it first
            data: dict[str, Any] = {"intent": intent.intent_id, "holder_pid": intent.pid,
                                    "version": intent.base_version}
            if roll_forward:
                current = self._store_version(tx, intent.key, intent.new_version, intent.new_sha256,
                                              intent.size, intent.holder, intent.fence)
                data.update(version=intent.new_version, sha256=intent.new_sha256, size=intent.size)
            tx.append("recover.forward" if roll_forward else "recover.back", intent.key, intent.holder, data)
            return current

        # Running it again after an unanswered commit finds the intent gone and returns the version.
        return self.transaction(work, idempotent=True)

    def record_version(
        self, key: str, holder: str, sha256: str | None, size: int, *,
        fence: int | None, expect_version: int | None, kind: str, refuse_pending: bool = False,
    ) -> VersionRecord:
        def work(tx: Tx) -> VersionRecord | Deferred:
            if fence is not None:
                self.lock_live_lease(tx, key, holder, fence)
            if refuse_pending:
                # begin_write holds the lease row while it records its intent: wait for it, then look
                tx.one("SELECT 1 FROM @leases WHERE key = %s FOR UPDATE", (key,))
                pending = self.intent_row(tx, key)
                if pending is not None:
                    raise IntentPending(pending)
            current = tx.one(f"SELECT {_VERSION_COLUMNS} FROM @artifacts WHERE key = %s FOR UPDATE", (key,))
            actual = current[1] if current else 0
            if expect_version is not None and expect_version != actual:
                tx.append("conflict.version", key, holder, {"expected": expect_version, "actual": actual})
                return Deferred(VersionConflict(
                    f"{key!r} is at version {actual}, not the expected {expect_version}",
                    key=key, expected=expect_version, actual=actual))
            record = self._store_version(tx, key, actual + 1, sha256, size, holder, fence or 0)
            tx.append(kind, key, holder, {"version": actual + 1, "sha256": sha256, "size": size, "fence": fence})
            return record

        return self.transaction(work)
