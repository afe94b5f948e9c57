"""The hash-chained journal: an untampered journal verifies; editing, deleting, reordering or
inserting an entry directly in the database is detected by ``verify``."""

from __future__ import annotations

import json
import sqlite3

import pytest

from agent_coherence import Coordinator, JournalCorrupt, PathOutsideRoot
from agent_coherence.backends import default_database
from agent_coherence.journal import GENESIS, chain_hash, encode_data

COLUMNS = "ts, kind, key, holder, data, prev_hash, hash"


@pytest.fixture
def journaled(root):
    """A root with a journal of a dozen or so entries of several kinds."""
    with Coordinator.open(root) as coord:
        for i in range(6):
            coord.write("a.txt", f"a{i}", holder="alice")
        lease = coord.acquire("b.txt", "bob")
        coord.write("b.txt", b"b", lease=lease)
        coord.release(lease)
        coord.journal.append("note", "b.txt", "bob", text="handed over")
        coord.delete("a.txt", holder="alice")
        count = coord.journal.verify()
    assert count >= 10
    return root, count


def tamper(root, *statements: tuple[str, tuple]) -> None:
    """Change the database the way someone with write access could, outside the layer."""
    with sqlite3.connect(default_database(str(root))) as conn:
        for sql, params in statements:
            conn.execute(sql, params)


def verify(root) -> int:
    with Coordinator.open(root) as coord:
        return coord.journal.verify()


def row(root, seq: int) -> tuple:
    with sqlite3.connect(default_database(str(root))) as conn:
        return conn.execute(f"SELECT {COLUMNS} FROM journal WHERE seq = ?", (seq,)).fetchone()


def test_untampered_journal_verifies(journaled):
    root, count = journaled
    assert verify(root) == count
    with Coordinator.open(root) as coord:
        events = coord.journal.history()
        assert [e.seq for e in events] == list(range(1, count + 1))
        assert coord.journal.head() == events[-1].hash
        assert [e.kind for e in coord.journal.tail(2)] == [events[-2].kind, events[-1].kind]


@pytest.mark.parametrize("field,value", [
    ("data", json.dumps({"fence": 1, "sha256": "0" * 64, "size": 2, "version": 2}, separators=(",", ":"))),
    ("holder", "mallory"),
    ("kind", "write.failed"),
    ("key", "other.txt"),
    ("ts", 1.0),
])
def test_an_edited_entry_is_detected(journaled, field, value):
    root, _ = journaled
    tamper(root, (f"UPDATE journal SET {field} = ? WHERE seq = 5", (value,)))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert (caught.value.seq, caught.value.reason) == (5, "hash mismatch")


def test_an_edit_with_its_own_hash_recomputed_breaks_the_next_link(journaled):
    root, _ = journaled
    ts, kind, key, holder, data, prev, _ = row(root, 5)
    forged_data = encode_data({**json.loads(data), "holder_note": "forged"})
    forged_hash = chain_hash(prev, 5, ts, kind, key, holder, forged_data)
    tamper(root, ("UPDATE journal SET data = ?, hash = ? WHERE seq = 5", (forged_data, forged_hash)))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert (caught.value.seq, caught.value.reason) == (6, "broken link")


def test_a_deleted_entry_is_detected(journaled):
    root, _ = journaled
    tamper(root, ("DELETE FROM journal WHERE seq = 4", ()))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert (caught.value.seq, caught.value.reason) == (4, "gap")


def test_the_recovery_hint_names_the_first_bad_entry(journaled):
    root, _ = journaled
    tamper(root, ("UPDATE journal SET holder = 'mallory' WHERE seq = 5", ()))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert "from entry 5 on as untrusted" in caught.value.recover  # the CLI prints it as it is


def test_a_deleted_first_entry_is_detected(journaled):
    root, _ = journaled
    tamper(root, ("DELETE FROM journal WHERE seq = 1", ()))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert caught.value.seq == 1


def test_a_deleted_and_renumbered_entry_is_detected(journaled):
    root, count = journaled
    tamper(root, ("DELETE FROM journal WHERE seq = 4", ()),
           ("UPDATE journal SET seq = seq - 1 WHERE seq > 4", ()))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert (caught.value.seq, caught.value.reason) == (4, "broken link")


def test_two_swapped_entries_are_detected(journaled):
    root, _ = journaled
    three, six = row(root, 3), row(root, 6)
    update = f"UPDATE journal SET ({COLUMNS}) = (?, ?, ?, ?, ?, ?, ?) WHERE seq = ?"
    tamper(root, (update, (*six, 3)), (update, (*three, 6)))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert caught.value.seq == 3


def test_adjacent_swapped_entries_are_detected(journaled):
    root, _ = journaled
    seven, eight = row(root, 7), row(root, 8)
    update = f"UPDATE journal SET ({COLUMNS}) = (?, ?, ?, ?, ?, ?, ?) WHERE seq = ?"
    tamper(root, (update, (*eight, 7)), (update, (*seven, 8)))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert caught.value.seq == 7


def test_a_forged_entry_inserted_in_the_middle_is_detected(journaled):
    root, _ = journaled
    ts, _, _, _, _, prev, _ = row(root, 5)
    data = encode_data({"version": 9, "sha256": "f" * 64, "size": 1, "fence": 1})
    forged = chain_hash(prev, 5, ts, "write", "a.txt", "mallory", data)  # links correctly to entry 4
    tamper(root,
           ("UPDATE journal SET seq = -seq WHERE seq >= 5", ()),  # shift without PK collisions
           ("UPDATE journal SET seq = -seq + 1 WHERE seq < 0", ()),
           ("INSERT INTO journal(seq, ts, kind, key, holder, data, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
            (5, ts, "write", "a.txt", "mallory", data, prev, forged)))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert (caught.value.seq, caught.value.reason) == (6, "broken link")


def test_a_forged_entry_appended_with_a_bad_hash_is_detected(journaled):
    root, count = journaled
    _, _, _, _, _, _, head = row(root, count)
    tamper(root, ("INSERT INTO journal(seq, ts, kind, key, holder, data, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
                  (count + 1, 2e9, "write", "a.txt", "mallory", "{}", head, "0" * 64)))
    with pytest.raises(JournalCorrupt) as caught:
        verify(root)
    assert (caught.value.seq, caught.value.reason) == (count + 1, "hash mismatch")


def test_entries_appended_after_tampering_do_not_hide_it(journaled):
    root, _ = journaled
    tamper(root, ("UPDATE journal SET holder = 'mallory' WHERE seq = 2", ()))
    with Coordinator.open(root) as coord:
        coord.write("c.txt", b"later", holder="carol")
        with pytest.raises(JournalCorrupt) as caught:
            coord.journal.verify()
    assert caught.value.seq == 2


def test_a_dropped_tail_is_caught_only_against_an_anchor(journaled):
    """The documented limit: removing the newest entries leaves a valid chain; the head hash,
    kept elsewhere, is what shows it."""
    root, count = journaled
    with Coordinator.open(root) as coord:
        anchor = coord.journal.head()
    tamper(root, ("DELETE FROM journal WHERE seq = ?", (count,)))
    assert verify(root) == count - 1
    with Coordinator.open(root) as coord:
        assert coord.journal.head() != anchor


def test_an_empty_journal_verifies(tmp_path):
    with Coordinator.open(tmp_path) as coord:
        assert coord.journal.verify() == 0
        assert coord.journal.head() == GENESIS


@pytest.mark.parametrize("kind", ["write", "delete", "lease.acquire", "journal.checkpoint", "conflict.version",
                                  "recover.forward", "write.failed", "message.ack"])
def test_an_application_entry_cannot_take_a_kind_the_layer_records(coord, kind):
    # a forged "write" would answer "did the work happen?" falsely; a forged checkpoint is what
    # verification trusts as the start of the kept record
    coord.write("a.txt", b"1", holder="p")
    before = coord.journal.verify()
    with pytest.raises(ValueError, match="records itself"):
        coord.journal.append(kind, "a.txt", "mallory", version=7)
    assert coord.journal.verify() == before
    assert [e.holder for e in coord.journal.history("a.txt")] == ["p"]


@pytest.mark.parametrize("kind,key,holder,error", [
    ("", None, None, ValueError), ("  ", None, None, ValueError), (5, None, None, TypeError),
    (None, None, None, TypeError), ("note", 5, None, TypeError), ("note", None, b"h", TypeError),
])
def test_an_application_entry_with_a_malformed_field_is_refused(coord, kind, key, holder, error):
    with pytest.raises(error):
        coord.journal.append(kind, key, holder)
    assert coord.journal.count() == 0


def test_application_kinds_that_only_resemble_the_layers_are_accepted(coord):
    for kind in ("handoff", "note", "writeup", "app.write", "leases-reviewed"):
        coord.journal.append(kind, None, "app")
    assert coord.journal.count() == 5 and coord.journal.verify() == 5


def test_history_and_count_match_a_file_key_in_any_spelling_the_layer_accepts(coord, root):
    # an empty history for "./plans//plan.md" would read as "never written"
    coord.write("plans/plan.md", b"1", holder="p")
    coord.write("plans/plan.md", b"2", holder="p")
    for spelling in ("plans/plan.md", "./plans//plan.md", str(root / "plans" / "plan.md"),
                     root / "plans" / "plan.md", "plans/../plans/plan.md"):
        assert [e.data["version"] for e in coord.journal.history(spelling)] == [1, 2], spelling
        assert coord.journal.count(kind="write", key=spelling) == 2, spelling
    # keys no file can have are looked up as given, not refused
    assert coord.journal.history("plans") == [] and coord.journal.history("../outside") == []
    coord.journal.append("note", "store:notes/a", "p")
    assert len(coord.journal.history("store:notes/a")) == 1
    with pytest.raises(PathOutsideRoot):  # not a key: refused, not read as "every entry"
        coord.journal.history(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("anchor,error", [(5, TypeError), ("abc", ValueError), ("z" * 64, ValueError)])
def test_a_malformed_anchor_is_refused_not_reported_as_a_cut_journal(coord, anchor, error):
    # "entries were cut from its end" for a typo or a 12-digit prefix is a false alarm of tampering
    coord.write("a.txt", b"1", holder="p")
    with pytest.raises(error, match="anchor"):
        coord.journal.verify(anchor=anchor)
    with pytest.raises(ValueError, match="64-digit"):
        coord.journal.verify(anchor=coord.journal.head()[:12])
    assert coord.journal.verify(anchor=coord.journal.head().upper()) == 1
    with pytest.raises(JournalCorrupt):
        coord.journal.verify(anchor="1" * 64)  # well formed, not in the chain: still corruption


def test_the_cli_refuses_a_malformed_anchor_as_a_usage_error(coord, root, capsys):
    from agent_coherence.cli import main

    coord.write("a.txt", b"1", holder="p")
    assert main(["journal", "verify", "--root", str(root), "--anchor", coord.journal.head()[:12]]) == 2
    assert "64-digit" in capsys.readouterr().err


@pytest.mark.parametrize("call,error", [
    (lambda j: j.tail(2.5), TypeError), (lambda j: j.tail("5"), TypeError), (lambda j: j.tail(-1), ValueError),
    (lambda j: j.history(limit=1.5), TypeError), (lambda j: j.history(limit=-1), ValueError),
    (lambda j: j.count(kind=5), TypeError),
])
def test_journal_reads_refuse_malformed_arguments_without_blaming_the_database(coord, call, error):
    # a float count reached SQLite as "datatype mismatch": a BackendUnavailable telling the user
    # to check the disk and permissions
    coord.write("a.txt", b"1", holder="p")
    with pytest.raises(error):
        call(coord.journal)


@pytest.mark.parametrize("column,value", [("ts", "yesterday"), ("kind", b"write.failed"), ("holder", b"h")])
@pytest.mark.parametrize("command", [["journal", "show"], ["journal", "show", "--json"], ["status"]])
def test_the_cli_reports_an_entry_edited_to_a_wrong_type_as_unreadable(journaled, capsys, column, value, command):
    from agent_coherence.cli import main

    root, _ = journaled
    # write.failed: status lists it among the recent problems
    tamper(root, ("UPDATE journal SET kind = 'write.failed' WHERE seq = 5", ()),
           (f"UPDATE journal SET {column} = ? WHERE seq = 5", (value,)))
    if command == ["status"] and column == "kind":
        assert main([*command, "--root", str(root)]) == 0  # not a problem kind: status does not show it
        return
    # formatting it would raise TypeError; status shows the rest of its report and fails as a check
    assert main([*command, "--root", str(root)]) == (1 if command == ["status"] else 2)
    out, said = capsys.readouterr()
    assert "JournalCorrupt: journal entry 5 cannot be read" in said and "recover: treat the record from entry 5 on" in said
    if command == ["status"]:
        assert "Live leases (" in out and "Recent versions (" in out
        assert "CORRUPT: journal entry 5 cannot be read" in out and "not shown" in out


def test_status_with_an_unreadable_recent_entry_still_shows_the_leases(journaled, capsys):
    # One damaged entry among the last thousand made the whole status an error (exit 2): the
    # leases and pending writes an operator needs after a crash could not be seen at all.
    import json

    from agent_coherence.cli import main

    root, _ = journaled
    with Coordinator.open(root) as coord:
        coord.acquire("held.txt", "worker-1", ttl=600)
    tamper(root, ("UPDATE journal SET data = 'not json' WHERE seq = 5", ()))
    assert main(["status", "--root", str(root), "--json"]) == 1
    out, said = capsys.readouterr()
    report = json.loads(out)
    assert [lease["key"] for lease in report["leases"]] == ["held.txt"] and report["problems"] == []
    assert report["journal"]["error"]["seq"] == 5 and report["journal"]["error"]["error"] == "JournalCorrupt"
    assert "JournalCorrupt: journal entry 5" in said and "Traceback" not in said
