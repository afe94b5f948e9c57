"""The ``agent-coherence`` command, run as a real subprocess, and the lost-update example."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import types
from pathlib import Path

import pytest

from agent_coherence import BackendUnavailable, Coordinator, LeaseHeld
from agent_coherence import cli, doctor
from agent_coherence.backends import default_database

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lost_update.py"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_coherence.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A root with some history: two writers, a live lease, a refused writer, a failed CAS."""
    root = tmp_path / "ws"
    root.mkdir()
    with Coordinator.open(root) as coord:
        coord.write("plans/plan.md", b"v1", holder="planner")
        coord.write("plans/plan.md", b"v2", holder="planner")
        coord.write("notes.txt", b"note", holder="coder")
        coord.acquire("plans/plan.md", "planner", ttl=300)
        with pytest.raises(LeaseHeld):
            coord.write("plans/plan.md", b"mine", holder="reviewer")
        with pytest.raises(Exception):
            coord.write("notes.txt", b"stale", holder="coder", expect_version=7)
    return root


def test_status_lists_leases_versions_and_conflicts(workspace: Path) -> None:
    result = run_cli("status", "--root", str(workspace))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    lease_section = out.split("Live leases (1)")[1].split("Recent versions")[0]
    assert "plans/plan.md" in lease_section and "planner" in lease_section
    versions = out.split("Recent versions")[1].split("Pending writes")[0]
    plan_row = next(line for line in versions.splitlines() if "plans/plan.md" in line).split()
    notes_row = next(line for line in versions.splitlines() if "notes.txt" in line).split()
    assert plan_row[1:3] == ["2", "planner"]
    assert notes_row[1:3] == ["1", "coder"]
    problems = out.split("Recent conflicts and failures")[1]
    assert "conflict.lease" in problems and "held_by=planner" in problems
    assert "conflict.version" in problems and "expected=7" in problems


def test_status_json_is_machine_readable(workspace: Path) -> None:
    result = run_cli("--root", str(workspace), "status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(lease["key"], lease["holder"]) for lease in report["leases"]] == [("plans/plan.md", "planner")]
    assert 0 < report["leases"][0]["expires_in"] <= 300
    assert {v["key"]: v["version"] for v in report["versions"]} == {"plans/plan.md": 2, "notes.txt": 1}
    assert report["intents"] == []
    assert report["problem_counts"] == {"conflict.lease": 1, "conflict.version": 1, "write.failed": 0,
                                        "conflict.view": 0, "conflict.path": 0, "write.missing": 0,
                                        "write.mismatch": 0, "write.unconfirmed": 0, "anomaly.zero_work": 0}
    with Coordinator.open(workspace) as coord:
        assert report["journal"] == {"entries": coord.journal.count(), "head": coord.journal.head()}


def test_read_only_commands_create_no_state(tmp_path: Path) -> None:
    for args in (["status"], ["journal", "verify"], ["journal", "show"]):
        result = run_cli(*args, "--root", str(tmp_path))
        assert result.returncode == 0, result.stderr
    assert "journal OK: 0 entries" in run_cli("journal", "verify", cwd=tmp_path).stdout
    assert not os.path.exists(default_database(str(tmp_path)))


@pytest.mark.parametrize("command", [["status"], ["recover"], ["recover", "--dry-run"], ["journal", "compact"],
                                     ["journal", "show"]])
def test_json_output_where_there_is_no_state_is_still_json(tmp_path: Path, command: list[str]) -> None:
    result = run_cli(*command, "--json", "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    if command == ["journal", "show"]:  # one object per entry, and there are none
        assert result.stdout == "" and "no agent-coherence state" in result.stderr
    else:
        report = json.loads(result.stdout)
        assert report["root"] == str(tmp_path.resolve()) and report["state"] is None
    assert os.listdir(tmp_path) == []


def test_read_only_commands_leave_an_empty_database_file_empty(tmp_path: Path) -> None:
    # What a first open killed before SQLite wrote its header leaves: SQLite would take it for an
    # empty database and a read-only command would write a whole schema (and a .gitignore) there.
    database = Path(default_database(str(tmp_path)))
    database.parent.mkdir()
    database.touch()
    for args in (["status"], ["journal", "verify"], ["journal", "show"], ["journal", "compact"], ["recover"]):
        result = run_cli(*args, "--root", str(tmp_path))
        assert result.returncode == 0, result.stderr
        assert "no agent-coherence state" in result.stdout + result.stderr
    assert os.listdir(database.parent) == [database.name] and database.stat().st_size == 0
    named = run_cli("status", "--root", str(tmp_path), "--url", f"sqlite://{database}")
    assert named.returncode == 0 and f"in {database} (an empty database file)" in named.stdout


def test_read_only_commands_report_a_state_directory_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / ".agent-coherence").write_text("not a directory")
    for args in (["status"], ["journal", "verify"], ["journal", "show"], ["recover"]):
        result = run_cli(*args, "--root", str(tmp_path))
        assert result.returncode == 2, (args, result.stdout)
        assert "is not a directory" in result.stderr and "recover:" in result.stderr
        assert "no agent-coherence state" not in result.stdout + result.stderr
    assert (tmp_path / ".agent-coherence").read_text() == "not a directory"


def test_open_with_create_false_makes_nothing_and_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-root"
    for root in (tmp_path, missing):
        with pytest.raises(BackendUnavailable) as caught:
            Coordinator.open(root, create=False)
        assert caught.value.reason == "missing" and caught.value.path
    assert sorted(os.listdir(tmp_path)) == []  # no root, no state directory, no database
    with pytest.raises(BackendUnavailable, match="no agent-coherence state at"):
        Coordinator.open(tmp_path, url=f"sqlite:///{tmp_path}/other.db", create=False)
    with Coordinator.open(tmp_path) as coord:
        coord.write("a.txt", b"one", holder="tester")
    with Coordinator.open(tmp_path, create=False) as coord:
        assert coord.read("a.txt").data == b"one"


def test_journal_verify_ok_then_corrupt_after_tampering(workspace: Path) -> None:
    with Coordinator.open(workspace) as coord:
        count, head = coord.journal.count(), coord.journal.head()
    result = run_cli("journal", "verify", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"journal OK: {count} entries, head {head}"

    with sqlite3.connect(default_database(str(workspace))) as db:  # rewrite history by hand
        db.execute("""UPDATE journal SET data = '{"fence":1,"sha256":null,"size":0,"version":1}' WHERE seq = 1""")
    db.close()
    result = run_cli("journal", "verify", "--root", str(workspace))
    assert result.returncode == 1
    assert "journal CORRUPT" in result.stderr and "entry 1" in result.stderr and "altered" in result.stderr
    assert "recover:" in result.stderr and "Traceback" not in result.stderr


def test_journal_verify_with_an_anchor_fails_where_the_state_is_gone(workspace: Path, tmp_path: Path) -> None:
    with Coordinator.open(workspace) as coord:
        head = coord.journal.head()
    assert run_cli("journal", "verify", "--anchor", head, "--root", str(workspace)).returncode == 0
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    result = run_cli("journal", "verify", "--anchor", head, "--root", str(empty))
    assert result.returncode == 1 and "journal OK" not in result.stdout
    assert f"the anchor {head} is not in the journal" in result.stderr and "recover:" in result.stderr
    assert os.listdir(empty) == []


def test_journal_show_one_key(workspace: Path) -> None:
    result = run_cli("journal", "show", "notes.txt", "--root", str(workspace))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[3] for line in lines] == ["write", "conflict.version"]
    assert all(line.split()[4] == "notes.txt" and line.split()[5] == "coder" for line in lines)
    assert "version=1" in lines[0] and "expected=7" in lines[1]

    newest = run_cli("journal", "show", "plans/plan.md", "--limit", "1", "--json", "--root", str(workspace))
    (entry,) = [json.loads(line) for line in newest.stdout.splitlines()]
    assert (entry["kind"], entry["holder"], entry["data"]["held_by"]) == ("conflict.lease", "reviewer", "planner")


def test_library_error_exits_2_with_hint_and_no_traceback(workspace: Path) -> None:
    result = run_cli("journal", "show", "../outside.txt", "--root", str(workspace))
    assert result.returncode == 2
    assert "PathOutsideRoot" in result.stderr and "recover:" in result.stderr
    assert "Traceback" not in result.stderr
    missing = run_cli("status", "--root", str(workspace / "missing"))
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_doctor_passes_here_and_cleans_up(tmp_path: Path) -> None:
    result = run_cli("doctor", "--root", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for check in ("fsync file", "fsync directory", "atomic rename", "exclusive create", "sqlite wal"):
        assert any(line.startswith("PASS") and f"{check}:" in line for line in lines), result.stdout
    assert any("filesystem:" in line for line in lines)
    assert list(tmp_path.iterdir()) == []


def test_doctor_warns_on_network_filesystems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(doctor, "mount_of", lambda path: ("server:/export", "/", "nfs4"))
    assert cli.main(["doctor", "--root", str(tmp_path)]) == 0
    assert "WARN  filesystem: nfs4" in capsys.readouterr().out
    assert cli.main(["doctor", "--root", str(tmp_path), "--strict"]) == 1
    assert "UNSUPPORTED" in capsys.readouterr().out


def _fake_kernel_tree(tmp_path: Path, device: str, options: list[str], journals: list[str]) -> tuple[str, str]:
    """A /proc and a /sys that say ``tmp_path``'s device is ``device``, mounted as ext4 with
    ``options`` and the jbd2 entries ``journals``."""
    st_dev = os.stat(tmp_path).st_dev
    block = tmp_path / "sys" / "dev" / "block"
    block.mkdir(parents=True)
    (block / f"{os.major(st_dev)}:{os.minor(st_dev)}").symlink_to(f"../../devices/virtual/block/{device}")
    ext4 = tmp_path / "proc" / "fs" / "ext4" / device
    ext4.mkdir(parents=True)
    (ext4 / "options").write_text("".join(option + "\n" for option in options))
    jbd2 = tmp_path / "proc" / "fs" / "jbd2"
    jbd2.mkdir(parents=True)
    for entry in journals:
        (jbd2 / entry).mkdir()
    return str(tmp_path / "proc"), str(tmp_path / "sys")


@pytest.mark.parametrize(("options", "journals", "status"), [
    (["rw", "discard", "nojournal_checksum"], [], "WARN"),        # mkfs.ext4 -O ^has_journal
    (["rw", "data=ordered"], ["vdb-8"], "PASS"),                  # the usual internal journal
    (["rw", "data=ordered"], ["sdc1"], "PASS"),                   # an external journal, named after its device
    (["rw", "discard"], ["vdb1-8", "vdbb-8"], "WARN"),           # other devices' journals do not count
])
def test_doctor_tells_ext4_without_a_journal(tmp_path: Path, options: list[str], journals: list[str],
                                             status: str) -> None:
    proc_root, sys_root = _fake_kernel_tree(tmp_path, "vdb", options, journals)
    check = doctor._journal_check(str(tmp_path), proc_root, sys_root)
    assert check is not None and check[0] == status, check
    assert ("e2fsck" in check[2]) == (status == "WARN")


def test_doctor_says_nothing_of_a_journal_off_ext4(tmp_path: Path) -> None:
    proc_root, sys_root = _fake_kernel_tree(tmp_path, "vdb", ["rw"], [])
    (tmp_path / "proc" / "fs" / "ext4" / "vdb" / "options").unlink()  # not an ext4 mount
    assert doctor._journal_check(str(tmp_path), proc_root, sys_root) is None
    assert doctor._journal_check(str(tmp_path), proc_root, str(tmp_path / "no-sys")) is None


def test_mount_of_picks_the_longest_matching_mount_point(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "server:/x /work nfs4 rw 0 0\n"
        "tmpfs /work/my\\040dir tmpfs rw 0 0\n"
        "/dev/vdb /workspace xfs rw 0 0\n"
        "overlay /work overlay rw 0 0\n"
    )
    assert doctor.mount_of("/work/sub", str(mounts)) == ("overlay", "/work", "overlay")  # stacked: last wins
    assert doctor.mount_of("/work/my dir/a", str(mounts))[2] == "tmpfs"
    assert doctor.mount_of("/workspace/a", str(mounts))[2] == "xfs"
    assert doctor.mount_of("/home", str(mounts))[2] == "ext4"
    assert doctor.mount_of("/", str(tmp_path / "absent")) is None


def test_hook_is_dispatched_before_any_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    fake = types.ModuleType(cli.HOOK_MODULE)
    fake.main = lambda stdin=None: calls.append("hook") or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, cli.HOOK_MODULE, fake)

    def no_parser() -> None:
        raise AssertionError("the hook path built the argument parser")

    monkeypatch.setattr(cli, "_build_parser", no_parser)
    assert cli.main(["hook"]) == 7
    assert calls == ["hook"]


def test_importing_the_cli_loads_nothing_heavy() -> None:
    probe = ("import sys, agent_coherence.cli; "
             "print([m for m in ('argparse', 'typing', 'pydantic', 'tenacity', 'sqlite3') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_install_and_uninstall_dispatch_to_the_installer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    fake = types.ModuleType(cli.INSTALLER_MODULE)
    fake.plan_install = lambda project_dir=None, *, scope="project", command=None: (  # type: ignore[attr-defined]
        types.SimpleNamespace(scope=scope, command=command or "agent-coherence", notice=None))
    fake.install_settings = lambda project_dir=None, *, scope="project", command=None, home=None: (  # type: ignore[attr-defined]
        calls.append(("install", project_dir, scope, command)) or "/x/settings.json")
    fake.is_installed = lambda project_dir=None, *, scope="project": True  # type: ignore[attr-defined]
    fake.unignored_local_settings = lambda project_dir=None: None  # type: ignore[attr-defined]
    fake.uninstall_settings = lambda project_dir=None, *, scope="project", home=None: (  # type: ignore[attr-defined]
        calls.append(("uninstall", project_dir, scope)) or "/x/settings.json")
    fake.write_plugin = lambda directory, *, command=None: (  # type: ignore[attr-defined]
        calls.append(("plugin", directory, command)) or ["a", "b"])
    monkeypatch.setitem(sys.modules, cli.INSTALLER_MODULE, fake)
    package = importlib.import_module("agent_coherence.adapters.claude_code")
    monkeypatch.setattr(package, "installer", fake, raising=False)
    root = str(tmp_path.resolve())

    assert cli.main(["install", "claude-code", "--root", root]) == 0
    assert cli.main(["install", "claude-code", "--local", "--command", "ac hook", "--root", root]) == 0
    assert cli.main(["install", "claude-code", "--plugin", str(tmp_path / "plug")]) == 0
    assert cli.main(["uninstall", "claude-code", "--user", "--root", root]) == 0
    assert calls == [
        ("install", root, "project", "agent-coherence"),
        ("install", root, "local", "ac hook"),
        ("plugin", str(tmp_path / "plug"), None),
        ("uninstall", root, "user"),
    ]
    with pytest.raises(SystemExit):
        cli.main(["install", "claude-code", "--local", "--user"])


def test_install_and_uninstall_with_the_real_installer(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    bindir = str(Path(sys.executable).parent)  # the venv's bin, where the agent-coherence script is
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    no_script = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep)
                                if d and not os.path.exists(os.path.join(d, "agent-coherence")))

    def run(*args: str, path: str = no_script) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agent_coherence.cli", *args, "--root", str(project)],
                              capture_output=True, text=True, timeout=60, env=dict(env, PATH=path))

    installed = run("install", "claude-code", "--local")
    assert installed.returncode == 0, installed.stderr
    settings = project / ".claude" / "settings.local.json"
    hooks = json.loads(settings.read_text())["hooks"]
    assert "PreToolUse" in hooks and "hook" in json.dumps(hooks)

    removed = run("uninstall", "claude-code", "--local")
    assert removed.returncode == 0, removed.stderr
    assert "removed" in removed.stdout and "agent-coherence" not in settings.read_text()
    again = run("uninstall", "claude-code", "--local")
    assert again.returncode == 0 and "removed" not in again.stdout and "not installed" in again.stdout

    # The shared file: plain `agent-coherence` when it is on PATH, never this machine's path.
    shared = project / ".claude" / "settings.json"
    on_path = run("install", "claude-code", path=os.pathsep.join([bindir, no_script]))
    assert on_path.returncode == 0, on_path.stderr
    handler = json.loads(shared.read_text())["hooks"]["PreToolUse"][0]["hooks"][0]
    assert handler["command"] == "agent-coherence hook" and bindir not in shared.read_text()
    assert run("uninstall", "claude-code", path=no_script).returncode == 0
    before = shared.read_text()
    # Not on PATH: the absolute path goes to settings.local.json, the shared file is left alone.
    off_path = run("install", "claude-code")
    assert off_path.returncode == 0, off_path.stderr
    assert "not on PATH" in off_path.stdout and "settings.local.json" in off_path.stdout
    assert shared.read_text() == before
    local = json.loads(settings.read_text())["hooks"]["PreToolUse"][0]["hooks"][0]
    assert local["command"] == f"{bindir}/agent-coherence hook"


def test_usage_errors_exit_2_and_help_lists_every_command(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agent_coherence.cli", *args], capture_output=True,
                              text=True, timeout=60, cwd=tmp_path)

    for args in ((), ("journal",)):
        bare = run(*args)
        assert bare.returncode == 2 and "usage:" in bare.stderr and "Traceback" not in bare.stderr, args
    listed = run("--help")
    assert listed.returncode == 0
    commands = listed.stdout.split("commands:", 1)[1]
    for name in ("status", "journal", "doctor", "install", "uninstall", "watch", "version", "hook"):
        assert f"\n    {name} " in commands, name


def test_version() -> None:
    result = run_cli("version")
    assert result.returncode == 0 and result.stdout.startswith("agent-coherence 0.")


def test_the_package_runs_as_the_command(tmp_path: Path) -> None:
    """``python -m agent_coherence`` is ``agent-coherence``: same output, same exit codes."""
    package = subprocess.run([sys.executable, "-m", "agent_coherence", "version"], capture_output=True, text=True,
                             timeout=60)
    assert package.returncode == 0 and package.stdout == run_cli("version").stdout
    refused = subprocess.run([sys.executable, "-m", "agent_coherence", "journal", "verify", "--root",
                              str(tmp_path / "absent")], capture_output=True, text=True, timeout=60)
    assert refused.returncode == run_cli("journal", "verify", "--root", str(tmp_path / "absent")).returncode != 0


def test_lost_update_example_loses_naively_and_never_through_the_coordinator(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("lost_update_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    counts = example.run(str(tmp_path), processes=4, increments=50, quiet=True)
    seen = {name: value for name, value in counts.items() if name != "receipts"}

    assert counts["expected"] == 200
    # Usually increments are lost; now and then two truncate-and-writes interleave into a torn,
    # larger number ("100" under "99" reads "990"): either way the naive count is wrong.
    assert counts["naive_lost"] != 0, f"the naive baseline must show the loss: {seen}"
    assert counts["naive"] == 200 - counts["naive_lost"]
    assert (counts["coordinated"], counts["coordinated_lost"]) == (200, 0), seen
    assert counts["final_version"] == counts["expected_version"] == 201, seen
    assert counts["refused"] > 0, f"the processes did not really race: {seen}"
    assert len(counts["receipts"]) == 4 and all(r["durable"] for r in counts["receipts"])
    with Coordinator.open(tmp_path) as coord:
        writes = [e.data["version"] for e in coord.journal.history("counter.txt") if e.kind == "write"]
        assert writes == list(range(1, 202)), f"every version written once, in order: {seen}"
        assert coord.journal.verify() == counts["journal_entries"]
