"""Hostile and broken input to the Claude Code hook: malformed JSON, missing or mistyped fields,
huge inputs, path traversal, symlinks, non-UTF-8.

Whatever arrives, the answer is clean: exit 0 or 2, no traceback, stdout empty or one JSON object;
a PreToolUse that may write and can't be checked is denied (``permissionDecision: "deny"``, or
exit 2 when even the event can't be told); nothing is ever allowed, or written,
outside the project root.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent_coherence.adapters.claude_code.hook import MAX_INPUT_BYTES, main
from agent_coherence.errors import PathOutsideRoot
from agent_coherence.paths import resolve_file_key

from test_claude_hook import assert_clean, denial, hook_env, run_hook, write_payload

WRITE_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit", "Bash")


def snapshot(directory: Path) -> dict[str, bytes | str]:
    """Every entry under ``directory`` with its bytes (files) or link target."""
    found: dict[str, bytes | str] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            found[str(path)] = "-> " + os.readlink(path)
        elif path.is_file():
            found[str(path)] = path.read_bytes()
        else:
            found[str(path)] = "dir"
    return found


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """A project root with symlinks in every direction, and a directory outside it."""
    root, outside = tmp_path / "project", tmp_path / "outside"
    (root / "src").mkdir(parents=True)
    outside.mkdir()
    (root / "src" / "app.py").write_text("print('hello')\n")
    (outside / "secret.txt").write_text("do not touch\n")
    (root / "link_out").symlink_to(outside)
    (root / "file_link_out").symlink_to(outside / "secret.txt")
    (root / "link_in").symlink_to(root / "src")
    (root / "dangling").symlink_to("/nonexistent/place")
    (root / "loop").symlink_to(root / "loop")
    return root, outside


def head(tool: str = "Write", event: str = "PreToolUse") -> bytes:
    return f'{{"session_id": "s", "hook_event_name": "{event}", "tool_name": "{tool}", '.encode()


UNREADABLE = [
    ("empty", b"", 0),
    ("not json", b"hello there", 0),
    ("a list", b"[1, 2, 3]", 0),
    ("truncated write", head() + b'"tool_input": {"file_path": "/x', 2),
    ("truncated read", head("Read") + b'"tool_input": {"file_path": "/x', 0),
    ("truncated bash", head("Bash") + b'"tool_input": {"command": "rm', 2),
    ("truncated, tool unknown", b'{"hook_event_name": "PreToolUse", "session_id": "s", ', 2),
    ("truncated stop", b'{"hook_event_name": "Stop", "session_id": ', 0),
    ("non-utf8 write", head() + b'"cwd": "/tmp", "tool_input": {"file_path": "/tmp/\xff\xfe", "content": ""}}', 2),
    ("non-utf8 session end", b'{"hook_event_name": "SessionEnd", "session_id": "\xc3\x28"}', 0),
    ("nested 100k deep", head("Edit") + b'"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 2),
    ("event not a string", b'{"hook_event_name": 5, "tool_name": "Write", "session_id": "s"}', 2),
    ("utf-16", '{"hook_event_name": "PreToolUse", "tool_name": "Write"}'.encode("utf-16"), 2),
]


@pytest.mark.parametrize("label,data,code", UNREADABLE, ids=[u[0] for u in UNREADABLE])
def test_unreadable_input_gets_a_clean_decision(world: tuple[Path, Path], label: str, data: bytes, code: int) -> None:
    root, outside = world
    before = snapshot(outside)
    result = run_hook(root, data)
    refusal = denial(result)
    assert (refusal is not None) == (code == 2), (label, result.stderr)
    if code == 2:
        assert "could not check" in refusal
    else:
        assert result.stdout == b""
    assert snapshot(outside) == before


def test_huge_inputs_are_refused_for_writes_and_ignored_otherwise(world: tuple[Path, Path]) -> None:
    root, _ = world
    filler = "x" * (MAX_INPUT_BYTES + 10)
    write = json.dumps(write_payload("s", root, root / "big.txt", filler)).encode()
    result = run_hook(root, write)
    assert "larger than" in (denial(result) or "")
    stop = json.dumps({"session_id": "s", "hook_event_name": "Stop", "cwd": str(root), "padding": filler}).encode()
    result = run_hook(root, stop)
    assert result.returncode == 0 and result.stdout == b""
    assert_clean(result)
    fits = json.dumps(write_payload("s", root, root / "big.txt", "y" * (4 << 20))).encode()
    assert denial(run_hook(root, fits)) is None


def pre(tool_input: object, tool: str = "Write", **fields: object) -> dict:
    payload = {"session_id": "s", "hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": tool_input,
               "tool_use_id": "t"}
    payload.update(fields)
    return payload


def test_missing_and_mistyped_fields(world: tuple[Path, Path]) -> None:
    root, outside = world
    app = str(root / "src" / "app.py")
    cases = [
        ("no session", {k: v for k, v in pre({"file_path": app, "content": ""}).items() if k != "session_id"}, 2),
        ("session is a number", pre({"file_path": app}, session_id=7), 2),
        ("session with control chars", pre({"file_path": app}, session_id="a\nb"), 2),
        ("session 10k chars", pre({"file_path": app}, session_id="s" * 10_000), 2),
        ("agent id a list", pre({"file_path": app}, agent_id=["x"]), 2),
        ("no tool_input", {k: v for k, v in pre({}).items() if k != "tool_input"}, 2),
        ("tool_input a string", pre("oops"), 2),
        ("no file_path", pre({"content": "x"}), 2),
        ("file_path a number", pre({"file_path": 12}), 2),
        ("file_path a dict", pre({"file_path": {"a": 1}}), 2),
        ("file_path empty", pre({"file_path": ""}), 2),
        ("file_path with NUL", pre({"file_path": app + "\x00.txt"}), 2),
        ("file_path a directory", pre({"file_path": str(root / "src")}), 2),
        ("notebook without path", pre({"new_source": "x"}, tool="NotebookEdit"), 2),
        ("bash without command", pre({"description": "x"}, tool="Bash"), 2),
        ("bash command a list", pre({"command": ["rm", "-rf", "/"]}, tool="Bash"), 2),
        ("no tool_name", {k: v for k, v in pre({}).items() if k != "tool_name"}, 2),
        ("unknown tool", pre({"anything": 1}, tool="mcp__fs__write_file"), 0),
        ("read without path", pre({}, tool="Read"), 0),
        ("post write without path", dict(pre({}), hook_event_name="PostToolUse"), 0),
        ("stop without session", {"hook_event_name": "Stop"}, 0),
        ("session end, session a number", {"hook_event_name": "SessionEnd", "session_id": 1}, 0),
    ]
    before = snapshot(outside)
    for label, payload, code in cases:
        result = run_hook(root, payload)
        assert (denial(result) is not None) == (code == 2), (label, result.stdout, result.stderr)
    assert snapshot(outside) == before


@pytest.mark.parametrize("project_dir", ["relative/dir", "/nonexistent/project", ""])
def test_an_unusable_project_root_denies_writes_and_creates_nothing(world: tuple[Path, Path], project_dir: str) -> None:
    root, _ = world
    env = hook_env(root, CLAUDE_PROJECT_DIR=project_dir)
    payload = write_payload("s", root, root / "x.txt")
    payload["cwd"] = "not/absolute"
    result = run_hook(root, payload, env)
    assert "could not check" in (denial(result) or "")
    assert not Path("/nonexistent").exists() and not (Path.cwd() / "relative").exists()


TRAVERSALS = [
    "../outside/secret.txt", "src/../../outside/secret.txt", "/etc/passwd", "//etc//passwd",
    "link_out/secret.txt", "link_out/new.txt", "file_link_out", "dangling", "link_in/../../outside/x",
    ".agent-coherence/state.db", "./.agent-coherence/../../outside/x", "~/x", "~", "src/\u202e.txt", "loop",
    "loop/x",
    "src/" + "a" * 300, "/" + "b/" * 3000,
]


@pytest.mark.parametrize("tool", WRITE_TOOLS)
def test_traversal_and_symlinks_are_never_allowed_outside_the_root(world: tuple[Path, Path], tool: str) -> None:
    root, outside = world
    before = snapshot(outside)
    for raw in TRAVERSALS:
        path = raw if raw.startswith(("/", "~")) else str(root / raw)
        if tool == "Bash":
            payload = pre({"command": f"echo pwned > '{path}'"}, tool="Bash", cwd=str(root))
        elif tool == "NotebookEdit":
            payload = pre({"notebook_path": path, "new_source": "x", "edit_mode": "replace"}, tool=tool)
        else:
            payload = pre({"file_path": path, "content": "pwned", "old_string": "a", "new_string": "b",
                           "edits": [{"old_string": "a", "new_string": "b"}]}, tool=tool)
        result = run_hook(root, payload)
        if denial(result) is None:
            literal = str(root / path) if tool == "Bash" and path.startswith("~") else path  # quoted: no ~ expansion
            assert _inside(root, literal, str(root)), (tool, raw)
    assert snapshot(outside) == before


def _inside(root: Path, path: object, cwd: object) -> bool:
    """Where the hook takes a path to be: ``~`` expanded, relative to the session's cwd."""
    if not (isinstance(cwd, str) and os.path.isabs(cwd) and "\x00" not in cwd):
        cwd = str(root)
    if isinstance(path, str) and path.startswith("~"):
        path = os.path.expanduser(path)
    if isinstance(path, str) and path and "\x00" not in path and not os.path.isabs(path):
        path = os.path.join(cwd, path)
    try:
        resolve_file_key(str(root), path)
        return True
    except PathOutsideRoot:
        return False


# -- property: any payload at all --------------------------------------------------------------

EVENTS = st.sampled_from(["PreToolUse", "PostToolUse", "PostToolUseFailure", "SessionStart", "Stop",
                          "SubagentStop", "SessionEnd", "Notification", "", "pretooluse"]) | st.text(max_size=12)
TOOLS = st.sampled_from(["Write", "Edit", "MultiEdit", "NotebookEdit", "Bash", "Read", "Glob"]) | st.text(max_size=8)
PATHS = st.sampled_from(TRAVERSALS + ["src/app.py", "new.txt", "src", "", "."]) | st.text(max_size=30)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40) | PATHS
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                      max_leaves=8)


@st.composite
def payloads(draw: st.DrawFn, root: Path) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    tool_input: dict[str, object] = draw(st.dictionaries(
        st.sampled_from(["file_path", "notebook_path", "content", "old_string", "new_string", "edits", "command",
                         "x"]), VALUES, max_size=4))
    for name in ("file_path", "notebook_path"):
        if name in tool_input and isinstance(tool_input[name], str) and draw(st.booleans()):
            tool_input[name] = str(root / tool_input[name])
    if draw(st.booleans()):
        tool_input["command"] = draw(st.sampled_from(["echo x > ", "rm -rf ", "tee ", "cat "])) + draw(PATHS)
    payload: dict[str, object] = {
        "hook_event_name": draw(EVENTS), "tool_name": draw(TOOLS), "tool_input": draw(st.just(tool_input) | VALUES),
        "session_id": draw(st.sampled_from(["s1", "s2"]) | VALUES), "cwd": draw(st.just(str(root)) | VALUES),
    }
    for optional in ("agent_id", "stop_hook_active", "tool_response", "source", "reason"):
        if draw(st.booleans()):
            payload[optional] = draw(VALUES)
    for dropped in draw(st.lists(st.sampled_from(sorted(payload)), max_size=2)):
        payload.pop(dropped, None)
    text = json.dumps(payload)
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_payload_gets_a_clean_decision_and_nothing_leaves_the_root(world: tuple[Path, Path], data) -> None:
    root, outside = world
    raw = data.draw(payloads(root))
    before = snapshot(outside)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(io.BytesIO(raw), stdout, hook_env(root), stderr)
    assert code in (0, 2)
    assert "Traceback" not in stderr.getvalue() and "Traceback" not in stdout.getvalue()
    if stdout.getvalue().strip():
        assert isinstance(json.loads(stdout.getvalue()), dict)
    if code == 2:
        assert stdout.getvalue() == "" and stderr.getvalue().strip()
    said = json.loads(stdout.getvalue()) if stdout.getvalue().strip() else {}
    refused = code == 2 or said.get("hookSpecificOutput", {}).get("permissionDecision") == "deny"
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    if not refused and isinstance(payload, dict) and payload.get("hook_event_name") == "PreToolUse" \
            and payload.get("tool_name") in ("Write", "Edit", "MultiEdit", "NotebookEdit"):
        tool_input = payload["tool_input"]
        names = ("notebook_path", "file_path") if payload["tool_name"] == "NotebookEdit" else ("file_path",)
        path = next(tool_input[n] for n in names if tool_input.get(n) is not None)
        assert _inside(root, path, payload.get("cwd")), payload
    assert snapshot(outside) == before
    assert sorted(p.name for p in root.parent.iterdir()) == ["outside", "project"]
