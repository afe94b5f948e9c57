"""Opening the state: a database from a newer release, a damaged one, a state directory that is
a file; the state directory's own .gitignore; the package's logging; the CLI's progress line.
Each failure is a typed CoherenceError with a recover hint, and the CLI prints one message for
it (no traceback) and exits 2."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent_coherence import BackendUnavailable, CoherenceError, Coordinator
from agent_coherence.backends import default_database


def run_cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent_coherence.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


def digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def one_message(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "recover:" in result.stderr
    return result.stderr


def test_a_database_from_a_newer_release_is_refused_and_left_unchanged(root):
    Coordinator.open(root).close()
    path = default_database(str(root))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
        conn.execute("CREATE TABLE from_the_future (x)")
    conn.close()
    before = digest(path)
    with pytest.raises(BackendUnavailable) as caught:
        Coordinator.open(root)
    assert "created by a newer agent-coherence" in caught.value.message
    assert caught.value.reason == "newer" and "upgrade" in caught.value.recover
    assert caught.value.errno is None and caught.value.facts["errno"] is None  # a fact of every BackendUnavailable
    assert digest(path) == before
    assert not os.path.exists(path + "-wal") or os.path.getsize(path + "-wal") == 0
    assert "newer agent-coherence" in one_message(run_cli("status", "--root", str(root)))
    assert digest(path) == before


def test_a_damaged_database_is_a_typed_error_with_a_hint(root):
    state = root / ".agent-coherence"
    state.mkdir()
    (state / "state.db").write_bytes(b"this is not an SQLite database, it was overwritten" * 100)
    with pytest.raises(BackendUnavailable) as caught:
        Coordinator.open(root)
    assert caught.value.reason == "corrupt" and "move" in caught.value.recover
    for command in (["status"], ["journal", "verify"], ["journal", "show"], ["watch", "--once"]):
        err = one_message(run_cli(*command, "--root", str(root)))
        assert "damaged" in err and err.count("agent-coherence:") == 1


def test_a_state_directory_that_is_a_file_is_a_typed_error(root):
    (root / ".agent-coherence").write_text("not a directory")
    with pytest.raises(CoherenceError) as caught:
        Coordinator.open(root)
    assert isinstance(caught.value, BackendUnavailable) and "not a directory" in caught.value.message
    assert caught.value.errno is None and caught.value.facts["errno"] is None
    assert (root / ".agent-coherence").read_text() == "not a directory"
    assert "not a directory" in one_message(run_cli("watch", "--once", "--root", str(root)))


def test_a_database_that_stays_busy_is_a_typed_error_with_its_facts(root):
    coord = Coordinator.open(root)
    coord.backend.busy_deadline = 0.2  # stands for the 15 s default
    path = default_database(str(root))
    holder = sqlite3.connect(path)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(BackendUnavailable) as caught:
            coord.write("a.md", b"x", holder="h")
    finally:
        holder.rollback()
        holder.close()
    assert caught.value.reason == "busy" and caught.value.errno is None
    assert caught.value.path == path  # errors.py: reason and path, for the embedded backend
    assert coord.write("a.md", b"x", holder="h").version == 1
    coord.close()


def test_the_cli_reports_a_journal_it_cannot_read_as_corrupt(root):
    with Coordinator.open(root) as coord:
        coord.journal.append("note", "k", "h", text="x")
    with sqlite3.connect(default_database(str(root))) as conn:
        conn.execute("UPDATE journal SET data = '{broken' WHERE seq = 1")
    conn.close()
    result = run_cli("journal", "verify", "--root", str(root))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "journal CORRUPT" in result.stderr and "entry 1 cannot be read" in result.stderr


def test_the_state_directory_keeps_itself_out_of_git(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    with Coordinator.open(repo) as coord:
        coord.write("plan.md", b"plan", holder="planner")
    status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=all"], check=True,
                            capture_output=True, text=True).stdout
    assert status.splitlines() == ["?? plan.md"]  # state.db, its WAL and the .gitignore are not listed
    assert (repo / ".agent-coherence" / ".gitignore").read_text().splitlines()[-1] == "*"


def test_an_existing_state_directory_gets_its_gitignore_when_it_is_upgraded(root):
    Coordinator.open(root).close()
    gitignore = root / ".agent-coherence" / ".gitignore"
    gitignore.unlink()
    with sqlite3.connect(default_database(str(root))) as conn:  # as the previous release left it
        conn.execute("UPDATE meta SET value = '2' WHERE name = 'schema_version'")
    conn.close()
    Coordinator.open(root).close()
    assert gitignore.exists()


def test_the_package_logs_on_its_own_loggers(root, caplog):
    with caplog.at_level(logging.DEBUG, logger="agent_coherence"):
        with Coordinator.open(root) as coord:
            ch = coord.channel("tasks", max_attempts=1, visibility_timeout=0)
            ch.send("x")
            ch.receive("c")
            assert ch.receive("c") is None  # the second delivery attempt dead-letters it
            coord.journal.verify()
    seen = {(r.name, r.levelname) for r in caplog.records}
    assert ("agent_coherence.backends.sqlite", "INFO") in seen  # the database was created
    assert ("agent_coherence.channels", "WARNING") in seen  # a message went to the dead letters
    assert ("agent_coherence.journal", "INFO") in seen
    assert all(r.name.startswith("agent_coherence") for r in caplog.records)


def test_nothing_is_printed_by_default(root):
    code = (
        "import logging, sys\n"
        "from agent_coherence import Coordinator\n"
        f"coord = Coordinator.open({str(root)!r})\n"
        "ch = coord.channel('t', max_attempts=1, visibility_timeout=0)\n"
        "ch.send('x'); ch.receive('c'); ch.receive('c')\n"  # a WARNING record: dead-lettered
        "coord.backend.now = lambda: 1.0\n"
        "ch.send('y')\n"  # another: the clock stepped back
        "assert logging.getLogger('agent_coherence').handlers\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_on_a_terminal_only_once_the_work_is_long():
    from agent_coherence.progress import Progress

    now = [0.0]
    stream = Terminal()
    with Progress("verifying", 100, stream=stream, clock=lambda: now[0]) as progress:
        progress.update(10)
        assert stream.getvalue() == ""  # not yet a second
        now[0] = 1.5
        progress.update(50)
        assert stream.getvalue() == "\rverifying: 50/100 (50%)"
    assert stream.getvalue().endswith("\r")  # cleared at the end
    piped = io.StringIO()
    with Progress("verifying", 100, stream=piped, clock=lambda: now[0]) as progress:
        now[0] = 10.0
        progress.update(99)
    assert piped.getvalue() == ""
