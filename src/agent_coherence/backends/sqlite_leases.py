"""The SQLite backend's leases: take, renew, check and release them (a mixin of SQLiteBackend; it
relies on ``transaction``, ``read``, ``now``, ``_append`` and ``fence_floor``).

Each step is one ``transaction`` of the backend (BEGIN IMMEDIATE ... COMMIT, ``synchronous=NORMAL``):
an acquire reads the lease row, writes it and appends its journal entry (6 statements with BEGIN
and COMMIT, one more, the fence floor, for a key without a row); a release updates the row and
appends its entry (5 statements, or 3 when the lease was already lost and nothing is journaled).
Fusing statements (an ``UPDATE ... RETURNING``) was measured and saves nothing in SQLite here.

Fences: a key's fence only grows. An acquire that takes a free or expired lease sets the row's
fence to the old one + 1, or, for a key without a row, to ``fence_floor`` + 1 (the highest fence of
a row the retention policy removed), in the same transaction as the ``lease.acquire`` entry that
records it. A process killed at any point (``kill -9``) leaves that transaction committed or
absent, so a fence is never handed out twice across process crashes. A power loss (or an OS
crash) can roll back the newest NORMAL transactions, and with them the grant of a fence that was
not yet flushed; every holder on the host died with it, and a write under a fence flushes
(or stamps) before it can be confirmed (see docs/concepts.md, "Durability modes").
"""

from __future__ import annotations

import time

from ..errors import LeaseHeld, LeaseLost
from .records import Lease, lost_reason
from .sqlite_tx import Deferred

TYPE_CHECKING = False  # typing is not imported at run time: the backend is on the hook path
if TYPE_CHECKING:
    import sqlite3
    from typing import Any, Callable, TypeVar

    T = TypeVar("T")

LEASE_ROW = "SELECT holder, fence, acquired_at, expires_at FROM leases WHERE key = ?"
_TAKE = ("INSERT INTO leases(key, holder, fence, acquired_at, expires_at, own_write) VALUES (?,?,?,?,?,?) "
         "ON CONFLICT(key) DO UPDATE SET holder=excluded.holder, fence=excluded.fence, "
         "acquired_at=excluded.acquired_at, expires_at=excluded.expires_at, own_write=excluded.own_write")
# A holder's live leases. ``leases_by_holder`` leaves out the rows of a write's own lease
# (``own_write``: taken by begin_write for that write alone, released by its commit), so a write
# does not rewrite that index twice. Such a row is live only while its write's intent is pending
# (both are made in one transaction, and whatever drops the intent releases the lease in that one),
# so those rows are found through the intents: a table of the writes in flight, small.
_HOLDER_LEASES = (
    "SELECT {columns} FROM leases AS l WHERE l.holder = :holder AND l.own_write = 0 AND l.expires_at > :now "
    "UNION ALL SELECT {columns} FROM intents AS i JOIN leases AS l ON l.key = i.key "
    "WHERE i.holder = :holder AND l.holder = :holder AND l.own_write = 1 AND l.expires_at > :now"
)
_RETAKE = ("UPDATE leases SET holder = ?, fence = ?, acquired_at = ?, expires_at = ?, own_write = ? "
           "WHERE key = ?")  # a row that exists
_EXTEND = "UPDATE leases SET expires_at = ? WHERE key = ?"
_RELEASE = "UPDATE leases SET holder = NULL, expires_at = ? WHERE key = ? AND holder = ? AND fence = ?"


class LeaseOps:
    """Lease storage (see the module docstring)."""

    if TYPE_CHECKING:
        def transaction(self, work: Callable[[sqlite3.Connection], Any], *, durable: bool = False) -> Any: ...
        def read(self, work: Callable[[sqlite3.Connection], T]) -> T: ...
        def now(self) -> float: ...
        def _statements(self, conn: sqlite3.Connection) -> Callable[..., sqlite3.Cursor]: ...
        def _append(self, conn: sqlite3.Connection, kind: str, key: str | None, holder: str | None,
                    data: dict[str, Any], ts: float | None = None) -> tuple[int, float, str, str]: ...
        @staticmethod
        def fence_floor(conn: sqlite3.Connection) -> int: ...

    @staticmethod
    def _lease_row(conn: sqlite3.Connection, key: str) -> tuple | None:
        return conn.execute(LEASE_ROW, (key,)).fetchone()  # type: ignore[no-any-return]

    def _take_lease(
        self, conn: sqlite3.Connection, key: str, holder: str, ttl: float, now: float, journal: bool
    ) -> tuple[Lease, bool]:
        """Acquire or re-enter; returns (lease, newly_acquired). Raises LeaseHeld."""
        row = self._statements(conn)(LEASE_ROW, (key,)).fetchone()
        fence, acquired_at, expires, newly = self._grant_lease(conn, key, holder, ttl, now, journal, row)
        return Lease(key, holder, fence, acquired_at, expires, ttl), newly

    def _grant_lease(
        self, conn: sqlite3.Connection, key: str, holder: str, ttl: float, now: float, journal: bool,
        row: tuple | None,
    ) -> tuple[int, float, float, bool]:
        """``_take_lease`` given the key's lease row (``LEASE_ROW``'s columns, read in this
        transaction; None: no row), for a caller that read it with other columns. Returns the
        lease's (fence, acquired_at, expires_at, newly_acquired) without making the Lease. A lease
        taken without its journal entry is a write's own (``begin_write``): its row is marked
        ``own_write`` (see ``_HOLDER_LEASES``)."""
        run = self._statements(conn)
        expires = now + ttl
        if row is None:
            fence = self.fence_floor(conn) + 1  # above the fences of removed rows
        else:
            old_holder, fence, acquired_at, old_expires = row
            if old_holder is not None and old_expires > now:
                if old_holder != holder:
                    raise LeaseHeld(
                        f"{key!r} is leased by {old_holder!r} until {time.ctime(old_expires)}",
                        key=key, holder=old_holder, acquired_at=acquired_at, expires_at=old_expires,
                    )
                if old_expires > expires:  # re-entry never shortens the lease
                    expires = old_expires
                run(_EXTEND, (expires, key))
                return fence, acquired_at, expires, False
            fence += 1
        if row is None:
            run(_TAKE, (key, holder, fence, now, expires, 0 if journal else 1))
        else:  # the row was read in this transaction: an update, without the upsert's insert attempt
            run(_RETAKE, (holder, fence, now, expires, 0 if journal else 1, key))
        if journal:
            if row is not None and row[0] is not None:
                self._append(conn, "lease.acquire", key, holder,
                             {"fence": fence, "ttl": ttl, "expired_holder": row[0]}, now)
            else:
                self._append(conn, "lease.acquire", key, holder, {"fence": fence, "ttl": ttl}, now)
        return fence, now, expires, True

    def acquire_lease(self, key: str, holder: str, ttl: float, *, record_conflict: bool = True,
                      waited: float = 0.0) -> Lease:
        def work(conn: sqlite3.Connection) -> Lease | Deferred:
            now = self.now()
            try:
                return self._take_lease(conn, key, holder, ttl, now, True)[0]
            except LeaseHeld as held:
                if not record_conflict:
                    raise
                data: dict[str, Any] = {"held_by": held.holder}
                if waited:
                    data["waited"] = round(waited, 3)
                self._append(conn, "conflict.lease", key, holder, data, now)
                return Deferred(held)

        return self.transaction(work)  # type: ignore[no-any-return]

    def _live_lease_or_lost(self, conn: sqlite3.Connection, key: str, holder: str, fence: int, now: float) -> tuple:
        row = self._statements(conn)(LEASE_ROW, (key,)).fetchone()
        if row is None or row[0] != holder or row[1] != fence or row[3] <= now:
            current_holder = row[0] if row is not None and row[3] > now else None
            current_fence = row[1] if row is not None else 0
            why = lost_reason(row, fence, current_holder, current_fence)
            raise LeaseLost(
                f"lease on {key!r} (holder {holder!r}, fence {fence}) is lost: {why}",
                key=key, holder=holder, fence=fence,
                current_holder=current_holder, current_fence=current_fence,
            )
        return row  # type: ignore[no-any-return]

    def renew_lease(self, key: str, holder: str, fence: int, ttl: float) -> Lease:
        def work(conn: sqlite3.Connection) -> Lease:
            now = self.now()
            row = self._live_lease_or_lost(conn, key, holder, fence, now)
            conn.execute(_EXTEND, (now + ttl, key))
            return Lease(key, holder, fence, row[2], now + ttl, ttl)

        return self.transaction(work)  # type: ignore[no-any-return]

    def check_fence(self, key: str, holder: str, fence: int) -> None:
        self.read(lambda conn: self._live_lease_or_lost(conn, key, holder, fence, self.now()))

    def release_lease(self, key: str, holder: str, fence: int) -> bool:
        return self.transaction(  # type: ignore[no-any-return]
            lambda conn: self._release_lease_in(conn, key, holder, fence, self.now()))

    def _release_lease_in(self, conn: sqlite3.Connection, key: str, holder: str, fence: int, now: float) -> bool:
        """Release the lease inside the caller's transaction and journal it; False (nothing
        journaled) when it was already lost: expired and taken, or released."""
        if not self._statements(conn)(_RELEASE, (now, key, holder, fence)).rowcount:
            return False
        self._append(conn, "lease.release", key, holder, {"fence": fence}, now)
        return True

    def release_holder(self, holder: str) -> list[str]:
        def work(conn: sqlite3.Connection) -> list[str]:
            now = self.now()
            keys = [r[0] for r in conn.execute(_HOLDER_LEASES.format(columns="l.key"),
                                               {"holder": holder, "now": now})]
            for key in keys:
                conn.execute("UPDATE leases SET holder = NULL, expires_at = ? WHERE key = ?", (now, key))
                self._append(conn, "lease.release", key, holder, {"reason": "holder released all"}, now)
            return keys

        return self.transaction(work)  # type: ignore[no-any-return]

    def get_lease(self, key: str) -> Lease | None:
        row = self.read(lambda conn: self._lease_row(conn, key))
        if row is None or row[0] is None or row[3] <= self.now():
            return None
        return Lease(key, row[0], row[1], row[2], row[3])

    def list_leases(self, holder: str | None = None) -> list[Lease]:
        columns = "l.key, l.holder, l.fence, l.acquired_at, l.expires_at"
        now = self.now()
        if holder is None:
            sql = f"SELECT {columns} FROM leases AS l WHERE l.holder IS NOT NULL AND l.expires_at > :now"
        else:
            sql = f"SELECT * FROM ({_HOLDER_LEASES.format(columns=columns)})"
        rows = self.read(lambda conn: conn.execute(sql + " ORDER BY 1", {"holder": holder, "now": now}).fetchall())
        return [Lease(*row) for row in rows]
