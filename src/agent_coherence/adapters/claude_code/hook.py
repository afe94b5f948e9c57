"""The Claude Code hook entry point: ``agent-coherence hook`` (or ``python -m`` this module).

Claude Code runs it as a separate process for each hook event, with the event JSON on stdin. It
answers the way the hooks reference documents:

* PreToolUse, a write refused: exit 0 and JSON ``{"hookSpecificOutput": {"hookEventName":
  "PreToolUse", "permissionDecision": "deny", "permissionDecisionReason": ...}}`` (Claude sees
  the reason as the tool's error). Allowed: exit 0 and no output, so the normal permission flow
  continues.
* PostToolUse, something wrong with a write that reported success: exit 0 and JSON
  ``{"hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": ...}}``.
* Stop / SubagentStop, the zero-work anomaly: exit 0 and ``{"decision": "block", "reason": ...}``
  (only ``systemMessage`` when ``stop_hook_active`` is set, so it cannot loop). While the input's
  ``background_tasks`` lists running tasks, the check waits for a later Stop.
* SessionStart with open assignments: exit 0 and ``additionalContext`` listing them.
* SubagentStart: the subagent becomes a liveness worker; exit 0, no output.
* Anything else: exit 0, no output.

Failures never hang and never print a traceback. Each call has a time budget
(``AGENT_COHERENCE_HOOK_BUDGET`` seconds, default 3; SessionEnd 1). A call that can't be
checked (unreadable input, a database error, the budget spent) fails closed when it is a
PreToolUse of a tool that may write (Write, Edit, NotebookEdit, Bash, the retired MultiEdit, or a
tool that can't be told): it is denied with the reason (exit 2 when even the event can't be told).
Every other event fails open with a note on stderr, which Claude Code keeps in its debug log.

Start-up time is paid on every tool call, so this module imports only the standard library and the
light parts of agent_coherence (no pydantic, no typing, no dataclasses); the Bash scanner is
imported only for Bash calls.
"""

from __future__ import annotations

import os
import sys

from ... import json_text  # json.loads/dumps without importing the json package (hook start-up)
from ...errors import CoherenceError, PathOutsideRoot
from .context import (
    ALLOW, BASH_TOOLS, DEFAULT_BUDGET, READ_TOOLS, SESSION_END_BUDGET, WRITE_TOOLS, BadInput,
    HookContext, Outcome, block, deny, env_float, note, post_tool_problem,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO, Mapping, TextIO

MAX_INPUT_BYTES = 16 * 1024 * 1024
SNIFF_BYTES = 64 * 1024
_ACTIONS = {"Write": "write", "Edit": "edit", "MultiEdit": "edit", "NotebookEdit": "edit"}


class BudgetExceeded(BaseException):
    """The call's time budget ran out (a BaseException so no ``except Exception`` swallows it)."""


def _signal_module():
    try:
        import _signal  # type: ignore[import-not-found]  # the C module behind ``signal``, without its enum wrappers (start-up time)

        return _signal
    except ImportError:
        import signal

        return signal


class _Alarm:
    """A wall-clock limit on the call, by SIGALRM. Inert where signals can't be used (not the main
    thread, no SIGALRM): the backend's busy deadline still bounds the database waits."""

    def __init__(self) -> None:
        self._previous = None
        self._armed = False

    @staticmethod
    def _expired(signum: int, frame: object) -> None:
        raise BudgetExceeded()

    def arm(self, seconds: float) -> None:
        try:
            signal = _signal_module()
            if not self._armed:
                self._previous = signal.signal(signal.SIGALRM, self._expired)
                self._armed = True
            signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
        except (ImportError, AttributeError, ValueError, OSError):
            pass

    def cancel(self) -> None:
        if not self._armed:
            return
        signal = _signal_module()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous if self._previous is not None else signal.SIG_DFL)
        self._armed = False


def main(stdin: BinaryIO | None = None, stdout: TextIO | None = None, env: Mapping[str, str] | None = None,
         stderr: TextIO | None = None) -> int:
    """Run one hook call; returns the exit code (0, or 2 for a refused tool call)."""
    return _main(stdin, stdout, env, stderr, close=True)


def run() -> None:
    """The process entry point: ``main()`` on the process's own stdio, then ``os._exit``.

    The SQLite connection is left open for the operating system to drop. Closing the last
    connection to a WAL database checkpoints the WAL into the database and deletes it (two
    fsyncs), and the next process recreates it: several milliseconds on every tool call. Left
    open, the WAL persists between hook processes and SQLite's auto-checkpoint folds it in every
    few hundred pages instead. Every transaction has committed by then, so nothing is lost.
    """
    code = _main(None, None, None, None, close=False)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


_left_open: list = []  # contexts whose connection must stay referenced until os._exit


def _main(stdin: BinaryIO | None, stdout: TextIO | None, env: Mapping[str, str] | None,
          stderr: TextIO | None, close: bool) -> int:
    stdin = sys.stdin.buffer if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    env = os.environ if env is None else env
    budget = env_float(env, "AGENT_COHERENCE_HOOK_BUDGET", DEFAULT_BUDGET, 0.05, 60.0)
    received = bytearray()  # what arrived so far, for the failure answer if reading is cut short
    alarm = _Alarm()
    alarm.arm(budget)
    try:
        outcome = _run(stdin, env, budget, alarm, close, received)
    except BudgetExceeded:  # the alarm fired inside one of _run's own failure handlers
        outcome = _failure(bytes(received), None, f"no decision within the {budget:g} s time budget")
    finally:
        alarm.cancel()
    _emit(outcome, stdout, stderr)
    return outcome.code


def _run(stdin: BinaryIO, env: Mapping[str, str], budget: float, alarm: _Alarm, close: bool,
         received: bytearray) -> Outcome:
    payload: dict | None = None
    ctx: HookContext | None = None
    try:
        _read_input(stdin, received)
        payload = _parse(bytes(received))
        if payload.get("hook_event_name") == "SessionEnd":
            budget = min(budget, env_float(env, "AGENT_COHERENCE_HOOK_SESSION_END_BUDGET",
                                           SESSION_END_BUDGET, 0.05, 60.0))
            alarm.arm(budget)
        ctx = HookContext(payload, env, budget)
        return _dispatch(ctx)
    except BadInput as bad:
        alarm.cancel()  # the answer below must not be cut short
        return _failure(bytes(received), payload, f"unusable hook input: {bad}")
    except BudgetExceeded:
        alarm.cancel()
        return _failure(bytes(received), payload, f"no decision within the {budget:g} s time budget (database busy?)")
    except CoherenceError as error:  # a failure the layer knows (the database unusable, the disk full), no bug
        alarm.cancel()
        return _failure(bytes(received), payload, f"{type(error).__name__}: {_clip(str(error))}")
    except Exception as error:
        alarm.cancel()
        return _failure(bytes(received), payload, f"internal error: {type(error).__name__}: {_clip(str(error))}")
    finally:
        alarm.cancel()  # closing the database (a WAL checkpoint) must not undo the decision
        if ctx is not None and close:
            try:
                ctx.close()
            except Exception:
                pass
        elif ctx is not None:
            _left_open.append(ctx)


def _read_input(stdin: BinaryIO, into: bytearray) -> None:
    """Read stdin to its end, or to one byte past the size limit, chunk by chunk into ``into``."""
    read = getattr(stdin, "read1", None) or stdin.read
    while len(into) <= MAX_INPUT_BYTES:
        chunk = read(min(SNIFF_BYTES, MAX_INPUT_BYTES + 1 - len(into)))
        if not chunk:
            return
        into += chunk.encode("utf-8", "surrogateescape") if isinstance(chunk, str) else chunk


def _parse(raw: bytes) -> dict:
    if len(raw) > MAX_INPUT_BYTES:
        raise BadInput(f"larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB")
    try:
        payload = json_text.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInput("not valid UTF-8") from None
    except (ValueError, RecursionError) as error:
        raise BadInput(f"not valid JSON ({_clip(str(error), 80)})") from None
    if not isinstance(payload, dict):
        raise BadInput("not a JSON object")
    event = payload.get("hook_event_name")
    if not isinstance(event, str) or not event:
        raise BadInput("no 'hook_event_name'")
    return payload


def _dispatch(ctx: HookContext) -> Outcome:
    event = ctx.event
    if event == "PreToolUse":
        return _pre_tool_use(ctx)
    if event == "PostToolUse":
        return _post_tool_use(ctx)
    if event == "PostToolUseFailure":
        return _tool_failed(ctx)
    from . import session

    if event == "SessionStart":
        return session.session_start(ctx)
    if event == "SubagentStart":
        return session.subagent_start(ctx)
    if event in ("Stop", "SubagentStop"):
        return session.stop(ctx)
    if event == "SessionEnd":
        return session.session_end(ctx)
    return ALLOW


def _file_path(tool: str, tool_input: dict, tool_response: object = None) -> object:
    if isinstance(tool_response, dict) and isinstance(tool_response.get("filePath"), str):
        return tool_response["filePath"]
    names = ("notebook_path", "file_path") if tool == "NotebookEdit" else ("file_path",)
    for name in names:
        if tool_input.get(name) is not None:
            return tool_input[name]
    raise BadInput(f"the {tool} input has no {names[0]!r}")


def _pre_tool_use(ctx: HookContext) -> Outcome:
    tool = ctx.tool_name
    if tool is None:
        raise BadInput("no 'tool_name'")
    if tool in WRITE_TOOLS:
        from . import file_checks

        path = _file_path(tool, ctx.tool_input)
        try:
            target = ctx.file_key(path)
        except PathOutsideRoot as refused:
            reason = str(getattr(refused, "reason", "refused"))
            if "outside the root" in reason and isinstance(path, str) and ctx.may_write_outside(path, devices=False):
                return ALLOW  # not the project's file: the client's own (a plan), a device, or allowed
            ctx.journal("conflict.path", None, {"tool": tool, "path": _clip(str(path)), "reason": reason})
            return deny(file_checks.outside_refusal(path, ctx.root, reason, _ACTIONS[tool]))
        refusal = file_checks.check_write(ctx, target, _ACTIONS[tool])
        return deny(refusal) if refusal else ALLOW
    if tool in BASH_TOOLS:
        command = ctx.tool_input.get("command")
        if not isinstance(command, str):
            raise BadInput("the Bash input has no 'command' string")
        from . import bash_checks

        refusal = bash_checks.check_command(ctx, command)
        return deny(refusal) if refusal else ALLOW
    if tool in READ_TOOLS:
        refusal = _register_read(ctx, before=True)
        return deny(refusal) if refusal else ALLOW
    return ALLOW


def _register_read(ctx: HookContext, before: bool) -> str | None:
    from . import file_checks

    tool_input = ctx.payload.get("tool_input")
    path = tool_input.get("file_path") if isinstance(tool_input, dict) else None
    if path is None:
        return None
    try:
        target = ctx.file_key(path)
    except PathOutsideRoot:
        return None  # reading outside the project is not coordinated
    return file_checks.register_read(ctx, target, before)


def _post_tool_use(ctx: HookContext) -> Outcome:
    tool = ctx.tool_name
    if tool in WRITE_TOOLS:
        from . import file_checks

        path = _file_path(tool, ctx.tool_input, ctx.payload.get("tool_response"))
        try:
            target = ctx.file_key(path)
        except PathOutsideRoot:
            return ALLOW  # refused before the write; nothing of ours to confirm
        problem = file_checks.confirm_write(ctx, target, tool, ctx.tool_input)
        return post_tool_problem(problem) if problem else ALLOW
    if tool in BASH_TOOLS:
        command = ctx.tool_input.get("command")
        if not isinstance(command, str):
            return ALLOW
        from . import bash_checks

        warnings = bash_checks.record_command(ctx, command)
        return post_tool_problem(" ".join(warnings)) if warnings else ALLOW
    if tool in READ_TOOLS:
        _register_read(ctx, before=False)
    return ALLOW


def _tool_failed(ctx: HookContext) -> Outcome:
    """A file tool that failed wrote nothing to confirm; its lease stays until the TTL or the end
    of the session. The failure is journalled.

    A Bash command fails on any non-zero exit, often after it wrote (``... > out.log && pytest``):
    what it wrote is recorded as after a success, or the change would look like an edit outside
    the hook, and the next session would not need to read it before writing over it."""
    tool = ctx.tool_name
    if tool not in WRITE_TOOLS and tool not in BASH_TOOLS or not ctx.database_exists():
        return ALLOW
    tool_input = ctx.payload.get("tool_input")
    key = None
    if tool in WRITE_TOOLS and isinstance(tool_input, dict):
        try:
            key = ctx.file_key(_file_path(tool, tool_input)).key
        except (BadInput, PathOutsideRoot):
            key = None
    error = ctx.payload.get("error")
    ctx.journal("tool.failed", key, {"tool": tool, "error": _clip(error if isinstance(error, str) else ""),
                                     "interrupted": ctx.payload.get("is_interrupt") is True})
    command = tool_input.get("command") if tool in BASH_TOOLS and isinstance(tool_input, dict) else None
    if not isinstance(command, str):
        return ALLOW
    from . import bash_checks

    warnings = bash_checks.record_command(ctx, command)
    if not warnings:
        return ALLOW
    return Outcome(0, {"hookSpecificOutput": {"hookEventName": "PostToolUseFailure",
                                              "additionalContext": " ".join(warnings)}})


# -- failures ---------------------------------------------------------------------------------

_SNIFF_EVENT = b'"hook_event_name"\\s*:\\s*"([A-Za-z]{1,40})"'
_SNIFF_TOOL = b'"tool_name"\\s*:\\s*"([A-Za-z0-9_]{1,100})"'


def _sniff(raw: bytes, payload: dict | None) -> tuple[str | None, str | None]:
    """The event and tool of an input that could not be used, as far as they can be told."""
    if payload is not None:
        event, tool = payload.get("hook_event_name"), payload.get("tool_name")
        return (event if isinstance(event, str) else None), (tool if isinstance(tool, str) else None)
    import re

    head = raw[:SNIFF_BYTES]
    if b"\x00" in head:  # UTF-16 or UTF-32 from a misbehaving caller: look at the text
        for encoding in ("utf-32", "utf-16"):
            try:
                head = head.decode(encoding).encode("utf-8", "replace")
                break
            except UnicodeError:
                continue
    event = re.search(_SNIFF_EVENT, head)
    tool = re.search(_SNIFF_TOOL, head)
    return (event.group(1).decode() if event else None), (tool.group(1).decode() if tool else None)


def _failure(raw: bytes, payload: dict | None, reason: str) -> Outcome:
    """What to answer when the call could not be processed: deny a possible write, else carry on."""
    event, tool = _sniff(raw, payload)
    may_write = tool is None or tool in WRITE_TOOLS or tool in BASH_TOOLS
    if event == "PreToolUse" and may_write or event is None and tool is not None and may_write:
        what = f"this {tool} call" if tool else "this tool call"
        refusal = (
            f"agent-coherence could not check {what} ({reason}), so it is refused: writes the layer "
            f"cannot check might overwrite another session's work. Try again in a moment; if it keeps "
            f"failing, tell the user (`agent-coherence doctor` checks the project's coordination state)."
        )
        return deny(refusal) if event == "PreToolUse" else block(refusal)
    if event == "PostToolUse" and tool in WRITE_TOOLS:
        return post_tool_problem(
            f"agent-coherence could not confirm the write of this {tool} call ({reason}). Read the file to check "
            f"that your change is on disk.")
    return note(f"agent-coherence: {reason}; event {event or 'unknown'} not processed")


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _emit(outcome: Outcome, stdout: TextIO, stderr: TextIO) -> None:
    try:
        if outcome.output is not None:
            stdout.write(json_text.dumps(outcome.output))
            stdout.write("\n")
            stdout.flush()
        if outcome.message:
            stderr.write(outcome.message + "\n")
            stderr.flush()
    except (OSError, ValueError, UnicodeError):
        pass  # Claude Code went away or closed the pipe: nothing left to tell it


if __name__ == "__main__":
    run()
