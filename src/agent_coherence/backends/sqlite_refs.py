"""SQLite storage for refs: named pointers moved by compare-and-set (the head of a history).

A mixin of SQLiteBackend: it relies on ``transaction``, ``read``, ``now``, ``_statements``,
``_append`` and ``_live_lease_or_lost``. Its table is created on first use in each process, so a database made by
an earlier release gains it without a schema migration.
"""

from __future__ import annotations

from ..errors import VersionConflict
from .records import RefRecord
from .sqlite_tx import Deferred

TYPE_CHECKING = False  # typing is not imported at run time: the backend is on the hook path
if TYPE_CHECKING:
    import sqlite3
    from typing import Any, Callable, TypeVar

    T = TypeVar("T")

REFS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS refs (name TEXT PRIMARY KEY, value TEXT NOT NULL, "
    "version INTEGER NOT NULL, holder TEXT NOT NULL, fence INTEGER NOT NULL, updated_at REAL NOT NULL) "
    "WITHOUT ROWID"
)
_COLUMNS = "name, value, version, holder, fence, updated_at"

# A compare-and-set in one statement: it moves the ref only if the ref holds the expected value (for
# an expected None: does not exist yet) and, with a fence, the lease is live, so the common case
# needs no read first. When it moves nothing, the read path of ``set_ref`` finds out why and refuses
# with the matching error.
_LIVE_LEASE = "EXISTS (SELECT 1 FROM leases WHERE key = ? AND holder = ? AND fence = ? AND expires_at > ?)"
_MOVE = ("UPDATE refs SET value = ?, version = version + 1, holder = ?, fence = ?, updated_at = ? "
         "WHERE name = ? AND value = ?")
_CREATE = (f"INSERT INTO refs({_COLUMNS}) SELECT ?, ?, 1, ?, ?, ? WHERE 1")
_CREATE_TAIL = " ON CONFLICT(name) DO NOTHING RETURNING version"
_COMPARE_AND_SET = {
    (False, False): _MOVE + " RETURNING version",
    (False, True): _MOVE + " AND " + _LIVE_LEASE + " RETURNING version",
    (True, False): _CREATE + _CREATE_TAIL,
    (True, True): _CREATE + " AND " + _LIVE_LEASE + _CREATE_TAIL,
}
# The head read before a fenced put and the check of the run's lease, in one statement (one read
# transaction instead of two).
_FENCED_REF = ("SELECT l.holder, l.fence, l.expires_at, r.name, r.value, r.version, r.holder, r.fence, r.updated_at "
               "FROM (SELECT 1) LEFT JOIN leases AS l ON l.key = ? LEFT JOIN refs AS r ON r.name = ?")
_SEAL = "UPDATE refs SET version = version + 1, holder = ?, fence = 0, updated_at = ? WHERE name = ? RETURNING value, version"


def prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """[low, high) of the names that start with ``prefix`` (BINARY collation: code point order)."""
    if not prefix:
        return "", None
    last = prefix[-1]
    if ord(last) == 0x10FFFF:
        return prefix, None
    return prefix, prefix[:-1] + chr(ord(last) + 1)


class RefOps:
    """Refs (see the Backend protocol for the contract)."""

    _refs_ready = False

    def _refs_transaction(self, work: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        self._ensure_refs()
        return self.transaction(work, durable=durable)  # type: ignore[attr-defined, no-any-return]

    def _refs_read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        self._ensure_refs()
        return self.read(work)  # type: ignore[attr-defined, no-any-return]

    def _ensure_refs(self) -> None:
        if not self._refs_ready:
            self.transaction(lambda conn: conn.execute(REFS_SCHEMA))  # type: ignore[attr-defined]
            self._refs_ready = True

    @staticmethod
    def _ref_row(conn: sqlite3.Connection, name: str) -> RefRecord | None:
        row = conn.execute(f"SELECT {_COLUMNS} FROM refs WHERE name = ?", (name,)).fetchone()
        return RefRecord(*row) if row else None

    def get_ref(self, name: str) -> RefRecord | None:
        return self._refs_read(lambda conn: self._ref_row(conn, name))

    def get_fenced_ref(self, name: str, *, lease_key: str, holder: str, fence: int) -> RefRecord | None:
        def work(conn: sqlite3.Connection) -> RefRecord | None:
            now = self.now()  # type: ignore[attr-defined]
            row = self._statements(conn)(_FENCED_REF, (lease_key, name)).fetchone()  # type: ignore[attr-defined]
            if row[0] == holder and row[1] == fence and row[2] > now:
                return RefRecord(*row[3:]) if row[3] is not None else None
            self._live_lease_or_lost(conn, lease_key, holder, fence, now)  # type: ignore[attr-defined]
            return self._ref_row(conn, name)  # (the lease was live after all: read again, in two steps)

        return self._refs_read(work)

    def list_refs(self, prefix: str, limit: int | None = None) -> list[RefRecord]:
        low, high = prefix_bounds(prefix)
        sql, params = f"SELECT {_COLUMNS} FROM refs WHERE name >= ?", [low]
        if high is not None:
            sql += " AND name < ?"
            params.append(high)
        sql += " ORDER BY name"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(str(limit))
        rows = self._refs_read(lambda conn: conn.execute(sql, params).fetchall())
        return [RefRecord(*row) for row in rows]

    def set_ref(
        self, name: str, value: str, *, expect: str | None, holder: str, kind: str,
        data: dict[str, Any], force: bool = False, lease_key: str | None = None,
        fence: int | None = None, durable: bool = True,
    ) -> RefRecord:
        def work(conn: sqlite3.Connection) -> RefRecord | Deferred:
            now = self.now()  # type: ignore[attr-defined]
            if not force:
                moved = self._compare_and_set(conn, name, value, expect, holder, lease_key or name, fence, now)
                if moved is not None:
                    self._append(conn, kind, name, holder,  # type: ignore[attr-defined]
                                 {**data, "value": value, "previous": expect, "version": moved, "fence": fence}, now)
                    return RefRecord(name, value, moved, holder, fence or 0, now)
            if fence is not None:
                self._live_lease_or_lost(conn, lease_key or name, holder, fence, now)  # type: ignore[attr-defined]
            current = self._ref_row(conn, name)
            actual = current.value if current else None
            if not force and actual != expect:
                self._append(conn, "conflict.ref", name, holder,  # type: ignore[attr-defined]
                             {"expected": expect, "actual": actual, "value": value}, now)
                return Deferred(VersionConflict(
                    f"ref {name!r} points at {actual!r}, not the expected {expect!r}",
                    key=name, expected=expect, actual=actual))
            version = (current.version if current else 0) + 1
            conn.execute(
                f"INSERT INTO refs({_COLUMNS}) VALUES (?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
                "value=excluded.value, version=excluded.version, holder=excluded.holder, "
                "fence=excluded.fence, updated_at=excluded.updated_at",
                (name, value, version, holder, fence or 0, now),
            )
            self._append(conn, kind, name, holder,  # type: ignore[attr-defined]
                         {**data, "value": value, "previous": actual, "version": version, "fence": fence}, now)
            return RefRecord(name, value, version, holder, fence or 0, now)

        return self._refs_transaction(work, durable=durable)  # type: ignore[return-value]

    def _compare_and_set(self, conn: sqlite3.Connection, name: str, value: str, expect: str | None,
                         holder: str, lease_key: str, fence: int | None, now: float) -> int | None:
        """The ref's new version if the one-statement compare-and-set moved it, else None."""
        if expect is None:
            params: tuple[Any, ...] = (name, value, holder, fence or 0, now)
        else:
            params = (value, holder, fence or 0, now, name, expect)
        if fence is not None:
            params += (lease_key, holder, fence, now)
        run = self._statements(conn)  # type: ignore[attr-defined]
        row = run(_COMPARE_AND_SET[expect is None, fence is not None], params).fetchone()
        return row[0] if row else None  # type: ignore[no-any-return]

    def seal_ref_and_release(self, name: str, *, holder: str, kind: str, data: dict[str, Any],
                             lease_key: str, fence: int) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            now = self.now()  # type: ignore[attr-defined]
            run = self._statements(conn)  # type: ignore[attr-defined]
            sealed = run(_SEAL, (holder, now, name)).fetchone()
            if sealed is not None:
                self._append(conn, kind, name, holder,  # type: ignore[attr-defined]
                             {**data, "value": sealed[0], "previous": sealed[0], "version": sealed[1],
                              "fence": None}, now)
            return self._release_lease_in(conn, lease_key, holder, fence, now)  # type: ignore[attr-defined, no-any-return]

        return self._refs_transaction(work, durable=True)

    def delete_ref(self, name: str, *, holder: str, kind: str, expect: str | None = None) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            current = self._ref_row(conn, name)
            if current is None or (expect is not None and current.value != expect):
                return False
            conn.execute("DELETE FROM refs WHERE name = ?", (name,))
            self._append(conn, kind, name, holder, {"previous": current.value}, self.now())  # type: ignore[attr-defined]
            return True

        return self._refs_transaction(work)

    def delete_refs(self, prefix: str, *, holder: str, kind: str) -> int:
        low, high = prefix_bounds(prefix)
        where, params = "name >= ?", [low]
        if high is not None:
            where += " AND name < ?"
            params.append(high)

        def work(conn: sqlite3.Connection) -> int:
            now = self.now()  # type: ignore[attr-defined]
            rows = conn.execute(f"SELECT name, value FROM refs WHERE {where}", params).fetchall()
            for ref_name, ref_value in rows:
                self._append(conn, kind, ref_name, holder, {"previous": ref_value}, now)  # type: ignore[attr-defined]
            conn.execute(f"DELETE FROM refs WHERE {where}", params)
            return len(rows)

        return self._refs_transaction(work)
