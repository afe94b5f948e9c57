"""The shape of a confirmed write on SQLite: its statements, its journal entry's data text, and the
schema 8 tables it touches (artifacts and intents WITHOUT ROWID; a write's own lease left out of
the holder index), including the upgrade of a schema 7 database, with a version history, a held
lease and a pending intent."""

from __future__ import annotations

import os
import sqlite3

import pytest
from hypothesis import given, strategies as st

from agent_coherence import Coordinator, LeaseLost
from agent_coherence.backends.records import WriteRequest
from agent_coherence.backends.sqlite import SQLiteBackend
from agent_coherence.backends.sqlite_schema import SCHEMA_VERSION
from agent_coherence.backends.sqlite_writes import write_entry_data
from agent_coherence.journal import encode_data
from agent_coherence.recovery import HOST, own_identity

# What schema 7 made: rowid tables with a TEXT primary key (two b-trees each).
_SCHEMA_7_TABLES = {
    "leases": """CREATE TABLE leases (
    key TEXT PRIMARY KEY, holder TEXT, fence INTEGER NOT NULL,
    acquired_at REAL NOT NULL, expires_at REAL NOT NULL)""",
    "artifacts": """CREATE TABLE artifacts (
    key TEXT PRIMARY KEY, version INTEGER NOT NULL, sha256 TEXT, size INTEGER NOT NULL,
    writer TEXT NOT NULL, fence INTEGER NOT NULL, updated_at REAL NOT NULL)""",
    "intents": """CREATE TABLE intents (
    key TEXT PRIMARY KEY, intent_id TEXT NOT NULL, holder TEXT NOT NULL, fence INTEGER NOT NULL,
    base_version INTEGER NOT NULL, base_sha256 TEXT, new_version INTEGER NOT NULL, new_sha256 TEXT,
    size INTEGER NOT NULL, temp_path TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    pid_start TEXT NOT NULL, created_at REAL NOT NULL, auto_lease INTEGER NOT NULL,
    synced INTEGER NOT NULL DEFAULT 0)""",
}


def _table_sql(path: str) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name IN ('artifacts', 'intents', 'leases')")
        found = {name: sql for name, sql in rows}
    conn.close()
    return found


def _as_schema_7(path: str) -> None:
    """Turn a current database back into what schema 7 stored: the same rows in rowid tables."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX leases_by_holder")
        for table, definition in _SCHEMA_7_TABLES.items():
            conn.execute(f"ALTER TABLE {table} RENAME TO {table}_current")
            conn.execute(definition)
            names = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            conn.execute(f"INSERT INTO {table} SELECT {', '.join(names)} FROM {table}_current")
            conn.execute(f"DROP TABLE {table}_current")
        conn.execute("CREATE INDEX leases_by_holder ON leases(holder) WHERE holder IS NOT NULL")
        conn.execute("UPDATE meta SET value = '7' WHERE name = 'schema_version'")
    conn.close()


def test_a_schema_7_database_is_upgraded_with_its_versions_and_pending_intent(root):
    with Coordinator.open(root) as coord:
        for n in range(3):
            coord.write("a.txt", f"a{n}", holder="w")
        coord.write("dir/b.txt", "b", holder="w")
        held = coord.lease("held.txt", "h", ttl=600).__enter__()
        pid, start = own_identity()
        pending = coord.backend.begin_write(WriteRequest(
            "c.txt", "w", "0" * 64, 1, os.path.join(str(root), ".c.txt.1.ac-tmp"), HOST, pid, start))
        versions = {v.key: v for v in coord.backend.list_versions()}
        path = coord.backend.path
    _as_schema_7(path)
    before = _table_sql(path)
    assert "WITHOUT ROWID" not in before["artifacts"] and "sqlite_autoindex_intents_1" in before
    backend = SQLiteBackend(path)  # the upgrade, without the recovery a Coordinator runs at open
    try:
        assert {v.key: v for v in backend.list_versions()} == versions
        assert backend.get_intent("c.txt") == pending
        assert backend.list_leases("h") == [held]
        assert [lease.key for lease in backend.list_leases("w")] == ["c.txt"]  # the pending write's
        backend.abort_write(pending, "test", "done with it")
        assert backend.list_leases("w") == []
    finally:
        backend.close()
    with Coordinator.open(root) as coord:
        assert coord.write("a.txt", "a3", holder="w").version == 4
        assert coord.read("dir/b.txt").text == "b"
        coord.journal.verify()
    after = _table_sql(path)
    # artifacts and intents: one b-tree each (no sqlite_autoindex_* left); leases: own_write
    assert set(after) == {"artifacts", "intents", "leases", "sqlite_autoindex_leases_1", "leases_by_holder"}
    assert after["artifacts"].endswith("WITHOUT ROWID") and after["intents"].endswith("WITHOUT ROWID")
    assert after["leases_by_holder"].endswith("WHERE holder IS NOT NULL AND own_write = 0")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0] \
            == str(SCHEMA_VERSION) == "11"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_a_holder_s_leases_include_its_writes_in_flight(root):
    """A write's own lease is left out of the holder index (``own_write``); list_leases and
    release_holder still find it, through the write's pending intent, and release it as before."""
    with Coordinator.open(root) as coord:
        backend = coord.backend
        lease = backend.acquire_lease("mine.txt", "w", 60.0)
        pid, start = own_identity()
        intents = [backend.begin_write(WriteRequest(f"f{n}.txt", "w", "0" * 64, 1, f"/nowhere/.f{n}", HOST, pid, start))
                   for n in range(2)]
        other = backend.begin_write(WriteRequest("g.txt", "x", "0" * 64, 1, "/nowhere/.g", HOST, pid, start))
        assert [found.key for found in backend.list_leases("w")] == ["f0.txt", "f1.txt", "mine.txt"]
        assert [found.key for found in backend.list_leases()] == ["f0.txt", "f1.txt", "g.txt", "mine.txt"]
        assert sorted(backend.release_holder("w")) == ["f0.txt", "f1.txt", "mine.txt"]
        assert backend.list_leases("w") == [] and backend.get_lease(lease.key) is None
        with pytest.raises(LeaseLost):  # its lease was released under it
            backend.commit_write(intents[0], durable=False)
        assert backend.commit_write(other, durable=False).version == 1
        assert backend.list_leases() == []


def test_a_write_with_holder_is_twelve_statements_in_two_transactions(quiet_coord):
    coord = quiet_coord
    coord.write("k.txt", "first", holder="w")
    seen: list[str] = []
    coord.backend._connection().set_trace_callback(seen.append)
    coord.write("k.txt", "second", holder="w")
    coord.backend._connection().set_trace_callback(None)
    assert [" ".join(sql.split()[:3]) for sql in seen] == [
        "BEGIN IMMEDIATE", "SELECT (SELECT 1", "UPDATE leases SET", "INSERT INTO intents(key,", "COMMIT",
        "BEGIN IMMEDIATE", "UPDATE leases SET", "DELETE FROM intents", "UPDATE artifacts SET",
        "SELECT seq, hash", "INSERT INTO journal(seq,", "COMMIT",
    ]


_digests = st.one_of(st.none(), st.text("0123456789abcdef", min_size=64, max_size=64),
                     st.text(max_size=8))  # and anything else a caller could hand over
_numbers = st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False))


@given(_numbers, _digests, _numbers, _numbers)
def test_the_write_entry_data_is_exactly_what_encode_data_gives(version, sha256, size, fence):
    assert write_entry_data(version, sha256, size, fence) == encode_data(
        {"version": version, "sha256": sha256, "size": size, "fence": fence})
