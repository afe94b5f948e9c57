"""The Claude Code hook installer: settings merge, uninstall, plugin layout."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from agent_coherence.adapters.claude_code import installer
from agent_coherence.adapters.claude_code.installer import (
    HOOK_COMMAND,
    SettingsError,
    hook_entries,
    install_settings,
    is_our_handler,
    uninstall_settings,
    write_plugin,
)
from agent_coherence.errors import CoherenceError

CMD = "/opt/venv/bin/agent-coherence"

ORIGINAL = {
    "$schema": "https://json.schemastore.org/claude-code-settings.json",
    "permissions": {"allow": ["Bash(git status)", "Read(~/.zshrc)"], "deny": ["Read(./.env)"]},
    "env": {"GREETING": "héllo wörld ✓", "NUM": "1"},
    "hooks": {
        "Notification": [{"matcher": "", "hooks": [{"type": "command", "command": "notify-send 'Claude'"}]}],
        "PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "~/.claude/bash-guard.sh", "timeout": 3}]},
        ],
        "Stop": [{"hooks": [{"type": "command", "command": "say done", "async": True}]}],
    },
    "model": "opus",
    "cleanupPeriodDays": 30,
    "includeCoAuthoredBy": False,
    "statusLine": {"type": "command", "command": "starship prompt", "padding": 0},
}


def _write(path, data) -> bytes:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    raw = (json.dumps(data, indent=4, ensure_ascii=False) + "\n").encode()  # not our formatting on purpose
    with open(path, "wb") as f:
        f.write(raw)
    return raw


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _ordered(value):
    """A structure whose equality also checks the order of object keys."""
    if isinstance(value, dict):
        return [(k, _ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_ordered(v) for v in value]
    return value


@pytest.fixture
def project(tmp_path):
    path = os.path.join(tmp_path, ".claude", "settings.json")
    _write(path, ORIGINAL)
    return str(tmp_path), path


def test_hook_entries_shape() -> None:
    entries = hook_entries(CMD)
    assert list(entries) == ["PreToolUse", "PostToolUse", "PostToolUseFailure", "SessionStart", "SubagentStart",
                             "Stop", "SubagentStop", "SessionEnd"]
    for event, groups in entries.items():
        assert len(groups) == (2 if event == "PreToolUse" else 1)
        for group in groups:
            assert len(group["hooks"]) == 1
            handler = group["hooks"][0]
            assert handler["type"] == "command"
            # shell form: every client version runs it with its argument (no bare `agent-coherence`)
            assert handler["command"] == f"{CMD} hook" and "args" not in handler
            assert handler["timeout"] == (5 if event == "SessionEnd" else 10)
            assert is_our_handler(handler)
            if event in ("PreToolUse", "PostToolUse", "PostToolUseFailure"):
                # a matcher of letters and `|` only is an exact match, not a regex
                assert all(ch.isalnum() or ch == "|" for ch in group["matcher"])
            else:
                assert "matcher" not in group
        if event in ("PostToolUse", "PostToolUseFailure"):
            assert groups[0]["matcher"] == "Write|Edit|MultiEdit|NotebookEdit|Bash|Read"
    # A PreToolUse hook that can't start or times out refuses a tool call that may write instead
    # of letting it run; a Read it would only refuse, protecting nothing.
    writes, reads = entries["PreToolUse"]
    assert writes["matcher"] == "Write|Edit|MultiEdit|NotebookEdit|Bash" and writes["hooks"][0]["onFailure"] == "block"
    assert reads["matcher"] == "Read" and "onFailure" not in reads["hooks"][0]
    assert all("onFailure" not in g["hooks"][0] for event, groups in entries.items() if event != "PreToolUse"
               for g in groups)
    json.dumps(entries)  # serialisable


def test_reinstall_over_the_single_pretooluse_group_of_an_earlier_version(project) -> None:
    root, path = project
    data = json.loads(_read(path))
    earlier = {"matcher": "Write|Edit|MultiEdit|NotebookEdit|Bash|Read", "hooks": [
        {"type": "command", "command": f"{CMD} hook", "timeout": 10, "statusMessage": "agent-coherence",
         "onFailure": "block"}]}
    data["hooks"]["PreToolUse"].append(earlier)
    data["hooks"]["PreToolUse"].append({"matcher": "Read", "hooks": [{"type": "command", "command": "mine"}]})
    _write(path, data)
    install_settings(root, command=CMD)
    groups = json.loads(_read(path))["hooks"]["PreToolUse"]
    assert [g["matcher"] for g in groups] == ["Bash", "Write|Edit|MultiEdit|NotebookEdit|Bash", "Read", "Read"]
    assert groups[3]["hooks"] == [{"type": "command", "command": "mine"}]  # the user's own group, kept after ours
    raw = _read(path)
    install_settings(root, command=CMD)
    assert _read(path) == raw


def test_install_keeps_unrelated_settings_and_other_hooks(project) -> None:
    root, path = project
    assert install_settings(root, command=CMD) == path
    after = json.loads(_read(path))
    # unrelated keys: same content, same order, same serialisation
    assert [k for k in after] == [k for k in ORIGINAL]
    for key in ORIGINAL:
        if key != "hooks":
            assert after[key] == ORIGINAL[key]
    strip = lambda d: {k: v for k, v in d.items() if k != "hooks"}  # noqa: E731
    assert json.dumps(strip(after), indent=2) == json.dumps(strip(ORIGINAL), indent=2)
    # other people's hooks on the same events kept, in front of ours
    hooks = after["hooks"]
    assert hooks["Notification"] == ORIGINAL["hooks"]["Notification"]
    assert hooks["PreToolUse"][0] == ORIGINAL["hooks"]["PreToolUse"][0]
    assert hooks["Stop"][0] == ORIGINAL["hooks"]["Stop"][0]
    assert list(hooks)[:3] == ["Notification", "PreToolUse", "Stop"]
    entries = hook_entries(CMD)
    for event, groups in entries.items():
        assert hooks[event][-len(groups):] == groups
    assert len(hooks["PreToolUse"]) == 3 and len(hooks["Stop"]) == 2
    # our formatting: indent=2, trailing newline, non-ASCII kept as is
    raw = _read(path).decode()
    assert raw.endswith("}\n") and '\n  "permissions"' in raw and "héllo wörld ✓" in raw


def test_install_is_idempotent(project) -> None:
    root, path = project
    install_settings(root, command=CMD)
    first = _read(path)
    st1 = os.stat(path)
    install_settings(root, command=CMD)
    assert _read(path) == first
    st2 = os.stat(path)
    assert (st1.st_ino, st1.st_mtime_ns) == (st2.st_ino, st2.st_mtime_ns), "second install must not write"


def test_reinstall_with_another_command_replaces_in_place(project) -> None:
    root, path = project
    install_settings(root, command=CMD)
    # the user moves our PreToolUse group to the front
    data = json.loads(_read(path))
    data["hooks"]["PreToolUse"].reverse()
    _write(path, data)
    install_settings(root, command="/elsewhere/bin/agent-coherence")
    hooks = json.loads(_read(path))["hooks"]
    for event, groups in hooks.items():
        ours = [h for g in groups for h in g["hooks"] if is_our_handler(h)]
        assert len(ours) <= (2 if event == "PreToolUse" else 1), event
        assert all(h["command"] == "/elsewhere/bin/agent-coherence hook" for h in ours)
    assert is_our_handler(hooks["PreToolUse"][0]["hooks"][0]), "position kept"
    assert hooks["PreToolUse"][2] == ORIGINAL["hooks"]["PreToolUse"][0]


def test_uninstall_restores_the_original_exactly(project) -> None:
    root, path = project
    install_settings(root, command=CMD)
    uninstall_settings(root)
    after = json.loads(_read(path))
    assert after == ORIGINAL
    assert _ordered(after) == _ordered(ORIGINAL)
    # and a second uninstall changes nothing
    raw = _read(path)
    uninstall_settings(root)
    assert _read(path) == raw


def test_install_into_missing_file_and_uninstall(tmp_path) -> None:
    root = str(tmp_path)
    path = install_settings(root, command=CMD)
    assert path == os.path.join(root, ".claude", "settings.json")
    assert json.loads(_read(path)) == {"hooks": hook_entries(CMD)}
    uninstall_settings(root)
    assert json.loads(_read(path)) == {}


def test_uninstall_of_missing_file_creates_nothing(tmp_path) -> None:
    path = uninstall_settings(str(tmp_path))
    assert not os.path.exists(path)
    assert not os.path.exists(os.path.dirname(path))


def test_uninstall_with_nothing_of_ours_leaves_the_file_byte_for_byte(project) -> None:
    _, path = project
    raw = _read(path)  # four-space indentation, which our own writes would turn into two
    uninstall_settings(project[0])
    assert _read(path) == raw


def test_uninstall_through_a_dangling_symlink_creates_nothing(tmp_path) -> None:
    link = tmp_path / ".claude" / "settings.json"
    link.parent.mkdir()
    target = tmp_path / "dotfiles" / "claude-settings.json"
    link.symlink_to(target)
    uninstall_settings(str(tmp_path))
    assert not os.path.lexists(target) and not os.path.exists(target.parent)


def test_a_settings_file_that_cannot_be_written_is_a_typed_refusal_and_stays_as_it_was(project, monkeypatch) -> None:
    import errno

    root, path = project
    raw = _read(path)

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(SettingsError) as refused:
        install_settings(root, command=CMD)
    monkeypatch.undo()
    assert refused.value.path == path and "No space left on device" in refused.value.reason
    assert "free space" in refused.value.recover
    assert _read(path) == raw
    assert sorted(os.listdir(os.path.dirname(path))) == ["settings.json"]  # no temporary file left


def test_a_plugin_directory_in_the_way_is_a_typed_refusal(tmp_path) -> None:
    (tmp_path / "hooks").write_text("not a directory\n")
    with pytest.raises(SettingsError) as refused:
        write_plugin(str(tmp_path), command="agent-coherence")
    assert refused.value.path == os.path.join(str(tmp_path), "hooks", "hooks.json")
    assert "plugin directory" in refused.value.recover


def test_install_when_hooks_object_has_no_matching_events(tmp_path) -> None:
    root = str(tmp_path)
    original = {"hooks": {"UserPromptSubmit": [{"hooks": [{"type": "command", "command": "x"}]}]}, "after": 1}
    path = os.path.join(root, ".claude", "settings.json")
    _write(path, original)
    install_settings(root, command=CMD)
    uninstall_settings(root)
    assert _ordered(json.loads(_read(path))) == _ordered(original)


def test_uninstall_removes_only_our_handler_from_a_shared_group(project) -> None:
    root, path = project
    data = json.loads(_read(path))
    ours = hook_entries(CMD)["PreToolUse"][0]["hooks"][0]
    data["hooks"]["PreToolUse"][0]["hooks"].append(ours)  # someone merged our handler into their group
    _write(path, data)
    uninstall_settings(root)
    assert json.loads(_read(path)) == ORIGINAL


@pytest.mark.parametrize("handler", [
    {"type": "command", "command": "agent-coherence", "args": ["hook"]},
    {"type": "command", "command": "/some/venv/bin/agent-coherence", "args": ["hook"], "timeout": 99},
    {"type": "command", "command": "'/path with space/agent-coherence' hook"},
    {"type": "command", "command": "agent-coherence hook"},
    {"type": "command", "command": "/usr/local/bin/wrapper", "args": ["x"], "statusMessage": "agent-coherence"},
])
def test_our_handlers_are_recognised(handler) -> None:
    assert is_our_handler(handler)


@pytest.mark.parametrize("handler", [
    {"type": "command", "command": "agent-coherence", "args": ["status"]},
    {"type": "command", "command": "agent-coherence status"},
    {"type": "command", "command": "agent-coherence hook && rm -rf /"},
    {"type": "command", "command": "/bin/other-tool", "args": ["hook"]},
    {"type": "command", "command": "my-agent-coherence", "args": ["hook"]},
    {"type": "http", "url": "http://localhost/hook"},
    {"type": "command", "command": "echo 'unbalanced"},
    "not a dict",
])
def test_other_handlers_are_not_ours(handler) -> None:
    assert not is_our_handler(handler)


@pytest.mark.parametrize(("content", "reason"), [
    (b'{"model": "opus",}', "invalid JSON"),
    (b'{"model": "opus"', "invalid JSON"),
    (b"[1, 2]", "top level is a list"),
    (b'"just a string"', "top level is a string"),
    (b'{"hooks": []}', '"hooks" is a list'),
    (b'{"hooks": {"PreToolUse": {"matcher": "x"}}}', '"hooks.PreToolUse" is an object'),
    (b'{\n  // our model\n  "model": "opus"\n}', "a comment: JSON has none"),
    (b'{"model": "opus" /* pinned */}', "a comment: JSON has none"),
    (b'{"model": "a", "model": "b"}', "duplicate key 'model'"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"cleanupPeriodDays": NaN}', "NaN is not JSON"),
    (b'{"env": {"LIMIT": 1}, "x": -Infinity}', "-Infinity is not JSON"),
    (b'{"cleanupPeriodDays": 1e999}', "1e999 (too large a number) is not JSON"),
])
def test_malformed_settings_are_refused_and_left_alone(tmp_path, content, reason) -> None:
    path = os.path.join(tmp_path, ".claude", "settings.json")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(SettingsError) as info:
        install_settings(str(tmp_path), command=CMD)
    error = info.value
    assert isinstance(error, ValueError) and isinstance(error, CoherenceError)
    assert error.path == path and reason in error.reason, error.reason
    assert path in str(error)
    assert _read(path) == content
    assert os.listdir(os.path.dirname(path)) == ["settings.json"], "no temp file left behind"


def test_uninstall_refuses_malformed_json(tmp_path) -> None:
    path = os.path.join(tmp_path, ".claude", "settings.json")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"{oops")
    with pytest.raises(SettingsError):
        uninstall_settings(str(tmp_path))
    assert _read(path) == b"{oops"


def test_empty_file_counts_as_empty_settings(tmp_path) -> None:
    path = os.path.join(tmp_path, ".claude", "settings.local.json")
    os.makedirs(os.path.dirname(path))
    open(path, "wb").close()
    assert install_settings(str(tmp_path), scope="local", command=CMD) == path
    assert json.loads(_read(path)) == {"hooks": hook_entries(CMD)}


def test_scopes_and_paths(tmp_path) -> None:
    project, home = tmp_path / "proj", tmp_path / "home"
    local = install_settings(str(project), scope="local", command=CMD)
    assert local == str(project / ".claude" / "settings.local.json")
    user = install_settings(str(project), scope="user", command=CMD, home=str(home))
    assert user == str(home / ".claude" / "settings.json")
    assert json.loads(_read(user)) == {"hooks": hook_entries(CMD)}
    assert not (project / ".claude" / "settings.json").exists()
    assert uninstall_settings(scope="user", home=str(home)) == user
    assert json.loads(_read(user)) == {}
    with pytest.raises(ValueError):
        install_settings(str(project), scope="global", command=CMD)  # type: ignore[arg-type]


def test_project_dir_defaults_to_cwd(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert install_settings(command=CMD) == str(tmp_path / ".claude" / "settings.json")


def test_file_mode_kept_and_symlink_followed(tmp_path) -> None:
    real = tmp_path / "dotfiles" / "claude-settings.json"
    real.parent.mkdir()
    real.write_text(json.dumps({"model": "opus"}))
    os.chmod(real, 0o600)
    link_dir = tmp_path / "home" / ".claude"
    link_dir.mkdir(parents=True)
    os.symlink(real, link_dir / "settings.json")
    install_settings(scope="user", home=str(tmp_path / "home"), command=CMD)
    assert os.path.islink(link_dir / "settings.json"), "the link is kept"
    assert json.loads(real.read_text())["model"] == "opus"
    assert "hooks" in json.loads(real.read_text())
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600
    assert sorted(os.listdir(real.parent)) == ["claude-settings.json"]


def test_shell_form(tmp_path) -> None:
    root = str(tmp_path)
    path = install_settings(root, command="/path with space/agent-coherence")
    handler = json.loads(_read(path))["hooks"]["PreToolUse"][0]["hooks"][0]
    assert handler["command"] == "'/path with space/agent-coherence' hook" and "args" not in handler
    install_settings(root, command=CMD, form="exec")  # switching to exec form replaces, no duplicates
    hooks = json.loads(_read(path))["hooks"]
    assert hooks == hook_entries(CMD, form="exec")
    handler = hooks["PreToolUse"][0]["hooks"][0]
    assert handler["command"] == CMD and handler["args"] == ["hook"] and handler["onFailure"] == "block"
    uninstall_settings(root)
    assert json.loads(_read(path)) == {}


def test_default_command(tmp_path, monkeypatch) -> None:
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(bindir / "python"))
    assert installer.default_command() == HOOK_COMMAND
    script = bindir / "agent-coherence"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert installer.default_command() == str(script)
    handler = hook_entries()["Stop"][0]["hooks"][0]
    assert handler["command"] == f"{script} hook"


def test_the_shared_project_file_never_gets_a_path_of_this_machine(tmp_path, monkeypatch) -> None:
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    script = bindir / "agent-coherence"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bindir / "python"))
    root = str(tmp_path / "project")

    on_path = installer.plan_install(root, on_path="/usr/local/bin/agent-coherence")
    assert on_path == installer.InstallPlan("project", "agent-coherence", None)
    assert installer.plan_install(root, scope="local", on_path="/x") == ("local", str(script), None)
    assert installer.plan_install(root, scope="user", on_path="/x") == ("user", str(script), None)
    assert installer.plan_install(root, command="/my/wrapper") == ("project", "/my/wrapper", None)

    off_path = installer.plan_install(root, on_path="")  # not on PATH: the absolute path stays personal
    assert off_path.scope == "local" and off_path.command == str(script)
    assert "settings.local.json" in off_path.notice and "--command agent-coherence" in off_path.notice
    path = install_settings(root, scope=off_path.scope, command=off_path.command)
    assert path.endswith(os.path.join(".claude", "settings.local.json"))
    assert not os.path.exists(os.path.join(root, ".claude", "settings.json"))

    # Later on PATH (pipx): the shared file gets the hooks, and the local ones would run as well.
    now_on_path = installer.plan_install(root, on_path="/usr/local/bin/agent-coherence")
    assert now_on_path.scope == "project" and now_on_path.command == "agent-coherence"
    assert now_on_path.notice is not None and "uninstall claude-code --local" in now_on_path.notice
    uninstall_settings(root, scope="local")
    assert installer.plan_install(root, on_path="/usr/local/bin/agent-coherence").notice is None

    monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere" / "python"))  # no script anywhere
    nowhere = installer.plan_install(root, on_path="")
    assert nowhere.scope == "project" and nowhere.command == "agent-coherence" and "neither on PATH" in nowhere.notice


def test_is_installed(tmp_path) -> None:
    root = str(tmp_path)
    assert not installer.is_installed(root)
    install_settings(root, command=CMD)
    assert installer.is_installed(root) and not installer.is_installed(root, scope="local")
    uninstall_settings(root)
    assert not installer.is_installed(root)


def test_write_plugin(tmp_path) -> None:
    from agent_coherence import __version__

    directory = tmp_path / "plugin"
    paths = write_plugin(str(directory), command=CMD)
    assert paths == [str(directory / ".claude-plugin" / "plugin.json"), str(directory / "hooks" / "hooks.json")]
    manifest = json.loads(_read(paths[0]))
    assert manifest["name"] == "agent-coherence" and manifest["version"] == __version__
    assert isinstance(manifest["description"], str) and manifest["description"]
    # hooks/hooks.json is loaded automatically; naming it in the manifest makes Claude Code load it twice
    assert "hooks" not in manifest
    hooks_file = json.loads(_read(paths[1]))
    assert list(hooks_file) == ["description", "hooks"]
    assert hooks_file["hooks"] == hook_entries(CMD)
    assert sorted(os.listdir(directory)) == [".claude-plugin", "hooks"]
    assert os.listdir(directory / ".claude-plugin") == ["plugin.json"]
    # idempotent
    before = [_read(p) for p in paths]
    assert write_plugin(str(directory), command=CMD) == paths
    assert [_read(p) for p in paths] == before


def test_a_plain_uninstall_names_the_scope_a_plain_install_chose(tmp_path, monkeypatch, capsys) -> None:
    """Without agent-coherence on PATH, `install claude-code` writes settings.local.json; the
    `uninstall claude-code` that follows must not leave the user believing the hooks are gone."""
    from agent_coherence import cli

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", "/nonexistent")
    root = str(tmp_path / "project")
    os.makedirs(root)
    assert cli.main(["install", "claude-code", "--root", root]) == 0
    assert "settings.local.json" in capsys.readouterr().out
    assert cli.main(["uninstall", "claude-code", "--root", root]) == 0
    said = capsys.readouterr().out
    assert "not installed" in said and "uninstall claude-code --local" in said, said
    assert installer.is_installed(root, scope="local"), "nothing removed by the plain uninstall"
    assert cli.main(["uninstall", "claude-code", "--local", "--root", root]) == 0
    assert "removed" in capsys.readouterr().out
    assert cli.main(["uninstall", "claude-code", "--root", root]) == 0
    assert "note:" not in capsys.readouterr().out, "nothing installed anywhere: no pointer"


def test_an_install_into_a_local_file_git_would_commit_says_so(tmp_path, capsys) -> None:
    import shutil
    import subprocess

    from agent_coherence import cli

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = str(tmp_path / "project")
    os.makedirs(root)
    subprocess.run(["git", "init", "-q", root], check=True)
    assert cli.main(["install", "claude-code", "--local", "--root", root]) == 0
    said = capsys.readouterr().out
    assert "git does not ignore" in said and "settings.local.json" in said, said
    with open(os.path.join(root, ".gitignore"), "w") as f:
        f.write(".claude/settings.local.json\n")
    assert cli.main(["install", "claude-code", "--local", "--root", root, "--command", "other"]) == 0
    assert "git does not ignore" not in capsys.readouterr().out
    assert installer.unignored_local_settings(str(tmp_path / "elsewhere")) is None  # not a work tree


def test_is_installed_refuses_a_settings_path_it_cannot_read(tmp_path) -> None:
    os.makedirs(tmp_path / ".claude" / "settings.json")  # a directory where the file belongs
    with pytest.raises(SettingsError, match="it is a directory"):
        installer.is_installed(str(tmp_path))
