"""The journal's hash encoding is unambiguous, covers the data exactly as stored, and journals
written by the first releases migrate: their entries still verify and new ones use the new
encoding. Each attack below went unnoticed (verify() passed) with the old encoding."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
from pathlib import Path

import pytest

from agent_coherence import Coordinator, JournalCorrupt
from agent_coherence.backends import default_database

LANDED = Path(__file__).parent / "data" / "landed-schema2.db.gz"
LANDED_HEAD = "39a7e801bf21ab5f0048893af1af0e9fa8d212c39112b86f855b18c427a1bbf9"  # printed when it was made
LANDED_ENTRIES = 10


def tamper(root: Path, sql: str, params: tuple = ()) -> None:
    with sqlite3.connect(default_database(str(root))) as conn:
        conn.execute(sql, params)


def verify(root: Path) -> int:
    with Coordinator.open(root) as coord:
        return coord.journal.verify()


def one_entry(root: Path, key: str | None, holder: str | None, **data: object) -> None:
    with Coordinator.open(root) as coord:
        coord.journal.append("note", key, holder, **data)
        assert coord.journal.verify() == 1


def test_moving_text_across_the_separator_between_key_and_holder_is_detected(root):
    one_entry(root, "k", "a\x1fb")
    tamper(root, "UPDATE journal SET key = ?, holder = ? WHERE seq = 1", ("k\x1fa", "b"))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert (caught.value.seq, caught.value.reason) == (1, "hash mismatch")


def test_a_null_holder_is_not_an_empty_one(root):
    one_entry(root, None, "")
    tamper(root, "UPDATE journal SET holder = NULL WHERE seq = 1")
    with pytest.raises(JournalCorrupt):
        verify(root)


def test_the_data_is_hashed_exactly_as_stored(root):
    one_entry(root, "k", "h", amount=1)
    # The same JSON value, spelled with a duplicate key a reader that takes the first one sees as 9.
    tamper(root, "UPDATE journal SET data = ? WHERE seq = 1", ('{"amount":9,"amount":1}',))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert caught.value.reason == "hash mismatch"


def test_an_entry_whose_data_is_not_json_is_reported_as_unreadable(root):
    one_entry(root, "k", "h", amount=1)
    tamper(root, "UPDATE journal SET data = ? WHERE seq = 1", ("{not json",))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert (caught.value.seq, caught.value.reason) == (1, "unreadable")


def test_damaged_journal_pages_give_journal_corrupt(root):
    with Coordinator.open(root) as coord:
        for i in range(300):
            coord.journal.append("note", f"key-{i}", "h", text="x" * 200)
    path = default_database(str(root))
    with sqlite3.connect(path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        journal_root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'journal'").fetchone()[0]
    with open(path, "r+b") as handle:  # overwrite the journal table's root page with garbage
        handle.seek((journal_root - 1) * page_size)
        handle.write(b"\xa5" * page_size)
    with Coordinator.open(root) as coord:  # other tables are intact: open works
        with pytest.raises(JournalCorrupt) as caught:
            coord.journal.verify()
    assert caught.value.reason == "unreadable" and "damaged" in caught.value.message
    assert caught.value.recover


def test_a_journal_table_that_is_gone_gives_journal_corrupt(root):
    with Coordinator.open(root) as coord:
        coord.journal.append("note", "k", "h")
        tamper(root, "DROP TABLE journal")
        with pytest.raises(JournalCorrupt) as caught:
            coord.journal.verify()
    assert (caught.value.seq, caught.value.reason) == (1, "unreadable")


def open_landed(root: Path) -> Coordinator:
    """A state database written by the release this one replaces (tests/data, made with it)."""
    state = root / ".agent-coherence"
    state.mkdir()
    with gzip.open(LANDED) as source, open(state / "state.db", "wb") as target:
        shutil.copyfileobj(source, target)
    return Coordinator.open(root)


def test_a_journal_of_the_landed_release_migrates_and_still_verifies(root):
    with open_landed(root) as coord:
        history = coord.journal.history()
        marker = history[-1]
        assert len(history) == LANDED_ENTRIES + 1
        assert (marker.kind, marker.data["previous_head"], marker.data["previous_entries"]) == (
            "journal.format", LANDED_HEAD, LANDED_ENTRIES)
        assert history[LANDED_ENTRIES - 1].hash == LANDED_HEAD  # the old entries are untouched
        coord.write("after.txt", b"new", holder="a\x1fb")
        assert coord.journal.verify() == LANDED_ENTRIES + 1 + 1
    with Coordinator.open(root) as coord:  # opening again does not migrate twice
        assert coord.journal.count(kind="journal.format") == 1
        assert coord.journal.verify() == LANDED_ENTRIES + 2


def test_after_the_migration_the_old_encoding_is_refused(root):
    from agent_coherence.journal import encode_data, legacy_chain_hash

    with open_landed(root) as coord:
        head = coord.journal.history()[-1]
    data = encode_data({"text": "forged in the old encoding"})
    seq, ts = head.seq + 1, head.ts + 1
    forged = legacy_chain_hash(head.hash, seq, ts, "note", None, None, data)
    tamper(root, "INSERT INTO journal(seq, ts, kind, key, holder, data, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
           (seq, ts, "note", None, None, data, head.hash, forged))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert (caught.value.seq, caught.value.reason) == (seq, "hash mismatch")


def test_an_edited_entry_of_the_landed_release_is_still_detected(root):
    open_landed(root).close()
    tamper(root, "UPDATE journal SET holder = 'mallory' WHERE seq = 3")
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert caught.value.seq == 3
