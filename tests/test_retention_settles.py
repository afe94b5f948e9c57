"""Retention settles: ``compact(keep=N)`` leaves the newest N entries plus the checkpoint that
anchors what was removed, and a rerun with nothing more to do removes nothing and appends no
checkpoint; acknowledged messages kept for a channel's ``retention`` go once it has passed, at
a retention step or ``compact()``, even when the channel stays idle or its retention was set
back to 0.

A contract module: every test runs on both backends (on PostgreSQL with one journal chain, so
the counts are the embedded backend's, except where a test makes several chains itself).
"""

from __future__ import annotations

import inspect
import json
import os
import sqlite3

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent_coherence import Coordinator, JournalCorrupt
from agent_coherence.backends import default_database, sqlite_retention
from agent_coherence.backends.postgres import PostgresBackend, split_url
from agent_coherence.backends.postgres_retention import _SWEEP_ACKED
from agent_coherence.cli import main
from agent_coherence.retention import Retention

from conftest import schema_url, use_fake_clock
from pg_server import drop_schema, fresh_schema
from test_retention import rows, seqs, sql

pytestmark = pytest.mark.contract

MANUAL = Retention(every=0)


@pytest.fixture(autouse=True)
def one_journal_chain(backend_name):
    if backend_name == "postgres":
        PostgresBackend(os.environ["AGENT_COHERENCE_URL"], journal_chains=1).close()


def _notes(coord: Coordinator, count: int, start: int = 0) -> None:
    for i in range(count):
        coord.journal.append("note", "k", "h", n=start + i)


# -- defect: keep=N left N+1 entries, and every rerun removed one and added a checkpoint ----


def test_keep_n_leaves_n_entries_and_the_checkpoint_and_a_rerun_changes_nothing(root, capsys):
    with Coordinator.open(root, retention=MANUAL) as coord:
        _notes(coord, 30)
        first = coord.compact(keep=10)
        assert first.journal == 20 and first.checkpoint_seq == 31
        assert coord.journal.verify() == 11  # the newest 10 and the checkpoint anchoring the rest
        kept = seqs(root)
        for _ in range(3):
            again = coord.compact(keep=10)
            assert (again.journal, again.checkpoint_seq, again.more) == (0, 0, False)
            assert seqs(root) == kept
        assert coord.compact(keep=10, dry_run=True).journal == 0
    capsys.readouterr()
    assert main(["journal", "compact", "--root", str(root), "--keep", "10"]) == 0
    assert "journal: nothing to remove" in capsys.readouterr().out
    assert main(["journal", "compact", "--root", str(root), "--keep", "10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["journal"] == 0 and report["checkpoint_seq"] == 0
    assert seqs(root) == kept
    assert main(["journal", "verify", "--root", str(root)]) == 0


def test_an_earlier_checkpoint_among_the_newest_counts_as_one_of_them(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        _notes(coord, 20)
        coord.compact(keep=5)  # 16..20 and checkpoint 21
        _notes(coord, 3, start=20)  # 22..24
        coord.compact(keep=5)
        # The newest 5 entries (the first checkpoint among them) and the new checkpoint.
        assert coord.journal.verify() == 6
        kinds = [e.kind for e in coord.journal.history()]
        assert kinds == ["note", "journal.checkpoint", "note", "note", "note", "journal.checkpoint"]
        assert coord.compact(keep=5).journal == 0


def test_keep_zero_keeps_the_newest_entry_and_settles(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        _notes(coord, 8)
        assert coord.compact(keep=0).journal == 7
        kept = seqs(root)
        assert len(kept) == 2  # the newest entry (the checkpoint links to it) and the checkpoint
        again = coord.compact(keep=0)
        assert (again.journal, again.checkpoint_seq) == (0, 0) and seqs(root) == kept
        assert coord.journal.verify() == 2


def test_an_age_limit_does_not_replace_checkpoints_by_checkpoints(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        _notes(coord, 8)
        future = coord.backend.now() + 3600
        assert coord.compact(before=future).journal == 7
        coord.compact(before=future)  # may take the last note: a gain
        kept = seqs(root)
        again = coord.compact(before=future)
        assert (again.journal, again.checkpoint_seq) == (0, 0) and seqs(root) == kept
        assert coord.journal.verify() == len(kept)


@pytest.mark.parametrize("damage", ["edit", "delete", "reorder"])
def test_damage_after_a_settled_checkpoint_is_detected(root, damage):
    with Coordinator.open(root, retention=MANUAL) as coord:
        _notes(coord, 30)
        coord.compact(keep=10)
        coord.compact(keep=10)  # settled: changes nothing
    first = seqs(root)[0]
    if damage == "edit":
        sql(root, "UPDATE journal SET holder = 'mallory' WHERE seq = ?", (first + 3,))
    elif damage == "delete":
        sql(root, "DELETE FROM journal WHERE seq = ?", (first + 3,))
    else:
        a, b = (sql(root, "SELECT ts, kind, key, holder, data, prev_hash, hash FROM journal WHERE seq = ?",
                    (s,))[0] for s in (first + 2, first + 3))
        for seq, values in ((first + 2, b), (first + 3, a)):
            sql(root, "UPDATE journal SET ts=?, kind=?, key=?, holder=?, data=?, prev_hash=?, hash=? "
                      "WHERE seq = ?", (*values, seq))
    with Coordinator.open(root, recover=False) as coord, pytest.raises(JournalCorrupt):
        coord.journal.verify()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 25), st.integers(0, 12), st.integers(1, 8)), min_size=1, max_size=5))
def test_compaction_with_any_keep_never_leaves_more_and_settles(tmp_path_factory, plan):
    root = tmp_path_factory.mktemp("settle")
    server = os.environ.get("AGENT_COHERENCE_URL")
    url = None
    if server:
        url = schema_url(split_url(server)[0], fresh_schema())
        PostgresBackend(url, journal_chains=1).close()
    try:
        written = 0
        with Coordinator.open(root, url=url, retention=MANUAL) as coord:
            for writes, keep, batch in plan:
                _notes(coord, writes, start=written)
                written += writes
                policy = Retention(every=0, batch=batch)
                for _ in range(200):  # Coordinator.compact's loop, under a small batch
                    if not coord.backend.compact(policy, keep=keep).more:
                        break
                count = coord.journal.verify()
                assert count <= max(keep, 1) + 1, (count, keep)
                before = seqs(root, url)
                settled = coord.backend.compact(policy, keep=keep)
                assert (settled.journal, settled.checkpoint_seq) == (0, 0)
                assert seqs(root, url) == before
    finally:
        if url:
            drop_schema(split_url(url)[0], split_url(url)[1])


def test_keep_on_several_chains_counts_entries_besides_each_chains_checkpoint(root, backend_name):
    if backend_name != "postgres":
        pytest.skip("journal chains are PostgreSQL's")
    server = split_url(os.environ["AGENT_COHERENCE_URL"])[0]
    url = schema_url(server, fresh_schema())
    PostgresBackend(url, journal_chains=4).close()
    try:
        with Coordinator.open(root, url=url, retention=Retention(every=0, batch=50)) as coord:
            _notes(coord, 200)
            coord.compact(keep=30)
            anchored = sql(root, "SELECT count(*) FROM journal_heads WHERE removed > 0", url=url)[0][0]
            count = coord.journal.verify()
            assert anchored >= 1 and count - anchored <= 30
            kept = seqs(root, url)
            again = coord.compact(keep=30)
            assert (again.journal, again.checkpoint_seq) == (0, 0) and seqs(root, url) == kept
    finally:
        drop_schema(server, split_url(url)[1])


# -- defect: acknowledged messages kept for retention stayed until the channel's next ack ---


def _acked(channel, count: int) -> None:
    for i in range(count):
        channel.send({"n": i})
        delivery = channel.receive("worker")
        assert delivery is not None
        channel.ack(delivery)


def test_expired_acked_messages_of_an_idle_channel_go_at_compact(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        clock = use_fake_clock(coord)
        channel = coord.channel("jobs", retention=0.2)
        _acked(channel, 5)
        assert rows(root, "messages") == 5
        clock.advance(0.5)
        channel.send({"n": "unacked"})  # never received: stays
        channel.send({"n": "in flight"})
        assert channel.receive("worker") is not None  # received, not acked: stays
        report = coord.compact()
        assert report.messages == 5
        assert rows(root, "messages") == 2
        assert coord.compact().messages == 0


def test_acked_messages_inside_their_window_stay(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        clock = use_fake_clock(coord)
        channel = coord.channel("jobs", retention=100)
        _acked(channel, 3)
        clock.advance(50)
        assert coord.compact().messages == 0 and rows(root, "messages") == 3
        assert coord.compact(dry_run=True).messages == 0
        clock.advance(60)
        assert coord.compact(dry_run=True).messages == 3 and rows(root, "messages") == 3
        assert coord.compact().messages == 3 and rows(root, "messages") == 0


def test_acked_messages_go_when_retention_is_set_back_to_zero(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        clock = use_fake_clock(coord)
        channel = coord.channel("jobs", retention=3600)
        _acked(channel, 4)
        coord.channel("jobs", retention=0)
        clock.advance(0.01)
        report = coord.compact()
        assert report.messages == 4 and rows(root, "messages") == 0


def test_the_automatic_step_removes_expired_acked_messages_in_batches(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        clock = use_fake_clock(coord)
        channel = coord.channel("jobs", retention=0.2)
        other = coord.channel("other", retention=0.2)
        _acked(channel, 4)
        _acked(other, 3)
        clock.advance(1)
        step = coord.backend.compact(Retention(every=0, batch=2))
        assert step.messages == 2 and step.more
        coord.backend.retention(Retention(every=1, batch=2))  # a step before every transaction
        coord.backend._maintenance_countdown = 1  # this process re-reads the policy now, not later
        for i in range(6):
            coord.journal.append("note", "k", "h", n=i)
        assert rows(root, "messages") == 0


def test_the_acked_sweep_reads_only_acknowledged_rows(root, backend_name):
    """However many unacknowledged messages wait, the sweep's statements read the index of
    acknowledged rows only (SQLite: its query plans; PostgreSQL: the buffers it touches)."""
    if backend_name == "sqlite":
        with Coordinator.open(root, retention=MANUAL) as coord:
            _acked(coord.channel("kept", retention=3600), 2)
        with sqlite3.connect(default_database(str(root))) as conn:
            for statement, params in (
                    ("SELECT channel FROM messages INDEXED BY messages_acked WHERE channel > ? AND acked_at IS NOT "
                     "NULL AND receipt IS NULL ORDER BY channel LIMIT 1", ("",)),
                    ("SELECT rowid FROM messages INDEXED BY messages_acked WHERE channel = ? AND acked_at IS NOT NULL "
                     "AND receipt IS NULL AND acked_at < ? ORDER BY acked_at LIMIT ?", ("kept", 1.0, 5))):
                plan = str(conn.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall())
                assert "SEARCH messages USING INDEX messages_acked" in plan and "SCAN" not in plan, plan
            source = inspect.getsource(sqlite_retention.RetentionOps._sweep_acked)
            assert source.count("INDEXED BY messages_acked") == 2  # the statements checked above
        return
    server = split_url(os.environ["AGENT_COHERENCE_URL"])[0]
    work = {}
    for depth in (100, 8000):
        url = schema_url(server, fresh_schema())
        try:
            with Coordinator.open(root / str(depth), url=url, retention=MANUAL) as coord:
                coord.channel("backlog").send_many(["m"] * depth)  # sorts before "kept": passed over
                _acked(coord.channel("kept", retention=3600), 3)
            work[depth] = _buffers(url, _SWEEP_ACKED, {"after": "", "budget": 10})
        finally:
            drop_schema(server, split_url(url)[1])
    assert work[8000] < 2 * work[100] + 10, work


def _buffers(url: str, statement: str, params: dict) -> int:
    conninfo, schema = split_url(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement.replace("@", ""),
                            params).fetchone()[0]
    top = (plan if isinstance(plan, list) else json.loads(plan))[0]
    return int(top["Plan"].get("Shared Hit Blocks", 0)) + int(top["Plan"].get("Shared Read Blocks", 0))
