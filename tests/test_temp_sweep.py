"""The sweep of leftover temp files (``Coordinator.sweep_temp_files``, ``agent-coherence recover``):
a dead writer's leftover goes (journalled), and nothing else does: not a live pid's file, not one an
intent names, not this process's claimed write, not a symlink, directory or FIFO with a temp name,
nothing under the state directory, nothing in a dry run; a live writer in another process writing
all the while never loses its temp file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent_coherence import Coordinator, recovery
from agent_coherence.backends.base import WriteRequest
from agent_coherence.temp_sweep import temp_pid

from conftest import dead_pid

pytestmark = pytest.mark.contract


def leftover(root: Path, key: str, pid: int, data: bytes = b"half a write") -> Path:
    """A temp file beside ``key`` as ``durable.temp_path_for`` names it for ``pid``."""
    target = root / key
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}.{pid}.{os.urandom(4).hex()}.ac-tmp"
    path.write_bytes(data)
    return path


def rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


@pytest.fixture
def live_pid():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield child.pid
    child.kill()
    child.wait()


@pytest.mark.sqlite_only("names only")
def test_names_parse_as_ours_only() -> None:
    assert temp_pid(".a.txt.123.deadbeef.ac-tmp") == 123
    assert temp_pid(".a.1.12345678.ac-tmp") == 1  # the write's form wins: its hex is not the pid
    assert temp_pid(".doctor.77.ac-tmp") == 77
    assert temp_pid(".xattr-probe.9.0badcafe.ac-tmp") == 9
    for name in ("a.txt.123.deadbeef.ac-tmp", ".a.txt.0.deadbeef.ac-tmp", ".a.txt.x1.ac-tmp", ".ac-tmp",
                 ".a.txt.123.deadbeef.ac-tmpx", "..ac-tmp", ".a.txt.012.deadbeef.ac-tmp"):
        assert temp_pid(name) is None, name


def test_a_dead_writers_leftover_is_removed_and_journalled(coord: Coordinator, root: Path) -> None:
    coord.write("d/a.txt", b"v1", holder="h")
    pid = dead_pid()
    path = leftover(root, "d/a.txt", pid)
    top = leftover(root, "b.txt", pid)
    swept = coord.sweep_temp_files()
    assert sorted(swept.removed) == sorted([rel(root, path), rel(root, top)])
    assert not path.exists() and not top.exists()
    assert (root / "d/a.txt").read_bytes() == b"v1"
    entries = [e for e in coord.backend.journal_tail(10) if e.kind == "recover.temp"]
    assert {e.data["path"] for e in entries} == {rel(root, path), rel(root, top)}
    assert all(e.data["pid"] == pid and e.data["size"] == len(b"half a write") for e in entries)
    coord.journal.verify()
    assert coord.sweep_temp_files().removed == []  # nothing left, nothing journalled twice


def test_a_live_pids_file_is_kept(coord: Coordinator, root: Path, live_pid: int) -> None:
    path = leftover(root, "a.txt", live_pid)
    own = leftover(root, "a.txt", os.getpid())
    swept = coord.sweep_temp_files()
    assert swept.removed == []
    assert dict(swept.kept) == {rel(root, path): f"pid {live_pid} is alive on this host",
                                rel(root, own): f"pid {os.getpid()} is alive on this host"}
    assert path.exists() and own.exists()


def test_a_file_an_intent_names_is_kept(coord: Coordinator, root: Path) -> None:
    # A writer on another host: its pid means nothing here (this one is dead on this host), and
    # its lease is live, so its write is still in flight.
    pid = dead_pid()
    path = leftover(root, "d/a.txt", pid)
    intent = coord.backend.begin_write(WriteRequest(
        key="d/a.txt", holder="remote", new_sha256="0" * 64, size=3, temp_path=f"/elsewhere/mnt/d/{path.name}",
        host="another-host", pid=pid, pid_start="1", fence=None, ttl=300.0, expect_version=None))
    assert not recovery.writer_is_dead(coord.backend, intent)
    swept = coord.sweep_temp_files()
    assert swept.removed == [] and dict(swept.kept) == {rel(root, path): "a pending write's (its intent names it)"}
    assert path.exists()
    coord.backend.abort_write(intent, "test", "done")  # resolved: now it is a leftover like any other
    assert coord.sweep_temp_files().removed == [rel(root, path)]


def test_this_process_claimed_write_is_kept_even_if_its_pid_looked_dead(
        coord: Coordinator, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = leftover(root, "a.txt", os.getpid())
    monkeypatch.setattr(recovery, "process_start", lambda pid: "")  # every pid judged dead
    with recovery.WriteClaim(str(path)):
        swept = coord.sweep_temp_files()
        assert swept.removed == [] and dict(swept.kept) == {rel(root, path): "this process is writing it"}
    assert path.exists()
    assert coord.sweep_temp_files().removed == [rel(root, path)]


def test_only_regular_files_with_our_names_are_touched(coord: Coordinator, root: Path, tmp_path: Path) -> None:
    pid = dead_pid()
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = leftover(outside, "x", pid)  # a temp-named file the sweep must not reach
    (root / "d").mkdir()
    link = root / "d" / f".a.txt.{pid}.deadbeef.ac-tmp"
    link.symlink_to(victim)
    linked_dir = root / "linked"
    linked_dir.symlink_to(outside)  # never entered
    directory = root / f".b.txt.{pid}.deadbeef.ac-tmp"
    directory.mkdir()
    inner = leftover(directory, "c", 1 << 22)  # inside a temp-named directory: its own name decides
    fifo = root / f".c.txt.{pid}.deadbeef.ac-tmp"
    os.mkfifo(fifo)
    state = leftover(root, ".agent-coherence/x", pid)
    not_ours = [root / f"a.txt.{pid}.deadbeef.ac-tmp", root / f".a.txt.{pid}.deadbeef.tmp"]
    for path in not_ours:
        path.write_bytes(b"user file")
    swept = coord.sweep_temp_files()
    assert swept.removed == [rel(root, inner)] and swept.failed == []
    assert link.is_symlink() and victim.exists() and linked_dir.is_symlink()
    assert directory.is_dir() and fifo.exists() and state.exists()
    assert all(path.exists() for path in not_ours)


def test_a_dry_run_changes_nothing(coord: Coordinator, root: Path) -> None:
    path = leftover(root, "a.txt", dead_pid())
    before = coord.backend.journal_count()
    swept = coord.sweep_temp_files(dry_run=True)
    assert swept.dry_run and swept.removed == [rel(root, path)]
    assert path.exists() and coord.backend.journal_count() == before


WRITER = textwrap.dedent("""
    import os, sys
    from agent_coherence import Coordinator, durable
    root, rounds = sys.argv[1], int(sys.argv[2])
    payload = os.urandom(1 << 20)
    with Coordinator.open(root) as coord:
        open(os.path.join(root, "ready"), "w").close()
        for n in range(rounds):
            # Odd rounds: named temp files from their first byte (as where O_TMPFILE is refused),
            # the widest window; even rounds: the bytes written ahead, named once the intent is.
            durable._unnamed_files = None if n % 2 == 0 else False
            coord.write("d/a.bin", payload + n.to_bytes(4, "big"), holder="writer")
            # A write with no intent at all (as the spool's): only the pid protects its temp file.
            durable.replace_durably(os.path.join(root, "d", "raw.bin"), payload + n.to_bytes(4, "big"))
    print("ok")
""")


def test_a_live_writer_in_another_process_never_loses_its_temp_file(coord: Coordinator, root: Path) -> None:
    rounds = 40
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(rounds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[str] = set()
    sweeps = 0
    try:
        while not (root / "ready").exists() and writer.poll() is None:
            time.sleep(0.01)
        while writer.poll() is None:
            swept = coord.sweep_temp_files()
            sweeps += 1
            assert swept.removed == [] and swept.failed == []
            seen.update(swept.kept)
        out, err = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0 and out.strip() == "ok", err
    reasons = {why for _, why in seen}  # both kinds of the writer's temp files were met, and kept
    assert reasons == {"a pending write's (its intent names it)", f"pid {writer.pid} is alive on this host"}, \
        f"{sweeps} sweeps met {len(seen)} temp files of the writer, kept as {reasons}"
    assert (root / "d/a.bin").stat().st_size == (1 << 20) + 4
    assert coord.sweep_temp_files().kept == []


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent_coherence.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_the_recover_command_reports_and_sweeps(root: Path, live_pid: int) -> None:
    with Coordinator.open(root) as coord:
        coord.write("a.txt", b"v1", holder="h")
        pid = dead_pid()
        # A dead writer's interrupted write: its intent, and its temp file.
        temp = leftover(root, "a.txt", pid)
        coord.backend.begin_write(WriteRequest(
            key="a.txt", holder="h", new_sha256="1" * 64, size=3, temp_path=str(temp),
            host=recovery.HOST, pid=pid, pid_start="1", fence=None, ttl=300.0, expect_version=None))
    gone = leftover(root, "d/b.txt", dead_pid())
    kept = leftover(root, "d/b.txt", live_pid)

    dry = run_cli("recover", "--root", str(root), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would resolve a.txt (intent " in dry.stdout and f"writer pid {pid} on {recovery.HOST} is dead" in dry.stdout
    assert f"would remove {rel(root, gone)} " in dry.stdout
    assert f"kept {rel(root, kept)}: pid {live_pid} is alive on this host" in dry.stdout
    # Not resolved in a dry run: its intent still names its temp file.
    assert f"kept {rel(root, temp)}: a pending write's (its intent names it)" in dry.stdout
    assert dry.stdout.strip().splitlines()[-1].startswith("recover: 1 interrupted writes would be resolved; "
                                                          "1 leftover temp files would be removed, 2 kept")
    assert temp.exists() and gone.exists()

    done = run_cli("recover", "--root", str(root))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("rolled back a.txt (intent ")
    assert f"removed {rel(root, gone)} (a temp file whose writer is gone)" in lines
    assert lines[-1] == ("recover: 1 interrupted writes resolved; 1 leftover temp files removed, 1 kept, "
                         "0 not removable (the whole root was walked)")
    assert not temp.exists() and not gone.exists() and kept.exists()
    assert (root / "a.txt").read_bytes() == b"v1"

    again = run_cli("recover", "--root", str(root), "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["intents"] == [] and report["removed"] == [] and report["failed"] == []
    assert report["kept"] == [{"path": rel(root, kept), "why": f"pid {live_pid} is alive on this host"}]


@pytest.mark.sqlite_only("a root with no state: the PostgreSQL schema is another test's")
def test_the_recover_command_without_state_creates_none(tmp_path: Path) -> None:
    leftover(tmp_path, "a.txt", dead_pid())
    result = run_cli("recover", "--root", str(tmp_path))
    assert result.returncode == 0 and "no agent-coherence state" in result.stdout
    assert not (tmp_path / ".agent-coherence").exists()
    missing = run_cli("recover", "--root", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such directory" in missing.stderr


def test_the_recover_command_exits_1_when_a_leftover_cannot_be_removed(
        root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from agent_coherence import cli

    Coordinator.open(root).close()
    path = leftover(root, "d/a.txt", dead_pid())
    unlink = os.unlink

    def refused(name, *args, **kwargs):  # as a read-only directory refuses it (root is not refused)
        if str(name).endswith(".ac-tmp"):
            raise PermissionError(13, "Permission denied")
        return unlink(name, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refused)
    assert cli.main(["recover", "--root", str(root)]) == 1
    out, err = capsys.readouterr()
    assert f"could not remove {rel(root, path)}: PermissionError: Permission denied" in err
    assert out.strip().endswith("0 leftover temp files removed, 0 kept, 1 not removable (the whole root was walked)")
    assert path.exists()


def test_an_intent_recorded_while_the_walk_runs_is_seen(coord: Coordinator, root: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A writer on another host records its intent and names its temp file while the walk is on
    # its way: the intents are listed after the walk, so the file the walk found is seen as its.
    from agent_coherence import temp_sweep

    pid = dead_pid()  # on this host; the writer's pid on its own host means nothing here
    path = leftover(root, "a.txt", pid)
    walk = temp_sweep._walk

    def walk_then_begin(where: str) -> list[tuple[str, int]]:
        found = walk(where)
        coord.backend.begin_write(WriteRequest(
            key="a.txt", holder="remote", new_sha256="0" * 64, size=3, temp_path=f"/mnt/x/{path.name}",
            host="another-host", pid=pid, pid_start="1", fence=None, ttl=300.0, expect_version=None))
        return found

    monkeypatch.setattr(temp_sweep, "_walk", walk_then_begin)
    assert coord.sweep_temp_files().removed == []
    assert path.exists()


def test_a_file_swapped_for_a_symlink_after_the_walk_is_kept(coord: Coordinator, root: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_coherence import temp_sweep

    path = leftover(root, "a.txt", dead_pid())
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours")
    walk = temp_sweep._walk

    def walk_then_swap(where: str) -> list[tuple[str, int]]:
        found = walk(where)
        path.unlink()
        path.symlink_to(victim)
        return found

    monkeypatch.setattr(temp_sweep, "_walk", walk_then_swap)
    swept = coord.sweep_temp_files()
    assert swept.removed == [] and dict(swept.kept) == {rel(root, path): "no longer a regular file"}
    assert path.is_symlink() and victim.read_bytes() == b"not yours"


@pytest.mark.sqlite_only("the walk asks no backend")
def test_the_walk_holds_one_descriptor_per_level(root: Path) -> None:
    # 200 sibling directories under a limit of 64 descriptors: each leftover is still found.
    for n in range(200):
        leftover(root, f"d{n}/sub/a.txt", 1 << 22)
    probe = textwrap.dedent(f"""
        import resource
        from agent_coherence import temp_sweep
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        print(len(temp_sweep._walk({str(root)!r})))
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "200", result.stderr
