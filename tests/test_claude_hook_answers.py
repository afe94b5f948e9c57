"""What Claude reads when the hook can't say yes: each refusal names its real cause and gives
advice that fits it. Run as Claude Code runs the hook, one fresh process per event (a fresh
interpreter matters: it is where ``json`` has not been imported yet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_claude_hook import (  # noqa: F401  (root is a fixture)
    allowed,
    backend,
    edit_payload,
    read_payload,
    session_end,
    write_through_hook,
    output,
    post_problem,
    post_write_payload,
    reason,
    root,
    run_hook,
    tool_event,
    write_payload,
)


@pytest.mark.parametrize("cut", ['"file_path": "src/ap', '"file_path": "src\\q', '"file_path" "x"'])
def test_truncated_or_damaged_json_is_reported_as_such(root: Path, cut: str) -> None:
    """A damaged string or delimiter makes the C decoder fail before ``json`` is imported: the
    refusal must say the input is not valid JSON, not report an internal error."""
    raw = ('{"hook_event_name": "PreToolUse", "session_id": "a", "tool_name": "Write", '
           '"tool_input": {' + cut).encode()
    said = reason(run_hook(root, raw))
    assert "not valid JSON" in said and "internal error" not in said and "SystemError" not in said, said


@pytest.mark.parametrize(("where", "advice"), [
    ("state dir", "coordination database"),
    ("directory", "name a file"),
])
def test_a_refused_path_inside_the_root_is_not_told_to_move_inside_the_project(root: Path, where: str,
                                                                                advice: str) -> None:
    path = {"state dir": root / ".agent-coherence" / "x.txt", "directory": root / "src"}[where]
    payloads = [write_payload("a", root, path)]
    if where == "state dir":  # a Bash redirection into a directory fails by itself; into the state dir it must not run
        payloads.append(tool_event("PreToolUse", "a", root, "Bash", {"command": f"echo hi > {path}"}))
    for payload in payloads:
        said = reason(run_hook(root, payload))
        assert "refused to" in said and advice in said, said
        assert "choose a path inside the project" not in said, said


def test_a_path_outside_is_still_told_to_choose_one_inside(root: Path, tmp_path: Path) -> None:
    said = reason(run_hook(root, write_payload("a", root, tmp_path / "elsewhere.txt")))
    assert "outside the root" in said and "choose a path inside the project" in said, said


def test_an_unusable_database_is_named_as_such_not_as_a_bug(root: Path) -> None:
    """A state directory that can't be made is a known failure with its own recovery advice, for
    a write refused before it runs and for a write that can't be confirmed after."""
    (root / ".agent-coherence").write_text("not a directory\n")
    target = root / "src" / "app.py"
    refused = run_hook(root, write_payload("a", root, target))
    assert not allowed(refused)
    said = reason(refused)
    assert "BackendUnavailable" in said and "state directory" in said and "internal error" not in said, said
    told = post_problem(output(run_hook(root, post_write_payload("a", root, target, "print('hello')\n"))))
    assert "could not confirm the write of this Write call" in told and "internal error" not in told, told
    assert (root / ".agent-coherence").read_text() == "not a directory\n"


def test_a_bash_write_to_a_refused_path_is_journalled_like_a_file_tools(root: Path, tmp_path: Path) -> None:
    """`status` and the journal show every refused path, whichever tool asked for it."""
    outside = tmp_path / "elsewhere.txt"
    for command in (f"echo x > {outside}", "echo x >> .agent-coherence/notes"):
        assert not allowed(run_hook(root, tool_event("PreToolUse", "b", root, "Bash", {"command": command})))
    assert not allowed(run_hook(root, write_payload("b", root, outside)))
    store = backend(root)
    try:
        refused = [e for e in store.journal_entries() if e.kind == "conflict.path"]
    finally:
        store.close()
    assert [(e.data["tool"], e.holder) for e in refused] == [("Bash", "claude:b")] * 2 + [("Write", "claude:b")]
    assert str(outside) in refused[0].data["path"] and "outside the root" in refused[0].data["reason"]
    assert "state directory" in refused[1].data["reason"] and refused[1].data["command"].startswith("echo x >>")


def test_status_lists_the_hooks_own_refusals_among_recent_conflicts(root: Path) -> None:
    """After a stale edit was refused, `agent-coherence status` must show it, not "0 conflicts"."""
    app = root / "src" / "app.py"
    assert allowed(run_hook(root, read_payload("a", root, app)))
    assert allowed(run_hook(root, read_payload("a", root, app, "PostToolUse")))
    write_through_hook(root, "b", app, "print('from b')\n")
    assert allowed(run_hook(root, session_end("b", root)))
    assert "this session read version" in reason(run_hook(root, edit_payload("a", root, app, "hello", "hi")))
    shown = subprocess.run([sys.executable, "-m", "agent_coherence", "status", "--root", str(root)],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    problems = shown.stdout.split("Recent conflicts and failures", 1)[1].split("Channels", 1)[0]
    assert "1 conflict.view" in problems, problems
    row = next(line for line in problems.splitlines() if " conflict.view " in line)
    assert "src/app.py" in row and "claude:a" in row, row
