"""SQLite storage for refs: named pointers moved by compare-and-set (the head of a history).

A mixin of SQLiteBackend: it relies on ``transaction``, ``read``, ``now``, ``_append`` and
``_live_lease_or_lost``. Its table is created on first use in each process, so a database made by
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


def _prefix_bounds(prefix: str) -> tuple[str, str | None]:
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

    def list_refs(self, prefix: str, limit: int | None = None) -> list[RefRecord]:
        low, high = _prefix_bounds(prefix)
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

    def delete_ref(self, name: str, *, holder: str, kind: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            current = self._ref_row(conn, name)
            if current is None:
                return False
            conn.execute("DELETE FROM refs WHERE name = ?", (name,))
            self._append(conn, kind, name, holder, {"previous": current.value}, self.now())  # type: ignore[attr-defined]
            return True

        return self._refs_transaction(work)

    def delete_refs(self, prefix: str, *, holder: str, kind: str) -> int:
        low, high = _prefix_bounds(prefix)
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
