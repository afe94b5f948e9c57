"""The journal on PostgreSQL: hash chains that do not serialise the fleet.

A single chain (each entry links to the one before it) needs one lock held through every journaled
commit's WAL flush, so every writer on the server would wait for every other. Here the journal is
independent chains (``JOURNAL_PARTITIONS`` = 64 unless the schema was created with another count):

* each transaction picks one chain at random and appends its entries there, taking the chain's
  head row (``journal_heads``) with a row lock as its *last* lock, just before COMMIT: writers on
  different chains never wait for each other, and a transaction never waits for a head while
  holding one (no deadlock);
* an entry's global ``seq`` comes from a SEQUENCE drawn while the head is locked, so within a chain
  ``seq`` grows with the chain position ``pseq``; ``journal_entries`` returns one global order by
  ``seq``, which may have gaps (a transaction that drew numbers and then failed);
* each entry's hash is ``journal.chain_hash`` of its chain predecessor's hash, its global ``seq``,
  and its fields; the head row keeps the chain's length and last hash.

``verify`` walks every chain in one REPEATABLE READ snapshot through a server-side cursor (one
page of rows in memory at a time, whatever the journal's length): positions without a gap, each
link, each hash, and the head row's length and hash against the chain's last entry. An edited,
deleted, inserted or reordered entry breaks its chain (a changed ``seq`` breaks the hash); deleting
a chain's newest entries is detected against the head row, and only an anchor kept elsewhere
(``journal_anchor``, or ``Journal.head()``) catches someone who rewrites the head row too.

Compaction (``postgres_retention.py``) removes a chain's oldest entries and appends a
``journal.checkpoint`` entry *to that chain*, in the record format of ``journal.py`` with chain
positions (``through`` is the position of the last removed entry); the head row counts what was
removed (``removed``), so the total stays a sum over 64 rows. Each chain is checked like the
embedded journal by ``journal.ChainWalk``: its first kept entry must link to what its newest
checkpoint says was removed last.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

from ..errors import JournalCorrupt
from ..journal import CHECKPOINT_ENTRY, GENESIS, ChainWalk, chain_hash, encode_data, unreadable_entry
from .postgres_tx import Tx, TxRunner
from .records import JournalRecord

JOURNAL_SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS @journal_seq;
CREATE TABLE IF NOT EXISTS @journal (
    seq bigint PRIMARY KEY, part int NOT NULL, pseq bigint NOT NULL, ts double precision NOT NULL,
    kind text NOT NULL, key text, holder text, data text NOT NULL, prev_hash text NOT NULL,
    hash text NOT NULL, UNIQUE (part, pseq));
CREATE INDEX IF NOT EXISTS journal_by_key ON @journal(key, seq) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS journal_by_kind ON @journal(kind);
CREATE TABLE IF NOT EXISTS @journal_heads (
    part int PRIMARY KEY, pseq bigint NOT NULL, hash text NOT NULL, removed bigint NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS journal_checkpoints ON @journal(part, pseq) WHERE kind = 'journal.checkpoint';
"""
# Schema 2 to 3: the head rows count removed entries; checkpoints are found per chain by an index.
JOURNAL_MIGRATION = """
ALTER TABLE @journal_heads ADD COLUMN IF NOT EXISTS removed bigint NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS journal_checkpoints ON @journal(part, pseq) WHERE kind = 'journal.checkpoint';
"""
JOURNAL_PAGE = 1000  # rows per page of journal_entries and per fetch of verify's cursor

_ENTRY_COLUMNS = "seq, ts, kind, key, holder, data, prev_hash, hash"


def record_of(row: tuple[Any, ...]) -> JournalRecord:
    """The entry of a row; ``data_text`` is the stored text, which is what the chain hashes.
    Raises JournalCorrupt for data that is not JSON."""
    seq, ts, kind, key, holder, data, prev, digest = row
    try:
        parsed = json.loads(data)
    except (TypeError, ValueError) as error:
        raise unreadable_entry(seq, f"its data is not JSON ({error})") from error
    return JournalRecord(seq, ts, kind, key, holder, parsed, prev, digest, data)


class JournalOps(TxRunner):
    """Journal operations of PostgresBackend (see the Backend protocol for the contract)."""

    def journal_append(
        self, kind: str, key: str | None, holder: str | None, data: dict[str, Any]
    ) -> JournalRecord:
        def work(tx: Tx) -> Tx:
            tx.append(kind, key, holder, data)
            return tx

        tx = self.transaction(work)
        return tx.records[0]

    def journal_entries(
        self, key: str | None = None, after: int = 0, limit: int | None = None
    ) -> Iterator[JournalRecord]:
        """In ``seq`` order, read in pages of JOURNAL_PAGE (keyset on ``seq``), so a long journal
        is never held in memory at once."""
        sql = f"SELECT {_ENTRY_COLUMNS} FROM @journal WHERE seq > %s"
        if key is not None:
            sql += " AND key = %s"
        sql += " ORDER BY seq LIMIT %s"
        remaining = limit
        while remaining is None or remaining > 0:
            page = JOURNAL_PAGE if remaining is None else min(JOURNAL_PAGE, remaining)
            params = (after, key, page) if key is not None else (after, page)
            rows = self.read(lambda tx: tx.all(sql, params))
            for row in rows:
                yield record_of(row)
            if len(rows) < page:
                return
            after = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)
            del rows

    def journal_count(self, kind: str | None = None, key: str | None = None) -> int:
        """Entries (of ``kind``, about ``key``). The total is the sum over the head rows of each
        chain's length minus what compaction removed from it, so it reads 64 rows, not the
        journal; a kind or key is counted from its index."""
        if kind is None and key is None:
            row = self.read(lambda tx: tx.one("SELECT coalesce(sum(pseq - removed), 0) FROM @journal_heads"))
            return int(row[0])  # type: ignore[index]
        sql, params = "SELECT count(*) FROM @journal WHERE true", []
        if kind is not None:
            sql += " AND kind = %s"
            params.append(kind)
        if key is not None:
            sql += " AND key = %s"
            params.append(key)
        row = self.read(lambda tx: tx.one(sql, params))
        return int(row[0])  # type: ignore[index]

    def journal_tail(self, count: int) -> list[JournalRecord]:
        """The newest ``count`` entries by global ``seq``, oldest first (one index descent)."""
        if count <= 0:
            return []
        rows = self.read(lambda tx: tx.all(
            f"SELECT {_ENTRY_COLUMNS} FROM @journal ORDER BY seq DESC LIMIT %s", (count,)))
        return [record_of(row) for row in reversed(rows)]

    def journal_verify(self, on_entry: Callable[[int], None] | None = None, anchor: str | None = None) -> ChainWalk:
        """Check every chain (see the module docstring) in one snapshot, streamed: memory does not
        grow with the journal. Returns the walk: ``count``, ``head`` (the newest entry's hash, as
        ``Journal.head()``), ``removed`` (entries compacted from all chains), ``checkpoint`` (the
        newest checkpoint entry: its seq, and the position and hash it names on its chain).
        ``anchor`` must be the hash of an entry still in some chain, or of the last entry a
        checkpoint removed. Raises JournalCorrupt at the first broken entry."""
        return self.snapshot(lambda tx: _verify_all(tx, on_entry, anchor))

    def journal_anchor(self) -> str:
        """One hash over every chain's head: record it elsewhere to anchor the journal."""
        heads = self.read(lambda tx: tx.all("SELECT part, pseq, hash FROM @journal_heads ORDER BY part"))
        return chain_hash(GENESIS, len(heads), 0.0, "anchor", None, None,
                          encode_data({str(part): [pseq, digest] for part, pseq, digest in heads}))


class _Chains:
    """The state of one verification across chains: the total, the newest entry, the anchor."""

    def __init__(self, anchor: str | None, on_entry: Callable[[int], None] | None) -> None:
        self.result = ChainWalk(anchor)
        self.anchor = anchor
        self.on_entry = on_entry
        self.newest = (0, GENESIS)  # (seq, hash) of the newest entry on any chain
        self.first_seq = 0

    def check(self, walk: ChainWalk, part: int, pseq: int, entry: JournalRecord, last_seq: int) -> None:
        if entry.seq <= last_seq:  # seq grows along a chain: it was drawn under the head's lock
            raise JournalCorrupt(
                f"journal entry {entry.seq} does not link to the entry before it on chain {part}",
                seq=entry.seq, reason="broken link")
        walk.check(entry, position=pseq)
        result = self.result
        result.count += 1
        if entry.seq > self.newest[0]:
            self.newest = (entry.seq, entry.hash)
        if self.first_seq == 0 or entry.seq < self.first_seq:
            self.first_seq = entry.seq
        if not result.anchor_found and (entry.hash == self.anchor or (
                entry.kind == CHECKPOINT_ENTRY and entry.data.get("through_hash") == self.anchor)):
            result.anchor_found = True
        if self.on_entry is not None:
            self.on_entry(result.count)

    def finish_chain(self, part: int, walk: ChainWalk, head: tuple[int, str] | None, last_seq: int) -> None:
        walk.finish()  # a kept start that its newest checkpoint does not explain
        position = walk.next_seq - 1 if walk.count else 0
        if head is None or head[0] != position or head[1] != (walk.head if walk.count else GENESIS):
            raise JournalCorrupt(
                f"journal chain {part} ends at position {position}, but its head records "
                f"{head[0] if head else 'nothing'}: entries were removed from its end or the head was edited",
                seq=last_seq, reason="head mismatch")
        result = self.result
        result.removed += walk.removed
        if walk.removed:
            result.compacted_chains += 1
        if walk.checkpoint is not None and (result.checkpoint is None or walk.checkpoint[0] > result.checkpoint[0]):
            result.checkpoint = walk.checkpoint

    def done(self) -> ChainWalk:
        result = self.result
        result.head = self.newest[1]
        # first_seq: the oldest kept entry's seq; > 1 tells the caller that entries were compacted.
        result.first_seq = self.first_seq if result.removed else (1 if result.count else 0)
        # Each chain's start was checked against its own checkpoint above; marking the start as
        # known leaves finish() only the anchor to check (first_seq is a seq, not a position).
        result.start_at(result.first_seq, GENESIS)
        result.finish()
        return result


def _verify_all(tx: Tx, on_entry: Callable[[int], None] | None, anchor: str | None) -> ChainWalk:
    tx.run("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    heads = {part: (pseq, digest) for part, pseq, digest in tx.all("SELECT part, pseq, hash FROM @journal_heads")}
    chains = _Chains(anchor, on_entry)
    seen: set[int] = set()
    cursor = tx.conn.cursor(name="agent_coherence_verify")  # server-side: fetched a page at a time
    cursor.itersize = JOURNAL_PAGE
    try:
        cursor.execute(tx.backend.sql(f"SELECT part, pseq, {_ENTRY_COLUMNS} FROM @journal ORDER BY part, pseq"))
        part, walk, last_seq = -1, ChainWalk(), 0
        for row in cursor:
            if row[0] != part:
                if part >= 0:
                    chains.finish_chain(part, walk, heads.get(part), last_seq)
                part, walk, last_seq = row[0], ChainWalk(), 0
                seen.add(part)
            entry = record_of(row[2:])
            chains.check(walk, part, row[1], entry, last_seq)
            last_seq = entry.seq
        if part >= 0:
            chains.finish_chain(part, walk, heads.get(part), last_seq)
    finally:
        cursor.close()
    for empty in sorted(set(heads) - seen):  # a chain without entries must have an empty head
        chains.finish_chain(empty, ChainWalk(), heads[empty], 0)
    return chains.done()
