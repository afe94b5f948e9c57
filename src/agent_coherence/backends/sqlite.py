"""The embedded backend: one SQLite database file in WAL mode, shared by every process on a host.

Every operation is one ``BEGIN IMMEDIATE`` transaction. SQLite's own busy handler is unfair under
contention (a writer can starve for seconds), so the connection uses ``busy_timeout=0`` and this
module retries with short jittered sleeps up to a deadline, then raises BackendUnavailable.

Durability: commits that confirm a write run with ``synchronous=FULL`` (they survive power loss);
everything else (leases, intents, conflicts) runs with ``NORMAL``, which survives any process crash
but may lose the last transactions on power loss, when every holder on the host dies too.
One connection per process: a connection is never used across ``fork``.
"""

from __future__ import annotations

import json
import os
import time
from _thread import RLock  # what threading.RLock is, without importing threading (hook start-up)
from _weakrefset import WeakSet  # what weakref.WeakSet is, already loaded at start-up

try:
    # The C module behind the ``sqlite3`` package, the same connect/Connection/errors. The package
    # adds only datetime adapters (unused here) and imports datetime, which costs the Claude Code
    # hook's start-up a few milliseconds.
    import _sqlite3 as sqlite3
except ImportError:
    import sqlite3  # type: ignore[no-redef]

from ..errors import BackendUnavailable, LeaseHeld, LeaseLost, VersionConflict
from ..journal import GENESIS, ChainWalk, chain_hash, encode_data, unreadable_entry, verify_entries
from ..logs import WARNING, log
from .sqlite_channels import ChannelOps
from .sqlite_liveness import LivenessOps
from .sqlite_retention import INDEXED_KINDS, INDEXED_KINDS_SQL, JOURNAL_BOUNDS, RetentionOps
from .sqlite_schema import SchemaOps
from .sqlite_refs import RefOps
from .sqlite_tx import Deferred as _Deferred, database_error, is_busy as _is_busy
from .records import IntentPending, IntentRecord, JournalRecord, LeaseRecord, VersionRecord, WriteRequest

TYPE_CHECKING = False  # typing is not imported at run time: this module is on the hook path
if TYPE_CHECKING:
    from typing import Any, Callable, Iterator, TypeVar

    T = TypeVar("T")

JOURNAL_PAGE = 2000  # journal entries fetched per read while iterating


def _jitter(limit: float) -> float:
    """A uniform random delay in [0, limit) (os.urandom: the random module costs the hook start-up)."""
    return limit * int.from_bytes(os.urandom(2), "big") / 65536


_BACKENDS: "WeakSet[SQLiteBackend]" = WeakSet()


class _Connection(sqlite3.Connection):
    """A connection this process can find again before a fork (the base class takes no weak
    references, and a connection can outlive its backend when garbage still refers to it)."""


_CONNECTIONS: "WeakSet[_Connection]" = WeakSet()


def _close_before_fork() -> None:
    """No SQLite connection may be open across ``fork``: the child inherits SQLite's per-process
    record of which files it has open and locked, but not the POSIX locks themselves, so even a
    connection the child opens afresh can believe it is alone and delete the WAL under the
    processes still writing to it (silently losing their commits). Every connection of this
    process is closed here, before the fork; each backend reopens its own on next use."""
    for backend in list(_BACKENDS):
        if backend._conn is not None and backend._lock.acquire(timeout=5):
            try:
                backend._close_connection()
            finally:
                backend._lock.release()
    for conn in list(_CONNECTIONS):  # left open by a backend that is gone but not yet collected
        try:
            conn.close()
        except Exception:
            pass


def _after_fork_in_child() -> None:
    """Backstop for a connection that could not be closed before the fork (another thread held
    it): the child never uses it and never closes it (closing could delete the WAL, see above), so
    it is leaked on purpose."""
    for backend in list(_BACKENDS):
        if backend._conn is not None:
            import ctypes

            ctypes.pythonapi.Py_IncRef(ctypes.py_object(backend._conn))
            backend._conn = None
        backend._lock = RLock()  # another thread may have held it at the fork


os.register_at_fork(before=_close_before_fork, after_in_child=_after_fork_in_child)


class SQLiteBackend(SchemaOps, RefOps, LivenessOps, ChannelOps, RetentionOps):
    """Backend on one SQLite file. Safe for many processes and threads on one host."""

    name = "sqlite"

    def __init__(self, path: str, *, busy_deadline: float = 15.0) -> None:
        self.path = path
        self.busy_deadline = busy_deadline
        self._lock = RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._maintenance_countdown = 1 << 62  # no retention step before the schema exists
        _BACKENDS.add(self)
        try:
            self._ensure_schema()
        except BaseException:
            self.close()
            raise
        self._start_maintenance_countdown()

    # -- connection and transactions --------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0,
                                   factory=_Connection)
            _CONNECTIONS.add(conn)
            conn.execute("PRAGMA busy_timeout=0")
            self._retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _retry_busy(self, operation: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.busy_deadline
        attempt = 0
        while True:
            try:
                return operation()
            except sqlite3.DatabaseError as error:
                if not (isinstance(error, sqlite3.OperationalError) and _is_busy(error)):
                    raise database_error(self.path, self.name, error) from error
                if time.monotonic() > deadline:
                    log("backends.sqlite", WARNING, "SQLite database %s stayed busy for %.0fs", self.path,
                        self.busy_deadline)
                    raise BackendUnavailable(
                        f"SQLite database {self.path} stayed busy for {self.busy_deadline:.0f}s",
                        backend=self.name, detail=str(error), reason="busy", errno=None,
                    ) from error
            attempt += 1
            # Short jittered sleeps: fair between processes, unlike SQLite's busy handler.
            time.sleep(_jitter(min(0.002, 0.0002 * (1 + attempt // 8))))

    def transaction(self, work: Callable[[sqlite3.Connection], T | _Deferred], *, durable: bool = False) -> T:
        """Run ``work`` in one BEGIN IMMEDIATE transaction, retried while the database is busy.

        ``durable=True`` commits with synchronous=FULL (survives power loss). If ``work`` returns
        a ``_Deferred`` error, the transaction commits (keeping its journal entry) and the error is
        raised afterwards.
        """

        def attempt() -> T | _Deferred:
            with self._lock:
                conn = self._connection()
                if durable:
                    conn.execute("PRAGMA synchronous=FULL")
                if conn.in_transaction:  # left open by an interruption (KeyboardInterrupt) mid-way
                    conn.execute("ROLLBACK")
                try:
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                        result = work(conn)
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                    return result
                finally:
                    if durable:
                        conn.execute("PRAGMA synchronous=NORMAL")

        # A bounded retention step every so many transactions, before this one rather than after:
        # an interrupt during the step then comes before the caller's change, never after it.
        self.maintenance_due()
        result = self._retry_busy(attempt)
        if isinstance(result, _Deferred):
            raise result.error
        return result

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def attempt() -> T:
            with self._lock:
                return work(self._connection())

        return self._retry_busy(attempt)

    def close(self) -> None:
        with self._lock:
            try:
                if self._conn is not None and self._pid == os.getpid():
                    self._chain_before_close()
            finally:
                self._close_connection()

    def _close_connection(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def now(self) -> float:
        return time.time()

    # -- journal ----------------------------------------------------------------------------

    def _append(
        self, conn: sqlite3.Connection, kind: str, key: str | None, holder: str | None,
        data: dict[str, Any], ts: float | None = None,
    ) -> tuple[int, float, str, str]:
        """Append one entry inside the caller's transaction; returns (seq, ts, prev_hash, hash)."""
        head = conn.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
        ts = self.now() if ts is None else ts
        data_json = encode_data(data)
        digest = chain_hash(prev, seq, ts, kind, key, holder, data_json)
        conn.execute(
            "INSERT INTO journal(seq, ts, kind, key, holder, data, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
            (seq, ts, kind, key, holder, data_json, prev, digest),
        )
        return seq, ts, prev, digest

    def journal_append(
        self, kind: str, key: str | None, holder: str | None, data: dict[str, Any]
    ) -> JournalRecord:
        seq, ts, prev, digest = self.transaction(lambda conn: self._append(conn, kind, key, holder, data))
        data_text = encode_data(data)
        return JournalRecord(seq, ts, kind, key, holder, json.loads(data_text), prev, digest, data_text)

    def journal_entries(
        self, key: str | None = None, after: int = 0, limit: int | None = None
    ) -> Iterator[JournalRecord]:
        """Read in pages of JOURNAL_PAGE entries, so a long journal is never held in memory at once.
        Raises JournalCorrupt for an entry whose data is not JSON."""
        sql = "SELECT seq, ts, kind, key, holder, data, prev_hash, hash FROM journal WHERE seq > ?"
        if key is not None:
            sql += " AND key = ?"
        sql += " ORDER BY seq LIMIT ?"
        remaining = limit
        while remaining is None or remaining > 0:
            page = JOURNAL_PAGE if remaining is None else min(JOURNAL_PAGE, remaining)
            params = (after, key, page) if key is not None else (after, page)
            rows = self.read(lambda conn: conn.execute(sql, params).fetchall())
            for seq, ts, kind, k, holder, data, prev, digest in rows:
                try:
                    parsed = json.loads(data)
                except (TypeError, ValueError) as error:
                    raise unreadable_entry(seq, f"its data is not JSON ({error})") from error
                yield JournalRecord(seq, ts, kind, k, holder, parsed, prev, digest, data)
            if len(rows) < page:
                return
            after, fetched = rows[-1][0], len(rows)
            del rows  # one page in memory at a time, not two while the next is fetched
            if remaining is not None:
                remaining -= fetched

    def journal_verify(self, on_entry: Callable[[int], None] | None = None, anchor: str | None = None) -> ChainWalk:
        """The one chain, streamed from its first kept entry (see ``journal.ChainWalk``)."""
        walk = ChainWalk(anchor)
        verify_entries(self.journal_entries(), on_entry, walk)
        return walk

    def journal_count(self, kind: str | None = None, key: str | None = None) -> int:
        """Entries (of ``kind``, about ``key``). Without either, from the bounds of the sequence,
        which has no gaps here (a gap is for ``verify`` to find), so no count scans the journal;
        the kinds in INDEXED_KINDS are counted from their index."""
        if kind is None and key is None:
            first, last = self.read(lambda conn: conn.execute(JOURNAL_BOUNDS).fetchone())
            return 0 if first is None else last - first + 1
        sql, params = "SELECT count(*) FROM journal WHERE 1=1", []
        if kind is not None:
            if key is not None:
                sql += " AND kind || '' = ?"  # prefer the key index
            else:
                sql += " AND kind = ?" + (f" AND {INDEXED_KINDS_SQL}" if kind in INDEXED_KINDS else "")
            params.append(kind)
        if key is not None:
            sql += " AND key = ?"
            params.append(key)
        return self.read(lambda conn: conn.execute(sql, params).fetchone()[0])

    def journal_tail(self, count: int) -> list[JournalRecord]:
        """The newest ``count`` entries, oldest first (by sequence number: compaction leaves the
        first entries missing, so a count is not a position)."""
        if count <= 0:
            return []
        start = self.read(lambda conn: conn.execute(
            "SELECT seq FROM journal ORDER BY seq DESC LIMIT 1 OFFSET ?", (count - 1,)).fetchone())
        if start is None:
            return list(self.journal_entries())
        return list(self.journal_entries(after=start[0] - 1))[-count:]

    # -- leases -----------------------------------------------------------------------------

    @staticmethod
    def _lease_row(conn: sqlite3.Connection, key: str) -> tuple | None:
        return conn.execute(
            "SELECT holder, fence, acquired_at, expires_at FROM leases WHERE key = ?", (key,)
        ).fetchone()

    def _take_lease(
        self, conn: sqlite3.Connection, key: str, holder: str, ttl: float, now: float, journal: bool
    ) -> tuple[LeaseRecord, bool]:
        """Acquire or re-enter; returns (lease, newly_acquired). Raises LeaseHeld."""
        row = self._lease_row(conn, key)
        if row is not None and row[0] is not None and row[3] > now:
            if row[0] != holder:
                raise LeaseHeld(
                    f"{key!r} is leased by {row[0]!r} until {time.ctime(row[3])}",
                    key=key, holder=row[0], acquired_at=row[2], expires_at=row[3],
                )
            expires = max(row[3], now + ttl)
            conn.execute("UPDATE leases SET expires_at = ? WHERE key = ?", (expires, key))
            return LeaseRecord(key, holder, row[1], row[2], expires, ttl), False
        fence = (row[1] if row is not None else self.fence_floor(conn)) + 1  # above removed rows' fences
        conn.execute(
            "INSERT INTO leases(key, holder, fence, acquired_at, expires_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET holder=excluded.holder, fence=excluded.fence, "
            "acquired_at=excluded.acquired_at, expires_at=excluded.expires_at",
            (key, holder, fence, now, now + ttl),
        )
        if journal:
            data: dict[str, Any] = {"fence": fence, "ttl": ttl}
            if row is not None and row[0] is not None:
                data["expired_holder"] = row[0]
            self._append(conn, "lease.acquire", key, holder, data, now)
        return LeaseRecord(key, holder, fence, now, now + ttl, ttl), True

    def acquire_lease(self, key: str, holder: str, ttl: float, *, record_conflict: bool = True,
                      waited: float = 0.0) -> LeaseRecord:
        def work(conn: sqlite3.Connection) -> LeaseRecord | _Deferred:
            now = self.now()
            try:
                return self._take_lease(conn, key, holder, ttl, now, journal=True)[0]
            except LeaseHeld as held:
                if not record_conflict:
                    raise
                data: dict[str, Any] = {"held_by": held.holder}
                if waited:
                    data["waited"] = round(waited, 3)
                self._append(conn, "conflict.lease", key, holder, data, now)
                return _Deferred(held)

        return self.transaction(work)

    def _live_lease_or_lost(self, conn: sqlite3.Connection, key: str, holder: str, fence: int, now: float) -> tuple:
        row = self._lease_row(conn, key)
        if row is None or row[0] != holder or row[1] != fence or row[3] <= now:
            current_holder = row[0] if row is not None and row[3] > now else None
            current_fence = row[1] if row is not None else 0
            why = "expired" if current_holder is None else f"now held by {current_holder!r} (fence {current_fence})"
            raise LeaseLost(
                f"lease on {key!r} (holder {holder!r}, fence {fence}) is lost: {why}",
                key=key, holder=holder, fence=fence,
                current_holder=current_holder, current_fence=current_fence,
            )
        return row

    def renew_lease(self, key: str, holder: str, fence: int, ttl: float) -> LeaseRecord:
        def work(conn: sqlite3.Connection) -> LeaseRecord:
            now = self.now()
            row = self._live_lease_or_lost(conn, key, holder, fence, now)
            conn.execute("UPDATE leases SET expires_at = ? WHERE key = ?", (now + ttl, key))
            return LeaseRecord(key, holder, fence, row[2], now + ttl, ttl)

        return self.transaction(work)

    def check_fence(self, key: str, holder: str, fence: int) -> None:
        self.read(lambda conn: self._live_lease_or_lost(conn, key, holder, fence, self.now()))

    def release_lease(self, key: str, holder: str, fence: int) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            now = self.now()
            cursor = conn.execute(
                "UPDATE leases SET holder = NULL, expires_at = ? WHERE key = ? AND holder = ? AND fence = ?",
                (now, key, holder, fence),
            )
            if cursor.rowcount:
                self._append(conn, "lease.release", key, holder, {"fence": fence}, now)
            return bool(cursor.rowcount)

        return self.transaction(work)

    def release_holder(self, holder: str) -> list[str]:
        def work(conn: sqlite3.Connection) -> list[str]:
            now = self.now()
            keys = [r[0] for r in conn.execute(
                "SELECT key FROM leases WHERE holder = ? AND expires_at > ?", (holder, now))]
            for key in keys:
                conn.execute("UPDATE leases SET holder = NULL, expires_at = ? WHERE key = ?", (now, key))
                self._append(conn, "lease.release", key, holder, {"reason": "holder released all"}, now)
            return keys

        return self.transaction(work)

    def get_lease(self, key: str) -> LeaseRecord | None:
        row = self.read(lambda conn: self._lease_row(conn, key))
        if row is None or row[0] is None or row[3] <= self.now():
            return None
        return LeaseRecord(key, row[0], row[1], row[2], row[3])

    def list_leases(self, holder: str | None = None) -> list[LeaseRecord]:
        sql = "SELECT key, holder, fence, acquired_at, expires_at FROM leases WHERE holder IS NOT NULL AND expires_at > ?"
        params: list[Any] = [self.now()]
        if holder is not None:
            sql += " AND holder = ?"
            params.append(holder)
        rows = self.read(lambda conn: conn.execute(sql + " ORDER BY key", params).fetchall())
        return [LeaseRecord(*row) for row in rows]

    # -- versions and writes ----------------------------------------------------------------

    @staticmethod
    def _version_row(conn: sqlite3.Connection, key: str) -> VersionRecord | None:
        row = conn.execute(
            "SELECT key, version, sha256, size, writer, fence, updated_at FROM artifacts WHERE key = ?", (key,)
        ).fetchone()
        return VersionRecord(*row) if row else None

    def get_version(self, key: str) -> VersionRecord | None:
        return self.read(lambda conn: self._version_row(conn, key))

    def list_versions(self, limit: int = 100) -> list[VersionRecord]:
        rows = self.read(lambda conn: conn.execute(
            "SELECT key, version, sha256, size, writer, fence, updated_at FROM artifacts "
            "ORDER BY updated_at DESC LIMIT ?", (limit,)).fetchall())
        return [VersionRecord(*row) for row in rows]

    @staticmethod
    def _intent_row(conn: sqlite3.Connection, key: str) -> IntentRecord | None:
        row = conn.execute(
            "SELECT key, intent_id, holder, fence, base_version, base_sha256, new_version, new_sha256, size, "
            "temp_path, host, pid, pid_start, created_at, auto_lease FROM intents WHERE key = ?", (key,)
        ).fetchone()
        return IntentRecord(*row[:-1], bool(row[-1])) if row else None

    def begin_write(self, request: WriteRequest) -> IntentRecord:
        def work(conn: sqlite3.Connection) -> IntentRecord | _Deferred:
            now = self.now()
            key, holder = request.key, request.holder
            if request.fence is not None:
                self._live_lease_or_lost(conn, key, holder, request.fence, now)
                fence, auto = request.fence, False
            else:
                try:
                    lease, auto = self._take_lease(conn, key, holder, request.ttl, now, journal=False)
                except LeaseHeld as held:
                    self._append(conn, "conflict.lease", key, holder, {"held_by": held.holder}, now)
                    return _Deferred(held)
                fence = lease.fence
            pending = self._intent_row(conn, key)
            if pending is not None:
                raise IntentPending(pending)
            current = self._version_row(conn, key)
            actual = current.version if current else 0
            if request.expect_version is not None and request.expect_version != actual:
                conflict = VersionConflict(
                    f"{key!r} is at version {actual}, not the expected {request.expect_version}",
                    key=key, expected=request.expect_version, actual=actual,
                )
                if auto:  # give the lease back: the write will not happen
                    conn.execute("UPDATE leases SET holder = NULL WHERE key = ?", (key,))
                self._append(conn, "conflict.version", key, holder,
                             {"expected": request.expect_version, "actual": actual}, now)
                return _Deferred(conflict)
            intent = IntentRecord(
                key, os.urandom(8).hex(), holder, fence, actual, current.sha256 if current else None,
                actual + 1, request.new_sha256,
                request.size, request.temp_path, request.host, request.pid, request.pid_start, now, auto,
            )
            conn.execute(
                "INSERT INTO intents(key, intent_id, holder, fence, base_version, base_sha256, new_version, "
                "new_sha256, size, temp_path, host, pid, pid_start, created_at, auto_lease) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (intent.key, intent.intent_id, holder, fence, actual, intent.base_sha256, actual + 1,
                 intent.new_sha256,
                 intent.size, intent.temp_path, intent.host, intent.pid, intent.pid_start, now, int(auto)),
            )
            return intent

        return self.transaction(work)

    def _store_version(
        self, conn: sqlite3.Connection, key: str, version: int, sha: str | None, size: int,
        writer: str, fence: int, now: float,
    ) -> VersionRecord:
        conn.execute(
            "INSERT INTO artifacts(key, version, sha256, size, writer, fence, updated_at) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET version=excluded.version, sha256=excluded.sha256, "
            "size=excluded.size, writer=excluded.writer, fence=excluded.fence, updated_at=excluded.updated_at",
            (key, version, sha, size, writer, fence, now),
        )
        return VersionRecord(key, version, sha, size, writer, fence, now)

    def _drop_intent(self, conn: sqlite3.Connection, intent: IntentRecord, now: float) -> bool:
        cursor = conn.execute(
            "DELETE FROM intents WHERE key = ? AND intent_id = ?", (intent.key, intent.intent_id))
        if cursor.rowcount and intent.auto_lease:
            conn.execute(
                "UPDATE leases SET holder = NULL, expires_at = ? WHERE key = ? AND holder = ? AND fence = ?",
                (now, intent.key, intent.holder, intent.fence),
            )
        return bool(cursor.rowcount)

    def sync_intent(self, intent: IntentRecord) -> None:
        def work(conn: sqlite3.Connection) -> None:
            if not conn.execute("UPDATE intents SET synced = 1 WHERE key = ? AND intent_id = ?",
                                (intent.key, intent.intent_id)).rowcount:
                raise LeaseLost(
                    f"write to {intent.key!r} was resolved by recovery before it could proceed",
                    key=intent.key, holder=intent.holder, fence=intent.fence,
                    current_holder=None, current_fence=None,
                )

        self.transaction(work, durable=True)

    def commit_write(self, intent: IntentRecord, durable: bool = True) -> VersionRecord:
        def work(conn: sqlite3.Connection) -> VersionRecord:
            now = self.now()
            self._live_lease_or_lost(conn, intent.key, intent.holder, intent.fence, now)
            if not self._drop_intent(conn, intent, now):
                raise LeaseLost(
                    f"write to {intent.key!r} was resolved by recovery before it committed",
                    key=intent.key, holder=intent.holder, fence=intent.fence,
                    current_holder=None, current_fence=None,
                )
            record = self._store_version(conn, intent.key, intent.new_version, intent.new_sha256,
                                         intent.size, intent.holder, intent.fence, now)
            self._append(conn, "write" if intent.new_sha256 is not None else "delete", intent.key,
                         intent.holder, {"version": intent.new_version, "sha256": intent.new_sha256,
                                         "size": intent.size, "fence": intent.fence}, now)
            return record

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

        return self.transaction(work, durable=True)

    def record_version(
        self, key: str, holder: str, sha256: str | None, size: int, *,
        fence: int | None, expect_version: int | None, kind: str,
    ) -> VersionRecord:
        def work(conn: sqlite3.Connection) -> VersionRecord | _Deferred:
            now = self.now()
            if fence is not None:
                self._live_lease_or_lost(conn, key, holder, fence, now)
            current = self._version_row(conn, key)
            actual = current.version if current else 0
            if expect_version is not None and expect_version != actual:
                self._append(conn, "conflict.version", key, holder,
                             {"expected": expect_version, "actual": actual}, now)
                return _Deferred(VersionConflict(
                    f"{key!r} is at version {actual}, not the expected {expect_version}",
                    key=key, expected=expect_version, actual=actual))
            record = self._store_version(conn, key, actual + 1, sha256, size, holder, fence or 0, now)
            self._append(conn, kind, key, holder,
                         {"version": actual + 1, "sha256": sha256, "size": size, "fence": fence}, now)
            return record

        return self.transaction(work, durable=True)
