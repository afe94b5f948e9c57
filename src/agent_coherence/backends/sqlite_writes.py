"""SQLite storage for versions and confirmed writes: intents, commits, aborts, recovery, adoption.

A mixin of SQLiteBackend: it relies on ``transaction``, ``read``, ``now``, ``_append``,
``_append_text``, ``_grant_lease`` and ``_live_lease_or_lost``. A confirmed write is two transactions:

- ``begin_write``: one look-up that returns the key's lease row, version and whether an intent
  is pending, then the lease (checked, or taken for this write: one ``UPDATE``, or an insert for a
  key without a row), then the intent's insert;
- ``commit_write``: the lease check (for a write's own lease, the check and its release are one
  conditional ``UPDATE``), the intent's delete, the version's upsert and the journal entry.
"""

from __future__ import annotations

import os

from ..errors import LeaseHeld, LeaseLost, VersionConflict
from ..journal import encode_data
from .records import IntentPending, IntentRecord, VersionRecord, WriteRequest
from .sqlite_tx import Deferred

TYPE_CHECKING = False  # typing is not imported at run time: the backend is on the hook path
if TYPE_CHECKING:
    import sqlite3
    from typing import Any, Callable, TypeVar

    T = TypeVar("T")

_VERSION_COLUMNS = "key, version, sha256, size, writer, fence, updated_at"
_INTENT_COLUMNS = ("key, intent_id, holder, fence, base_version, base_sha256, new_version, new_sha256, size, "
                   "temp_path, host, pid, pid_start, created_at, auto_lease")
# What begin_write needs to know about a key, in one statement: whether an intent is pending, the
# current version and hash, and the key's lease row (``LEASE_ROW``'s columns; a NULL fence: no
# row, the column is NOT NULL).
_WRITE_BASE = (
    "SELECT (SELECT 1 FROM intents WHERE key = q.k), a.version, a.sha256, "
    "l.holder, l.fence, l.acquired_at, l.expires_at "
    "FROM (SELECT ? AS k) AS q LEFT JOIN artifacts AS a ON a.key = q.k LEFT JOIN leases AS l ON l.key = q.k"
)
_INSERT_INTENT = (
    f"INSERT INTO intents({_INTENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_RELEASE_OWN_LEASE = (  # the write's own lease, if it is still live: released in the same statement
    "UPDATE leases SET holder = NULL, expires_at = ? WHERE key = ? AND holder = ? AND fence = ? AND expires_at > ?"
)
_DROP_INTENT = "DELETE FROM intents WHERE key = ? AND intent_id = ?"
_UPDATE_VERSION = "UPDATE artifacts SET version=?, sha256=?, size=?, writer=?, fence=?, updated_at=? WHERE key = ?"
_STORE_VERSION = (
    f"INSERT INTO artifacts({_VERSION_COLUMNS}) VALUES (?,?,?,?,?,?,?) "
    "ON CONFLICT(key) DO UPDATE SET version=excluded.version, sha256=excluded.sha256, "
    "size=excluded.size, writer=excluded.writer, fence=excluded.fence, updated_at=excluded.updated_at"
)


def write_entry_data(version: int, sha256: str | None, size: int, fence: int) -> str:
    """The data text of a ``write`` (or ``delete``) entry: exactly ``encode_data`` of
    ``{"version", "sha256", "size", "fence"}``, spelled directly for the values a commit has (ints
    and a hex digest or None); anything else goes to ``encode_data`` (a test holds the two to the
    same text)."""
    if type(version) is int and type(size) is int and type(fence) is int and \
            (sha256 is None or (type(sha256) is str and sha256.isascii() and sha256.isalnum())):
        sha_text = "null" if sha256 is None else '"' + sha256 + '"'
        return f'{{"fence":{fence},"sha256":{sha_text},"size":{size},"version":{version}}}'
    return encode_data({"version": version, "sha256": sha256, "size": size, "fence": fence})


class WriteOps:
    """Versions and writes (see the Backend protocol for the contract)."""

    if TYPE_CHECKING:
        def transaction(self, work: Callable[[sqlite3.Connection], Any], *, durable: bool = False) -> Any: ...
        def read(self, work: Callable[[sqlite3.Connection], T]) -> T: ...
        def now(self) -> float: ...
        def _append(self, conn: sqlite3.Connection, kind: str, key: str | None, holder: str | None,
                    data: dict[str, Any], ts: float | None = None) -> tuple[int, float, str, str]: ...
        def _grant_lease(self, conn: sqlite3.Connection, key: str, holder: str, ttl: float, now: float,
                         journal: bool, row: tuple | None) -> tuple[int, float, float, bool]: ...
        @staticmethod
        def _append_text(run: Callable[..., sqlite3.Cursor], kind: str, key: str | None, holder: str | None,
                         data_text: str, ts: float) -> tuple[int, float, str, str]: ...
        def _live_lease_or_lost(self, conn: sqlite3.Connection, key: str, holder: str, fence: int,
                                now: float) -> tuple: ...
        def _statements(self, conn: sqlite3.Connection) -> Callable[..., sqlite3.Cursor]: ...

    @staticmethod
    def _version_row(conn: sqlite3.Connection, key: str) -> VersionRecord | None:
        row = conn.execute(f"SELECT {_VERSION_COLUMNS} FROM artifacts WHERE key = ?", (key,)).fetchone()
        return VersionRecord(*row) if row else None

    def get_version(self, key: str) -> VersionRecord | None:
        return self.read(lambda conn: self._version_row(conn, key))

    def list_versions(self, limit: int = 100) -> list[VersionRecord]:
        rows = self.read(lambda conn: conn.execute(
            f"SELECT {_VERSION_COLUMNS} FROM artifacts ORDER BY updated_at DESC LIMIT ?", (limit,)).fetchall())
        return [VersionRecord(*row) for row in rows]

    @staticmethod
    def _intent_row(conn: sqlite3.Connection, key: str) -> IntentRecord | None:
        row = conn.execute(f"SELECT {_INTENT_COLUMNS} FROM intents WHERE key = ?", (key,)).fetchone()
        return IntentRecord(*row[:-1], bool(row[-1])) if row else None

    def begin_write(self, request: WriteRequest) -> IntentRecord:
        def work(conn: sqlite3.Connection) -> IntentRecord | Deferred:
            now = self.now()
            run = self._statements(conn)
            key, holder = request.key, request.holder
            pending, version, sha, lease_holder, lease_fence, acquired, expires = run(_WRITE_BASE, (key,)).fetchone()
            if request.fence is not None:
                if lease_holder != holder or lease_fence != request.fence or expires is None or expires <= now:
                    self._live_lease_or_lost(conn, key, holder, request.fence, now)  # raises LeaseLost
                fence, auto = request.fence, False
            else:
                row = None if lease_fence is None else (lease_holder, lease_fence, acquired, expires)
                try:
                    fence, _, _, auto = self._grant_lease(conn, key, holder, request.ttl, now, False, row)
                except LeaseHeld as held:
                    self._append(conn, "conflict.lease", key, holder, {"held_by": held.holder}, now)
                    return Deferred(held)
            if pending is not None:
                waiting = self._intent_row(conn, key)
                assert waiting is not None  # this transaction has just seen it
                raise IntentPending(waiting)
            actual = version or 0
            if request.expect_version is not None and request.expect_version != actual:
                conflict = VersionConflict(
                    f"{key!r} is at version {actual}, not the expected {request.expect_version}",
                    key=key, expected=request.expect_version, actual=actual,
                )
                if auto:  # give the lease back: the write will not happen
                    conn.execute("UPDATE leases SET holder = NULL WHERE key = ?", (key,))
                self._append(conn, "conflict.version", key, holder,
                             {"expected": request.expect_version, "actual": actual}, now)
                return Deferred(conflict)
            values = (key, os.urandom(8).hex(), holder, fence, actual, sha, actual + 1, request.new_sha256,
                      request.size, request.temp_path, request.host, request.pid, request.pid_start, now, auto)
            run(_INSERT_INTENT, values)
            return IntentRecord(*values)

        return self.transaction(work)

    def _store_version(
        self, conn: sqlite3.Connection, key: str, version: int, sha: str | None, size: int,
        writer: str, fence: int, now: float,
    ) -> VersionRecord:
        values = (key, version, sha, size, writer, fence, now)
        self._statements(conn)(_STORE_VERSION, values)
        return VersionRecord(*values)

    @staticmethod
    def _drop_intent(conn: sqlite3.Connection, intent: IntentRecord, now: float) -> bool:
        cursor = conn.execute(_DROP_INTENT, (intent.key, intent.intent_id))
        if cursor.rowcount and intent.auto_lease:
            conn.execute(
                "UPDATE leases SET holder = NULL, expires_at = ? WHERE key = ? AND holder = ? AND fence = ?",
                (now, intent.key, intent.holder, intent.fence),
            )
        return bool(cursor.rowcount)

    @staticmethod
    def _resolved_by_recovery(intent: IntentRecord, before: str) -> LeaseLost:
        return LeaseLost(
            f"write to {intent.key!r} was resolved by recovery before it {before}",
            key=intent.key, holder=intent.holder, fence=intent.fence, current_holder=None, current_fence=None,
        )

    def sync_intent(self, intent: IntentRecord) -> None:
        def work(conn: sqlite3.Connection) -> None:
            if not conn.execute("UPDATE intents SET synced = 1 WHERE key = ? AND intent_id = ?",
                                (intent.key, intent.intent_id)).rowcount:
                raise self._resolved_by_recovery(intent, "could proceed")

        self.transaction(work, durable=True)

    def commit_write(self, intent: IntentRecord, durable: bool = True) -> VersionRecord:
        def work(conn: sqlite3.Connection) -> VersionRecord:
            now = self.now()
            run = self._statements(conn)
            key, holder, fence = intent.key, intent.holder, intent.fence
            # Any refusal below raises, which rolls the whole transaction back (the release too).
            if not intent.auto_lease:
                self._live_lease_or_lost(conn, key, holder, fence, now)
            elif not run(_RELEASE_OWN_LEASE, (now, key, holder, fence, now)).rowcount:
                self._live_lease_or_lost(conn, key, holder, fence, now)  # not live: raises LeaseLost
                raise AssertionError("a lease that could not be released is live")  # pragma: no cover
            if not run(_DROP_INTENT, (key, intent.intent_id)).rowcount:
                raise self._resolved_by_recovery(intent, "committed")
            version, sha, size = intent.new_version, intent.new_sha256, intent.size
            values = (key, version, sha, size, holder, fence, now)
            # A key with a version keeps its row (none is ever deleted): an update, without the
            # upsert's insert attempt; the upsert if it has none (or, against that rule, lost it).
            if version == 1 or not run(_UPDATE_VERSION, (version, sha, size, holder, fence, now, key)).rowcount:
                run(_STORE_VERSION, values)
            self._append_text(run, "write" if sha is not None else "delete", key, holder,
                              write_entry_data(version, sha, size, fence), now)
            return VersionRecord(*values)

        return self.transaction(work, durable=durable)

    def abort_write(self, intent: IntentRecord, step: str, detail: str, *, journal: bool = True) -> None:
        def work(conn: sqlite3.Connection) -> None:
            now = self.now()
            if self._drop_intent(conn, intent, now) and journal:
                self._append(conn, "write.failed", intent.key, intent.holder,
                             {"step": step, "detail": detail, "version": intent.base_version,
                              "fence": intent.fence, "intent": intent.intent_id}, now)

        self.transaction(work)

    def get_intent(self, key: str) -> IntentRecord | None:
        return self.read(lambda conn: self._intent_row(conn, key))

    def list_intents(self) -> list[IntentRecord]:
        keys = self.read(lambda conn: [r[0] for r in conn.execute("SELECT key FROM intents")])
        intents = (self.get_intent(key) for key in keys)
        return [intent for intent in intents if intent is not None]

    def resolve_intent(self, intent: IntentRecord, roll_forward: bool) -> VersionRecord | None:
        def work(conn: sqlite3.Connection) -> VersionRecord | None:
            now = self.now()
            current = self._version_row(conn, intent.key)
            if not self._drop_intent(conn, intent, now):
                return current  # someone else resolved it first
            data = {"intent": intent.intent_id, "holder_pid": intent.pid, "version": intent.base_version}
            if roll_forward:
                current = self._store_version(conn, intent.key, intent.new_version, intent.new_sha256,
                                              intent.size, intent.holder, intent.fence, now)
                data.update(version=intent.new_version, sha256=intent.new_sha256, size=intent.size)
            self._append(conn, "recover.forward" if roll_forward else "recover.back",
                         intent.key, intent.holder, data, now)
            return current

        return self.transaction(work, durable=True)  # type: ignore[no-any-return]

    def record_version(
        self, key: str, holder: str, sha256: str | None, size: int, *,
        fence: int | None, expect_version: int | None, kind: str, refuse_pending: bool = False,
    ) -> VersionRecord:
        def work(conn: sqlite3.Connection) -> VersionRecord | Deferred:
            now = self.now()
            if fence is not None:
                self._live_lease_or_lost(conn, key, holder, fence, now)
            if refuse_pending:
                waiting = self._intent_row(conn, key)
                if waiting is not None:
                    raise IntentPending(waiting)
            current = self._version_row(conn, key)
            actual = current.version if current else 0
            if expect_version is not None and expect_version != actual:
                self._append(conn, "conflict.version", key, holder,
                             {"expected": expect_version, "actual": actual}, now)
                return Deferred(VersionConflict(
                    f"{key!r} is at version {actual}, not the expected {expect_version}",
                    key=key, expected=expect_version, actual=actual))
            record = self._store_version(conn, key, actual + 1, sha256, size, holder, fence or 0, now)
            self._append(conn, kind, key, holder,
                         {"version": actual + 1, "sha256": sha256, "size": size, "fence": fence}, now)
            return record

        return self.transaction(work, durable=True)  # type: ignore[no-any-return]
