"""The transaction object the PostgreSQL backend's modules share, and the base of its mixins.

A ``Tx`` runs statements on one connection inside one transaction and queues the transaction's
journal entries; ``flush_journal`` writes them on one chain (see ``postgres_journal.py``) as the
transaction's last statements, so the chain head is always the last row lock taken.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ..journal import GENESIS, chain_hash, encode_data
from .records import JournalRecord
from .sqlite_tx import Deferred

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

JOURNAL_PARTITIONS = 64


class TxRunner:
    """What the mixins (leases and writes, journal, channels, liveness) need from the backend."""

    name = "postgresql"
    journal_chains = JOURNAL_PARTITIONS

    def sql(self, text: str) -> str:
        raise NotImplementedError

    def transaction(self, work: Callable[[Tx], T | Deferred], *, idempotent: bool = False,
                    check: Callable[[Tx], T | None] | None = None, durable: bool = True) -> T:
        raise NotImplementedError

    def read(self, work: Callable[[Tx], T]) -> T:
        raise NotImplementedError

    def snapshot(self, work: Callable[[Tx], T]) -> T:
        raise NotImplementedError

    def now(self) -> float:
        raise NotImplementedError


class Tx:
    """One transaction on one connection: statements, plus the journal entries it will append."""

    genesis = GENESIS

    def __init__(self, backend: TxRunner, conn: psycopg.Connection[Any], flush: bool = True) -> None:
        self.backend = backend
        self.conn = conn
        self.flush = flush
        self.cursor = conn.cursor()
        self.pending: list[tuple[str, str | None, str | None, str]] = []
        self.records: list[JournalRecord] = []

    def run(self, sql: str, params: Any = None) -> int:
        self.cursor.execute(self.backend.sql(sql), params)
        return self.cursor.rowcount

    def one(self, sql: str, params: Any = None) -> tuple[Any, ...] | None:
        self.cursor.execute(self.backend.sql(sql), params)
        return self.cursor.fetchone()

    def all(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        self.cursor.execute(self.backend.sql(sql), params)
        return self.cursor.fetchall()

    def append(self, kind: str, key: str | None, holder: str | None, data: dict[str, Any]) -> None:
        """Queue an entry: it is written with the others just before COMMIT."""
        self.pending.append((kind, key, holder, encode_data(data)))

    def flush_journal(self) -> None:
        """Write the queued entries on one chain picked at random (the transaction's last lock)."""
        if not self.pending:
            return
        part = int.from_bytes(os.urandom(2), "big") % self.backend.journal_chains
        self.write_on_chain(part, self.pending)
        self.pending = []

    def write_on_chain(self, part: int, entries: list[tuple[str, str | None, str | None, str]],
                       removed: int = 0) -> list[int]:
        """Append ``entries`` (kind, key, holder, data text) to chain ``part`` now, locking its head
        row; ``removed`` adds to the head's count of entries compaction took from the chain.
        Returns their sequence numbers."""
        count = len(entries)
        # The commit's flush level rides on this statement (no round trip of its own): a
        # transaction that writes anything journals it, and set_config(..., true) lasts until COMMIT.
        row = self.one(
            "UPDATE @journal_heads SET pseq = pseq + %(n)s, removed = removed + %(removed)s WHERE part = %(part)s "
            "RETURNING pseq - %(n)s, hash, @ac_now(), "
            "(SELECT array_agg(nextval('@journal_seq')) FROM generate_series(1, %(n)s)), "
            "set_config('synchronous_commit', %(sync)s, true)",
            {"n": count, "part": part, "sync": "on" if self.flush else "off", "removed": removed})
        assert row is not None, "journal_heads row missing"
        pseq, prev, ts, seqs = row[0], row[1], float(row[2]), sorted(row[3])
        columns: list[list[Any]] = [[] for _ in range(10)]
        for (kind, key, holder, data_json), seq in zip(entries, seqs):
            pseq += 1
            digest = chain_hash(prev, seq, ts, kind, key, holder, data_json)
            for column, value in zip(columns, (seq, part, pseq, ts, kind, key, holder, data_json, prev, digest)):
                column.append(value)
            self.records.append(JournalRecord(seq, ts, kind, key, holder, json.loads(data_json), prev, digest, data_json))
            prev = digest
        if count == 1:  # the common case: scalars cost less to send than ten one-element arrays
            self.run(
                "WITH e AS (INSERT INTO @journal(seq, part, pseq, ts, kind, key, holder, data, prev_hash, hash) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)) UPDATE @journal_heads SET hash = %s WHERE part = %s",
                (*(column[0] for column in columns), prev, part))
        else:
            self.run(
                "WITH e AS (INSERT INTO @journal(seq, part, pseq, ts, kind, key, holder, data, prev_hash, hash) "
                "SELECT * FROM unnest(%s::bigint[], %s::int[], %s::bigint[], %s::float8[], %s::text[], %s::text[], "
                "%s::text[], %s::text[], %s::text[], %s::text[])) "
                "UPDATE @journal_heads SET hash = %s WHERE part = %s", (*columns, prev, part))
        return seqs
