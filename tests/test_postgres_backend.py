"""What only the PostgreSQL backend has: partitioned journal chains (and their tamper checks, also
after each chain's compaction), retention beside writers on several hosts, the schema's start-up,
version guard and migrations, the server's clock, typed refusals, the light import path.

Everything backend-neutral runs in the contract modules (``pytestmark = pytest.mark.contract``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid

import psycopg
import pytest

from agent_coherence import BackendUnavailable, Coordinator, JournalCorrupt, Retention
from agent_coherence.backends.postgres import SCHEMA_VERSION, PostgresBackend, split_url
from agent_coherence.journal import chain_hash, encode_data

from conftest import FORK


def execute(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Change the schema the way someone with write access could, outside the layer."""
    conninfo, schema = split_url(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cursor = conn.execute(sql.replace("@", f'"{schema}".'), params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def journaled(root, pg_url):
    """A schema whose journal has entries of several kinds spread over several chains."""
    with Coordinator.open(root, url=pg_url) as coord:
        for i in range(4):
            coord.write(f"f{i}.txt", f"v{i}", holder=f"agent-{i % 3}")
        for i in range(44):  # enough entries that chains hold several (64 chains, picked at random)
            coord.journal.append("note", f"f{i % 4}.txt", f"agent-{i % 3}", n=i)
        lease = coord.acquire("b.txt", "bob")
        coord.release(lease)
        coord.journal.append("note", "b.txt", "bob", text="handed over")
        count = coord.journal.verify()
    chains = execute(pg_url, "SELECT part, count(*) FROM @journal GROUP BY part HAVING count(*) >= 2 ORDER BY 2 DESC")
    assert count >= 51 and chains, "the fixture needs a chain with two entries"
    return pg_url, count, chains[0][0]


def verify(url: str) -> int:
    return PostgresBackend(url).journal_verify().count


def chain(url: str, part: int) -> list[tuple]:
    return execute(url, "SELECT seq, pseq, ts, kind, key, holder, data, prev_hash, hash FROM @journal "
                        "WHERE part = %s ORDER BY pseq", (part,))


def test_untampered_chains_verify_and_come_out_in_one_order(journaled, root):
    url, count, _ = journaled
    assert verify(url) == count
    with Coordinator.open(root, url=url) as coord:
        seqs = [e.seq for e in coord.journal.history()]
        assert seqs == sorted(seqs) and len(seqs) == count
        assert [e.seq for e in coord.journal.tail(3)] == seqs[-3:]
        assert coord.journal.head() == coord.journal.history()[-1].hash
    parts = execute(url, "SELECT count(DISTINCT part) FROM @journal")[0][0]
    assert parts > 1  # the entries really are spread over several chains


def test_an_edited_entry_is_detected(journaled):
    url, _, part = journaled
    seq = chain(url, part)[0][0]
    execute(url, "UPDATE @journal SET data = %s WHERE seq = %s", (json.dumps({"version": 999}), seq))
    with pytest.raises(JournalCorrupt) as caught:
        verify(url)
    assert caught.value.seq == seq and caught.value.reason == "hash mismatch"


def test_the_hash_covers_the_data_exactly_as_stored(journaled):
    url, _, part = journaled
    seq, data = execute(url, "SELECT seq, data FROM @journal WHERE part = %s ORDER BY pseq LIMIT 1", (part,))[0]
    respaced = json.dumps(json.loads(data))  # the same JSON value, other text: not what was hashed
    assert respaced != data
    execute(url, "UPDATE @journal SET data = %s WHERE seq = %s", (respaced, seq))
    with pytest.raises(JournalCorrupt) as caught:
        verify(url)
    assert caught.value.seq == seq and caught.value.reason == "hash mismatch"
    execute(url, "UPDATE @journal SET data = %s WHERE seq = %s", ("{not json", seq))
    with pytest.raises(JournalCorrupt) as caught:
        verify(url)
    assert caught.value.seq == seq and caught.value.reason == "unreadable"


def test_a_deleted_entry_is_detected(journaled):
    url, _, part = journaled
    first = chain(url, part)[0][0]
    execute(url, "DELETE FROM @journal WHERE seq = %s", (first,))
    with pytest.raises(JournalCorrupt) as caught:
        verify(url)
    assert caught.value.reason == "gap"


def test_entries_removed_from_a_chains_end_are_detected_by_its_head(journaled):
    url, _, part = journaled
    last = chain(url, part)[-1][0]
    execute(url, "DELETE FROM @journal WHERE seq = %s", (last,))
    with pytest.raises(JournalCorrupt) as caught:
        verify(url)
    assert caught.value.reason == "head mismatch"


def test_an_inserted_entry_with_a_recomputed_hash_is_detected(journaled):
    url, _, part = journaled
    rows = chain(url, part)
    first = rows[0]
    # A forged entry placed right after the first, hashed correctly against it: the next entry's
    # link no longer matches.
    data = encode_data({"forged": True})
    forged = chain_hash(first[8], first[0] + 1000000, first[2], "write", "x", "mallory", data)
    execute(url, "UPDATE @journal SET pseq = -pseq - 1 WHERE part = %s AND pseq > 1", (part,))  # make room
    execute(url, "UPDATE @journal SET pseq = -pseq WHERE part = %s AND pseq < 0", (part,))
    execute(url, "INSERT INTO @journal(seq, part, pseq, ts, kind, key, holder, data, prev_hash, hash) "
                 "VALUES (%s, %s, 2, %s, 'write', 'x', 'mallory', %s, %s, %s)",
            (first[0] + 1000000, part, first[2], data, first[8], forged))
    with pytest.raises(JournalCorrupt) as caught:
        verify(url)
    assert caught.value.reason in ("broken link", "head mismatch")


def test_reordered_entries_are_detected(journaled):
    url, _, part = journaled
    rows = chain(url, part)
    a, b = rows[0], rows[1]
    execute(url, "UPDATE @journal SET pseq = -1 WHERE seq = %s", (a[0],))
    execute(url, "UPDATE @journal SET pseq = %s WHERE seq = %s", (a[1], b[0]))
    execute(url, "UPDATE @journal SET pseq = %s WHERE seq = %s", (b[1], a[0]))
    with pytest.raises(JournalCorrupt) as caught:
        verify(url)
    assert caught.value.reason == "broken link"


def test_a_changed_global_sequence_number_is_detected(journaled):
    url, _, part = journaled
    seq = chain(url, part)[0][0]
    execute(url, "UPDATE @journal SET seq = seq + 1000000 WHERE seq = %s", (seq,))
    with pytest.raises(JournalCorrupt):
        verify(url)


def _journaled_writes(url: str, root: str, worker: int, count: int) -> None:
    with Coordinator.open(root, url=url) as coord:
        for i in range(count):
            coord.write(f"w{worker}-{i}.txt", b"x", holder=f"w{worker}")


def test_concurrent_writers_on_distinct_keys_leave_verifiable_chains(root, pg_url):
    Coordinator.open(root, url=pg_url).close()
    procs = [FORK.Process(target=_journaled_writes, args=(pg_url, str(root), w, 25)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    backend = PostgresBackend(pg_url)
    assert backend.journal_count(kind="write") == 100
    assert backend.journal_verify().count == backend.journal_count()


# -- schema ---------------------------------------------------------------------------------


def test_many_clients_creating_the_schema_at_once_all_succeed(pg_url):
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            PostgresBackend(pg_url).close()
        except BaseException as error:  # report it to the test
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert execute(pg_url, "SELECT count(*) FROM @journal_heads")[0][0] == 64


def test_a_schema_written_by_a_newer_release_is_refused(root, pg_url):
    PostgresBackend(pg_url).close()
    execute(pg_url, "UPDATE @meta SET value = %s WHERE name = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(BackendUnavailable) as caught:
        Coordinator.open(root, url=pg_url)
    assert "newer release" in str(caught.value) and caught.value.recover


@pytest.mark.parametrize("made_by_hand, said", [
    ("CREATE TABLE @meta (k int)", "holds no agent-coherence schema version"),
    ("CREATE TABLE @meta (name text PRIMARY KEY, value text NOT NULL)", "holds no agent-coherence schema version"),
    ("CREATE TABLE @meta (name text PRIMARY KEY, value text NOT NULL); "
     "INSERT INTO @meta VALUES ('schema_version', 'two')", "holds no agent-coherence schema version"),
    ("CREATE TABLE @leases (x int)", "did not create (leases)"),
])
def test_a_schema_made_by_hand_is_refused_by_name(root, pg_url, made_by_hand, said):
    """A schema holding tables of our names that agent-coherence did not make: they failed at some
    later statement ("column holder does not exist", a ValueError on the version) with the hint
    to check disk space."""
    schema = split_url(pg_url)[1]
    execute(pg_url, f'CREATE SCHEMA "{schema}"; {made_by_hand}')
    with pytest.raises(BackendUnavailable) as caught:
        Coordinator.open(root, url=pg_url)
    assert f"schema {schema!r} is not an agent-coherence schema" in str(caught.value) and said in str(caught.value)
    assert "schema=" in caught.value.recover


def test_a_nul_character_postgresql_cannot_store_is_refused_as_a_bad_argument(root, pg_url):
    """PostgreSQL text cannot hold NUL: a holder with one (which SQLite stored) and any other text
    argument with one were reported as the server being unavailable, with a hint about disk space."""
    with Coordinator.open(root, url=pg_url) as coord:
        with pytest.raises(ValueError, match="holder must not contain a NUL"):
            coord.acquire("f.txt", "agent\x00b")
        with pytest.raises(ValueError, match="cannot contain NUL"):
            coord.journal.append("note", "k\x00", "agent")
        with pytest.raises(ValueError, match="cannot contain NUL"):
            coord.backend.assign("task\x00", "worker", None, {})
        assert coord.acquire("f.txt", "agent").fence == 1  # the refused calls left nothing behind
        coord.journal.verify()


def _sessions(url: str) -> int:
    """Sessions on the server's database other than the one counting them."""
    return execute(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()")[0][0]


def test_a_refused_open_leaves_no_session_open(root, pg_url):
    """The backend closes the pool it opened when its schema is refused: without that, each
    refused open keeps its pool's sessions on the server for the life of the process."""
    import time

    PostgresBackend(pg_url).close()
    execute(pg_url, "UPDATE @meta SET value = %s WHERE name = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    time.sleep(0.2)
    before = _sessions(pg_url)
    for _ in range(3):
        with pytest.raises(BackendUnavailable):
            Coordinator.open(root, url=pg_url)
    time.sleep(0.5)  # a leaked pool fills itself in the background
    assert _sessions(pg_url) == before


def test_a_version_1_schema_gains_refs_and_channel_time(root, pg_url):
    PostgresBackend(pg_url).close()
    execute(pg_url, "DROP FUNCTION @ac_channel_now(); DROP TABLE @channel_clock; DROP TABLE @refs; "
                    "UPDATE @meta SET value = '1' WHERE name = 'schema_version'")
    with Coordinator.open(root, url=pg_url) as coord:
        coord.backend.set_ref("heads/t", "c1", expect=None, holder="run-a", kind="test.move", data={})
        channel = coord.channel("tasks")
        channel.send("x")
        delivery = channel.receive("c")
        assert delivery is not None and delivery.payload == "x"
        channel.ack(delivery)
        coord.journal.verify()
    assert execute(pg_url, "SELECT value FROM @meta WHERE name = 'schema_version'") == [(str(SCHEMA_VERSION),)]


# What schema 3 added, removed again: a schema as the previous release (schema 2) left it.
SCHEMA_2 = """
DROP TRIGGER messages_count_inserted ON @messages; DROP TRIGGER messages_count_deleted ON @messages;
DROP TRIGGER messages_count_acked ON @messages; DROP FUNCTION @count_inserted(); DROP FUNCTION @count_deleted();
DROP FUNCTION @count_acked(); DROP TABLE @channel_counts; DROP INDEX @messages_inflight; DROP INDEX @messages_due;
CREATE INDEX messages_deadline ON @messages(deadline) WHERE deadline IS NOT NULL;
DROP INDEX @journal_checkpoints; ALTER TABLE @journal_heads DROP COLUMN removed;
UPDATE @meta SET value = '2' WHERE name = 'schema_version';
"""


def test_a_version_2_schema_gains_counters_and_compaction(root, pg_url):
    from pg_channel_scan import PostgresScanReference

    with Coordinator.open(root, url=pg_url) as coord:
        ch = coord.channel("tasks")
        grouped = coord.channel("fan", retention=60)
        grouped.group("a"), grouped.group("b")
        ch.send_many(["a", "b", "c", "d"], deadline=0)
        grouped.send_many(["x", "y"])
        ch.ack(ch.receive("c"))
        grouped.group("a").ack(grouped.group("a").receive("c"))
        for i in range(120):
            coord.journal.append("note", "k", "h", n=i)
    execute(pg_url, SCHEMA_2)
    with Coordinator.open(root, url=pg_url) as coord:  # migrates: the counts are rebuilt from the messages
        backend = coord.backend
        scan = PostgresScanReference(backend)
        for name in ("tasks", "fan"):
            assert backend.channel_stats(name)["depth"] == scan.channel_stats(name)["depth"] > 0
        assert backend.channel_stats("tasks")["groups"][""]["overdue"] == 3
        ch = coord.channel("tasks")
        ch.ack(ch.receive("c"))  # and kept from now on, by the triggers
        assert backend.channel_stats("tasks")["ready"] == scan.channel_stats("tasks")["ready"] == 2
        before = coord.journal.count()
        report = coord.compact(keep=10)
        assert report.journal > 0 and coord.journal.count() < before
        assert coord.journal.verify() == coord.journal.count()
    assert execute(pg_url, "SELECT value FROM @meta WHERE name = 'schema_version'") == [(str(SCHEMA_VERSION),)]


def test_an_unreachable_server_is_a_typed_error(root):
    backend_url = "postgresql://postgres@127.0.0.1:1/postgres"
    with pytest.raises(BackendUnavailable):
        PostgresBackend(backend_url, retry_deadline=1.0)


# -- clock ----------------------------------------------------------------------------------


def test_expiry_is_judged_by_the_servers_clock_not_the_clients(root, pg_url, monkeypatch):
    import time

    coord = Coordinator.open(root, url=pg_url)
    lease = coord.acquire("a.txt", "alice", ttl=30)
    monkeypatch.setattr(time, "time", lambda: 4_000_000_000.0)  # a client clock far ahead
    other = Coordinator.open(root, url=pg_url)
    with pytest.raises(Exception) as caught:
        other.acquire("a.txt", "bob")
    assert type(caught.value).__name__ == "LeaseHeld"
    coord.backend.skew_clock(31)  # the server's clock passes the expiry
    assert other.acquire("a.txt", "bob").fence == lease.fence + 1


# -- import cost ----------------------------------------------------------------------------


def test_psycopg_stays_off_the_embedded_and_hook_paths(root):
    code = ("import sys, agent_coherence; from agent_coherence import Coordinator; "
            f"Coordinator.open({str(root)!r}).write('a.txt', b'x', holder='h'); "
            "import agent_coherence.adapters.claude_code.hook; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


# -- the Claude Code hook on this backend ----------------------------------------------------


def test_the_claude_code_hook_coordinates_sessions_through_postgresql(root, pg_url):
    from test_claude_hook import allowed, edit_payload, hook_env, reason, run_hook

    app = root / "src" / "app.py"
    app.parent.mkdir()
    app.write_text("hello")
    env = hook_env(root, AGENT_COHERENCE_URL=pg_url)
    assert allowed(run_hook(root, edit_payload("alice", root, app, "hello", "hi"), env))
    denied = run_hook(root, edit_payload("bob", root, app, "hello", "hey"), env)
    assert not allowed(denied) and "claude:alice" in reason(denied)
    lease = PostgresBackend(pg_url).get_lease("src/app.py")
    assert lease is not None and lease.holder == "claude:alice"
    assert not (root / ".agent-coherence").exists()  # nothing went to the embedded database


# -- outcomes of a commit that went unanswered ---------------------------------------------------


def lose_next_commit(backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch, committed: bool) -> dict[str, bool]:
    """The next COMMIT sent from this thread fails as a dropped connection does: after the server
    committed (``committed``) or before it could. Either way the client cannot tell which.

    ``backend`` stops its automatic retention steps first: one falling due (a random start, one in
    ``every`` transactions) would run before the operation under test and take the lost COMMIT
    itself, as a logged, skipped step."""
    backend.retention(Retention(every=0))
    original = psycopg.Connection.commit
    state = {"armed": True}
    caller = threading.current_thread()

    def commit(self: psycopg.Connection) -> None:
        if state["armed"] and threading.current_thread() is caller:
            state["armed"] = False
            if committed:
                original(self)
            self.close()  # an open transaction on a closed session is rolled back by the server
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        original(self)

    monkeypatch.setattr(psycopg.Connection, "commit", commit)
    return state


@pytest.mark.parametrize("pool_size", [4, 1], ids=["pool", "one-connection"])
@pytest.mark.parametrize("committed", [True, False], ids=["had-committed", "had-not"])
def test_an_unanswered_commit_is_checked_by_its_journal_row(pg_url, monkeypatch, committed, pool_size):
    backend = PostgresBackend(pg_url, pool_size=pool_size, retry_deadline=10)
    state = lose_next_commit(backend, monkeypatch, committed)
    lease = backend.acquire_lease("a.txt", "alice", 30)
    ids = [i for i, _ in backend.send_messages("jobs", [(b"1", "json", None, 0.0, None)])]
    assert not state["armed"]
    assert lease.fence == 1 and backend.journal_count(kind="lease.acquire") == 1  # granted once
    assert backend.acquire_lease("a.txt", "alice", 30).fence == 1
    assert backend.channel_stats("jobs")["depth"] == 1 and len(ids) == 1
    backend.journal_verify()


def test_an_unanswered_commit_is_not_taken_for_another_with_its_sequence_number(pg_url, monkeypatch):
    """A crash takes back the sequence numbers a transaction drew when its commit was lost (seen
    on this server: a nextval before ``stop -m immediate`` came again after the restart), so
    another host's entry can carry the lost one's seq. Checked by seq alone, the lost lease grant
    passed for done: the caller held a fence no lease row had."""
    backend = PostgresBackend(pg_url, retry_deadline=10)
    other = PostgresBackend(pg_url)
    backend.retention(Retention(every=0))
    backend.journal_append("note", "before", "alice", {})  # so the seq to take back is above 1
    original = psycopg.Connection.commit
    state = {"armed": True}

    def commit(self: psycopg.Connection) -> None:
        if state["armed"]:
            state["armed"] = False
            self.close()  # lost before the server committed
            # What the crash and another host do meanwhile: the seq comes again, and is used.
            drawn = execute(pg_url, "SELECT last_value FROM @journal_seq")[0][0]
            execute(pg_url, "SELECT setval(%s, %s)", (f'"{split_url(pg_url)[1]}".journal_seq', drawn - 1))
            assert other.journal_append("note", "elsewhere", "bob", {}).seq == drawn
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        original(self)

    monkeypatch.setattr(psycopg.Connection, "commit", commit)
    try:
        lease = backend.acquire_lease("a.txt", "alice", 30)
        assert not state["armed"]
        held = backend.get_lease("a.txt")
        assert held is not None and (held.holder, held.fence) == ("alice", lease.fence)
        assert backend.journal_count(kind="lease.acquire") == 1
    finally:
        backend.close()
        other.close()


@pytest.mark.parametrize("committed", [True, False], ids=["had-committed", "had-not"])
def test_an_unanswered_intent_is_checked_by_its_id(pg_url, monkeypatch, committed):
    from agent_coherence.backends.records import WriteRequest

    backend = PostgresBackend(pg_url)
    lose_next_commit(backend, monkeypatch, committed)
    intent = backend.begin_write(WriteRequest(key="a.txt", holder="alice", new_sha256="0" * 64, size=1,
                                              temp_path="/tmp/x", host="h", pid=1, pid_start="1"))
    assert backend.list_intents() == [intent]


def test_an_unanswered_commit_that_cannot_be_checked_is_reported_unknown(pg_url, monkeypatch):
    backend = PostgresBackend(pg_url)
    lose_next_commit(backend, monkeypatch, committed=True)
    with pytest.raises(BackendUnavailable) as caught:
        backend.skew_clock(5)  # no journal row, no check, not safe to repeat
    assert caught.value.facts["detail"] == "in doubt"
    assert backend.now() > 0  # the client carries on with a new session


def test_the_cli_reads_the_state_on_postgresql(root, pg_url):
    with Coordinator.open(root, url=pg_url) as coord:
        coord.write("a.txt", b"x", holder="alice")
        coord.acquire("b.txt", "bob")
    for args in (["--url", pg_url, "--root", str(root), "status", "--json"],
                 ["--url", pg_url, "--root", str(root), "journal", "verify"]):
        result = subprocess.run([sys.executable, "-m", "agent_coherence.cli", *args], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    status = json.loads(subprocess.run(
        [sys.executable, "-m", "agent_coherence.cli", "--url", pg_url, "--root", str(root), "status", "--json"],
        capture_output=True, text=True, timeout=60).stdout)
    assert "b.txt" in json.dumps(status) and "a.txt" in json.dumps(status)


# -- retention and compaction over 64 chains ------------------------------------------------


@pytest.fixture
def compacted(root, pg_url):
    """A schema whose 64 chains were compacted to the newest 40 entries (each chain keeps its
    newest entry and gains a checkpoint), then written on."""
    from agent_coherence.retention import Retention

    with Coordinator.open(root, url=pg_url, retention=Retention(every=0, batch=100)) as coord:
        for i in range(300):
            coord.journal.append("note", f"k{i % 7}", "h", n=i)
        report = coord.compact(keep=40)
        assert report.journal > 150 and not report.more
        for i in range(250):  # entries after the checkpoints
            coord.journal.append("note", f"k{i % 7}", "h", n=300 + i)
        walk = coord.journal.walk()
    rows = execute(pg_url, "SELECT count(*) FROM @journal")[0][0]
    appended = execute(pg_url, "SELECT sum(pseq) FROM @journal_heads")[0][0]  # every entry ever appended
    assert walk.count == rows and walk.removed == appended - rows
    assert rows <= 3 * 64 + 250  # per chain: its newest entry and at most two checkpoints, then the new ones
    return pg_url, walk


def _tail_chain(url: str) -> int:
    """The chain holding the newest entry."""
    return execute(url, "SELECT part FROM @journal ORDER BY seq DESC LIMIT 1")[0][0]


def test_each_compacted_chain_keeps_its_own_checkpoint(compacted):
    url, walk = compacted
    for part, pseq, head_hash, removed in execute(url, "SELECT part, pseq, hash, removed FROM @journal_heads"):
        entries = chain(url, part)
        if not removed:
            assert not entries or entries[0][1] == 1
            continue
        first = entries[0]
        checkpoint = json.loads([e for e in entries if e[3] == "journal.checkpoint"][-1][6])
        assert first[1] == checkpoint["through"] + 1 and first[7] == checkpoint["through_hash"]
        assert checkpoint["removed"] == removed and pseq - removed == len(entries)
        assert entries[-1][8] == head_hash
    backend = PostgresBackend(url)
    assert backend.journal_count() == walk.count  # from the head rows: lengths minus removed
    assert backend.journal_tail(1)[0].hash == walk.head
    compacted_chains = execute(url, "SELECT count(*) FROM @journal_heads WHERE removed > 0")[0][0]
    assert walk.compacted_chains == compacted_chains > 1


def test_journal_verify_reports_compaction_on_several_chains(compacted, root, capsys):
    url, walk = compacted
    from agent_coherence.cli import main

    assert main(["--url", url, "--root", str(root), "journal", "verify"]) == 0
    out = capsys.readouterr().out
    assert f"{walk.removed} earlier entries were compacted from {walk.compacted_chains} journal chains" in out
    assert "anchors the first kept entry" not in out  # no single checkpoint anchors them all


@pytest.mark.parametrize("damage", ["edit", "delete", "reorder", "delete_first", "drop_checkpoint"])
def test_damage_after_a_chains_checkpoint_is_detected(compacted, damage):
    url, _ = compacted
    part = execute(url, "SELECT part FROM @journal_heads WHERE removed > 0 AND pseq - removed >= 4 "
                        "ORDER BY part LIMIT 1")[0][0]
    entries = chain(url, part)  # (seq, pseq, ts, kind, key, holder, data, prev_hash, hash)
    seq_a, seq_b = entries[1][0], entries[2][0]
    if damage == "edit":
        execute(url, "UPDATE @journal SET holder = 'mallory' WHERE seq = %s", (seq_a,))
    elif damage == "delete":
        execute(url, "DELETE FROM @journal WHERE seq = %s", (seq_a,))
    elif damage == "reorder":  # swap two entries' contents, keeping their places
        for seq, other in ((seq_a, entries[2]), (seq_b, entries[1])):
            execute(url, "UPDATE @journal SET ts=%s, kind=%s, key=%s, holder=%s, data=%s, prev_hash=%s, hash=%s "
                         "WHERE seq = %s", (*other[2:], seq))
    elif damage == "delete_first":  # the chain's start removed without a checkpoint saying so
        execute(url, "DELETE FROM @journal WHERE seq = %s", (entries[0][0],))
    else:  # the checkpoint and what follows, with the head rewritten to match: the start is unexplained
        checkpoint_pseq = [e for e in entries if e[3] == "journal.checkpoint"][-1][1]
        execute(url, "DELETE FROM @journal WHERE part = %s AND pseq >= %s", (part, checkpoint_pseq))
        execute(url, "UPDATE @journal_heads h SET pseq = j.pseq, hash = j.hash FROM @journal j WHERE h.part = %s "
                     "AND j.part = h.part AND j.pseq = (SELECT max(pseq) FROM @journal WHERE part = %s)", (part, part))
    with pytest.raises(JournalCorrupt):
        verify(url)


def test_a_cut_tail_is_detected_against_an_anchor_after_compaction(compacted, root):
    url, walk = compacted
    anchor = walk.head  # Journal.head(): the newest entry, recorded elsewhere
    part = _tail_chain(url)
    execute(url, "DELETE FROM @journal WHERE part = %s AND pseq > (SELECT pseq - 1 FROM @journal_heads "
                 "WHERE part = %s)", (part, part))
    with pytest.raises(JournalCorrupt) as caught:
        verify(url)  # the head row still records the cut entry
    assert caught.value.facts["reason"] == "head mismatch"
    execute(url, "UPDATE @journal_heads h SET pseq = j.pseq, hash = j.hash FROM @journal j WHERE h.part = %s "
                 "AND j.part = h.part AND j.pseq = (SELECT max(pseq) FROM @journal WHERE part = %s)", (part, part))
    assert verify(url) == walk.count - 1  # head rewritten too: consistent without the anchor
    with pytest.raises(JournalCorrupt) as caught:
        PostgresBackend(url).journal_verify(anchor=anchor)
    assert caught.value.facts["reason"] == "anchor missing"


def test_old_checkpoints_at_the_front_of_busy_chains_do_not_stall_compaction(root, pg_url):
    from agent_coherence.retention import Retention

    PostgresBackend(pg_url, journal_chains=4).close()
    with Coordinator.open(root, url=pg_url, retention=Retention(every=0, batch=4)) as coord:
        for i in range(40):
            coord.journal.append("note", "k", "h", n=i)
        for _ in range(2):  # the chains end in checkpoints: the oldest entries are checkpoints
            coord.compact(keep=0)
        # At most one note per chain is left, before its chain's checkpoint: a chain of [note,
        # checkpoint] settles (taking the note would only replace it by another checkpoint). Which
        # chains end so depends on how the random chain choice spread the notes.
        left = [e for e in coord.journal.history() if e.kind != "journal.checkpoint"]
        assert {e.kind for e in left} <= {"note"} and len(left) <= 4, left
        for i in range(60):
            coord.journal.append("note", "k", "h", n=i)
        coord.compact(keep=10)  # steps of 4 entries, the first ones checkpoints only
        assert coord.journal.count() <= 10 + 2 * 4 and coord.journal.verify() == coord.journal.count()


def test_compaction_never_launders_an_edited_entry(root, pg_url):
    with Coordinator.open(root, url=pg_url) as coord:
        for i in range(100):
            coord.journal.append("note", "k", "h", n=i)
    # The oldest entry of the longest chain: the part of a chain compaction removes (a chain's
    # newest entry always stays, and entries land on chains at random).
    part = execute(pg_url, "SELECT part FROM @journal GROUP BY part ORDER BY count(*) DESC, part LIMIT 1")[0][0]
    oldest = execute(pg_url, "SELECT seq FROM @journal WHERE part = %s ORDER BY seq LIMIT 1", (part,))[0][0]
    execute(pg_url, "UPDATE @journal SET holder = 'mallory' WHERE seq = %s", (oldest,))
    before = execute(pg_url, "SELECT count(*) FROM @journal")
    with Coordinator.open(root, url=pg_url, recover=False) as coord:
        try:
            coord.compact(keep=5)
        except JournalCorrupt:
            assert execute(pg_url, "SELECT count(*) FROM @journal") == before  # nothing removed
        else:  # the edited entry was outside what compaction removes: it must still be there, and caught
            assert execute(pg_url, "SELECT holder FROM @journal WHERE seq = %s", (oldest,)) == [("mallory",)]
            with pytest.raises(JournalCorrupt):
                coord.journal.verify()


def test_automatic_steps_bound_the_journal_and_the_rows(root, pg_url, capsys):
    from agent_coherence.cli import main
    from agent_coherence.retention import Retention

    tight = Retention(journal_entries=20, lease_days=0, every=3, batch=50)
    with Coordinator.open(root, url=pg_url, retention=tight) as coord:
        for i in range(150):
            coord.write(f"f{i % 50}.txt", f"v{i}", holder="h")
        assert coord.backend.retention() == tight  # stored for every process
        walk = coord.journal.walk()
        assert walk.removed > 0 and walk.count < 150
        leases = execute(pg_url, "SELECT count(*) FROM @leases")[0][0]
        assert leases < 50  # released lease rows went (their fences are kept in the floor)
        assert int(execute(pg_url, "SELECT value FROM @meta WHERE name = 'fence_floor'")[0][0]) > 0
        dry = coord.compact(dry_run=True)
        assert dry.dry_run and dry.checkpoint_seq == 0
    capsys.readouterr()
    with Coordinator.open(root, url=pg_url) as coord:
        assert sum(v.version for v in coord.backend.list_versions(100)) == 150  # no write lost
        coord.backend.retention(Retention(every=0))  # from here on only on demand
        for i in range(200):
            coord.journal.append("note", "k", "h", n=i)
    import os

    os.environ["AGENT_COHERENCE_URL"] = pg_url
    try:
        assert main(["journal", "compact", "--root", str(root), "--keep", "1", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["journal"] > 0
        assert main(["journal", "verify", "--root", str(root)]) == 0
    finally:
        del os.environ["AGENT_COHERENCE_URL"]


def _lease_loop(url: str, host: str, rounds: int, out: str) -> None:
    import os

    os.environ["AGENT_COHERENCE_HOST"] = host
    granted = []
    with Coordinator.open(os.path.dirname(out), url=url) as coord:
        for i in range(rounds):
            key = f"k{i % 3}.txt"
            lease = coord.acquire(key, host, wait=30)
            coord.write(key, f"{host}{i}", lease=lease)
            granted.append([key, lease.fence])
            coord.release(lease)
    with open(out, "w") as handle:
        json.dump(granted, handle)


def _compact_loop(url: str, root: str, until: float) -> None:
    import time

    from agent_coherence.retention import Retention

    with Coordinator.open(root, url=url) as coord:
        while time.time() < until:
            coord.backend.compact(Retention(every=0, lease_days=0, journal_entries=10, batch=20))


def test_compaction_beside_writers_on_several_hosts_repeats_no_fence(root, pg_url):
    """Lease rows are removed as soon as they are released (lease_days=0) while writers on three
    hosts take the same keys again: every grant gets a new fence, no write is lost, and the
    journal, compacted by two processes at once, verifies. (With new lease rows starting at fence 1
    instead of above ``fence_floor``, one run granted 85 of the 120 (key, fence) pairs twice.)"""
    import time

    from agent_coherence.retention import Retention

    with Coordinator.open(root, url=pg_url, retention=Retention(every=0)):
        pass
    outs = [str(root / f"host{n}.json") for n in range(3)]
    until = time.time() + 60
    compactors = [FORK.Process(target=_compact_loop, args=(pg_url, str(root), until)) for _ in range(2)]
    writers = [FORK.Process(target=_lease_loop, args=(pg_url, f"host{n}", 40, outs[n])) for n in range(3)]
    for proc in compactors + writers:
        proc.start()
    for proc in writers:
        proc.join(60)
        assert proc.exitcode == 0
    for proc in compactors:
        proc.terminate()
        proc.join(10)
    granted = [tuple(g) for out in outs for g in json.load(open(out))]
    assert len(granted) == 120 and len(set(granted)) == 120  # no (key, fence) granted twice
    assert int(execute(pg_url, "SELECT value FROM @meta WHERE name = 'fence_floor'")[0][0]) > 3  # rows did go
    with Coordinator.open(root, url=pg_url) as coord:
        walk = coord.journal.walk()
        assert walk.removed > 0
        assert sum(v.version for v in coord.backend.list_versions(10)) == 120


def test_journal_count_and_tail_without_a_scan_agree_with_the_rows(pg_url, root):
    with Coordinator.open(root, url=pg_url) as coord:
        for i in range(12):
            coord.write(f"f{i % 4}.txt", f"v{i}", holder="h")
        backend = coord.backend
        with psycopg.connect(split_url(pg_url)[0]) as conn:
            schema = split_url(pg_url)[1]
            rows = conn.execute(f'SELECT seq, hash FROM "{schema}".journal ORDER BY seq').fetchall()
        assert backend.journal_count() == len(rows)  # from the chains' head rows
        tail = backend.journal_tail(3)
        assert [(r.seq, r.hash) for r in tail] == [tuple(r) for r in rows[-3:]]
        assert coord.journal.head() == rows[-1][1]
        assert coord.journal.walk(anchor=rows[-5][1]).count == len(rows)
        with pytest.raises(JournalCorrupt):
            coord.journal.verify(anchor="f" * 64)  # not in any chain


def test_an_assign_waits_for_a_running_retention_step(root, pg_url):
    """A step holds the schema's retention lock; an assign takes it shared before its row exists,
    so the step can't remove the worker of an assignment that is about to commit."""
    from agent_coherence.backends.postgres_retention import retention_lock_key

    conninfo, schema = split_url(pg_url)
    with Coordinator.open(root, url=pg_url) as coord:
        liveness = coord.liveness
        done = threading.Event()
        with psycopg.connect(conninfo) as step:  # a transaction standing in for a running step
            step.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (retention_lock_key(schema),))
            worker = threading.Thread(target=lambda: (liveness.assign("t1", "w1"), done.set()))
            worker.start()
            assert not done.wait(0.5), "the assign went ahead while a retention step held the lock"
            step.rollback()
        assert done.wait(10)
        worker.join()
        assert [a.task_id for a in coord.backend.list_assignments()] == ["t1"]


def test_a_refusal_on_a_connection_the_server_drops_stays_the_refusal(pg_url):
    """A transaction's work raises (a refusal such as LeaseHeld, here a stand-in) just as the
    server drops the connection: the rollback fails, and the caller still gets the work's own
    error, not the driver's; the next transaction runs on a fresh connection."""
    class Refused(Exception):
        pass

    conninfo, _ = split_url(pg_url)
    backend = PostgresBackend(pg_url)

    def work(tx):
        pid = tx.one("SELECT pg_backend_pid()")[0]
        with psycopg.connect(conninfo, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))
        raise Refused("the lease is held")

    try:
        with pytest.raises(Refused):
            backend.transaction(work)
        assert backend.read(lambda tx: tx.one("SELECT 1")) == (1,)
    finally:
        backend.close()


def test_a_server_wide_transaction_timeout_does_not_cut_a_long_transaction_short(pg_server):
    """A role (or server) with transaction_timeout set ended the session in the middle of any
    transaction that ran longer, a journal verify's snapshot of a big journal for one; retried, it
    was cut short again, until the deadline gave up. Each statement stays bounded by the
    session's own statement_timeout."""
    conninfo, _ = split_url(pg_server)
    role = f"tt_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT CREATE ON DATABASE postgres TO {role}")
        admin.execute(f"ALTER ROLE {role} SET transaction_timeout = '500ms'")
    url = pg_server.replace("postgres@", f"{role}@", 1) + f"?schema={role}"
    backend = PostgresBackend(url, retry_deadline=3.0)
    try:
        assert backend.transaction(lambda tx: tx.one("SELECT pg_sleep(1.0), 7")[1]) == 7
        assert backend.read(lambda tx: tx.one("SHOW statement_timeout")) == ("30s",)
    finally:
        backend.close()
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {role} CASCADE")
            admin.execute(f"REVOKE CREATE ON DATABASE postgres FROM {role}")
            admin.execute(f"DROP ROLE {role}")


def test_a_name_too_long_for_an_index_is_refused_as_a_value_not_an_unavailable_server(pg_url, root):
    """A key past what a btree entry holds (about 2.7 kB after compression; SQLite has no such
    limit) was a BackendUnavailable whose hint said to check the server and retry."""
    import random
    import string

    pick = random.Random(7)
    key = "/".join("".join(pick.choice(string.ascii_letters) for _ in range(250)) for _ in range(14))
    with Coordinator.open(root, url=pg_url) as coord:
        for call in (lambda: coord.acquire(key, "h"), lambda: coord.write(key, b"x", holder="h")):
            with pytest.raises(ValueError, match="cannot index a name this long"):
                call()
        assert coord.leases() == [] and coord.version(key) is None
        coord.write("short.txt", b"still fine", holder="h")
