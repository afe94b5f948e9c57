"""What the model is told when a coordinated tool call does not do what it was asked.

A :class:`Refusal` is one failed call, in words the model can act on: what happened, who holds the
file, what to do next, and whether calling again may work (``retryable``). The tools return it as a
CrewAI ``ToolFailure`` (:func:`as_tool_failure`), so the failure lands in
``TaskOutput.tool_failures`` and ``tool_failure_policy=RAISE`` stops the crew; the hooks, which
can't return a ``ToolFailure``, put its text in place of the tool's result.

Nothing here imports crewai at module load.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import (
    BackendUnavailable, CoherenceError, DurabilityError, ForeignEdit, LeaseHeld, LeaseLost, PathOutsideRoot,
    VersionConflict,
)

if TYPE_CHECKING:
    from crewai.tools import ToolFailure

PREFIX = "agent-coherence: "


@dataclass(frozen=True)
class Refusal:
    """A coordinated tool call that failed. ``code`` is the error's class name (``LeaseHeld``,
    ``VersionConflict``, ``PathOutsideRoot``, ``InvalidInput``, ``WriteUnconfirmed``, ...)."""

    code: str
    message: str
    retryable: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The refusal as the model reads it (the same rendering CrewAI gives a ToolFailure)."""
        return f"{self.message} (code: {self.code})"


def describe_holder(holder: str | None) -> str:
    """A holder as a sentence fragment; per-call lease holders (``agent#<pid>-<n>``) name the agent."""
    if not holder:
        return "another writer"
    agent, sep, call = holder.rpartition("#")
    if sep and agent:
        return f"{agent!r} (its tool call {call})"
    return repr(holder)


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def refusal_for(error: CoherenceError, shown: str, action: str = "write") -> Refusal:
    """The refusal for a typed error raised by the coordinator; ``shown`` is the path as the
    model named it, ``action`` what the call was for ("write" or "read": a read writes nothing,
    so its refusals say nothing about writes)."""
    facts = _plain_facts(error)
    if isinstance(error, LeaseHeld):
        return Refusal("LeaseHeld", (
            f"{PREFIX}{shown} is being written by {describe_holder(error.facts.get('holder'))} since "
            f"{clock(error.facts.get('acquired_at') or time.time())}; its lease runs until "
            f"{clock(error.facts.get('expires_at') or time.time())}. Nothing was written. Call the tool again "
            f"in a moment, or work on another file first."), True, facts)
    if isinstance(error, VersionConflict):
        expected, actual = error.facts.get("expected"), error.facts.get("actual")
        if isinstance(expected, int) and isinstance(actual, int) and expected > actual:
            # Not a stale read: a version that never existed (a guessed expected_version).
            return Refusal("VersionConflict", (
                f"{PREFIX}{shown} is at version {actual}; version {expected} that your change names does not "
                f"exist. Nothing was written. Read the file and pass the version the read reports."), True, facts)
        return Refusal("VersionConflict", (
            f"{PREFIX}{shown} is at version {error.facts.get('actual')}, not version "
            f"{error.facts.get('expected')} that your change was based on: someone wrote it since you read it. "
            f"Nothing was written. Read the file again and redo your change on top of its current content."),
            True, facts)
    if isinstance(error, LeaseLost):
        return Refusal("LeaseLost", (
            f"{PREFIX}the lease on {shown} was lost before the write committed (taken over by "
            f"{describe_holder(error.facts.get('current_holder'))}, or expired). Nothing was written. Read the file "
            f"again and redo your change."), True, facts)
    if isinstance(error, ForeignEdit):
        return Refusal("ForeignEdit", (
            f"{PREFIX}{shown} was changed outside agent-coherence since version {error.facts.get('version')}. "
            f"Nothing was written, so those changes are not overwritten. Do not write this file now: report it, "
            f"so the change can be inspected and accepted (coord.adopt) or undone."), False, facts)
    if isinstance(error, PathOutsideRoot):
        return Refusal("PathOutsideRoot", (
            f"{PREFIX}refused to {action} {shown!r}: {error.facts.get('reason', 'outside the allowed directory')}."
            f"{_unchanged(action)} Use a relative path inside the allowed directory, without '..'."), False, facts)
    if isinstance(error, DurabilityError) and action == "read":
        return Refusal("DurabilityError", (
            f"{PREFIX}{shown} could not be read ({error.facts.get('detail')}). Call the tool again; if it keeps "
            f"failing, report a disk problem."), True, facts)
    if isinstance(error, DurabilityError):
        return Refusal("DurabilityError", (
            f"{PREFIX}the write to {shown} could not be confirmed on disk (failed at "
            f"{error.facts.get('step')}: {error.facts.get('detail')}); the previous content is intact. Call the "
            f"tool again; if it keeps failing, report a disk problem."), True, facts)
    if isinstance(error, BackendUnavailable):
        return Refusal("BackendUnavailable", (
            f"{PREFIX}the coordination database is unavailable ({error.facts.get('detail')}).{_unchanged(action)} "
            f"Call the tool again in a moment."), True, facts)
    return Refusal(type(error).__name__, f"{PREFIX}{error.message}.{_unchanged(action)}", False, facts)


def _plain_facts(error: CoherenceError) -> dict[str, Any]:
    """The error's facts that a tool result can carry as they are (strings, numbers, None)."""
    return {k: v for k, v in error.facts.items() if isinstance(v, (str, int, float, bool, type(None)))}


def invalid_input(shown: object, why: str, action: str = "write") -> Refusal:
    return Refusal("InvalidInput", f"{PREFIX}refused to {action} {shown!r}: {why}.{_unchanged(action)}", False,
                   {"reason": why})


def internal_error(error: BaseException, shown: str, action: str = "write") -> Refusal:
    """An unexpected error inside the adapter: the call is refused rather than let through.
    ``action``: what the call was for, "write" or "read"."""
    return Refusal("InternalError", (
        f"{PREFIX}could not coordinate the {action} of {shown} ({type(error).__name__}: {error}), so the call was "
        f"blocked.{_unchanged(action)} Call the tool again; if it keeps failing, report it."), True,
        {"error": type(error).__name__})


def _unchanged(action: str) -> str:
    """What a refused call says about the disk: a refused write wrote nothing; a read never writes."""
    return "" if action == "read" else " Nothing was written."


def as_tool_failure(refusal: Refusal) -> ToolFailure:
    """The refusal as a CrewAI ``ToolFailure`` (reason TOOL_REPORTED)."""
    from crewai.tools import ToolFailure

    return ToolFailure(message=refusal.message, code=refusal.code, retryable=refusal.retryable,
                       details=refusal.details)
