"""The Claude Code hook, run as Claude Code runs it: a separate process per event, the event JSON on
stdin, the decision in the exit code, stderr and stdout JSON.

Payloads follow the documented shapes (hooks reference, input schemas per event). A refused tool
call is exit 0 with a ``permissionDecision: "deny"`` JSON answer carrying the reason (exit 2 with
the reason on stderr only when even the event can't be told); an allowed one is exit 0 with no
output at all.
"""

from __future__ import annotations

import ast
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent_coherence.backends import default_database
from agent_coherence.backends.sqlite import SQLiteBackend

HOOK = [sys.executable, "-m", "agent_coherence.adapters.claude_code.hook"]
TIMEOUT = 60


# -- helpers (used by test_claude_hook_fuzz.py too) --------------------------------------------


def hook_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_COHERENCE_", "CLAUDE_"))}
    env["CLAUDE_PROJECT_DIR"] = str(root)
    env.update(extra)
    return env


def event(name: str, session: str, root: Path, **fields: object) -> dict:
    """A payload with the fields common to every event, as documented."""
    payload = {
        "session_id": session,
        "transcript_path": f"/home/user/.claude/projects/proj/{session}.jsonl",
        "cwd": str(root),
        "permission_mode": "default",
        "effort": {"level": "high"},
        "hook_event_name": name,
    }
    payload.update(fields)
    return payload


def tool_event(name: str, session: str, root: Path, tool: str, tool_input: dict, **fields: object) -> dict:
    return event(name, session, root, tool_name=tool, tool_input=tool_input,
                 tool_use_id=f"toolu_{session}_{tool}", **fields)


def run_hook(root: Path, payload: dict | bytes, env: dict[str, str] | None = None,
             timeout: float = TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return subprocess.run(HOOK, input=data, env=env or hook_env(root), capture_output=True, timeout=timeout)


def assert_clean(result: subprocess.CompletedProcess[bytes]) -> None:
    """No traceback anywhere; stdout is empty or one JSON object."""
    for stream in (result.stdout, result.stderr):
        assert b"Traceback" not in stream, stream.decode(errors="replace")
    if result.stdout.strip():
        assert isinstance(json.loads(result.stdout), dict)


def denial(result: subprocess.CompletedProcess[bytes]) -> str | None:
    """The reason a PreToolUse answer refuses the call, or None when it allows it."""
    assert_clean(result)
    if result.returncode == 2:  # the event could not be told: the answer every event honours
        assert result.stdout == b"" and result.stderr.strip(), "an exit-2 refusal carries its reason on stderr"
        return result.stderr.decode()
    assert result.returncode == 0, (result.returncode, result.stderr)
    answer = json.loads(result.stdout).get("hookSpecificOutput", {}) if result.stdout.strip() else {}
    if answer.get("permissionDecision") is None:
        return None  # no output, or another event's answer: nothing refused
    assert answer["hookEventName"] == "PreToolUse" and answer["permissionDecision"] == "deny", answer
    assert answer["permissionDecisionReason"].strip()
    return str(answer["permissionDecisionReason"])


def allowed(result: subprocess.CompletedProcess[bytes]) -> bool:
    """True for a PreToolUse answer that lets the call go on: exit 0 and no output at all."""
    if denial(result) is not None:
        return False
    assert result.stdout == b"", result.stdout
    return True


def reason(result: subprocess.CompletedProcess[bytes]) -> str:
    text = denial(result)
    return result.stderr.decode() if text is None else text


def output(result: subprocess.CompletedProcess[bytes]) -> dict:
    assert_clean(result)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {}


def post_problem(said: dict) -> str:
    """The problem a PostToolUse answer reports: said once, as additional context (a ``decision:
    block`` reason too would make the client show Claude the same text twice)."""
    assert set(said) == {"hookSpecificOutput"}, said
    assert said["hookSpecificOutput"]["hookEventName"] == "PostToolUse"
    return str(said["hookSpecificOutput"]["additionalContext"])


def backend(root: Path) -> SQLiteBackend:
    return SQLiteBackend(default_database(str(root)))


def write_payload(session: str, root: Path, path: Path, content: str = "new\n", **fields: object) -> dict:
    return tool_event("PreToolUse", session, root, "Write", {"file_path": str(path), "content": content}, **fields)


def edit_payload(session: str, root: Path, path: Path, old: str, new: str, event_name: str = "PreToolUse",
                 **fields: object) -> dict:
    return tool_event(event_name, session, root, "Edit",
                      {"file_path": str(path), "old_string": old, "new_string": new, "replace_all": False},
                      **fields)


def read_payload(session: str, root: Path, path: Path, event_name: str = "PreToolUse") -> dict:
    return tool_event(event_name, session, root, "Read", {"file_path": str(path), "offset": 1, "limit": 2000})


def post_write_payload(session: str, root: Path, path: Path, content: str) -> dict:
    return tool_event("PostToolUse", session, root, "Write", {"file_path": str(path), "content": content},
                      tool_response={"type": "create", "filePath": str(path), "content": content,
                                     "structuredPatch": [], "originalFile": None},
                      duration_ms=12)


def session_end(session: str, root: Path) -> dict:
    return event("SessionEnd", session, root, reason="prompt_input_exit")


def write_through_hook(root: Path, session: str, path: Path, content: str) -> None:
    """What Claude Code does for a Write: pre hook, the tool writes, post hook."""
    assert allowed(run_hook(root, write_payload(session, root, path, content)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    assert output(run_hook(root, post_write_payload(session, root, path, content))) == {}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "app.py").write_text("print('hello')\n")
    return project


# -- every documented event, through the real entry point ---------------------------------------


def documented_events(root: Path) -> list[tuple[str, dict, int]]:
    app = root / "src" / "app.py"
    nb = root / "analysis.ipynb"
    return [
        ("SessionStart", event("SessionStart", "s1", root, source="startup", model="claude-opus"), 0),
        ("PreToolUse Read", read_payload("s1", root, app), 0),
        ("PreToolUse Write", write_payload("s1", root, root / "new.txt"), 0),
        ("PreToolUse Edit", edit_payload("s1", root, app, "hello", "world"), 0),
        ("PreToolUse MultiEdit", tool_event("PreToolUse", "s1", root, "MultiEdit", {
            "file_path": str(app), "edits": [{"old_string": "hello", "new_string": "hi", "replace_all": False}]}), 0),
        ("PreToolUse NotebookEdit", tool_event("PreToolUse", "s1", root, "NotebookEdit", {
            "notebook_path": str(nb), "cell_id": "c1", "new_source": "x = 1", "cell_type": "code",
            "edit_mode": "replace"}), 0),
        ("PreToolUse Bash", tool_event("PreToolUse", "s1", root, "Bash", {
            "command": "ls -la", "description": "List files", "timeout": 120000, "run_in_background": False}), 0),
        ("PreToolUse Glob (not ours)", tool_event("PreToolUse", "s1", root, "Glob", {"pattern": "**/*.py"}), 0),
        ("PostToolUse Read", read_payload("s1", root, app, "PostToolUse"), 0),
        ("PostToolUseFailure Edit", edit_payload("s1", root, app, "zzz", "y", "PostToolUseFailure",
                                                 error="String to replace not found in file.",
                                                 is_interrupt=False, duration_ms=4), 0),
        ("Stop", event("Stop", "s1", root, stop_hook_active=False, last_assistant_message="Done.",
                       background_tasks=[], session_crons=[]), 0),
        ("SubagentStop", event("SubagentStop", "s1", root, stop_hook_active=False, agent_id="agent-abc",
                               agent_type="Explore", agent_transcript_path="/tmp/agent.jsonl",
                               last_assistant_message="Found it.", background_tasks=[], session_crons=[]), 0),
        ("Notification (not ours)", event("Notification", "s1", root, message="Claude needs permission",
                                          notification_type="permission_prompt"), 0),
        ("SessionEnd", session_end("s1", root), 0),
    ]


def test_every_documented_event_gets_a_clean_documented_answer(root: Path) -> None:
    for label, payload, code in documented_events(root):
        result = run_hook(root, payload)
        assert_clean(result)
        assert result.returncode == code, (label, result.stderr)
        assert result.stdout == b"", (label, result.stdout)  # nothing to say in a quiet session
    assert not (root / "new.txt").exists(), "the hook decides; it never writes the user's files"


def test_main_takes_streams_and_env_in_process(root: Path) -> None:
    from agent_coherence.adapters.claude_code.hook import main

    stdout, stderr = io.StringIO(), io.StringIO()
    data = json.dumps(write_payload("inproc", root, root / "x.txt")).encode()
    assert main(io.BytesIO(data), stdout, hook_env(root), stderr) == 0
    assert stdout.getvalue() == "" and stderr.getvalue() == ""
    data = json.dumps(write_payload("other", root, root / "x.txt")).encode()
    assert main(io.BytesIO(data), stdout, hook_env(root), stderr) == 0
    answer = json.loads(stdout.getvalue())["hookSpecificOutput"]
    assert answer["permissionDecision"] == "deny" and "claude:inproc" in answer["permissionDecisionReason"]
    assert stderr.getvalue() == ""


# -- leases: one writer per file, named in the refusal, free after SessionEnd ---------------------


def test_second_session_is_denied_with_the_holder_named_until_the_first_ends(root: Path) -> None:
    app = root / "src" / "app.py"
    assert allowed(run_hook(root, edit_payload("alice", root, app, "hello", "hi")))
    denied = run_hook(root, edit_payload("bob", root, app, "hello", "hey"))
    assert not allowed(denied)
    text = reason(denied)
    assert "src/app.py" in text and "claude:alice" in text and "since" in text and "try again later" in text
    assert allowed(run_hook(root, edit_payload("alice", root, app, "hello", "hi")))  # re-entrant

    assert output(run_hook(root, session_end("alice", root))) == {}
    assert allowed(run_hook(root, edit_payload("bob", root, app, "hello", "hey")))
    lease = backend(root).get_lease("src/app.py")
    assert lease is not None and lease.holder == "claude:bob"


def test_the_lease_outlives_the_tool_call_but_not_its_ttl(root: Path) -> None:
    target = root / "notes.md"
    env = hook_env(root, AGENT_COHERENCE_HOOK_TTL="4")
    assert allowed(run_hook(root, write_payload("alice", root, target), env))
    lease = backend(root).get_lease("notes.md")
    denied = run_hook(root, write_payload("bob", root, target), env)
    if time.time() < lease.expires_at - 0.5:  # on a very loaded machine bob may start after expiry
        assert not allowed(denied) and "claude:alice" in reason(denied)
    time.sleep(max(0.0, lease.expires_at - time.time()) + 0.2)
    assert allowed(run_hook(root, write_payload("bob", root, target), env))
    assert backend(root).get_lease("notes.md").holder == "claude:bob"


def test_a_subagent_is_its_own_holder(root: Path) -> None:
    target = root / "scratch.txt"
    assert allowed(run_hook(root, write_payload("main", root, target, agent_id="agent-1", agent_type="general-purpose")))
    denied = run_hook(root, write_payload("main", root, target, agent_id="agent-2", agent_type="general-purpose"))
    assert not allowed(denied)
    assert "subagent agent-1 of this same Claude Code session" in reason(denied)
    stop = event("SubagentStop", "main", root, stop_hook_active=False, agent_id="agent-1",
                 agent_type="general-purpose", agent_transcript_path="/tmp/a.jsonl",
                 last_assistant_message="done")
    assert output(run_hook(root, stop)) == {}  # a finished subagent gives its leases back
    assert allowed(run_hook(root, write_payload("main", root, target, agent_id="agent-2", agent_type="general-purpose")))


RACE_SCRIPT = r"""
import json, os, sys, time
claims, me = sys.argv[1], sys.argv[2]
sys.stdin.read()  # start together
held = json.load(open(claims)) if os.path.exists(claims) else {}
if "f" in held and held["f"] != me:
    sys.exit(2)
time.sleep(0.05)  # the work between check and claim that every naive lock has
json.dump({"f": me}, open(claims, "w"))
sys.exit(0)
"""


def race(argv_for: list[list[str]], payloads: list[bytes], env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Start every process, let each finish importing, then release them all at once."""
    procs = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for argv in argv_for]
    time.sleep(0.5)
    for proc, data in zip(procs, payloads):
        proc.stdin.write(data)
    for proc in procs:
        proc.stdin.close()
    results = []
    for proc, argv in zip(procs, argv_for):
        out, err = proc.stdout.read(), proc.stderr.read()  # a few lines each: no pipe can fill up
        proc.wait(timeout=TIMEOUT)
        results.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return results


def test_naive_check_then_claim_lets_several_sessions_in(tmp_path: Path) -> None:
    """The baseline the race below must beat: a claims file checked then written."""
    claims = tmp_path / "claims.json"
    script = tmp_path / "naive.py"
    script.write_text(RACE_SCRIPT)
    results = race([[sys.executable, str(script), str(claims), f"s{i}"] for i in range(6)], [b"go"] * 6,
                   dict(os.environ))
    assert sum(r.returncode == 0 for r in results) > 1


def test_parallel_sessions_racing_on_one_file_exactly_one_wins(root: Path) -> None:
    target = root / "src" / "app.py"
    sessions = [f"racer{i}" for i in range(6)]
    payloads = [json.dumps(edit_payload(s, root, target, "hello", s)).encode() for s in sessions]
    results = race([HOOK] * len(sessions), payloads, hook_env(root))
    winners = [s for s, r in zip(sessions, results) if allowed(r)]
    assert len(winners) == 1
    for s, r in zip(sessions, results):
        if s not in winners:
            assert f"claude:{winners[0]}" in reason(r), reason(r)
    assert backend(root).get_lease("src/app.py").holder == f"claude:{winners[0]}"

    assert output(run_hook(root, session_end(winners[0], root))) == {}
    loser = next(s for s in sessions if s not in winners)
    assert allowed(run_hook(root, edit_payload(loser, root, target, "hello", "x")))


# -- views: a session must have seen the current version -----------------------------------------


def test_stale_view_is_denied_until_the_session_reads_again(root: Path) -> None:
    app = root / "src" / "app.py"
    assert allowed(run_hook(root, read_payload("alice", root, app)))
    assert allowed(run_hook(root, read_payload("bob", root, app)))
    write_through_hook(root, "bob", app, "print('bob was here')\n")
    assert output(run_hook(root, session_end("bob", root))) == {}

    denied = run_hook(root, edit_payload("alice", root, app, "hello", "hi"))
    assert not allowed(denied)
    assert "read version 0" in reason(denied) and "version 1" in reason(denied)
    assert "claude:bob" in reason(denied) and "Read the file again" in reason(denied)
    assert not allowed(run_hook(root, edit_payload("alice", root, app, "bob", "alice")))  # still stale

    assert allowed(run_hook(root, read_payload("alice", root, app)))
    assert allowed(run_hook(root, edit_payload("alice", root, app, "bob", "alice")))
    kinds = [e.kind for e in backend(root).journal_entries(key="src/app.py")]
    assert kinds.count("conflict.view") == 2 and "write.claude" in kinds


def test_an_edit_made_outside_the_hook_makes_the_view_stale(root: Path) -> None:
    app = root / "src" / "app.py"
    assert allowed(run_hook(root, read_payload("alice", root, app)))
    app.write_text("edited in the user's editor\n")
    denied = run_hook(root, edit_payload("alice", root, app, "editor", "x"))
    assert not allowed(denied) and "changed since this session read it" in reason(denied)
    assert allowed(run_hook(root, read_payload("alice", root, app)))
    assert allowed(run_hook(root, edit_payload("alice", root, app, "editor", "x")))


def test_writing_a_file_another_session_wrote_needs_a_read_first(root: Path) -> None:
    notes = root / "notes.md"
    write_through_hook(root, "bob", notes, "bob's notes\n")
    assert output(run_hook(root, session_end("bob", root))) == {}
    denied = run_hook(root, write_payload("alice", root, notes, "alice's notes\n"))
    assert not allowed(denied) and "has not read it" in reason(denied)
    assert allowed(run_hook(root, read_payload("alice", root, notes)))
    assert allowed(run_hook(root, write_payload("alice", root, notes, "alice's notes\n")))


def test_a_new_file_and_the_sessions_own_writes_need_no_read(root: Path) -> None:
    fresh = root / "docs" / "new.md"
    write_through_hook(root, "alice", fresh, "one\n")
    assert allowed(run_hook(root, edit_payload("alice", root, fresh, "one", "two")))


def test_a_change_during_the_read_forces_another_read(root: Path) -> None:
    app = root / "src" / "app.py"
    assert allowed(run_hook(root, read_payload("alice", root, app)))
    app.write_text("changed while the Read tool ran\n")
    assert output(run_hook(root, read_payload("alice", root, app, "PostToolUse"))) == {}
    denied = run_hook(root, edit_payload("alice", root, app, "changed", "x"))
    assert not allowed(denied) and "while this session was reading" in reason(denied)
    assert allowed(run_hook(root, read_payload("alice", root, app)))
    assert allowed(run_hook(root, edit_payload("alice", root, app, "changed", "x")))


# -- paths ---------------------------------------------------------------------------------------


def test_a_file_deleted_since_the_read_can_be_written_again_after_a_read(root: Path) -> None:
    """The refusal says "read the file again"; for a file that is gone, that Read fails (the client
    sends no PostToolUse), so the attempt itself must count as seeing the current state: the file
    is missing. Else the session could never write the file again."""
    app = root / "src" / "app.py"
    assert allowed(run_hook(root, read_payload("bob", root, app)))
    assert output(run_hook(root, read_payload("bob", root, app, "PostToolUse"))) == {}
    app.unlink()  # removed outside the hook (a person, `git rm`, a build)
    denied = run_hook(root, write_payload("bob", root, app, "again\n"))
    assert not allowed(denied) and "deleted" in reason(denied)
    assert allowed(run_hook(root, read_payload("bob", root, app)))  # the Read that then fails
    assert allowed(run_hook(root, write_payload("bob", root, app, "again\n")))


def test_a_file_another_session_deleted_can_be_written_after_a_read(root: Path) -> None:
    app = root / "src" / "app.py"
    assert allowed(run_hook(root, read_payload("bob", root, app)))
    assert allowed(run_hook(root, bash("alice", root, "rm src/app.py")))
    app.unlink()
    assert output(run_hook(root, bash("alice", root, "rm src/app.py", "PostToolUse"))) == {}
    output(run_hook(root, session_end("alice", root)))
    assert not allowed(run_hook(root, write_payload("bob", root, app, "again\n")))
    assert allowed(run_hook(root, read_payload("bob", root, app)))
    assert allowed(run_hook(root, write_payload("bob", root, app, "again\n")))


@pytest.mark.parametrize("where", ["absolute elsewhere", "dot-dot", "symlink out", "state dir"])
def test_paths_outside_the_project_are_denied(root: Path, tmp_path: Path, where: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    path = {
        "absolute elsewhere": str(outside / "x.txt"),
        "dot-dot": str(root / "src" / ".." / ".." / "outside" / "x.txt"),
        "symlink out": str(root / "link" / "x.txt"),
        "state dir": str(root / ".agent-coherence" / "state.db"),
    }[where]
    denied = run_hook(root, tool_event("PreToolUse", "s", root, "Write", {"file_path": path, "content": "x"}))
    assert not allowed(denied)
    assert "refused to write" in reason(denied) and str(root) in reason(denied)
    assert list(outside.iterdir()) == []


def test_the_clients_own_directory_and_allowed_ones_take_file_tool_writes(root: Path, tmp_path: Path) -> None:
    # Plan mode has Claude write its plan to ~/.claude/plans/<name>.md with the Write tool: that
    # was refused as outside the project, so with the hook installed plan mode could not work.
    home, config, shared = tmp_path / "home", tmp_path / "config", tmp_path / "shared"
    for directory in (home / ".claude" / "plans", config / "plans", shared):
        directory.mkdir(parents=True)
    plan = home / ".claude" / "plans" / "bright-plan.md"
    env = hook_env(root, HOME=str(home), AGENT_COHERENCE_HOOK_ALLOW_OUTSIDE=str(shared))
    for path in (plan, shared / "notes.md"):
        payload = tool_event("PreToolUse", "s", root, "Write", {"file_path": str(path), "content": "# Plan\n"})
        assert allowed(run_hook(root, payload, env)), path
        path.write_text("# Plan\n")
        assert output(run_hook(root, dict(payload, hook_event_name="PostToolUse"), env)) == {}
    assert backend(root).journal_count(kind="conflict.path") == 0
    moved = hook_env(root, HOME=str(home), CLAUDE_CONFIG_DIR=str(config))  # the client's directory moved
    write = tool_event("PreToolUse", "s", root, "Write", {"file_path": str(config / "plans" / "p.md"), "content": "x"})
    assert allowed(run_hook(root, write, moved))
    assert not allowed(run_hook(root, tool_event("PreToolUse", "s", root, "Write",
                                                 {"file_path": str(plan), "content": "x"}), moved))
    assert not allowed(run_hook(root, tool_event("PreToolUse", "s", root, "Write",
                                                 {"file_path": "/dev/null", "content": "x"}), env))


# -- after the write -----------------------------------------------------------------------------


def test_a_confirmed_write_is_recorded_as_a_version_with_its_hash(root: Path) -> None:
    target = root / "out.txt"
    write_through_hook(root, "alice", target, "hello\n")
    store = backend(root)
    record = store.get_version("out.txt")
    import hashlib

    assert record.version == 1 and record.sha256 == hashlib.sha256(b"hello\n").hexdigest()
    assert record.writer == "claude:alice" and record.size == 6
    assert store.get_view("claude:alice", "out.txt") == (1, record.sha256)
    assert [w.work_done for w in store.list_workers() if w.worker == "claude:alice"] == [1]


def test_a_write_that_returned_success_but_did_not_land_is_reported(root: Path) -> None:
    target = root / "ghost.txt"
    assert allowed(run_hook(root, write_payload("alice", root, target, "boo\n")))
    said = output(run_hook(root, post_write_payload("alice", root, target, "boo\n")))
    assert "does not exist on disk" in post_problem(said)
    assert backend(root).journal_count(kind="write.missing") == 1


def test_a_write_whose_bytes_differ_from_the_request_is_reported(root: Path) -> None:
    target = root / "out.txt"
    assert allowed(run_hook(root, write_payload("alice", root, target, "wanted\n")))
    target.write_text("something else\n")
    said = output(run_hook(root, post_write_payload("alice", root, target, "wanted\n")))
    assert "not the content you sent" in post_problem(said)
    target.write_text("same\r\n")  # line endings converted by the tool are not a difference
    assert output(run_hook(root, post_write_payload("alice", root, target, "same\n"))) == {}


def test_an_edit_whose_new_text_is_missing_is_reported(root: Path) -> None:
    app = root / "src" / "app.py"
    post = edit_payload("alice", root, app, "hello", "goodbye", "PostToolUse",
                        tool_response={"filePath": str(app), "oldString": "hello", "newString": "goodbye",
                                       "originalFile": "print('hello')\n", "structuredPatch": [],
                                       "userModified": False, "replaceAll": False})
    said = output(run_hook(root, post))
    assert "does not contain the new_string" in post_problem(said)
    app.write_text("print('goodbye')\n")
    assert output(run_hook(root, post)) == {}


def test_an_edit_the_client_wrote_in_the_files_quote_style_is_no_mismatch(root: Path) -> None:
    """Claude Code matches straight quotes in old_string against curly ones in the file and writes
    new_string in the file's style: `x = "bye"` lands as `x = \u201cbye\u201d`. That is the edit asked
    for, not another writer's bytes."""
    doc = root / "doc.py"
    doc.write_text("x = \u201chello\u201d\nit\u2019s = 1\n")
    assert allowed(run_hook(root, read_payload("alice", root, doc)))
    assert allowed(run_hook(root, edit_payload("alice", root, doc, 'x = "hello"', 'x = "bye"')))
    doc.write_text("x = \u201cbye\u201d\nit\u2019s = 1\n")
    post = edit_payload("alice", root, doc, 'x = "hello"', 'x = "bye"', "PostToolUse",
                        tool_response={"filePath": str(doc), "oldString": 'x = "hello"', "newString": 'x = "bye"'})
    assert output(run_hook(root, post)) == {}
    assert backend(root).journal_count(kind="write.mismatch") == 0
    post = edit_payload("alice", root, doc, "it\u2019s", "it's 2", "PostToolUse")
    doc.write_text("x = \u201cbye\u201d\nit\u2019s 2 = 1\n")
    assert output(run_hook(root, post)) == {}
    wrong = edit_payload("alice", root, doc, 'x = "bye"', 'x = "ciao"', "PostToolUse")
    assert "does not contain the new_string" in post_problem(output(run_hook(root, wrong)))


@pytest.mark.parametrize("bom, encoding", [(b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le")])
def test_a_file_the_client_wrote_with_its_byte_order_mark_is_no_mismatch(root: Path, bom: bytes, encoding: str) -> None:
    """Claude Code may keep a file's byte order mark (or write a UTF-16LE file in UTF-16LE) while
    the tool input holds the text alone: those bytes are the write asked for."""
    doc = root / "notes.txt"
    doc.write_bytes(bom + "caf\u00e9\n".encode(encoding))
    assert allowed(run_hook(root, read_payload("alice", root, doc)))
    assert allowed(run_hook(root, write_payload("alice", root, doc, "th\u00e9\n")))
    doc.write_bytes(bom + "th\u00e9\n".encode(encoding))
    assert output(run_hook(root, post_write_payload("alice", root, doc, "th\u00e9\n"))) == {}
    assert allowed(run_hook(root, edit_payload("alice", root, doc, "th\u00e9", "tea")))
    doc.write_bytes(bom + "tea\n".encode(encoding))
    assert output(run_hook(root, edit_payload("alice", root, doc, "th\u00e9", "tea", "PostToolUse"))) == {}
    assert backend(root).journal_count(kind="write.mismatch") == 0
    wrong = edit_payload("alice", root, doc, "tea", "coffee", "PostToolUse")
    assert "does not contain the new_string" in post_problem(output(run_hook(root, wrong)))


def test_a_failed_tool_is_journalled_and_keeps_the_lease(root: Path) -> None:
    app = root / "src" / "app.py"
    assert allowed(run_hook(root, edit_payload("alice", root, app, "hello", "hi")))
    failure = edit_payload("alice", root, app, "hello", "hi", "PostToolUseFailure",
                           error="File has been modified since read", is_interrupt=False, duration_ms=3)
    assert output(run_hook(root, failure)) == {}
    store = backend(root)
    assert store.journal_count(kind="tool.failed", key="src/app.py") == 1
    assert store.get_lease("src/app.py").holder == "claude:alice"


# -- Bash ----------------------------------------------------------------------------------------


def bash(session: str, root: Path, command: str, event_name: str = "PreToolUse") -> dict:
    return tool_event(event_name, session, root, "Bash", {"command": command, "description": "run",
                                                          "timeout": 120000, "run_in_background": False})


def test_bash_writes_get_the_same_checks(root: Path, tmp_path: Path) -> None:
    app = root / "src" / "app.py"
    assert allowed(run_hook(root, edit_payload("alice", root, app, "hello", "hi")))
    for command in ("echo hi > src/app.py", "sed -i 's/a/b/' src/app.py", "rm -rf src", "tee src/app.py < /dev/null",
                    "cat > src/app.py <<'EOF'\nx\nEOF", "rm -rf ."):
        denied = run_hook(root, bash("bob", root, command))
        assert not allowed(denied), command
        assert "claude:alice" in reason(denied), (command, reason(denied))
    outside = run_hook(root, bash("bob", root, f"echo x > {tmp_path / 'elsewhere.txt'}"))
    assert not allowed(outside) and "outside the root" in reason(outside)
    assert not (tmp_path / "elsewhere.txt").exists()
    for command in ("ls -la", "git status", "grep -r hello src", "echo hi 2>/dev/null", "echo ok > other.txt"):
        assert allowed(run_hook(root, bash("bob", root, command))), command


def test_a_glob_with_more_matches_than_are_checked_one_by_one_still_meets_every_lease(root: Path) -> None:
    from agent_coherence.adapters.claude_code.bash_checks import MAX_GLOB_MATCHES

    logs = root / "logs"
    logs.mkdir()
    for n in range(MAX_GLOB_MATCHES + 5):
        (logs / f"run-{n:04d}.log").write_text("x\n")
    last = logs / f"run-{MAX_GLOB_MATCHES + 4:04d}.log"  # sorted after every match checked one by one
    assert allowed(run_hook(root, write_payload("alice", root, last, "mine\n")))
    denied = run_hook(root, bash("bob", root, "rm -f logs/*.log"))
    assert not allowed(denied) and "claude:alice" in reason(denied), denied.stdout
    assert backend(root).get_lease("logs/run-0000.log") is None  # what the refused command took is given back


def test_git_commands_that_discard_every_edit_in_progress_are_refused_while_another_session_edits(
        root: Path) -> None:
    """`git reset --hard`, `git stash` and `git clean -f` from one session throw away another
    session's uncommitted edits (its new files, for clean) as surely as `git checkout -- .`."""
    app = root / "src" / "app.py"
    assert allowed(run_hook(root, edit_payload("alice", root, app, "hello", "hi")))
    for command in ("git reset --hard", "git reset --hard HEAD~1", "git stash", "git stash save wip",
                    "git clean -fd", "cd src && git stash -u"):
        denied = run_hook(root, bash("bob", root, command))
        assert not allowed(denied) and "claude:alice" in reason(denied), command
    for command in ("git stash list", "git reset --soft HEAD~1", "git clean -n", "git stash push -- other.txt"):
        assert allowed(run_hook(root, bash("bob", root, command))), command
    output(run_hook(root, session_end("bob", root)))  # gives back other.txt, which its stash push took
    assert allowed(run_hook(root, bash("alice", root, "git stash")))  # its own edits: its own call
    output(run_hook(root, session_end("alice", root)))
    assert allowed(run_hook(root, bash("bob", root, "git reset --hard")))


def test_bash_writes_that_cannot_be_parsed_are_allowed_and_recorded(root: Path) -> None:
    command = "python -c \"open('src/app.py', 'w').write('x')\""
    assert allowed(run_hook(root, bash("bob", root, command)))
    entries = [e for e in backend(root).journal_entries() if e.kind == "bash.uncertain"]
    assert len(entries) == 1 and entries[0].data["command"] == command and entries[0].holder == "claude:bob"


def test_a_bash_write_is_recorded_afterwards(root: Path) -> None:
    assert allowed(run_hook(root, bash("bob", root, "echo data > out.txt")))
    (root / "out.txt").write_text("data\n")
    assert output(run_hook(root, bash("bob", root, "echo data > out.txt", "PostToolUse"))) == {}
    record = backend(root).get_version("out.txt")
    assert record.version == 1 and record.writer == "claude:bob"
    denied = run_hook(root, write_payload("alice", root, root / "out.txt"))
    assert not allowed(denied) and "claude:bob" in reason(denied)


def test_a_bash_command_that_wrote_and_then_failed_is_recorded(root: Path) -> None:
    """A failing Bash command reaches PostToolUseFailure, not PostToolUse, yet it may have written
    before it failed (`... > out.log && pytest`). Its writes are recorded all the same: the
    session's next edit is not refused as an edit outside the hook, and another session needs a
    Read before it writes the file."""
    app = root / "src" / "app.py"
    assert allowed(run_hook(root, read_payload("bob", root, app)))
    command = "sed -i 's/hello/bye/' src/app.py && false"
    assert allowed(run_hook(root, bash("bob", root, command)))
    app.write_text("print('bye')\n")
    failed = bash("bob", root, command, "PostToolUseFailure")
    failed.update(error="Exit code 1", is_interrupt=False)
    said = output(run_hook(root, failed))
    assert said == {}, said
    store = backend(root)
    record = store.get_version("src/app.py")
    assert record is not None and record.writer == "claude:bob", record
    assert store.journal_count(kind="tool.failed") == 1
    assert allowed(run_hook(root, edit_payload("bob", root, app, "bye", "ciao")))
    output(run_hook(root, session_end("bob", root)))
    denied = run_hook(root, edit_payload("alice", root, app, "bye", "ciao"))
    assert not allowed(denied) and "has not read it" in reason(denied)


def test_a_failed_bash_write_after_a_lost_lease_is_told_in_the_failure_answer(root: Path) -> None:
    command = "echo x > out.txt && false"
    assert allowed(run_hook(root, bash("bob", root, command)))
    store = backend(root)
    store.release_holder("claude:bob")  # bob's lease ran out; alice took the file meanwhile
    store.acquire_lease("out.txt", "claude:alice", 60.0)
    (root / "out.txt").write_text("x\n")
    failed = bash("bob", root, command, "PostToolUseFailure")
    failed.update(error="Exit code 1")
    said = output(run_hook(root, failed))
    assert said["hookSpecificOutput"]["hookEventName"] == "PostToolUseFailure", said
    assert "no longer held the file's lease" in said["hookSpecificOutput"]["additionalContext"]


# -- sessions: assignments and the zero-work anomaly ---------------------------------------------


def stop_payload(session: str, root: Path, active: bool = False) -> dict:
    return event("Stop", session, root, stop_hook_active=active, last_assistant_message="All done!",
                 background_tasks=[], session_crons=[])


def test_an_assigned_session_that_did_nothing_is_stopped_once_and_journalled(root: Path) -> None:
    store = backend(root)
    store.assign("task-42", "claude:lazy", None, {"summary": "fix the login bug"})
    started = output(run_hook(root, event("SessionStart", "lazy", root, source="startup")))
    context = started["hookSpecificOutput"]["additionalContext"]
    assert started["hookSpecificOutput"]["hookEventName"] == "SessionStart"
    assert "task-42: fix the login bug" in context

    said = output(run_hook(root, stop_payload("lazy", root)))
    assert said["decision"] == "block" and "task-42" in said["reason"] and "no recorded write" in said["reason"]
    again = output(run_hook(root, stop_payload("lazy", root, active=True)))
    assert "decision" not in again and "task-42" in again["systemMessage"]
    anomalies = [e for e in store.journal_entries() if e.kind == "anomaly.zero_work"]
    assert [e.holder for e in anomalies] == ["claude:lazy", "claude:lazy"]
    assert anomalies[0].data["assignments"] == ["task-42"]

    write_through_hook(root, "lazy", root / "login.py", "fixed = True\n")
    assert output(run_hook(root, stop_payload("lazy", root))) == {}


def test_a_session_without_assignments_stops_quietly(root: Path) -> None:
    assert output(run_hook(root, event("SessionStart", "free", root, source="startup"))) == {}
    assert output(run_hook(root, stop_payload("free", root))) == {}
    assert backend(root).journal_count(kind="anomaly.zero_work") == 0


def test_a_stop_without_assigned_work_does_not_read_every_worker_ever_recorded(root: Path, monkeypatch) -> None:
    """Every session and subagent that ever ran stays in the workers table: a Stop with nothing
    assigned must not pay for reading them all."""
    from agent_coherence.adapters.claude_code.hook import main

    assert output(run_hook(root, event("SessionStart", "free", root, source="startup"))) == {}
    scans = []
    real = SQLiteBackend.list_workers
    monkeypatch.setattr(SQLiteBackend, "list_workers",
                        lambda self, include_ended=False: scans.append(include_ended) or real(self, include_ended))
    stdout, stderr = io.StringIO(), io.StringIO()
    assert main(io.BytesIO(json.dumps(stop_payload("free", root)).encode()), stdout, hook_env(root), stderr) == 0
    assert stdout.getvalue() == "" and stderr.getvalue() == ""
    assert scans == []


def test_declared_outputs_must_be_written_by_the_session(root: Path) -> None:
    env = hook_env(root, AGENT_COHERENCE_EXPECT_OUTPUTS=os.pathsep.join(["report.md", "data/out.csv"]))
    assert output(run_hook(root, event("SessionStart", "w", root, source="startup"), env)) == {}
    said = output(run_hook(root, stop_payload("w", root), env))
    assert said["decision"] == "block" and "report.md" in said["reason"] and "data/out.csv" in said["reason"]
    write_through_hook(root, "w", root / "report.md", "# Report\n")
    said = output(run_hook(root, stop_payload("w", root), env))
    assert "report.md" not in said["reason"] and "data/out.csv" in said["reason"]
    (root / "data").mkdir()
    write_through_hook(root, "w", root / "data" / "out.csv", "a,b\n")
    assert output(run_hook(root, stop_payload("w", root), env)) == {}


def test_session_end_releases_everything_of_the_session(root: Path) -> None:
    for name in ("a.txt", "b.txt"):
        assert allowed(run_hook(root, write_payload("alice", root, root / name)))
    assert allowed(run_hook(root, write_payload("alice", root, root / "c.txt", agent_id="agent-9")))
    assert allowed(run_hook(root, write_payload("carol", root, root / "d.txt")))
    assert output(run_hook(root, session_end("alice", root))) == {}
    assert [lease.key for lease in backend(root).list_leases()] == ["d.txt"]


# -- failures: fail closed for writes, open otherwise, never hang --------------------------------


def test_a_busy_database_denies_writes_and_lets_reads_through_within_the_budget(root: Path) -> None:
    backend(root).close()  # create the database
    env = hook_env(root, AGENT_COHERENCE_HOOK_BUDGET="0.5")
    blocker = sqlite3.connect(default_database(str(root)), isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        denied = run_hook(root, write_payload("alice", root, root / "x.txt"), env, timeout=20)
        assert not allowed(denied)
        assert "could not check this Write call" in reason(denied)
        read = run_hook(root, read_payload("alice", root, root / "src" / "app.py"), env, timeout=20)
        assert_clean(read)
        assert read.returncode == 0 and read.stdout == b""
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # The default budget: the half second above is for the refusal, and a loaded machine can
    # take longer than that to answer even an uncontended call.
    assert allowed(run_hook(root, write_payload("alice", root, root / "x.txt"), hook_env(root)))


def test_a_sqlite_url_in_the_environment_is_the_database_the_hook_uses(root: Path, tmp_path: Path) -> None:
    """AGENT_COHERENCE_URL=sqlite:///FILE is where the Python API keeps its state; the hook must keep
    its leases there too, or the scripts and the sessions are not coordinated with each other."""
    shared = tmp_path / "shared.db"
    env = hook_env(root, AGENT_COHERENCE_URL=f"sqlite:///{shared}")
    assert allowed(run_hook(root, write_payload("alice", root, root / "plan.md"), env))
    assert SQLiteBackend(str(shared)).get_lease("plan.md").holder == "claude:alice"
    assert not (root / ".agent-coherence").exists()
    from agent_coherence import Coordinator

    coord = Coordinator.open(str(root), url=f"sqlite:///{shared}")
    try:
        with pytest.raises(Exception, match="claude:alice"):
            coord.write("plan.md", b"from a script\n", holder="script")
    finally:
        coord.close()


def test_an_unsupported_url_refuses_writes_and_names_the_url_without_its_password(root: Path) -> None:
    env = hook_env(root, AGENT_COHERENCE_URL="postgresql+psycopg://app:s3cret@db/agents")
    said = reason(run_hook(root, write_payload("alice", root, root / "plan.md"), env))
    assert "unsupported backend URL" in said and "AGENT_COHERENCE_URL" in said and "s3cret" not in said, said
    assert "internal error" not in said
    assert not (root / ".agent-coherence").exists()  # no embedded database made behind the user's back
    assert allowed(run_hook(root, read_payload("alice", root, root / "src" / "app.py"), env))


def test_a_hook_whose_stdin_never_closes_does_not_hang(root: Path) -> None:
    env = hook_env(root, AGENT_COHERENCE_HOOK_BUDGET="0.3")
    proc = subprocess.Popen(HOOK, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(b'{"hook_event_name": "PreToolUse", "tool_name": "Write", ')
        proc.stdin.flush()
        proc.wait(timeout=20)  # the budget ends it, not the closing of stdin
    finally:
        proc.stdin.close()
    err, out = proc.stderr.read(), proc.stdout.read()
    answer = json.loads(out)["hookSpecificOutput"]
    assert proc.returncode == 0 and answer["permissionDecision"] == "deny" and b"Traceback" not in err
    assert "time budget" in answer["permissionDecisionReason"]


def test_the_hook_process_imports_nothing_heavy(root: Path) -> None:
    """What makes the hook start fast: none of these modules is loaded on a Write decision (the
    probe itself imports only io and sys; ``json`` would bring ``re`` and ``enum``)."""
    probe = (
        "import io, sys\n"
        "from agent_coherence.adapters.claude_code import hook\n"
        "code = hook.main(io.BytesIO(sys.stdin.buffer.read()), io.StringIO(), None, io.StringIO())\n"
        "print(repr([code, sorted(sys.modules)]))\n"
    )
    assert allowed(run_hook(root, read_payload("s", root, root / "src" / "app.py")))  # an allowed Write
    data = json.dumps(write_payload("s", root, root / "src" / "app.py")).encode()
    result = subprocess.run([sys.executable, "-c", probe], input=data, env=hook_env(root), capture_output=True,
                            timeout=TIMEOUT)
    code, modules = ast.literal_eval(result.stdout.decode())
    assert code == 0, result.stderr
    heavy = {"pydantic", "tenacity", "typing", "dataclasses", "inspect", "hashlib", "threading", "random",
             "datetime", "signal", "sqlite3", "json", "re", "enum", "agent_coherence.models",
             "agent_coherence.coordinator", "agent_coherence.backends.base",
             "agent_coherence.adapters.claude_code.bash_writes"}
    assert heavy.isdisjoint(modules), sorted(heavy.intersection(modules))


def test_a_refused_write_leaves_no_lease_behind(root: Path) -> None:
    notes = root / "notes.md"
    write_through_hook(root, "bob", notes, "bob's notes\n")
    assert output(run_hook(root, session_end("bob", root))) == {}
    assert not allowed(run_hook(root, write_payload("alice", root, notes)))  # alice never read it
    assert backend(root).get_lease("notes.md") is None
    assert not allowed(run_hook(root, bash("alice", root, "echo a > fresh.txt && echo b > notes.md")))
    assert backend(root).list_leases() == []
    assert allowed(run_hook(root, edit_payload("bob", root, notes, "bob", "bob's")))
