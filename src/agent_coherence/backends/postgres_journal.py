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

``verify`` walks every chain: positions 1..n without a gap, each link, each hash, and the head
row's length and hash against the chain's last entry. An edited, deleted, inserted or reordered
entry breaks its chain (a changed ``seq`` breaks the hash); deleting a chain's newest entries is
detected against the head row, and only an anchor kept elsewhere (``journal_anchor``) catches
someone who rewrites the head row too.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

from ..errors import JournalCorrupt
from ..journal import GENESIS, ChainWalk, chain_hash, encode_data, unreadable_entry
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
CREATE TABLE IF NOT EXISTS @journal_heads (part int PRIMARY KEY, pseq bigint NOT NULL, hash text NOT NULL);
"""

_ENTRY_COLUMNS = "seq, ts, kind, key, holder, data, prev_hash, hash"


def _record(row: tuple[Any, ...]) -> JournalRecord:
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
        sql = f"SELECT {_ENTRY_COLUMNS} FROM @journal WHERE seq > %s"
        params: list[Any] = [after]
        if key is not None:
            sql += " AND key = %s"
            params.append(key)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        rows = self.read(lambda tx: tx.all(sql, params))
        for row in rows:
            yield _record(row)

    def journal_count(self, kind: str | None = None, key: str | None = None) -> int:
        """Entries (of ``kind``, about ``key``). The total is the sum of the chains' lengths kept
        in the head rows (no entry is ever removed here: compaction is embedded-only), so it reads
        64 rows, not the journal; a kind or key is counted from its index."""
        if kind is None and key is None:
            row = self.read(lambda tx: tx.one("SELECT coalesce(sum(pseq), 0) FROM @journal_heads"))
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
        return [_record(row) for row in reversed(rows)]

    def journal_verify(self, on_entry: Callable[[int], None] | None = None, anchor: str | None = None) -> ChainWalk:
        """Check every chain (see the module docstring) in one read transaction; return the walk
        (``count``; ``head``: the newest entry's hash, as ``Journal.head()``). ``anchor`` must be
        the hash of an entry still in some chain. Limit: the rows are loaded at once, so memory
        grows with the journal (the embedded backend streams). Raises JournalCorrupt at the first
        broken entry."""
        def load(tx: Tx) -> tuple[list[tuple[Any, ...]], dict[int, tuple[int, str]]]:
            rows = tx.all(f"SELECT part, pseq, {_ENTRY_COLUMNS} FROM @journal ORDER BY part, pseq")
            heads = {part: (pseq, digest) for part, pseq, digest in tx.all(
                "SELECT part, pseq, hash FROM @journal_heads")}
            return rows, heads

        rows, heads = self.read(load)
        chains: dict[int, list[tuple[Any, ...]]] = {}
        newest: tuple[int, str] = (0, GENESIS)
        anchor_found = anchor is None
        for row in rows:
            chains.setdefault(row[0], []).append(row)
            if row[2] > newest[0]:
                newest = (row[2], row[9])
            anchor_found = anchor_found or row[9] == anchor
        checked = 0
        for part in sorted(set(chains) | set(heads)):
            checked = _verify_chain(part, chains.get(part, []), heads.get(part), checked, on_entry)
        walk = ChainWalk(anchor)
        walk.count, walk.head, walk.anchor_found = checked, newest[1], anchor_found
        walk.first_seq = 1 if checked else 0  # positions start at 1 on every chain (seq may have gaps)
        walk.finish()  # raises for a missing anchor; no chain here is ever compacted
        return walk

    def journal_anchor(self) -> str:
        """One hash over every chain's head: record it elsewhere to anchor the journal."""
        heads = self.read(lambda tx: tx.all("SELECT part, pseq, hash FROM @journal_heads ORDER BY part"))
        return chain_hash(GENESIS, len(heads), 0.0, "anchor", None, None,
                          encode_data({str(part): [pseq, digest] for part, pseq, digest in heads}))


def _verify_chain(part: int, rows: list[tuple[Any, ...]], head: tuple[int, str] | None, checked: int,
                  on_entry: Callable[[int], None] | None) -> int:
    """Check one chain; return ``checked`` plus its length (``on_entry`` gets that running count)."""
    prev, position, last_seq = GENESIS, 0, 0
    for row in rows:
        entry = _record(row[2:])
        pseq = row[1]
        position += 1
        if pseq != position:
            raise JournalCorrupt(
                f"journal chain {part}: entry {position} is missing (found position {pseq}, seq {entry.seq})",
                seq=entry.seq, reason="gap")
        if entry.prev_hash != prev or entry.seq <= last_seq:
            raise JournalCorrupt(
                f"journal entry {entry.seq} does not link to the entry before it on chain {part}",
                seq=entry.seq, reason="broken link")
        try:
            recomputed = chain_hash(entry.prev_hash, entry.seq, entry.ts, entry.kind, entry.key, entry.holder,
                                    row[7])  # the data exactly as stored
        except (TypeError, ValueError, UnicodeError) as error:
            raise unreadable_entry(entry.seq, f"a field has the wrong type ({error})") from error
        if recomputed != entry.hash:
            raise JournalCorrupt(
                f"journal entry {entry.seq} ({entry.kind}) was altered: its hash does not match",
                seq=entry.seq, reason="hash mismatch")
        prev, last_seq = entry.hash, entry.seq
        checked += 1
        if on_entry is not None:
            on_entry(checked)
    if head is None or head != (position, prev):
        raise JournalCorrupt(
            f"journal chain {part} ends at position {position}, but its head records "
            f"{head[0] if head else 'nothing'}: entries were removed from its end or the head was edited",
            seq=last_seq, reason="head mismatch")
    return checked
