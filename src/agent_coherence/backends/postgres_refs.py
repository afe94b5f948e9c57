"""Refs on PostgreSQL (a mixin of PostgresBackend): named pointers moved by compare-and-set.

Same contract as the embedded backend (``sqlite_refs.py``). A set locks the ref's row (``SELECT
... FOR UPDATE``; a ref that does not exist yet is claimed by ``INSERT ... ON CONFLICT DO
NOTHING``), so two setters of one ref on any hosts are serialised and exactly one of two
compare-and-sets from the same value wins. With a fence, the lease row is locked first, in the
same transaction, so the lease cannot change hands between the check and the move. Names are
``COLLATE "C"``: prefixes and order are by code point, as in SQLite.
"""

from __future__ import annotations

from typing import Any

from ..errors import VersionConflict
from .postgres_tx import Tx, TxRunner
from .postgres_writes import WriteOps
from .records import RefRecord
from .sqlite_refs import prefix_bounds
from .sqlite_tx import Deferred

REFS_SCHEMA = """
CREATE TABLE IF NOT EXISTS @refs (
    name text COLLATE "C" PRIMARY KEY, value text NOT NULL, version bigint NOT NULL, holder text NOT NULL,
    fence bigint NOT NULL, updated_at double precision NOT NULL);
"""
_COLUMNS = "name, value, version, holder, fence, updated_at"


def _prefix_where(prefix: str) -> tuple[str, list[Any]]:
    low, high = prefix_bounds(prefix)
    if high is None:
        return "name >= %s", [low]
    return "name >= %s AND name < %s", [low, high]


class RefOps(TxRunner):
    """Ref operations (see the Backend protocol for the contract)."""

    @staticmethod
    def _ref_row(tx: Tx, name: str, lock: bool = False) -> RefRecord | None:
        row = tx.one(f"SELECT {_COLUMNS} FROM @refs WHERE name = %s" + (" FOR UPDATE" if lock else ""), (name,))
        return RefRecord(*row) if row else None

    def get_ref(self, name: str) -> RefRecord | None:
        return self.read(lambda tx: self._ref_row(tx, name))

    def get_fenced_ref(self, name: str, *, lease_key: str, holder: str, fence: int) -> RefRecord | None:
        def work(tx: Tx) -> RefRecord | None:
            WriteOps.lock_live_lease(tx, lease_key, holder, fence, lock=False)
            return self._ref_row(tx, name)

        return self.read(work)

    def list_refs(self, prefix: str, limit: int | None = None) -> list[RefRecord]:
        where, params = _prefix_where(prefix)
        sql = f"SELECT {_COLUMNS} FROM @refs WHERE {where} ORDER BY name"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        return [RefRecord(*row) for row in self.read(lambda tx: tx.all(sql, params))]

    def set_ref(
        self, name: str, value: str, *, expect: str | None, holder: str, kind: str,
        data: dict[str, Any], force: bool = False, lease_key: str | None = None,
        fence: int | None = None, durable: bool = True,
    ) -> RefRecord:
        def work(tx: Tx) -> RefRecord | Deferred:
            if fence is not None:
                WriteOps.lock_live_lease(tx, lease_key or name, holder, fence)
            current = self._ref_row(tx, name, lock=True)
            if current is None and (expect is None or force):
                created = tx.one(
                    f"INSERT INTO @refs({_COLUMNS}) VALUES (%s, %s, 1, %s, %s, @ac_now()) "
                    f"ON CONFLICT (name) DO NOTHING RETURNING {_COLUMNS}", (name, value, holder, fence or 0))
                if created is not None:
                    tx.append(kind, name, holder,
                              {**data, "value": value, "previous": None, "version": 1, "fence": fence})
                    return RefRecord(*created)
                current = self._ref_row(tx, name, lock=True)  # created meanwhile by another setter
            actual = current.value if current else None
            if not force and actual != expect:
                tx.append("conflict.ref", name, holder, {"expected": expect, "actual": actual, "value": value})
                return Deferred(VersionConflict(
                    f"ref {name!r} points at {actual!r}, not the expected {expect!r}",
                    key=name, expected=expect, actual=actual))
            assert current is not None  # a missing ref was created above
            row = tx.one(
                f"UPDATE @refs SET value = %s, version = version + 1, holder = %s, fence = %s, updated_at = @ac_now() "
                f"WHERE name = %s RETURNING {_COLUMNS}", (value, holder, fence or 0, name))
            moved = RefRecord(*row)  # type: ignore[misc]
            tx.append(kind, name, holder,
                      {**data, "value": value, "previous": actual, "version": moved.version, "fence": fence})
            return moved

        # Every outcome is journaled, so an unanswered COMMIT is decided by its journal row.
        return self.transaction(work, durable=durable)

    def seal_ref_and_release(self, name: str, *, holder: str, kind: str, data: dict[str, Any],
                             lease_key: str, fence: int) -> bool:
        def work(tx: Tx) -> bool:
            sealed = tx.one("UPDATE @refs SET version = version + 1, holder = %s, fence = 0, updated_at = @ac_now() "
                            "WHERE name = %s RETURNING value, version", (holder, name))
            if sealed is not None:
                tx.append(kind, name, holder, {**data, "value": sealed[0], "previous": sealed[0],
                                               "version": sealed[1], "fence": None})
            return self.release_lease_in(tx, lease_key, holder, fence)  # type: ignore[attr-defined, no-any-return]

        # Running it again after an unanswered COMMIT only re-sets the ref once more.
        return self.transaction(work, idempotent=True, durable=True)

    def delete_ref(self, name: str, *, holder: str, kind: str, expect: str | None = None) -> bool:
        def work(tx: Tx) -> bool:
            if expect is None:
                row = tx.one("DELETE FROM @refs WHERE name = %s RETURNING value", (name,))
            else:
                row = tx.one("DELETE FROM @refs WHERE name = %s AND value = %s RETURNING value", (name, expect))
            if row is None:
                return False
            tx.append(kind, name, holder, {"previous": row[0]})
            return True

        return self.transaction(work, idempotent=True)

    def delete_refs(self, prefix: str, *, holder: str, kind: str) -> int:
        where, params = _prefix_where(prefix)

        def work(tx: Tx) -> int:
            rows = tx.all(f"DELETE FROM @refs WHERE {where} RETURNING name, value", params)
            for ref_name, ref_value in sorted(rows):
                tx.append(kind, ref_name, holder, {"previous": ref_value})
            return len(rows)

        return self.transaction(work, idempotent=True)
