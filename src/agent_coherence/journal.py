"""The hash-chained journal: what each agent actually did, verifiable after the fact.

Each entry's hash covers its own fields and the previous entry's hash, so altering, deleting,
inserting or reordering an entry breaks the chain from that point on. Backends append entries in
the same transaction as the change they record.

Limits, plainly: the chain proves the record was not edited *without recomputing the chain*.
Someone who can write the database can rewrite every hash after the point they changed; keep
``Journal.head()`` somewhere else (a log line, a commit message) to anchor it. Removing entries from
the end is only detectable against such an anchor.
"""

from __future__ import annotations

import json

from .errors import JournalCorrupt
from .hashing import sha256_hex

TYPE_CHECKING = False  # typing is not imported at run time: this module is on the hook path
if TYPE_CHECKING:
    from typing import Any, Iterator

    from .backends.base import Backend, JournalRecord
    from .models import Event

GENESIS = "0" * 64


def encode_data(data: dict[str, Any]) -> str:
    """The canonical JSON form of an entry's data, as hashed and stored."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def chain_hash(
    prev_hash: str, seq: int, ts: float, kind: str, key: str | None, holder: str | None, data_json: str
) -> str:
    """The hash of one entry, chained to the previous one."""
    material = "\x1f".join((prev_hash, str(seq), repr(ts), kind, key or "", holder or "", data_json))
    return sha256_hex(material.encode("utf-8", "surrogatepass"))


def verify_entries(entries: Iterator["JournalRecord"]) -> int:
    """Check a sequence of entries from the first; return how many were checked.

    Raises JournalCorrupt at the first entry whose sequence number, link or hash is wrong.
    """
    expected_prev = GENESIS
    expected_seq = 1
    count = 0
    for entry in entries:
        if entry.seq != expected_seq:
            raise JournalCorrupt(
                f"journal entry {expected_seq} is missing (found seq {entry.seq} next)",
                seq=expected_seq, reason="gap",
            )
        if entry.prev_hash != expected_prev:
            raise JournalCorrupt(
                f"journal entry {entry.seq} does not link to entry {entry.seq - 1}",
                seq=entry.seq, reason="broken link",
            )
        recomputed = chain_hash(
            entry.prev_hash, entry.seq, entry.ts, entry.kind, entry.key, entry.holder,
            encode_data(entry.data),
        )
        if recomputed != entry.hash:
            raise JournalCorrupt(
                f"journal entry {entry.seq} ({entry.kind}) was altered: its hash does not match",
                seq=entry.seq, reason="hash mismatch",
            )
        expected_prev = entry.hash
        expected_seq += 1
        count += 1
    return count


class Journal:
    """Read side of the journal: verify the chain, list an artifact's history."""

    def __init__(self, backend: "Backend") -> None:
        self._backend = backend

    def verify(self) -> int:
        """Verify the whole record (every chain the backend keeps); return the number of
        entries. Raises JournalCorrupt."""
        return self._backend.journal_verify()

    def history(self, key: str | None = None, limit: int | None = None) -> list["Event"]:
        """Entries about ``key`` (every entry if None), oldest first."""
        from .models import Event

        records = self._backend.journal_entries(key=key, limit=limit)
        return [Event.from_record(record) for record in records]

    def tail(self, count: int = 20) -> list["Event"]:
        """The newest ``count`` entries, oldest first."""
        from .models import Event

        total = self._backend.journal_count()
        # Sequence numbers may have gaps (PostgreSQL): at least ``count`` entries lie past this.
        records = list(self._backend.journal_entries(after=max(0, total - count)))[-count:] if count else []
        return [Event.from_record(record) for record in records]

    def count(self, kind: str | None = None, key: str | None = None) -> int:
        return self._backend.journal_count(kind=kind, key=key)

    def head(self) -> str:
        """The hash of the newest entry: record it elsewhere to anchor the chain."""
        records = list(self._backend.journal_entries(after=max(0, self.count() - 1)))
        return records[-1].hash if records else GENESIS

    def append(self, kind: str, key: str | None = None, holder: str | None = None, **data: Any) -> None:
        """Add an application entry (e.g. a note that a task was handed over)."""
        self._backend.journal_append(kind, key, holder, data)
