"""The hash-chained journal: what each agent actually did, verifiable after the fact.

Each entry's hash covers its own fields and the previous entry's hash, so altering, deleting,
inserting or reordering an entry breaks the chain from that point on. Backends append entries in
the same transaction as the change they record.

The encoding (:func:`chain_hash`) is unambiguous: the hashed material is a JSON array of the
entry's fields as stored, so no two different entries share it (a NULL key is not an empty one, a
separator inside a holder cannot move text between fields), and the data is hashed exactly as the
database stores its text, never re-serialised first. Journals written before this encoding keep
their entries under the old one (:func:`legacy_chain_hash`): the first entry in the new encoding
is a ``journal.format`` entry that records the old head, and the old encoding is refused after it.

Limits, plainly: the chain proves the record was not edited *without recomputing the chain*.
Someone who can write the database can rewrite every hash after the point they changed; keep
``Journal.head()`` somewhere else (a log line, a commit message) to anchor it. Removing entries from
the end is only detectable against such an anchor. Entries written in the old encoding keep its
weakness: a field's text could be shifted into its neighbour (or NULL swapped for '') unnoticed.
"""

from __future__ import annotations

import json

from .errors import BackendUnavailable, JournalCorrupt
from .hashing import sha256_hex
from .logs import ERROR, INFO, log

TYPE_CHECKING = False  # typing is not imported at run time: this module is on the hook path
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable

    from .backends.base import Backend, JournalRecord
    from .models import Event

GENESIS = "0" * 64
FORMAT = "agent-coherence.journal/2"  # the first element of every hashed entry
FORMAT_ENTRY = "journal.format"  # the entry that starts the current encoding in a migrated journal


def encode_data(data: dict[str, Any]) -> str:
    """The canonical JSON text of an entry's data, as stored (and then hashed as stored)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def chain_hash(
    prev_hash: str, seq: int, ts: float, kind: str, key: str | None, holder: str | None, data_text: str
) -> str:
    """The hash of one entry, chained to the previous one.

    ``data_text`` is the data exactly as stored (``encode_data`` made it at append); a backend
    must store it as text and give it back unchanged (not as a JSON type that re-serialises it).
    The material is the JSON array ``[FORMAT, prev_hash, seq, ts, kind, key, holder, data_text]``:
    strings are quoted and escaped, NULL is ``null``, so the fields cannot run into each other.
    """
    material = json.dumps([FORMAT, prev_hash, int(seq), float(ts), kind, key, holder, data_text],
                          separators=(",", ":"), ensure_ascii=True)
    return sha256_hex(material.encode("ascii"))


def legacy_chain_hash(
    prev_hash: str, seq: int, ts: float, kind: str, key: str | None, holder: str | None, data_text: str
) -> str:
    """The encoding of journals written before :func:`chain_hash` (ambiguous: see the module
    docstring). Only used to verify those old entries."""
    material = "\x1f".join((prev_hash, str(seq), repr(ts), kind, key or "", holder or "", data_text))
    return sha256_hex(material.encode("utf-8", "surrogatepass"))


def unreadable_entry(seq: int, why: str) -> JournalCorrupt:
    """The error for an entry that cannot be read as part of the chain (bad type, bad JSON,
    damaged database pages)."""
    return JournalCorrupt(
        f"journal entry {seq} cannot be read as part of the chain: {why}", seq=seq, reason="unreadable",
        recover="treat the record from this entry on as untrusted; restore the state directory from a backup",
    )


def _hash_fields(entry: "JournalRecord") -> tuple[str, int, float, str, str | None, str | None, str]:
    """The fields of ``entry`` that its hash covers, as stored."""
    data_text = entry.data_text if entry.data_text is not None else encode_data(entry.data)
    return (entry.prev_hash, entry.seq, entry.ts, entry.kind, entry.key, entry.holder, data_text)


def verify_entries(entries: Iterable["JournalRecord"], on_entry: Callable[[int], None] | None = None) -> int:
    """Check a sequence of entries from the first; return how many were checked.

    ``on_entry(count)`` is called after each verified entry (for progress reports). Raises
    JournalCorrupt at the first entry whose sequence number, link, hash or encoding is wrong, or
    that cannot be read.
    """
    expected_prev = GENESIS
    expected_seq = 1
    legacy_allowed = True  # old-encoding entries may only come first, before the format entry
    legacy_seen = False
    iterator = iter(entries)
    while True:
        try:
            entry = next(iterator)
        except StopIteration:
            return expected_seq - 1
        except BackendUnavailable as error:
            if error.facts.get("reason") != "corrupt":
                raise
            raise unreadable_entry(expected_seq, f"the database is damaged ({error.facts.get('detail')})") from error
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
        try:
            fields = _hash_fields(entry)
            current = chain_hash(*fields) == entry.hash
            legacy = not current and legacy_allowed and legacy_chain_hash(*fields) == entry.hash
        except (TypeError, ValueError, UnicodeError) as error:
            raise unreadable_entry(entry.seq, f"a field has the wrong type ({error})") from error
        if current:
            if legacy_seen and legacy_allowed and entry.kind != FORMAT_ENTRY:
                raise JournalCorrupt(
                    f"journal entry {entry.seq} switches to the current encoding without a "
                    f"{FORMAT_ENTRY} entry", seq=entry.seq, reason="encoding",
                )
            legacy_allowed = False
        elif legacy:
            legacy_seen = True
        else:
            raise JournalCorrupt(
                f"journal entry {entry.seq} ({entry.kind}) was altered: its hash does not match",
                seq=entry.seq, reason="hash mismatch",
            )
        expected_prev = entry.hash
        expected_seq += 1
        if on_entry is not None:
            on_entry(expected_seq - 1)


class Journal:
    """Read side of the journal: verify the chain, list an artifact's history."""

    def __init__(self, backend: "Backend") -> None:
        self._backend = backend

    def verify(self, on_entry: Callable[[int], None] | None = None) -> int:
        """Verify the whole chain; return the number of entries. Raises JournalCorrupt, also
        when an entry cannot be read at all (a damaged database). ``on_entry(count)`` is called
        after each entry."""
        try:
            count = verify_entries(self._backend.journal_entries(), on_entry)
        except JournalCorrupt as corrupt:
            log("journal", ERROR, "journal verification failed at entry %s: %s", corrupt.facts.get("seq"),
                corrupt.message)
            raise
        log("journal", INFO, "journal verified: %d entries", count)
        return count

    def history(self, key: str | None = None, limit: int | None = None) -> list["Event"]:
        """Entries about ``key`` (every entry if None), oldest first."""
        return list(self._backend.journal_entries(key=key, limit=limit))

    def tail(self, count: int = 20) -> list["Event"]:
        """The newest ``count`` entries, oldest first."""
        total = self._backend.journal_count()
        return list(self._backend.journal_entries(after=max(0, total - count)))

    def count(self, kind: str | None = None, key: str | None = None) -> int:
        return self._backend.journal_count(kind=kind, key=key)

    def head(self) -> str:
        """The hash of the newest entry: record it elsewhere to anchor the chain."""
        records = list(self._backend.journal_entries(after=max(0, self.count() - 1)))
        return records[-1].hash if records else GENESIS

    def append(self, kind: str, key: str | None = None, holder: str | None = None, **data: Any) -> None:
        """Add an application entry (e.g. a note that a task was handed over)."""
        self._backend.journal_append(kind, key, holder, data)
