"""The index of notable journal kinds costs an ordinary append nothing: its condition is spelled
with OR (an IN list made SQLite build a temporary b-tree at every append), and a database made
with the IN spelling (schema 5) gets the index made again when it is opened, keeping every entry."""

from __future__ import annotations

import sqlite3

from agent_coherence import Coordinator
from agent_coherence.backends import default_database
from agent_coherence.backends.sqlite_retention import INDEXED_KINDS
from agent_coherence.backends.sqlite_schema import SCHEMA_VERSION

IN_SPELLING = ("CREATE INDEX journal_by_kind ON journal(kind, seq) WHERE kind IN ("
               + ", ".join(f"'{kind}'" for kind in INDEXED_KINDS) + ")")


def index_sql(conn: sqlite3.Connection) -> str:
    return conn.execute("SELECT sql FROM sqlite_master WHERE name = 'journal_by_kind'").fetchone()[0]


def append_program(conn: sqlite3.Connection) -> str:
    """The opcodes of a journal append (an IN list shows as OpenEphemeral, the temporary b-tree)."""
    rows = conn.execute("EXPLAIN INSERT INTO journal(seq, ts, kind, key, holder, data, prev_hash, hash) "
                        "VALUES (1, 0, 'write', 'k', 'h', '{}', 'p', 'h')").fetchall()
    return " ".join(row[1] for row in rows)


def test_a_schema_5_database_gets_the_or_spelling_and_keeps_its_entries(root):
    with Coordinator.open(root) as coord:
        lease = coord.acquire("a.txt", "alice")
        coord.release(lease)
        coord.journal.append("note", None, None, text="before")
    path = default_database(str(root))
    with sqlite3.connect(path) as conn:  # as schema 5 left it
        conn.execute("DROP INDEX journal_by_kind")
        conn.execute(IN_SPELLING)
        conn.execute("UPDATE meta SET value = '5' WHERE name = 'schema_version'")
        assert "OpenEphemeral" in append_program(conn)
    with Coordinator.open(root) as coord:
        assert coord.journal.verify() == 3
        coord.write("a.txt", b"x", holder="alice")
        assert coord.journal.count(kind="conflict.lease") == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert " IN " not in index_sql(conn) and " OR " in index_sql(conn)
        assert "OpenEphemeral" not in append_program(conn)
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT count(*) FROM journal WHERE kind = ? AND "
                            "(kind = 'conflict.lease' OR kind = 'conflict.version' OR kind = 'write.failed' "
                            "OR kind = 'journal.checkpoint')", ("conflict.lease",)).fetchall()
        assert "journal_by_kind" in str(plan)


def test_a_new_database_has_the_or_spelling(root):
    with Coordinator.open(root) as coord:
        coord.journal.append("note", None, None)
    with sqlite3.connect(default_database(str(root))) as conn:
        assert " OR " in index_sql(conn)
        assert "OpenEphemeral" not in append_program(conn)
