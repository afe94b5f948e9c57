"""What one hook call knows (the event, the session, the project root, the backend) and what it
answers (exit code, stdout JSON, stderr text).

Only the standard library and the light parts of agent_coherence are imported here: every Claude
Code tool call starts a fresh process that pays for each import.
"""

from __future__ import annotations

import os
import time

from ...paths import ArtifactPath, resolve_file_key

_DEVICE_PREFIXES = ("/dev/", "/proc/self/fd/")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping

    from ...backends.sqlite import SQLiteBackend

# MultiEdit is gone from current clients (no tool, no hooks); older ones still send it.
WRITE_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
BASH_TOOLS = frozenset({"Bash"})
READ_TOOLS = frozenset({"Read"})
MAX_ID_CHARS = 256

DEFAULT_TTL = 600.0
DEFAULT_BUDGET = 3.0
SESSION_END_BUDGET = 1.0
WAL_CHECKPOINT_PAGES = 256


class BadInput(Exception):
    """The event can't be acted on (malformed JSON, a missing or mistyped field). The message is
    written for Claude: it says what was wrong."""


class Outcome:
    """The hook's answer: exit code, JSON for stdout (or None), text for stderr (or None)."""

    __slots__ = ("code", "output", "message")

    def __init__(self, code: int = 0, output: dict | None = None, message: str | None = None) -> None:
        self.code = code
        self.output = output
        self.message = message

    def __repr__(self) -> str:
        return f"Outcome(code={self.code!r}, output={self.output!r}, message={self.message!r})"


ALLOW = Outcome()


def deny(reason: str) -> Outcome:
    """Refuse a PreToolUse tool call: exit 0 with ``permissionDecision: "deny"`` and the reason.

    Claude Code gives Claude the reason as the tool's error. This JSON form is used rather than
    exit 2, whose stderr the client prefixes with the hook's command line (an absolute path on
    this machine, of no use to Claude)."""
    return Outcome(0, {"hookSpecificOutput": {
        "hookEventName": "PreToolUse", "permissionDecision": "deny", "permissionDecisionReason": reason,
    }})


def block(reason: str) -> Outcome:
    """Refuse a call whose event can't be told (its input was unreadable): exit 2 with the reason
    on stderr, the one answer every event and every client version takes as a refusal."""
    return Outcome(2, None, reason)


def note(message: str) -> Outcome:
    """Let the call proceed; leave a line in Claude Code's debug log (stderr of an exit-0 hook)."""
    return Outcome(0, None, message)


def post_tool_problem(reason: str) -> Outcome:
    """After a tool ran: tell Claude something is wrong with what it just did. The tool already
    ran, so nothing is blocked; the text reaches Claude once, as context next to the tool result
    (not also as a ``decision: block`` reason, which would repeat it)."""
    return Outcome(0, {"hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": reason}})


def env_float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    """A number from the environment, clamped to [low, high]; ``default`` when unset or invalid."""
    try:
        value = float(env.get(name, ""))
    except ValueError:
        return default
    if value != value:  # NaN
        return default
    return min(max(value, low), high)


def _identifier(payload: dict, name: str, required: bool) -> str | None:
    value = payload.get(name)
    if value is None or (value == "" and not required):
        if required:
            raise BadInput(f"the hook input has no {name!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"the hook input's {name!r} is not a non-empty string")
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise BadInput(f"the hook input's {name!r} is too long or contains control characters")
    return value


class HookContext:
    """One hook call: the parsed event, the session's holder name, the project root, and the
    backend (opened on first use, with a busy deadline inside the call's time budget)."""

    def __init__(self, payload: dict, env: Mapping[str, str], budget: float) -> None:
        self.payload = payload
        self.env = env
        self.budget = budget
        self.started = time.monotonic()
        self.event = payload.get("hook_event_name")
        self.tool_name = payload.get("tool_name") if isinstance(payload.get("tool_name"), str) else None
        self._backend: SQLiteBackend | None = None
        self.session_id = _identifier(payload, "session_id", required=True)
        self.agent_id = _identifier(payload, "agent_id", required=False)
        shared = env.get("AGENT_COHERENCE_HOOK_HOLDER", "") == "session"
        self.family = f"claude:{self.session_id}"
        self.holder = self.family if (self.agent_id is None or shared) else f"{self.family}/{self.agent_id}"
        self.root = self._project_root()
        cwd = payload.get("cwd")
        self.cwd = cwd if isinstance(cwd, str) and os.path.isabs(cwd) and "\x00" not in cwd else self.root
        self.ttl = env_float(env, "AGENT_COHERENCE_HOOK_TTL", DEFAULT_TTL, 1.0, 86400.0)

    def _project_root(self) -> str:
        for candidate, source in ((self.env.get("CLAUDE_PROJECT_DIR"), "CLAUDE_PROJECT_DIR"),
                                  (self.payload.get("cwd"), "the input's 'cwd'")):
            if candidate is None or candidate == "":
                continue
            if not isinstance(candidate, str) or "\x00" in candidate or not os.path.isabs(candidate):
                raise BadInput(f"{source} is not an absolute path")
            if not os.path.isdir(candidate):
                raise BadInput(f"the project root {candidate!r} ({source}) is not a directory")
            return os.path.realpath(candidate)
        raise BadInput("neither CLAUDE_PROJECT_DIR nor the input's 'cwd' names the project root")

    @property
    def tool_input(self) -> dict:
        value = self.payload.get("tool_input")
        if not isinstance(value, dict):
            raise BadInput("the hook input has no 'tool_input' object")
        return value

    def remaining(self) -> float:
        return self.budget - (time.monotonic() - self.started)

    def server_url(self) -> str | None:
        """The PostgreSQL URL the hook runs on (``AGENT_COHERENCE_URL``), or None: an SQLite file."""
        url = self._url()
        return url if url is not None and url.startswith(("postgresql://", "postgres://")) else None

    def database_file(self) -> str:
        """The SQLite file the hook runs on when no server is named: the one ``sqlite:///FILE`` in
        ``AGENT_COHERENCE_URL`` names, as for the Python API, else the project's own."""
        from ...backends import default_database

        url = self._url()
        if url is not None and url.startswith("sqlite:///"):
            return url[len("sqlite://"):]
        return default_database(self.root)

    def _url(self) -> str | None:
        """``AGENT_COHERENCE_URL`` (None when unset), refused as the Python API refuses it: the hook
        must not fall back to another database than the scripts it coordinates with use."""
        url = self.env.get("AGENT_COHERENCE_URL", "") or None
        if url is None or url == "sqlite:":
            return None
        from ...backends import check_url
        from ...errors import BackendUnavailable

        try:
            check_url(url)
        except ValueError as error:
            raise BackendUnavailable(
                f"AGENT_COHERENCE_URL: {error}",
                recover="set AGENT_COHERENCE_URL to sqlite:///<file> or postgresql://..., or unset it for the "
                        "project's own database",
                backend="unknown", detail=str(error), reason="url",
            ) from None
        return url

    def database_exists(self) -> bool:
        return self.server_url() is not None or os.path.exists(self.database_file())

    @property
    def backend(self) -> SQLiteBackend:
        if self._backend is None:
            from ...backends.sqlite import SQLiteBackend

            # Leave time inside the budget to answer after the database gave up being busy.
            deadline = max(0.05, self.remaining() * 0.6)
            url = self.server_url()
            if url is not None:  # psycopg is imported only here: the embedded path never pays for it
                from ...backends.postgres import PostgresBackend

                self._backend = PostgresBackend(url, pool_size=1, retry_deadline=deadline)  # type: ignore[assignment]
                return self._backend  # type: ignore[return-value]
            self._backend = SQLiteBackend(self.database_file(), busy_deadline=deadline)
            # Hook processes leave the WAL in place (see hook.run); keep it short so each new
            # process's WAL recovery stays cheap.
            self._backend.read(lambda conn: conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}"))
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def file_key(self, path: object) -> ArtifactPath:
        """The artifact key of ``path`` under the project root; raises PathOutsideRoot.

        Claude Code hands hooks absolute paths; anything else is read as its tools would: ``~``
        expanded, a relative path taken from the session's working directory (not the root)."""
        if isinstance(path, str) and path.startswith("~"):
            path = os.path.expanduser(path)
        if isinstance(path, str) and path and "\x00" not in path and not os.path.isabs(path):
            path = os.path.join(self.cwd, path)
        return resolve_file_key(self.root, path)

    def may_write_outside(self, path: str, *, devices: bool) -> bool:
        """Whether a write to ``path``, outside the project root, goes ahead uncoordinated (instead
        of being refused): the client's own directory (``CLAUDE_CONFIG_DIR``, default
        ``~/.claude``: plan mode writes its plan there, ``~/.claude/plans/<name>.md``), a directory
        listed in ``AGENT_COHERENCE_HOOK_ALLOW_OUTSIDE`` (``os.pathsep``-separated), and, with
        ``devices``, a device (a command's ``> /dev/null``)."""
        if devices and path.startswith(_DEVICE_PREFIXES):
            return True
        home = self.env.get("HOME") or os.path.expanduser("~")
        allowed = [self.env.get("CLAUDE_CONFIG_DIR") or os.path.join(home, ".claude")]
        allowed += self.env.get("AGENT_COHERENCE_HOOK_ALLOW_OUTSIDE", "").split(os.pathsep)
        candidates = {path, os.path.realpath(path)}
        for directory in filter(None, allowed):
            directory = os.path.realpath(directory)
            if any(p == directory or p.startswith(directory.rstrip(os.sep) + os.sep) for p in candidates):
                return True
        return False

    def journal(self, kind: str, key: str | None, data: dict[str, Any]) -> None:
        """Best effort: a record that can't be written must not change the decision."""
        try:
            self.backend.journal_append(kind, key, self.holder, data)
        except Exception:
            pass

    def is_family(self, holder: str | None) -> bool:
        """True for this session's main agent and its subagents."""
        return holder is not None and (holder == self.family or holder.startswith(self.family + "/"))
