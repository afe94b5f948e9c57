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
the end is only detectable against such an anchor (``verify(anchor=...)``).

Compaction (the retention policy, ``retention.py``) removes the oldest entries and appends a
``journal.checkpoint`` entry that names the last removed entry (sequence number and hash) and how
many were removed in all; the first kept entry must link to it. What was removed can no longer be
checked, only that the kept part starts where the removed part ended. Entries written in the old encoding keep its
weakness: a field's text could be shifted into its neighbour (or NULL swapped for '') unnoticed.
"""

from __future__ import annotations

from . import json_text  # json.loads/dumps without importing the json package (hook start-up)
from .errors import BackendUnavailable, CoherenceError, JournalCorrupt
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
CHECKPOINT_ENTRY = "journal.checkpoint"  # the entry that anchors what compaction removed

_quote = json_text.quote  # the escaping json.dumps does (ensure_ascii)
_FORMAT_PREFIX = "[" + _quote(FORMAT) + ","


def encode_data(data: dict[str, Any]) -> str:
    """The canonical JSON text of an entry's data, as stored (and then hashed as stored): exactly
    ``json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)``.

    The usual data (a flat dict of str keys and str, int, float, bool or None values) is spelled
    here without the ``json.dumps`` machinery, which costs more than the rest of a lease step;
    anything else goes to ``json.dumps`` itself. Both give the same text (a property test holds
    them to it), so the stored data and its hash do not depend on which path made them.
    """
    if type(data) is dict:
        try:
            names = sorted(data)
        except TypeError:  # keys of mixed types: json.dumps says why
            names = None
        if names is not None:
            parts = []
            for name in names:
                value = _scalar(data[name]) if type(name) is str else None
                if value is None:
                    break
                parts.append(_quote(name) + ":" + value)
            else:
                return "{" + ",".join(parts) + "}"
    return json_text.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def _scalar(value: Any) -> str | None:
    """The JSON text ``json.dumps`` gives a str, int, float, bool or None (exactly that type, no
    subclass); None for anything else."""
    kind = type(value)
    if kind is str:
        return _quote(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        return _float_text(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    return None


def _float_text(value: float) -> str:
    """A float as ``json.dumps`` writes it (``allow_nan``: NaN and the infinities by name)."""
    if value - value == 0.0:  # finite (for an infinity or NaN the difference is NaN)
        return float.__repr__(value)
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def chain_hash(
    prev_hash: str, seq: int, ts: float, kind: str, key: str | None, holder: str | None, data_text: str
) -> str:
    """The hash of one entry, chained to the previous one.

    ``data_text`` is the data exactly as stored (``encode_data`` made it at append); a backend
    must store it as text and give it back unchanged (not as a JSON type that re-serialises it).
    The material is the JSON array ``[FORMAT, prev_hash, seq, ts, kind, key, holder, data_text]``:
    strings are quoted and escaped, NULL is ``null``, so the fields cannot run into each other.
    """
    if type(prev_hash) is str and type(kind) is str and type(data_text) is str and \
            (key is None or type(key) is str) and (holder is None or type(holder) is str):
        # What json.dumps gives this array, spelled without it (see encode_data). An int's and a
        # finite float's own text is what json.dumps writes (``_float_text``), in one f-string for
        # the usual entry (a backend's int seq and clock time) rather than a join of 19 parts.
        if type(seq) is int and type(ts) is float and ts - ts == 0.0:
            material = (f"{_FORMAT_PREFIX}{_quote(prev_hash)},{seq},{ts!r},{_quote(kind)},"
                        f"{'null' if key is None else _quote(key)},{'null' if holder is None else _quote(holder)},"
                        f"{_quote(data_text)}]")
            return sha256_hex(material.encode("ascii"))
        material = "".join((
            _FORMAT_PREFIX, _quote(prev_hash), ",", int.__repr__(int(seq)), ",", _float_text(float(ts)), ",",
            _quote(kind), ",", "null" if key is None else _quote(key), ",",
            "null" if holder is None else _quote(holder), ",", _quote(data_text), "]"))
    else:  # a field of another type (read from a damaged or edited row): json.dumps decides
        material = json_text.dumps([FORMAT, prev_hash, int(seq), float(ts), kind, key, holder, data_text],
                                   separators=(",", ":"))
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
    return JournalCorrupt(f"journal entry {seq} cannot be read as part of the chain: {why}", seq=seq, reason="unreadable")


def stored_checkpoint(seq: int, data_text: str, place: int) -> tuple[int, str, int]:
    """:func:`checkpoint_fields` of a checkpoint's stored data text: compaction starts from them
    before it checks any hash, so an edited checkpoint must be refused as corrupt here."""
    try:
        data = json_text.loads(data_text)
    except (TypeError, ValueError) as error:
        raise unreadable_entry(seq, f"its data is not JSON ({error})") from error
    return checkpoint_fields(seq, data, place)


def checkpoint_fields(seq: int, data: object, place: int) -> tuple[int, str, int]:
    """(through, through_hash, removed) of checkpoint entry ``seq`` (at position ``place`` of its
    chain); JournalCorrupt (unreadable) when its data is not what a checkpoint records."""
    if not isinstance(data, dict):
        raise unreadable_entry(seq, f"its checkpoint data is not valid ({data!r})")
    through, through_hash, removed = data.get("through"), data.get("through_hash"), data.get("removed")
    if not (isinstance(through, int) and isinstance(through_hash, str) and isinstance(removed, int)
            and 0 < through < place and removed > 0):
        raise unreadable_entry(seq, f"its checkpoint data is not valid ({data!r})")
    return through, through_hash, removed


def _hash_fields(entry: "JournalRecord") -> tuple[str, int, float, str, str | None, str | None, str]:
    """The fields of ``entry`` that its hash covers, as stored."""
    data_text = entry.data_text if entry.data_text is not None else encode_data(entry.data)
    return (entry.prev_hash, entry.seq, entry.ts, entry.kind, entry.key, entry.holder, data_text)


class ChainWalk:
    """Checks entries one at a time, oldest first, in constant memory (see :meth:`check`).

    A journal whose oldest entries were compacted starts after entry 1: its first entry must link
    to what the newest ``journal.checkpoint`` entry says was removed last (its sequence number and
    hash), which :meth:`finish` checks once the whole journal was seen. Entries before the first
    one cannot be checked any more; the checkpoint only proves which entry they ended with.
    ``anchor``: a hash recorded elsewhere earlier (``Journal.head()``), which must still be in the
    chain (an entry's hash, or the last entry a checkpoint removed): this is what detects entries
    cut from the end.
    """

    def __init__(self, anchor: str | None = None) -> None:
        self.count = 0  # entries checked
        self.head = GENESIS  # hash of the last entry checked
        self.first_seq = 0  # place of the first entry checked (its seq on a single chain; 0: none yet)
        self.first_prev = GENESIS
        self.removed = 0  # entries removed before the first, as the newest checkpoint says
        self.checkpoint: tuple[int, int, str] | None = None  # newest checkpoint: (its seq, through, through_hash)
        self.compacted_chains = 0  # chains that start after a checkpoint (a backend with one chain: 0 or 1)
        self.anchor = anchor
        self.anchor_found = anchor is None
        self._expected_seq = 0
        self._legacy_allowed = True  # old-encoding entries may only come first, before the format entry
        self._legacy_seen = False
        self._start_known = False

    @property
    def next_seq(self) -> int:
        """The sequence number the next entry must have (0: any, before the first)."""
        return self._expected_seq

    def start_at(self, seq: int, prev_hash: str) -> None:
        """Expect the first entry to be ``seq`` linking to ``prev_hash`` (checking a range that
        starts after a known anchor, as compaction does)."""
        self._expected_seq, self.first_prev = seq, prev_hash
        self._start_known = True

    def check(self, entry: "JournalRecord", position: int | None = None) -> None:
        """Check the next entry. Raises JournalCorrupt at a gap, a broken link, a wrong hash or
        encoding, or an unreadable checkpoint. ``position``: the entry's place in its chain, for
        a backend that keeps several chains (default: its ``seq``, the single chain's place)."""
        place = entry.seq if position is None else position
        if self._expected_seq == 0:  # the first entry: entry 1, or the first one kept by compaction
            self._expected_seq = place if place > 1 else 1
            self.first_prev = entry.prev_hash if place > 1 else GENESIS
        if place != self._expected_seq:
            raise JournalCorrupt(
                f"journal entry {self._expected_seq} is missing (found {place} next)",
                seq=entry.seq if position is not None else self._expected_seq, reason="gap",
            )
        expected_prev = self.head if self.count else self.first_prev
        if entry.prev_hash != expected_prev:
            raise JournalCorrupt(
                f"journal entry {entry.seq} does not link to entry {entry.seq - 1}",
                seq=entry.seq, reason="broken link",
            )
        try:
            fields = _hash_fields(entry)
            current = chain_hash(*fields) == entry.hash
            legacy = not current and self._legacy_allowed and legacy_chain_hash(*fields) == entry.hash
        except (TypeError, ValueError, UnicodeError) as error:
            raise unreadable_entry(entry.seq, f"a field has the wrong type ({error})") from error
        if current:
            if self._legacy_seen and self._legacy_allowed and entry.kind != FORMAT_ENTRY:
                raise JournalCorrupt(
                    f"journal entry {entry.seq} switches to the current encoding without a "
                    f"{FORMAT_ENTRY} entry", seq=entry.seq, reason="encoding",
                )
            self._legacy_allowed = False
        elif legacy:
            self._legacy_seen = True
        else:
            raise JournalCorrupt(
                f"journal entry {entry.seq} ({entry.kind}) was altered: its hash does not match",
                seq=entry.seq, reason="hash mismatch",
            )
        if entry.kind == CHECKPOINT_ENTRY and current:
            self._note_checkpoint(entry, place)
        if not self.anchor_found and entry.hash == self.anchor:
            self.anchor_found = True
        if self.count == 0:
            self.first_seq = place
        self.head = entry.hash
        self.count += 1
        self._expected_seq += 1

    def _note_checkpoint(self, entry: "JournalRecord", place: int) -> None:
        through, through_hash, removed = checkpoint_fields(entry.seq, entry.data, place)
        self.checkpoint = (entry.seq, through, through_hash)
        self.removed = removed
        if not self.anchor_found and through_hash == self.anchor:
            self.anchor_found = True

    def finish(self) -> int:
        """Check what can only be checked at the end; return the number of entries checked."""
        if self.count and self.first_seq > 1 and not self._start_known:
            if self.checkpoint is None:
                raise JournalCorrupt(
                    f"journal entries 1 to {self.first_seq - 1} are missing, and no {CHECKPOINT_ENTRY} "
                    "entry records their removal", seq=1, reason="gap",
                )
            _, through, through_hash = self.checkpoint
            if through != self.first_seq - 1 or through_hash != self.first_prev:
                raise JournalCorrupt(
                    f"the journal starts at entry {self.first_seq}, but its newest checkpoint (entry "
                    f"{self.checkpoint[0]}) says entries up to {through} were removed: entries were "
                    "removed without a checkpoint, or the newest checkpoint was removed",
                    seq=through + 1, reason="gap",
                )
        if not self.anchor_found:
            raise JournalCorrupt(
                f"the anchor {self.anchor} is not in the journal: entries were cut from its end (or the "
                f"anchor is older than the compacted part, {self.removed} entries)",
                seq=self.next_seq, reason="anchor missing",
                recover="treat the record after the anchor as lost; compare with a backup",
            )
        return self.count


def verify_entries(
    entries: Iterable["JournalRecord"], on_entry: Callable[[int], None] | None = None,
    walk: ChainWalk | None = None,
) -> int:
    """Check a sequence of entries from the first kept one; return how many were checked.

    ``on_entry(count)`` is called after each verified entry (for progress reports); ``walk``
    carries an anchor in and the head and compaction facts out. Holds one entry at a time. Raises
    JournalCorrupt at the first entry whose sequence number, link, hash or encoding is wrong, or
    that cannot be read, and at the end when the start does not match the newest checkpoint.
    """
    walk = ChainWalk() if walk is None else walk
    iterator = iter(entries)
    while True:
        try:
            entry = next(iterator)
        except StopIteration:
            return walk.finish()
        except BackendUnavailable as error:
            if error.facts.get("reason") != "corrupt":
                raise
            raise unreadable_entry(max(walk.next_seq, 1),
                                   f"the database is damaged ({error.facts.get('detail')})") from error
        walk.check(entry)
        if on_entry is not None:
            on_entry(walk.count)


_HEX = frozenset("0123456789abcdef")


def anchor_hash(anchor: object) -> str | None:
    """A ``verify`` anchor: a full ``head()`` hash (64 hex digits, any case), or None. A prefix
    (``journal show`` prints 12 digits) or a value of another type would be reported as entries
    cut from the journal's end: a false alarm of tampering, so it is refused (ValueError) instead."""
    if anchor is None:
        return None
    if not isinstance(anchor, str):
        raise TypeError(f"anchor must be a str (a head() hash), not {type(anchor).__name__}")
    text = anchor.strip().lower()
    if len(text) != 64 or not _HEX.issuperset(text):
        raise ValueError(f"anchor {anchor!r} is not a journal head: give the full 64-digit hash (64 hex digits) "
                         "that journal.head() (or `agent-coherence journal verify`) printed")
    return text


def _entry_count(value: object, name: str) -> int:
    """A number of journal entries: an int, 0 or more (a float reached SQLite as a type error,
    reported as a damaged database)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int number of entries, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be 0 or more, not {value}")
    return value


class Journal:
    """Read side of the journal: verify the chain, list an artifact's history."""

    def __init__(self, backend: "Backend", canonical: "Callable[[Any], str] | None" = None) -> None:
        self._backend = backend
        # The coordinator's key normaliser: history("./plans//plan.md") finds what the layer
        # recorded under "plans/plan.md", instead of an empty list that reads as "never written".
        self._canonical = canonical

    def _key(self, key: "Any") -> "str | None":
        if key is None or self._canonical is None:
            return key  # type: ignore[no-any-return]
        try:
            return self._canonical(key)
        except CoherenceError:  # a key no file can have now (a directory, outside): as given
            if isinstance(key, str):
                return key
            raise  # not a key at all (an int...): never None, which would match every entry

    def verify(self, on_entry: Callable[[int], None] | None = None, anchor: str | None = None) -> int:
        """Verify every chain the backend keeps, streaming where the backend can; return the
        number of entries kept. Raises JournalCorrupt, also when an entry cannot be read at all
        (a damaged database), when a chain's start does not match its newest checkpoint, and when
        ``anchor`` (a ``head()`` recorded earlier) is no longer in the journal. ``on_entry(count)``
        is called after each entry."""
        return self.walk(on_entry, anchor).count

    def walk(self, on_entry: Callable[[int], None] | None = None, anchor: str | None = None) -> ChainWalk:
        """Like :meth:`verify`, returning the finished walk (its head, and what compaction removed)."""
        anchor = anchor_hash(anchor)
        try:
            walk = self._backend.journal_verify(on_entry, anchor)
        except JournalCorrupt as corrupt:
            log("journal", ERROR, "journal verification failed at entry %s: %s", corrupt.facts.get("seq"),
                corrupt.message)
            raise
        log("journal", INFO, "journal verified: %d entries (%d earlier ones compacted)", walk.count, walk.removed)
        return walk

    def history(self, key: str | None = None, limit: int | None = None) -> list["Event"]:
        """Entries about ``key`` (every entry if None), oldest first. A file key is matched in
        its canonical form (``coord.key``), as the layer records it."""
        if limit is not None:
            limit = _entry_count(limit, "limit")
        return list(self._backend.journal_entries(key=self._key(key), limit=limit))

    def tail(self, count: int = 20) -> list["Event"]:
        """The newest ``count`` entries, oldest first."""
        return list(self._backend.journal_tail(_entry_count(count, "count")))

    def count(self, kind: str | None = None, key: str | None = None) -> int:
        """How many entries, of ``kind`` and/or about ``key`` (canonical form, as ``history``)."""
        if kind is not None and not isinstance(kind, str):
            raise TypeError(f"kind must be a str or None, not {type(kind).__name__}")
        return self._backend.journal_count(kind=kind, key=self._key(key))

    def head(self) -> str:
        """The hash of the newest entry: record it elsewhere to anchor the chain (pass it to
        ``verify(anchor=...)`` later)."""
        records = self._backend.journal_tail(1)
        return records[-1].hash if records else GENESIS

    def append(self, kind: str, key: str | None = None, holder: str | None = None, **data: Any) -> None:
        """Add an application entry (e.g. a note that a task was handed over).

        ``kind`` must be a non-empty str outside the layer's own kinds (``write``, ``lease.*``,
        ``journal.*``, ... see ``RESERVED_KINDS``): else an application could record a ``write``
        that never happened, or a ``journal.checkpoint`` that verification trusts (ValueError,
        nothing appended). ``key`` and ``holder`` are str or None."""
        if not isinstance(kind, str) or not kind.strip():
            raise TypeError(f"kind must be a non-empty str, not {kind!r}") if not isinstance(kind, str) \
                else ValueError("kind must name the entry (an empty or blank kind is refused)")
        if kind.partition(".")[0] in RESERVED_KINDS:
            raise ValueError(f"kind {kind!r} is one the layer records itself ({kind.partition('.')[0]!r}): "
                             "give your entries a name of your own, e.g. 'handoff' or 'app.note'")
        for name, value in (("key", key), ("holder", holder)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
        self._backend.journal_append(kind, key, holder, data)


# The first dotted part of the kinds the layer and its adapters journal: ``Journal.append``
# refuses them, so the record of who wrote what holds only what the layer saw happen.
RESERVED_KINDS = frozenset({
    "write", "delete", "adopt", "lease", "conflict", "recover", "clock", "journal", "message", "channel",
    "worker", "assignment", "anomaly", "crewai", "langgraph", "store", "bash", "tool",
})
