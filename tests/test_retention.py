"""Retention: the state stays bounded, and what is still needed is never removed.

Each guarantee is shown beside the state it protects: a released lease row goes, a live one and
one with an unresolved intent stay; fences keep growing after their row is gone; expired dedup and
effect rows go, rows inside their window stay; unacked messages, open assignments and workers with
open assignments stay. The compacted journal still verifies, and an edit, deletion or reordering
after the checkpoint, a removed start, or a cut tail (against an anchor) is still detected.

A contract module: every test runs on both backends. On PostgreSQL each test's schema is created
with one journal chain, so the sequence numbers and counts asserted here are the embedded
backend's; compaction across the 64 chains of a default schema (each chain with its own
checkpoint and anchor) is tested in test_postgres_backend.py.
"""

from __future__ import annotations

import json
import os
import sqlite3

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent_coherence import Coordinator, JournalCorrupt, LeaseLost
from agent_coherence.backends import default_database
from agent_coherence.backends.postgres import PostgresBackend, split_url
from agent_coherence.backends.sqlite_retention import INDEXED_KINDS_SQL, JOURNAL_BOUNDS
from agent_coherence.cli import main
from agent_coherence.journal import GENESIS
from agent_coherence.retention import DAY, Retention

from conftest import FORK, schema_url, use_fake_clock
from pg_server import drop_schema, fresh_schema

pytestmark = pytest.mark.contract

MANUAL = Retention(every=0)  # the default limits, applied only when asked


@pytest.fixture(autouse=True)
def one_journal_chain(backend_name):
    """On PostgreSQL: the test's schema made with a single journal chain, so sequence numbers and
    counts are those of the embedded backend's one chain."""
    if backend_name == "postgres":
        PostgresBackend(os.environ["AGENT_COHERENCE_URL"], journal_chains=1).close()


def sql(root, statement: str, params: tuple = (), url: str | None = None) -> list[tuple]:
    """Run ``statement`` on the test's state directly, as someone with write access could (``?``
    placeholders; PostgreSQL when AGENT_COHERENCE_URL names it)."""
    url = url or os.environ.get("AGENT_COHERENCE_URL")
    if url:
        conninfo, schema = split_url(url)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            cursor = conn.execute(statement.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []
    with sqlite3.connect(default_database(str(root))) as conn:
        return conn.execute(statement, params).fetchall()


def db(root) -> sqlite3.Connection:
    return sqlite3.connect(default_database(str(root)))


def rows(root, table: str) -> int:
    return sql(root, f"SELECT count(*) FROM {table}")[0][0]


def seqs(root, url: str | None = None) -> list[int]:
    return [r[0] for r in sql(root, "SELECT seq FROM journal ORDER BY seq", url=url)]


def cut_tail(root, count: int) -> None:
    """Delete the newest ``count`` entries; on PostgreSQL also rewrite the chain's head row to
    match, as someone covering their tracks would (the head row alone would catch the cut)."""
    sql(root, f"DELETE FROM journal WHERE seq > (SELECT max(seq) - {count} FROM journal)")
    if os.environ.get("AGENT_COHERENCE_URL"):
        sql(root, "UPDATE journal_heads h SET pseq = j.pseq, hash = j.hash FROM journal j "
                  "WHERE j.part = h.part AND j.seq = (SELECT max(seq) FROM journal)")


def compacted(root, writes: int = 40, keep: int = 15) -> int:
    """A root whose journal had its oldest entries compacted; returns the first kept seq."""
    with Coordinator.open(root, retention=MANUAL) as coord:
        for i in range(writes):
            coord.write(f"f{i % 4}.txt", f"v{i}", holder="h")
        report = coord.compact(keep=keep)
        assert report.journal == writes - keep and report.checkpoint_seq == writes + 1
        assert coord.journal.verify() == keep + 1  # the kept entries and the checkpoint
    return writes - keep + 1


# -- the policy ----------------------------------------------------------------------------


def test_policy_is_validated_and_stored_for_every_process(root):
    for bad in ({"journal_days": -1}, {"journal_entries": 0}, {"every": -1}, {"batch": 0},
                {"lease_days": "1"}, {"journal_entries": True}):
        with pytest.raises(ValueError):
            Retention(**bad)
    with Coordinator.open(root) as coord:
        assert coord.backend.retention() == Retention()  # the default until one is stored
    policy = Retention(journal_days=2, journal_entries=None, every=7)
    with Coordinator.open(root, retention=policy):
        pass
    with Coordinator.open(root) as other:  # another process's coordinator sees the stored policy
        assert other.backend.retention() == policy
    with pytest.raises(AttributeError):
        policy.every = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        Coordinator.open(root, retention={"every": 3})  # type: ignore[arg-type]
    with Coordinator.open(root) as coord, pytest.raises(ValueError):
        coord.compact(keep=-1)
    with Coordinator.open(root) as coord:
        assert coord.backend.retention() == policy  # the refusals changed nothing


# -- the journal ---------------------------------------------------------------------------


def test_compacted_journal_verifies_and_reports_the_checkpoint(root, capsys):
    first = compacted(root)
    assert seqs(root)[0] == first
    with Coordinator.open(root) as coord:
        walk = coord.journal.walk()
        assert (walk.first_seq, walk.removed, walk.checkpoint[1]) == (first, first - 1, first - 1)
        assert [e.seq for e in coord.journal.tail(3)] == seqs(root)[-3:]
        assert coord.journal.head() == walk.head
        assert coord.journal.count() == len(seqs(root))
    assert main(["journal", "verify", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"{first - 1} earlier entries were compacted" in out
    if walk.compacted_chains > 1:  # PostgreSQL: one checkpoint per chain, none of them "the" anchor
        assert f"from {walk.compacted_chains} journal chains" in out and "checkpoint entry" not in out
    else:
        assert f"checkpoint entry {walk.checkpoint[0]} anchors the first kept entry, {first}" in out


@pytest.mark.parametrize("damage", ["edit", "delete", "reorder", "delete_first", "drop_checkpoint_and_tail"])
def test_damage_after_the_checkpoint_is_detected(root, damage):
    first = compacted(root)
    last = sql(root, "SELECT max(seq) FROM journal")[0][0]
    if damage == "edit":
        sql(root, "UPDATE journal SET holder = 'mallory' WHERE seq = ?", (first + 3,))
    elif damage == "delete":
        sql(root, "DELETE FROM journal WHERE seq = ?", (first + 3,))
    elif damage == "reorder":  # swap two entries' contents, keeping the sequence numbers
        a, b = (sql(root, "SELECT ts, kind, key, holder, data, prev_hash, hash FROM journal WHERE seq = ?",
                    (s,))[0] for s in (first + 2, first + 3))
        for seq, values in ((first + 2, b), (first + 3, a)):
            sql(root, "UPDATE journal SET ts=?, kind=?, key=?, holder=?, data=?, prev_hash=?, hash=? "
                      "WHERE seq = ?", (*values, seq))
    elif damage == "delete_first":  # the start removed without a checkpoint saying so
        sql(root, "DELETE FROM journal WHERE seq <= ?", (first + 1,))
    else:  # the checkpoint and everything after it: no checkpoint explains the missing start
        sql(root, "DELETE FROM journal WHERE seq >= ?", (last,))
    with Coordinator.open(root, recover=False) as coord, pytest.raises(JournalCorrupt):
        coord.journal.verify()


def test_a_cut_tail_is_detected_against_an_anchor(root, capsys):
    compacted(root)
    with Coordinator.open(root) as coord:
        for i in range(5):
            coord.write("g.txt", f"g{i}", holder="h")
        anchor = coord.journal.head()
        assert coord.journal.verify(anchor=anchor) > 0
    cut_tail(root, 3)
    with Coordinator.open(root, recover=False) as coord:
        assert coord.journal.verify() > 0  # without the anchor the shorter chain is consistent
        with pytest.raises(JournalCorrupt) as caught:
            coord.journal.verify(anchor=anchor)
        assert caught.value.facts["reason"] == "anchor missing"
    assert main(["journal", "verify", "--root", str(root), "--anchor", anchor]) == 1
    assert "not in the journal" in capsys.readouterr().err


def test_an_anchor_compacted_away_is_proved_only_by_its_checkpoint(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        for i in range(10):
            coord.write("a.txt", f"{i}", holder="h")
        older = coord.journal.head()
        coord.write("a.txt", b"10", holder="h")
        anchor = coord.journal.head()
        coord.write("a.txt", b"11", holder="h")
        coord.compact(keep=0)  # everything but the newest entry goes, behind a checkpoint
        assert seqs(root) == [12, 13]
        assert coord.journal.verify(anchor=anchor) == 2  # the checkpoint names it as the last removed
        with pytest.raises(JournalCorrupt, match="older than the compacted part"):
            coord.journal.verify(anchor=older)  # removed, and nothing left can prove it was there


def test_compaction_never_launders_an_edited_entry(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        for i in range(20):
            coord.write("a.txt", f"{i}", holder="h")
    sql(root, "UPDATE journal SET holder = 'mallory' WHERE seq = 5")
    before = seqs(root)
    with Coordinator.open(root, recover=False) as coord, pytest.raises(JournalCorrupt):
        coord.compact(keep=5)
    assert seqs(root) == before  # nothing removed: the evidence stays


def test_a_dry_run_on_an_edited_journal_fails_as_the_real_pass_does(root, capsys):
    with Coordinator.open(root, retention=MANUAL) as coord:
        for i in range(20):
            coord.write("a.txt", f"{i}", holder="h")
    sql(root, "UPDATE journal SET holder = 'mallory' WHERE seq = 5")
    before = seqs(root)
    assert main(["journal", "compact", "--root", str(root), "--keep", "5", "--dry-run"]) == 1
    said = capsys.readouterr()
    assert "journal CORRUPT" in said.err and "entry 5" in said.err and "would remove" not in said.out
    assert main(["journal", "compact", "--root", str(root), "--keep", "5"]) == 1
    assert seqs(root) == before


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_compaction_refuses_an_entry_whose_data_is_not_json_without_a_traceback(root, capsys, dry_run):
    with Coordinator.open(root, retention=MANUAL) as coord:
        for i in range(20):
            coord.write("a.txt", f"{i}", holder="h")
    sql(root, "UPDATE journal SET data = '{not json' WHERE seq = 5")
    before = seqs(root)
    assert main(["journal", "compact", "--root", str(root), "--keep", "5", *dry_run]) == 1
    said = capsys.readouterr().err
    assert "journal CORRUPT: journal entry 5 cannot be read" in said and "Traceback" not in said
    assert seqs(root) == before


@pytest.mark.parametrize("data", ["{}", '{"through": "x", "through_hash": 1, "removed": "y"}', "[1]", "not json"])
def test_an_edited_checkpoint_is_reported_as_corrupt_not_a_traceback(root, capsys, data):
    compacted(root)  # its checkpoint is entry 41
    with Coordinator.open(root, retention=MANUAL) as coord:
        for i in range(20):
            coord.write("a.txt", f"{i}", holder="h")
    sql(root, "UPDATE journal SET data = ? WHERE kind = 'journal.checkpoint'", (data,))
    before = seqs(root)
    for dry_run in ([], ["--dry-run"]):
        assert main(["journal", "compact", "--root", str(root), "--keep", "3", *dry_run]) == 1
        said = capsys.readouterr().err
        assert "journal CORRUPT: journal entry 41 cannot be read" in said and "Traceback" not in said
    assert seqs(root) == before
    # The automatic steps meet it too: logged and skipped, never raised into the write that ran one.
    with Coordinator.open(root, retention=Retention(every=1, journal_entries=3)) as coord:
        coord.backend._maintenance_countdown = 1  # the step runs at the next transaction, not up to 200 later
        for i in range(5):
            coord.write("a.txt", f"again {i}", holder="h")
    assert seqs(root) == before + list(range(before[-1] + 1, before[-1] + 6))


def edit_cursors(root) -> None:
    """Overwrite the row cursors of the retention sweeps (not the channel-name one) with nonsense."""
    for table in ("leases", "dedup", "effects", "workers", "assignments"):
        sql(root, "UPDATE meta SET value = 'x' WHERE name = ?", (f"retention.cursor.{table}",))


def test_an_edited_retention_cursor_starts_the_sweep_over(root, capsys):
    with Coordinator.open(root, retention=Retention(every=0, batch=2)) as coord:
        for i in range(6):
            coord.release(coord.acquire(f"k{i}.txt", "h"))
        coord.compact(steps=1)  # stops at its batch: the cursors hold where it stopped
    edit_cursors(root)
    assert main(["journal", "compact", "--root", str(root)]) == 0, capsys.readouterr().err
    with Coordinator.open(root, retention=Retention(every=1, batch=2)) as coord:
        edit_cursors(root)
        coord.backend._maintenance_countdown = 1  # the step runs at the next transaction, not up to 200 later
        coord.write("a.txt", b"still written", holder="h")
        assert coord.read("a.txt").data == b"still written"


@pytest.mark.parametrize("stored", ['{"journal_days": 1, "shiny_new_setting": 2}', "not json", "[1]"])
def test_a_stored_policy_that_cannot_be_read_stops_retention_not_the_writes(root, capsys, stored):
    with Coordinator.open(root, retention=Retention(every=1)) as coord:
        coord.write("a.txt", b"one", holder="h")
    sql(root, "UPDATE meta SET value = ? WHERE name = 'retention'", (stored,))
    before = seqs(root)
    for dry_run in ([], ["--dry-run"]):
        assert main(["journal", "compact", "--root", str(root), *dry_run]) == 2
        said = capsys.readouterr().err
        assert "BackendUnavailable: the retention policy stored in" in said and "recover:" in said
        assert "Traceback" not in said
    assert seqs(root) == before
    with Coordinator.open(root) as coord:
        coord.backend._maintenance_countdown = 1  # the step runs at the next transaction, not up to 200 later
        coord.write("a.txt", b"two", holder="h")
        assert coord.read("a.txt").data == b"two"


def test_an_unexpected_error_in_a_step_is_logged_and_never_fails_the_write(root, caplog, monkeypatch):
    # Only typed and driver errors were caught: anything else a step met (data edited into a
    # shape no check foresaw) came out of the user's write, which had nothing to do with it.
    with Coordinator.open(root, retention=Retention(every=1)) as coord:
        def broken_step(policy):
            raise KeyError("checkpoint")

        monkeypatch.setattr(coord.backend, "scheduled_step", broken_step)
        coord.backend._maintenance_countdown = 1  # the step runs at the next transaction
        with caplog.at_level("ERROR", logger="agent_coherence.retention"):
            coord.write("a.txt", b"written", holder="h")
        assert coord.read("a.txt").data == b"written"
    assert "retention step failed, skipped: KeyError" in caplog.text


@pytest.mark.sqlite_only("PostgreSQL casts the floor in SQL: a driver error, typed by the backend")
def test_an_edited_fence_floor_is_a_damaged_database_not_a_value_error(root):
    from agent_coherence import BackendUnavailable

    with Coordinator.open(root, retention=MANUAL) as coord:
        coord.release(coord.acquire("a.txt", "h", ttl=0.01))
        coord.compact(keep=0)
    sql(root, "INSERT OR REPLACE INTO meta(name, value) VALUES ('fence_floor', 'x')")
    with Coordinator.open(root) as coord, pytest.raises(BackendUnavailable) as caught:
        coord.write("new.txt", b"1", holder="h")  # a new lease row starts above the floor
    assert caught.value.reason == "corrupt" and "fence_floor" in caught.value.message


def test_successive_compactions_chain_their_checkpoints(root):
    with Coordinator.open(root, retention=Retention(every=0, batch=7)) as coord:
        for round_ in range(4):
            for i in range(12):
                coord.write("a.txt", f"{round_}.{i}", holder="h")
            report = coord.compact(keep=10)
            assert report.journal > 0
            assert coord.journal.verify() == 11
        walk = coord.journal.walk()
        assert walk.first_seq - 1 == walk.removed


def test_each_step_is_bounded_by_its_batch(root):
    with Coordinator.open(root, retention=Retention(every=0, batch=10, journal_entries=5)) as coord:
        for i in range(60):
            coord.write("a.txt", f"{i}", holder="h")
        step = coord.backend.compact()
        assert step.journal == 10 and step.more
        total = coord.compact()  # the rest, step by step
        assert not total.more and coord.journal.verify() == 6  # the newest 5 and the last checkpoint
        # every entry up to the kept ones went, checkpoints of earlier steps included
        assert step.journal + total.journal == total.checkpoint_seq - 6


@pytest.mark.sqlite_only("checks SQLite's query plans (PostgreSQL's counts: test_postgres_backend.py)")
def test_status_counts_come_from_indexes(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        lease = coord.acquire("a.txt", "alice")
        for _ in range(3):
            with pytest.raises(Exception):
                coord.acquire("a.txt", "bob")
        coord.release(lease)
        assert coord.journal.count(kind="conflict.lease") == 3
    with db(root) as conn:
        plan = conn.execute(f"EXPLAIN QUERY PLAN SELECT count(*) FROM journal WHERE kind = ? AND {INDEXED_KINDS_SQL}",
                            ("conflict.lease",)).fetchall()
        assert "journal_by_kind" in str(plan)
        plan = conn.execute(f"EXPLAIN QUERY PLAN {JOURNAL_BOUNDS}").fetchall()
        assert "SCAN journal" not in str(plan) and "SEARCH journal" in str(plan)


# -- leases and fences ---------------------------------------------------------------------


def test_released_lease_rows_go_live_ones_and_pending_writes_stay(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        clock = use_fake_clock(coord)
        old = coord.acquire("old.txt", "alice")
        coord.write("old.txt", b"1", lease=old)
        coord.release(old)
        live = coord.acquire("live.txt", "bob", ttl=10 * DAY)
        pending = coord.backend.acquire_lease("pending.txt", "carol", 1.0)
        from agent_coherence.backends.records import WriteRequest

        coord.backend.begin_write(WriteRequest(  # an intent a dead writer left: recovery needs it
            key="pending.txt", holder="carol", fence=pending.fence, new_sha256="0" * 64, size=1,
            temp_path=str(root / "pending.txt.tmp"), host="h", pid=1, pid_start="x"))
        clock.advance(2 * DAY)
        report = coord.compact()
        assert report.leases == 1
        assert coord.backend.get_lease("live.txt") is not None
        kept = {r[0] for r in sql(root, "SELECT key FROM leases")}
        assert kept == {"live.txt", "pending.txt"}
        again = coord.acquire("old.txt", "alice")
        assert again.fence > old.fence  # the fence keeps growing after its row went
        with pytest.raises(LeaseLost):  # the old token is not valid again (no reused fence)
            coord.backend.check_fence("old.txt", "alice", old.fence)
        resolved = coord.recover()  # the dead writer's intent is still resolved after compaction
        assert [r.key for r in resolved] == ["pending.txt"] and coord.backend.list_intents() == []


def test_fences_never_repeat_across_many_prunes(root):
    with Coordinator.open(root, retention=Retention(every=0, lease_days=0)) as coord:
        clock = use_fake_clock(coord)
        fences = []
        for _ in range(5):
            lease = coord.acquire("k.txt", "same-holder")
            fences.append(lease.fence)
            coord.release(lease)
            clock.advance(1)
            assert coord.compact().leases == 1
        assert fences == sorted(set(fences)) and len(fences) == 5


# -- channels ------------------------------------------------------------------------------


def test_dedup_and_effect_rows_stay_inside_their_window_and_unacked_messages_stay(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        clock = use_fake_clock(coord)
        channel = coord.channel("jobs", dedup_ttl=100)
        first = channel.send({"n": 1}, key="job-1")
        channel.send({"n": 2})  # never received: must survive every compaction
        with channel.process("worker", effect_ttl=100) as delivery:
            assert delivery is not None
        clock.advance(50)
        assert coord.compact().dedup == 0 and rows(root, "effects") == 1
        assert channel.send({"n": 1}, key="job-1") == first  # still deduplicated
        clock.advance(60)
        report = coord.compact()
        assert (report.dedup, report.effects) == (1, 1)
        assert rows(root, "messages") >= 1
        received = channel.receive("worker")
        assert received is not None and received.payload == {"n": 2}
        assert channel.send({"n": 1}, key="job-1") != first  # the window passed: a new message


# -- liveness ------------------------------------------------------------------------------


def test_finished_assignments_and_ended_workers_go_open_ones_stay(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        clock = use_fake_clock(coord)
        live = coord.liveness
        live.start("done-worker")
        live.assign("t1", "done-worker")
        live.complete("t1")
        live.end("done-worker")
        live.start("busy-worker")
        live.assign("t2", "busy-worker")  # open
        live.end("busy-worker")  # ended, but its assignment is open
        clock.advance(8 * DAY)
        report = coord.compact()
        assert (report.assignments, report.workers) == (1, 1)
        assert [r[0] for r in sql(root, "SELECT task_id FROM assignments")] == ["t2"]
        assert [r[0] for r in sql(root, "SELECT worker FROM workers")] == ["busy-worker"]


# -- automatic steps, across processes -----------------------------------------------------


def _writer(root: str, name: str, count: int) -> None:
    with Coordinator.open(root) as coord:
        for i in range(count):
            coord.write(f"{name}-{i % 5}.txt", f"{name}{i}", holder=name)


def test_automatic_steps_keep_the_journal_bounded_across_processes(root):
    writes, workers, cap = 150, 3, 40
    with Coordinator.open(root, retention=Retention(journal_entries=cap, every=5, batch=20)):
        pass
    procs = [FORK.Process(target=_writer, args=(str(root), f"w{n}", writes)) for n in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    with Coordinator.open(root) as coord:
        kept = coord.journal.verify()
        walk = coord.journal.walk()
        assert walk.removed > 0 and kept <= cap + 40  # bounded: steps trail the writers by < a batch
        assert walk.removed + kept >= writes * workers  # every write was journaled before removal
        versions = {v.key: v.version for v in coord.backend.list_versions(100)}
        assert sum(versions.values()) == writes * workers  # no write lost


def test_without_retention_the_same_load_keeps_everything(root):
    with Coordinator.open(root, retention=Retention.keep_everything()) as coord:
        for i in range(60):
            coord.write(f"a{i % 5}.txt", f"{i}", holder="h")
        assert coord.journal.verify() == 60 and coord.journal.walk().removed == 0


# -- the command ---------------------------------------------------------------------------


def test_journal_compact_command_dry_run_then_for_real(root, capsys):
    with Coordinator.open(root, retention=MANUAL) as coord:
        for i in range(30):
            coord.write("a.txt", f"{i}", holder="h")
    before = seqs(root)
    assert main(["journal", "compact", "--root", str(root), "--keep", "10", "--dry-run"]) == 0
    assert "would remove 20 entries" in capsys.readouterr().out
    assert seqs(root) == before
    assert main(["journal", "compact", "--root", str(root), "--keep", "10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["journal"] == 20 and report["checkpoint_seq"] == 31
    assert main(["journal", "compact", "--root", str(root), "--before", "1d"]) == 0
    assert "journal: nothing to remove" in capsys.readouterr().out
    assert main(["journal", "verify", "--root", str(root)]) == 0


@pytest.mark.parametrize("args", [["--keep", "-1"], ["--before", "yesterday"], ["--before=-3d"]])
def test_journal_compact_refuses_bad_input_and_changes_nothing(root, args, capsys):
    with Coordinator.open(root, retention=MANUAL) as coord:
        coord.write("a.txt", b"x", holder="h")
    before = seqs(root)
    assert main(["journal", "compact", "--root", str(root), *args]) == 2
    assert seqs(root) == before
    assert capsys.readouterr().err


def test_compact_on_an_empty_journal_and_genesis_head(root):
    with Coordinator.open(root, retention=MANUAL) as coord:
        assert coord.compact().removed == 0
        assert coord.journal.head() == GENESIS and coord.journal.tail() == []


# -- streaming verify ----------------------------------------------------------------------


def _peak(run) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_verify_streams_in_constant_memory(root, monkeypatch):
    from agent_coherence.backends import postgres_journal, sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "JOURNAL_PAGE", 100)
    monkeypatch.setattr(postgres_journal, "JOURNAL_PAGE", 100)
    peaks, loaded = {}, 0
    with Coordinator.open(root, retention=MANUAL) as coord:
        for size in (500, 4000):
            while coord.journal.count() < size:
                coord.journal.append("note", "k.txt", "h", text="x" * 200)
            assert coord.journal.verify() == size  # warm: the first call imports and caches
            peaks[size] = _peak(coord.journal.verify)
        loaded = _peak(lambda: list(coord.backend.journal_entries()))  # the naive way: all at once
    assert peaks[4000] < 1.3 * peaks[500], peaks  # flat in the journal's length
    assert loaded > 5 * peaks[4000], (loaded, peaks)  # what holding the journal would cost


# -- property: any interleaving of writes and compactions verifies -------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.integers(1, 8), st.tuples(st.integers(0, 12), st.integers(1, 6))), max_size=12))
def test_any_interleaving_of_writes_and_compactions_verifies(tmp_path_factory, plan):
    root = tmp_path_factory.mktemp("prop")
    server = os.environ.get("AGENT_COHERENCE_URL")
    url = None
    if server:  # a fresh single-chain schema for each example
        url = schema_url(split_url(server)[0], fresh_schema())
        PostgresBackend(url, journal_chains=1).close()
    try:
        _interleave(root, url, plan)
    finally:
        if url:
            drop_schema(split_url(url)[0], split_url(url)[1])


def _interleave(root, url: str | None, plan: list) -> None:
    total = 0
    with Coordinator.open(root, url=url, retention=MANUAL) as coord:
        for step in plan:
            if isinstance(step, int):  # that many writes
                for i in range(step):
                    coord.journal.append("note", "k", "h", n=total)
                    total += 1
            else:  # a compaction keeping `keep` entries, at most `batch` removed per step
                keep, batch = step
                coord.backend.compact(Retention(every=0, batch=batch), keep=keep)
        walk = coord.journal.walk()  # verifies
        kept = seqs(root, url)
        assert walk.count == len(kept) and walk.removed == (kept[0] - 1 if kept else 0)
        numbers = [e.data["n"] for e in coord.journal.history() if e.kind == "note"]
        assert numbers == list(range(total - len(numbers), total))  # the newest, oldest-first removal


# -- a crash during compaction -------------------------------------------------------------


def first_position(root, walk) -> int:
    """The first kept entry's place in its chain: its seq on SQLite; on PostgreSQL its chain
    position (a transaction killed after drawing a seq leaves a gap in the seqs, not in a chain)."""
    if os.environ.get("AGENT_COHERENCE_URL"):
        return sql(root, "SELECT min(pseq) FROM journal")[0][0]
    return walk.first_seq


def _compact_forever(root: str) -> None:
    with Coordinator.open(root) as coord:
        while True:
            coord.journal.append("note", "k", "h")
            coord.backend.compact(keep=50)


def test_kill_9_during_compaction_leaves_a_journal_that_verifies(root):
    import os
    import signal
    import time

    with Coordinator.open(root, retention=Retention(every=0, batch=3)) as coord:
        for _ in range(300):
            coord.journal.append("note", "k", "h")
    for delay in (0.15, 0.3, 0.45):
        proc = FORK.Process(target=_compact_forever, args=(str(root),))
        proc.start()
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        with Coordinator.open(root) as coord:
            walk = coord.journal.walk()
            assert walk.removed > 0 and first_position(root, walk) == walk.removed + 1
