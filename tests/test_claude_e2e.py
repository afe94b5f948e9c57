"""The real Claude Code client (npm ``@anthropic-ai/claude-code``, pinned) with the hooks that
``agent-coherence install claude-code`` writes: two ``claude -p`` sessions at once on one project,
their model played by a scripted fake Messages API on 127.0.0.1, inside a network namespace with
only loopback and no API key.

What is asserted is what the client itself did and told the model: the refusals in the
``tool_result`` blocks it sent back are ours (a lease held by the other session, a stale view),
the files end as they should, and the journal verifies. The same scenario without the hooks
shows the write that gets lost. A hook that can't start or hangs refuses the write with the
installer's ``onFailure: "block"`` and lets it through without it.

The client is installed by the test itself into ``.venv/claude-code/`` (cached across runs). In CI
(``CI=true``) a missing npm or missing namespace support fails; elsewhere the tests skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import claude_e2e

BIN = str(Path(sys.executable).parent)  # the venv's bin: agent-coherence is on PATH from here
ALPHA, BRAVO = "SESSION-ALPHA", "SESSION-BRAVO"
NOTES = "line one\nline two\n"


@pytest.fixture(scope="module")
def claude() -> str:
    try:
        problem = claude_e2e.isolation_problem()
        if problem is not None:
            raise claude_e2e.Unavailable(problem)
        return str(claude_e2e.claude_binary())
    except claude_e2e.Unavailable as missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the real-client tests must run in CI: {missing}")
        pytest.skip(str(missing))


def test_without_npm_the_client_is_unavailable_with_the_reason(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes the real-client tests skip here and fail in CI: a reason, never a silent pass."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it
    with pytest.raises(claude_e2e.Unavailable, match="npm is not installed"):
        claude_e2e.claude_binary(tmp_path / "cache")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=os.pathsep.join([BIN, os.environ.get("PATH", "")]))
    return subprocess.run([os.path.join(BIN, "agent-coherence"), *args], capture_output=True, text=True,
                          timeout=60, env=env)


def session(marker: str, project: Path, turns: list[dict[str, Any]], work: Path, **extra: Any) -> dict[str, Any]:
    return {"marker": marker, "prompt": f"{marker}: do the scripted work", "cwd": str(project),
            "home": str(work / f"home-{marker}"), "turns": turns,
            "args": ["--permission-mode", "acceptEdits", "--allowedTools", "Bash"],
            "env": {"PATH": os.pathsep.join([BIN, os.environ.get("PATH", "")])}, **extra}


def use(name: str, **tool_input: Any) -> dict[str, Any]:
    return {"tools": [[name, tool_input]]}


def two_sessions(project: Path, work: Path) -> list[dict[str, Any]]:
    """A writes shared.txt and has read notes.txt; B then tries to overwrite shared.txt (Write,
    then Bash) and edits notes.txt; after B has ended, A edits notes.txt from its old read, then
    its own shared.txt. Gates order the two sessions; nothing depends on timing."""
    shared, notes = str(project / "shared.txt"), str(project / "notes.txt")
    alpha = [
        use("Read", file_path=notes),
        use("Write", file_path=shared, content="from A\n"),
        dict(use("Edit", file_path=notes, old_string="line two", new_string="line two (A)"), after=f"{BRAVO}:exit"),
        use("Edit", file_path=shared, old_string="from A", new_string="from A (edited)"),
        {"text": "A is done"},
    ]
    bravo = [
        dict(use("Read", file_path=shared), after=f"{ALPHA}:2"),  # A's Write has run, hooks included
        use("Write", file_path=shared, content="from B\n"),
        use("Bash", command="echo from-B-bash >> shared.txt", description="append a line"),
        use("Read", file_path=notes),
        use("Edit", file_path=notes, old_string="line one", new_string="line one (B)"),
        {"text": "B is done"},
    ]
    return [session(ALPHA, project, alpha, work), session(BRAVO, project, bravo, work)]


def told(result: dict[str, Any], marker: str) -> list[str]:
    """What the client told the model after each of the session's tool calls, in order."""
    return [r["content"] for r in sorted((r for r in result["tool_results"] if r["marker"] == marker),
                                         key=lambda r: r["turn"])]


def project_with_notes(tmp_path: Path, name: str) -> Path:
    project = tmp_path / name
    project.mkdir()
    (project / "notes.txt").write_text(NOTES)
    return project


def test_two_real_sessions_with_the_hooks_refuse_what_would_be_lost(claude: str, tmp_path: Path) -> None:
    project = project_with_notes(tmp_path, "project")
    installed = cli("install", "claude-code", "--root", str(project))
    assert installed.returncode == 0, installed.stderr
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    assert settings["hooks"]["PreToolUse"][0]["hooks"][0]["command"] == "agent-coherence hook"

    result = claude_e2e.run_sessions({"claude": claude, "sessions": two_sessions(project, tmp_path)}, tmp_path)
    for marker in (ALPHA, BRAVO):
        assert result["sessions"][marker]["returncode"] == 0, result["sessions"][marker]
    alpha, bravo = told(result, ALPHA), told(result, BRAVO)
    assert len(alpha) == 4 and len(bravo) == 5, (alpha, bravo)

    # B: its Write and its Bash append were refused by our lease, naming A; its own edit went through.
    for refusal, tool in zip(bravo[1:3], ("Write", "Bash")):
        # The JSON denial arrives as the reason alone, without our command line in brackets.
        assert refusal.startswith(f"PreToolUse:{tool} hook error: agent-coherence: shared.txt is locked by "
                                  f"another Claude Code session"), refusal
    assert "notes.txt" in bravo[4] and "agent-coherence" not in bravo[4]
    # A: its edit from a stale read was refused by our view check; its own file's edit went through.
    assert "agent-coherence: refused to edit notes.txt: this session read version 0, but it is now version 1" \
        in alpha[2], alpha[2]
    assert "agent-coherence" not in alpha[1] and "agent-coherence" not in alpha[3]
    denials = {m: [d["tool_name"] for d in result["sessions"][m]["result"]["permission_denials"]] for m in (ALPHA, BRAVO)}
    assert denials == {ALPHA: ["Edit"], BRAVO: ["Write", "Bash"]}, denials

    assert (project / "shared.txt").read_text() == "from A (edited)\n"
    assert (project / "notes.txt").read_text() == "line one (B)\nline two\n"
    verified = cli("journal", "verify", "--root", str(project))
    assert verified.returncode == 0 and verified.stdout.startswith("journal OK"), verified.stdout + verified.stderr
    shown = cli("journal", "show", "--json", "--limit", "1000", "--root", str(project))
    kinds = [json.loads(line)["kind"] for line in shown.stdout.splitlines()]
    assert kinds.count("conflict.lease") == 2 and kinds.count("conflict.view") == 1, kinds
    assert kinds.count("worker.start") == 2 and kinds.count("worker.end") == 2, kinds


def test_the_same_two_sessions_without_the_hooks_lose_a_write(claude: str, tmp_path: Path) -> None:
    project = project_with_notes(tmp_path, "project")
    result = claude_e2e.run_sessions({"claude": claude, "sessions": two_sessions(project, tmp_path)}, tmp_path)
    alpha, bravo = told(result, ALPHA), told(result, BRAVO)
    assert not any("agent-coherence" in text for text in alpha + bravo)
    # B overwrote the file A had just written: A's write is gone, and nobody was told.
    assert (project / "shared.txt").read_text() == "from B\nfrom-B-bash\n"
    assert "from A" not in (project / "shared.txt").read_text()
    assert (project / "notes.txt").read_text() == "line one (B)\nline two (A)\n"


HANG = "#!/bin/sh\nsleep 30\n"


def test_a_hook_that_cannot_start_or_hangs_refuses_the_write_only_with_on_failure_block(
        claude: str, tmp_path: Path) -> None:
    hanging = tmp_path / "hangs" / "agent-coherence"
    hanging.parent.mkdir()
    hanging.write_text(HANG)
    hanging.chmod(0o755)
    commands = {"missing": str(tmp_path / "nowhere" / "agent-coherence"), "hangs": str(hanging)}
    sessions = []
    for failure, command in commands.items():
        for keep_key in (True, False):
            marker = f"RUN-{failure}-{'block' if keep_key else 'default'}"
            project = tmp_path / marker
            project.mkdir()
            assert cli("install", "claude-code", "--command", command, "--root", str(project)).returncode == 0
            path = project / ".claude" / "settings.json"
            settings = json.loads(path.read_text())
            settings["hooks"] = {"PreToolUse": settings["hooks"]["PreToolUse"][:1]}  # the one handler that matters
            handler = settings["hooks"]["PreToolUse"][0]["hooks"][0]
            assert handler["onFailure"] == "block"
            handler["timeout"] = 1  # hang past the timeout quickly
            if not keep_key:
                del handler["onFailure"]
            path.write_text(json.dumps(settings))
            sessions.append(session(marker, project, [use("Write", file_path=str(project / "out.txt"),
                                                          content="x\n"), {"text": "done"}], tmp_path))
    result = claude_e2e.run_sessions({"claude": claude, "sessions": sessions}, tmp_path)
    for spec in sessions:
        marker, written = spec["marker"], (Path(spec["cwd"]) / "out.txt").exists()
        [answer] = told(result, marker)
        if marker.endswith("-block"):
            assert not written and 'blocking because onFailure is "block"' in answer, (marker, answer)
        else:
            assert written and "File created successfully" in answer, (marker, answer)


STOP_RECORDER = """#!/bin/sh
# The installed Stop hook, run as installed, with its input and answer kept; `N.done` marks that
# the hook has answered the N-th Stop.
dir={dir}
n=$(ls "$dir" | grep -c '[.]in$')
cat > "$dir/$n.in"
agent-coherence hook < "$dir/$n.in" | tee "$dir/$n.out"
touch "$dir/$n.done"
"""


def test_a_background_subagent_doing_the_work_is_no_zero_work_anomaly(claude: str, tmp_path: Path) -> None:
    from agent_coherence.backends import default_database
    from agent_coherence.backends.sqlite import SQLiteBackend

    project = tmp_path / "project"
    project.mkdir()
    session_id = "6f2d1c3a-0b4e-4c8a-9d7e-2a1b3c4d5e6f"
    store = SQLiteBackend(default_database(str(project)))
    store.assign("task-feature", f"claude:{session_id}", None, {"summary": "write feature.py"})
    store.close()
    assert cli("install", "claude-code", "--root", str(project)).returncode == 0
    stops = tmp_path / "stops"
    stops.mkdir()
    recorder = tmp_path / "record-stop"
    recorder.write_text(STOP_RECORDER.format(dir=stops))
    recorder.chmod(0o755)
    path = project / ".claude" / "settings.json"
    settings = json.loads(path.read_text())
    settings["hooks"]["Stop"][0]["hooks"][0]["command"] = str(recorder)
    path.write_text(json.dumps(settings))

    main = [
        use("Agent", description="write the feature", prompt="SUBAGENT-ECHO: write feature.py",
            subagent_type="general-purpose"),
        {"text": "The agent is writing the feature."},  # Stop fires here, the subagent still runs
        {"text": "The feature is written."},
    ]
    subagent = [
        dict(use("Write", file_path=str(project / "feature.py"), content="ENABLED = True\n"),
             after=f"file:{stops / '0.done'}"),  # only after the first Stop was answered
        {"text": "feature.py written"},
    ]
    spec = {"claude": claude, "subagents": [{"marker": "SUBAGENT-ECHO", "turns": subagent}],
            "sessions": [session("SESSION-DELTA", project, main, tmp_path, args=[
                "--permission-mode", "acceptEdits", "--session-id", session_id])]}
    result = claude_e2e.run_sessions(spec, tmp_path)
    assert result["sessions"]["SESSION-DELTA"]["returncode"] == 0, result["sessions"]

    first_stop = json.loads((stops / "0.in").read_text())
    assert [t.get("status") for t in first_stop["background_tasks"]] == ["running"], first_stop
    assert (stops / "0.out").read_text().strip() == ""  # no block, so no forced extra turn
    assert (project / "feature.py").read_text() == "ENABLED = True\n"
    shown = cli("journal", "show", "--json", "--limit", "1000", "--root", str(project))
    entries = [json.loads(line) for line in shown.stdout.splitlines()]
    assert not [e for e in entries if e["kind"] == "anomaly.zero_work"], entries
    subagent_starts = [e["holder"] for e in entries if e["kind"] == "worker.start" and "/" in (e["holder"] or "")]
    assert len(subagent_starts) == 1 and subagent_starts[0].startswith(f"claude:{session_id}/"), entries
    writes = [e for e in entries if e["kind"] == "write.claude"]
    assert [w["holder"] for w in writes] == subagent_starts  # the subagent wrote, as a worker from its start
    main_requests = [r for r in result["requests"] if r["marker"] == "SESSION-DELTA"]
    assert len(main_requests) == 3, main_requests
    assert cli("journal", "verify", "--root", str(project)).returncode == 0
