"""Write (and remove) the Claude Code hook configuration for agent-coherence.

Two ways to install:

* :func:`install_settings` merges our hook handlers into a settings file: the project's
  ``.claude/settings.json`` (committed), ``.claude/settings.local.json`` (personal), or the user's
  ``~/.claude/settings.json``. :func:`uninstall_settings` takes them out again.
* :func:`write_plugin` writes a plugin layout (``.claude-plugin/plugin.json`` and
  ``hooks/hooks.json``) for ``claude --plugin-dir`` or a marketplace.

Merging rules:

* Nothing else in the file changes. Unrelated keys and other people's hooks keep their content
  and their order. The file is rewritten with ``indent=2`` and a trailing newline, so formatting
  (not content) may change the first time.
* Installing twice changes nothing. The second run produces the same bytes and does not write.
* Writes are atomic: a temporary file in the same directory, ``fsync``, ``os.replace``, then an
  ``fsync`` of the directory. A symlinked settings file is updated through the link. A write that
  fails (no space, no permission) raises :class:`SettingsError` and the file keeps its old bytes.
* Malformed settings (invalid JSON, duplicate keys, a top-level value or a ``hooks`` value that
  is not an object, an event entry that is not a list) raise :class:`SettingsError`. The file is
  left as it was.
* Our handlers always live in matcher groups of their own. Uninstall deletes those groups. It
  deletes an event list, or the whole ``hooks`` object, only when removing our handlers left it
  empty. Known limit: if such a container was already empty before install (``"Stop": []``), it
  goes away as well.

How we recognise our own handlers (see :func:`is_our_handler`): a handler is ours if its
``statusMessage`` is ``"agent-coherence"`` (the installer always sets this tag), or if it runs the
``agent-coherence`` executable (any directory) with the single argument ``hook``, in exec form
(``command`` plus ``args: ["hook"]``) or shell form (``"... agent-coherence hook"``). Either signal
is enough, and that is deliberate:

* The command check still finds handlers whose tag a user edited, and handlers written by an
  install that used a different path (a moved venv, a different Python).
* The tag still finds handlers installed with a custom ``command`` wrapper.
* Both signals name this tool and nothing else. The only handlers besides ours that match are
  ones that run ``agent-coherence hook`` anyway, i.e. the same hook added by hand.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Literal, NamedTuple

from agent_coherence.errors import CoherenceError

__all__ = [
    "HOOK_COMMAND", "HOOK_ARGS", "TOOL_MATCHER", "WRITE_MATCHER", "READ_MATCHER", "HOOK_TAG", "SettingsError",
    "default_command",
    "hook_entries", "install_settings", "uninstall_settings", "write_plugin", "settings_path",
    "is_our_handler", "is_installed", "InstallPlan", "plan_install", "unignored_local_settings",
]

HOOK_COMMAND = "agent-coherence"  # the executable; it is called with HOOK_ARGS
HOOK_ARGS = ("hook",)
HOOK_TAG = "agent-coherence"  # statusMessage on every handler we install
# Exact-match alternatives. MultiEdit is no tool of current clients (2.1.197 and later neither offer
# it nor run hooks for it); it stays for older ones, where it is a file write like Edit.
TOOL_MATCHER = "Write|Edit|MultiEdit|NotebookEdit|Bash|Read"
# PreToolUse splits it: only the tools that may write carry onFailure "block". A Read refused
# because the hook could not start protects nothing, and would leave a teammate without
# agent-coherence on PATH unable to read the project at all.
WRITE_MATCHER = "Write|Edit|MultiEdit|NotebookEdit|Bash"
READ_MATCHER = "Read"
PLUGIN_NAME = "agent-coherence"
DESCRIPTION = ("agent-coherence: per-file leases and version checks so parallel Claude Code sessions "
               "and subagents don't overwrite each other's edits")
DEFAULT_TIMEOUT = 10
SESSION_END_TIMEOUT = 5

Scope = Literal["project", "local", "user"]
Form = Literal["exec", "shell"]
SESSION_EVENTS = ("SessionStart", "SubagentStart", "Stop", "SubagentStop")


class SettingsError(CoherenceError, ValueError):
    """A settings file can't be merged safely (malformed JSON, unexpected shape, unreadable).

    Facts: ``path`` (the settings file) and ``reason``. Nothing was written.
    """

    recover = "fix or remove the file by hand, then run the installer again; nothing was changed"

    def __init__(self, path: str, reason: str, recover: str | None = None) -> None:
        super().__init__(f"cannot update {path}: {reason}", path=path, reason=reason, recover=recover)


_WRITE_RECOVER = ("check the directory's permissions and free space, then run the installer again; "
                  "the file keeps its old content")


# -- what we install -------------------------------------------------------------------------


def default_command() -> str:
    """The absolute path of the ``agent-coherence`` script next to ``sys.executable`` if it exists.

    If it doesn't, returns plain ``"agent-coherence"``, found on ``PATH`` at run time. The absolute
    path lets the hooks work without the virtualenv activated, on this machine only: it is the
    default for the personal scopes (``local``, ``user``), never for the shared project file (see
    :func:`plan_install`). ``sys.executable`` is deliberately not resolved: a venv's ``python`` is
    a symlink to the base interpreter, and the script lives next to the link.
    """
    exe = sys.executable
    if exe:
        bindir = os.path.dirname(os.path.abspath(exe))
        for name in (HOOK_COMMAND, HOOK_COMMAND + ".exe"):
            candidate = os.path.join(bindir, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return HOOK_COMMAND


class InstallPlan(NamedTuple):
    """Where :func:`plan_install` puts the hooks and with which command; ``notice`` (or None) says
    what the user should know about that choice."""

    scope: Scope
    command: str
    notice: str | None


def plan_install(project_dir: str | None = None, *, scope: Scope = "project", command: str | None = None,
                 on_path: str | None = None, home: str | None = None) -> InstallPlan:
    """Choose the settings file and the hook command for an install.

    * An explicit ``command`` is used as given, in the scope asked for.
    * ``local`` and ``user`` are this machine's own files: :func:`default_command` (an absolute
      path when this Python has the script next to it).
    * ``project`` is ``.claude/settings.json``, shared with the team, so it never gets a path of
      this machine: it gets plain ``agent-coherence``, looked up on ``PATH`` by each user's client.
      When ``agent-coherence`` is not on this machine's ``PATH`` (``on_path`` is what
      ``shutil.which`` found; looked up when None), that entry could not start here, so the hooks
      go into ``.claude/settings.local.json`` with the absolute path instead, the shared file is
      left alone, and the notice says so.
    """
    if command is not None:
        return InstallPlan(scope, command, None)
    if scope != "project":
        return InstallPlan(scope, default_command(), None)
    if on_path is None:
        import shutil

        on_path = shutil.which(HOOK_COMMAND)
    if on_path:
        notice = None
        if is_installed(project_dir, scope="local", home=home):
            # An earlier install made while agent-coherence was not on PATH: the client would run
            # both files' handlers, a second hook call on every event (a Stop reason said twice).
            notice = (f"{settings_path(project_dir, scope='local')} also has agent-coherence hooks (an earlier "
                      f"install, from when {HOOK_COMMAND} was not on PATH): every event would run the hook "
                      f"twice. Remove them with `agent-coherence uninstall claude-code --local`.")
        return InstallPlan("project", HOOK_COMMAND, notice)
    local = default_command()
    if local == HOOK_COMMAND:  # no script next to this Python either: nothing machine-specific to hide
        return InstallPlan("project", HOOK_COMMAND, (
            f"{HOOK_COMMAND} is neither on PATH nor next to {sys.executable}: until it is on PATH, the "
            f"hook can't start here and the client refuses every write it guards (onFailure: block)."))
    notice = (f"{HOOK_COMMAND} is not on PATH here, so the hooks went into "
              f"{settings_path(project_dir, scope='local')} (this checkout only) with the command {local}; "
              f"{settings_path(project_dir, scope='project')}, which is shared with the team, was not "
              f"changed. To install the hooks for everyone who has {HOOK_COMMAND} on PATH, run "
              f"`agent-coherence install claude-code --command {HOOK_COMMAND}`.")
    if is_installed(project_dir, scope="project", home=home):
        notice += (f" Note: the shared file already has agent-coherence hooks; if their command is not on "
                   f"PATH here, writes will be refused until it is (onFailure: block).")
    return InstallPlan("local", local, notice)


def unignored_local_settings(project_dir: str | None = None) -> str | None:
    """The path of ``.claude/settings.local.json`` when the project is a git work tree that does not
    ignore it, else None (ignored, not a git work tree, or no git to ask).

    The local file holds this machine's absolute paths and is meant to stay out of the repository,
    but nothing makes git ignore a file this installer creates: the caller tells the user."""
    import subprocess

    path = settings_path(project_dir, scope="local")
    try:
        answer = subprocess.run(["git", "-C", os.path.dirname(os.path.dirname(path)), "check-ignore", "-q", path],
                                capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if answer.returncode == 1 else None  # 0: ignored; 128: not a work tree


def _handler(command: str, timeout: int, form: Form, on_failure: str | None = None) -> dict:
    if form == "shell":
        import shlex

        handler = {"type": "command", "command": f"{shlex.quote(command)} {' '.join(HOOK_ARGS)}",
                   "timeout": timeout, "statusMessage": HOOK_TAG}
    else:
        handler = {"type": "command", "command": command, "args": list(HOOK_ARGS), "timeout": timeout,
                   "statusMessage": HOOK_TAG}
    if on_failure is not None:
        handler["onFailure"] = on_failure
    return handler


def hook_entries(command: str | None = None, *, form: Form = "shell") -> dict:
    """The ``"hooks"`` mapping we add: event name -> list of one matcher group holding our handler.

    Tool events match ``TOOL_MATCHER``. ``Read`` is there so the hook learns which version of a file
    a session saw. Session, subagent and stop events have no matcher (they match everything).
    Timeouts are 10 s, except ``SessionEnd``: 5 s, which also raises its 1.5 s default budget.

    The PreToolUse handler of the tools that may write carries ``"onFailure": "block"``: when the
    hook can't start (not on PATH, an ENOENT spawn error) or is killed on its timeout, the client
    refuses the tool call instead of running it unchecked. ``Read`` has a PreToolUse group of its
    own without it, so such a failure never refuses a read. Clients that predate the key ignore
    it (2.1.197 does) and let the call run, as before.

    ``form="shell"`` (the default) writes one shell-quoted command string, ``agent-coherence
    hook``, which every client version runs as written. ``form="exec"`` writes ``command`` plus
    ``args: ["hook"]`` (no shell); Claude Code runs that form since v2.1.139, and an older client
    runs the bare command without its argument, a usage error (exit 2) that would refuse every
    tool call.
    """
    if form not in ("exec", "shell"):
        raise ValueError(f"form must be 'exec' or 'shell', not {form!r}")
    cmd = command or default_command()
    entries: dict = {}
    entries["PreToolUse"] = [
        {"matcher": WRITE_MATCHER, "hooks": [_handler(cmd, DEFAULT_TIMEOUT, form, "block")]},
        {"matcher": READ_MATCHER, "hooks": [_handler(cmd, DEFAULT_TIMEOUT, form)]},
    ]
    for event in ("PostToolUse", "PostToolUseFailure"):
        entries[event] = [{"matcher": TOOL_MATCHER, "hooks": [_handler(cmd, DEFAULT_TIMEOUT, form)]}]
    for event in SESSION_EVENTS:
        entries[event] = [{"hooks": [_handler(cmd, DEFAULT_TIMEOUT, form)]}]
    entries["SessionEnd"] = [{"hooks": [_handler(cmd, SESSION_END_TIMEOUT, form)]}]
    return entries


def is_our_handler(handler: object) -> bool:
    """True if ``handler`` (one entry of a matcher group's ``"hooks"`` list) was installed by us."""
    if not isinstance(handler, dict):
        return False
    if handler.get("statusMessage") == HOOK_TAG:
        return True
    command = handler.get("command")
    if not isinstance(command, str):
        return False
    args = handler.get("args")
    if args is not None:
        return isinstance(args, list) and tuple(args) == HOOK_ARGS and _is_our_executable(command)
    try:
        import shlex

        words = shlex.split(command)
    except ValueError:
        return False
    return len(words) == 1 + len(HOOK_ARGS) and tuple(words[1:]) == HOOK_ARGS and _is_our_executable(words[0])


def _is_our_executable(command: str) -> bool:
    name = command.replace("\\", "/").rsplit("/", 1)[-1]
    return name in (HOOK_COMMAND, HOOK_COMMAND + ".exe")


# -- settings files ----------------------------------------------------------------------------


def settings_path(project_dir: str | None = None, *, scope: Scope = "project", home: str | None = None) -> str:
    """Where the settings file for ``scope`` lives."""
    if scope == "user":
        base = home if home is not None else os.path.expanduser("~")
        return os.path.join(os.path.abspath(base), ".claude", "settings.json")
    if scope not in ("project", "local"):
        raise ValueError(f"scope must be 'project', 'local' or 'user', not {scope!r}")
    base = os.path.abspath(project_dir if project_dir is not None else os.getcwd())
    name = "settings.json" if scope == "project" else "settings.local.json"
    return os.path.join(base, ".claude", name)


def install_settings(project_dir: str | None = None, *, scope: Scope = "project", command: str | None = None,
                     home: str | None = None, form: Form = "shell") -> str:
    """Merge our hooks into the settings file for ``scope``. Returns the settings path.

    ``command`` defaults to :func:`default_command`; the CLI chooses it with :func:`plan_install`
    instead, which keeps machine-specific paths out of the shared project file.

    Idempotent: handlers we installed earlier are replaced where they are (their matcher groups keep
    their positions), missing ones are appended, and when nothing changes nothing is written.
    """
    path = settings_path(project_dir, scope=scope, home=home)
    entries = hook_entries(command, form=form)
    original, data = _load(path)
    hooks = data.get("hooks")
    if hooks is None:
        hooks = data["hooks"] = {}
    elif not isinstance(hooks, dict):
        raise SettingsError(path, f'"hooks" is {_json_type(hooks)}, expected an object')
    for event, value in hooks.items():
        if event in entries and not isinstance(value, list):
            raise SettingsError(path, f'"hooks.{event}" is {_json_type(value)}, expected a list')
    for event, groups in entries.items():
        current = hooks.setdefault(event, [])
        _place_groups(current, groups)
    for event, groups in list(hooks.items()):  # ours left on events we no longer use (older versions)
        if event not in entries and isinstance(groups, list) and _remove_ours(groups):
            if not groups:
                del hooks[event]
    _store(path, data, original)
    return path


def is_installed(project_dir: str | None = None, *, scope: Scope = "project", home: str | None = None) -> bool:
    """True if the settings file for ``scope`` holds any handler of ours. A missing file holds
    none; one that can't be read (a directory, no permission) or is malformed raises
    :class:`SettingsError`."""
    path = settings_path(project_dir, scope=scope, home=home)
    if not os.path.lexists(path):
        return False
    _, data = _load(path)
    hooks = data.get("hooks")
    if not isinstance(hooks, dict):
        return False
    return any(is_our_handler(handler) for groups in hooks.values() if isinstance(groups, list)
               for group in groups for handler in (_handlers_of(group) or []))


def uninstall_settings(project_dir: str | None = None, *, scope: Scope = "project", home: str | None = None) -> str:
    """Remove exactly the handlers :func:`install_settings` added. Returns the settings path.

    Matcher groups, event lists and the ``hooks`` object are dropped only when removing our
    handlers left them empty. A file that holds none of our handlers is not rewritten (its
    formatting stays), and a missing one, or a symlink to a missing one, is left missing.
    """
    path = settings_path(project_dir, scope=scope, home=home)
    if not os.path.lexists(path):
        return path
    original, data = _load(path)
    hooks = data.get("hooks")
    if not isinstance(hooks, dict):
        return path
    removed_any = False
    for event, groups in list(hooks.items()):
        if isinstance(groups, list) and _remove_ours(groups):
            removed_any = True
            if not groups:
                del hooks[event]
    if not removed_any:
        return path
    if not hooks:
        del data["hooks"]
    _store(path, data, original)
    return path


def _place_groups(groups: list, desired: list) -> None:
    """Make ``desired`` our only groups in ``groups``, at the position of the first existing one."""
    slot = None
    for index, group in enumerate(groups):
        handlers = _handlers_of(group)
        if handlers and all(is_our_handler(h) for h in handlers):
            slot = index
            break
    if slot is None:
        _remove_ours(groups)
        groups.extend(desired)
        return
    head, rest = groups[:slot], groups[slot + 1:]
    _remove_ours(head)  # no group of ours only before the slot, but maybe mixed ones
    _remove_ours(rest)
    groups[:] = head + list(desired) + rest


def _handlers_of(group: object) -> list | None:
    if isinstance(group, dict) and isinstance(group.get("hooks"), list):
        return group["hooks"]
    return None


def _remove_ours(groups: list) -> bool:
    """Remove our handlers from a list of matcher groups, in place; drop groups left empty."""
    removed = False
    kept = []
    for group in groups:
        handlers = _handlers_of(group)
        if handlers is not None and any(is_our_handler(h) for h in handlers):
            removed = True
            others = [h for h in handlers if not is_our_handler(h)]
            if not others:
                continue
            group["hooks"] = others
        kept.append(group)
    groups[:] = kept
    return removed


# -- reading and writing JSON ------------------------------------------------------------------


def _no_duplicates(pairs: list) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


class _DuplicateKey(Exception):
    pass


class _NotJSON(Exception):
    pass


def _no_constants(name: str) -> object:
    # Python's parser takes NaN and Infinity, JSON (and the client's parser) does not: writing them
    # back would keep a file the client can't load.
    raise _NotJSON(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e999: it would be written back as Infinity
        raise _NotJSON(f"{text} (too large a number)")
    return value


def _json_type(value: object) -> str:
    """The JSON type of ``value`` with its article, for a message ("an object", "null")."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _load(path: str) -> tuple[bytes | None, dict]:
    """(original bytes or None when missing, parsed settings). Empty files count as ``{}``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None, {}
    except IsADirectoryError:
        raise SettingsError(path, "it is a directory") from None
    except OSError as exc:
        raise SettingsError(path, f"cannot read it ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SettingsError(path, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        return raw, {}
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants,
                          parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        # Comments are the likeliest cause in a hand-edited file, and the parser's message doesn't say so.
        comment = " (a comment: JSON has none; remove it)" if text[exc.pos:exc.pos + 2] in ("//", "/*") else ""
        raise SettingsError(path, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{comment}") from None
    except _DuplicateKey as exc:
        raise SettingsError(path, f"duplicate key {exc.args[0]!r}; Claude Code would keep only one") from None
    except _NotJSON as exc:
        raise SettingsError(path, f"{exc.args[0]} is not JSON; write a number or a string instead") from None
    except RecursionError:
        raise SettingsError(path, "JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise SettingsError(path, f"the top level is {_json_type(data)}, expected an object")
    return raw, data


def _dump(data: object) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _store(path: str, data: object, original: bytes | None) -> bool:
    """Write ``data`` to ``path`` unless the bytes would be the same. Returns True if written."""
    payload = _dump(data)
    if original is not None and payload == original:
        return False
    try:
        _atomic_write(path, payload)
    except OSError as exc:
        raise SettingsError(path, f"cannot write it ({exc.strerror or exc})", _WRITE_RECOVER) from None
    return True


def _atomic_write(path: str, payload: bytes) -> None:
    target = os.path.realpath(path)  # update a symlinked settings file through the link
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    tmp = os.path.join(directory, f".{os.path.basename(target)}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        dfd = os.open(directory, flags)
    except OSError:
        return  # not supported here (e.g. Windows)
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# -- plugin layout -------------------------------------------------------------------------------


def write_plugin(directory: str, *, command: str | None = None, form: Form = "shell") -> list[str]:
    """Write a Claude Code plugin layout into ``directory``. Returns the paths it wrote.

    * ``.claude-plugin/plugin.json``: ``{"name", "version", "description"}``.
    * ``hooks/hooks.json``: ``{"description", "hooks": hook_entries(...)}``.

    The manifest deliberately has no ``"hooks": "./hooks/hooks.json"`` entry. Claude Code loads
    ``hooks/hooks.json`` automatically, and declaring that same file in the manifest makes it load
    twice: 2.1.197 rejects it ("Duplicate hooks file detected ..."), 2.1.332 notes that it "loads on
    its own" and loads it once, and older versions ran every hook twice
    (anthropics/claude-code#10871).

    The hook command defaults to :func:`default_command`, an absolute path on this machine. Pass
    ``command="agent-coherence"`` for a plugin you distribute, so each user's ``PATH`` decides.
    """
    try:
        from agent_coherence import __version__ as version
    except Exception:
        version = "0.1.0"
    root = os.path.abspath(directory)
    manifest = {"name": PLUGIN_NAME, "version": version or "0.1.0", "description": DESCRIPTION}
    hooks_file = {"description": DESCRIPTION, "hooks": hook_entries(command, form=form)}
    written = []
    for rel, content in ((os.path.join(".claude-plugin", "plugin.json"), manifest),
                         (os.path.join("hooks", "hooks.json"), hooks_file)):
        path = os.path.join(root, rel)
        try:
            with open(path, "rb") as f:
                original: bytes | None = f.read()
        except FileNotFoundError:
            original = None
        except OSError as exc:  # a directory or a file where the layout needs the other
            raise SettingsError(path, f"cannot read it ({exc.strerror or exc})",
                                "move what is at that path out of the way, or choose another plugin "
                                "directory, then run the installer again") from None
        _store(path, content, original)
        written.append(path)
    return written
