"""Session events: start, subagent start, stop (the zero-work check) and end (release everything,
fast).

A session is a liveness worker named after its holder (``claude:<session_id>``, or
``claude:<session_id>/<agent_id>`` for a subagent). Its work count grows with each write the hook
records. Work is *assigned* to it by open assignments (``backend.assign(task, worker=holder)``, or
to the name in ``AGENT_COHERENCE_WORKER``) and, for the main agent, by declared outputs
(``AGENT_COHERENCE_EXPECT_OUTPUTS``: paths relative to the project root, separated by
``os.pathsep``, each of which must get a version written by the session or its subagents).
A stop with assigned work and none done is the zero-work anomaly: journalled as
``anomaly.zero_work`` and told to Claude (the stop is blocked once, so Claude can do the work;
when Claude Code says a stop hook is already active, only a message is shown, to avoid a loop).
"""

from __future__ import annotations

import os

from ...errors import PathOutsideRoot
from .context import ALLOW, Outcome, note

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .context import HookContext

MAX_LISTED = 10
RESUMING_SOURCES = ("resume", "compact")
ACTIVE_TASK_STATES = ("running", "pending")


def _worker_names(ctx: HookContext) -> list[str]:
    names = [ctx.holder]
    alias = ctx.env.get("AGENT_COHERENCE_WORKER", "").strip()
    if alias and ctx.agent_id is None and alias not in names:
        names.append(alias)
    return names


def _open_assignments(ctx: HookContext) -> list:
    found = []
    for name in _worker_names(ctx):
        found.extend(ctx.backend.list_assignments(worker=name))
    return found


def _describe_assignment(record) -> str:
    info = record.info if isinstance(record.info, dict) else {}
    summary = info.get("summary") or info.get("task") or info.get("title")
    text = f"{record.task_id}: {summary}" if summary else str(record.task_id)
    return text if len(text) <= 200 else text[:197] + "..."


def session_start(ctx: HookContext) -> Outcome:
    source = ctx.payload.get("source")
    backend = ctx.backend
    info = {"source": source if isinstance(source, str) else None, "cwd": ctx.cwd, "root": ctx.root}
    if source in RESUMING_SOURCES:
        record = backend.worker_beat(ctx.holder, work=0)  # the same session continues: keep its work count
        if record is not None and record.ended_at is not None:
            # Resumed after the SessionEnd of an earlier process: live again, with the work it did.
            backend.worker_start(ctx.holder, info)
            if record.work_done:
                backend.worker_beat(ctx.holder, work=record.work_done)
    else:
        backend.worker_start(ctx.holder, info)
    assignments = _open_assignments(ctx)
    if not assignments:
        return ALLOW
    listed = "; ".join(_describe_assignment(a) for a in assignments[:MAX_LISTED])
    more = f" (and {len(assignments) - MAX_LISTED} more)" if len(assignments) > MAX_LISTED else ""
    context = (f"agent-coherence: this session ({ctx.holder}) has {len(assignments)} open assignment(s): "
               f"{listed}{more}. Finishing without doing this work is reported as a zero-work anomaly.")
    return Outcome(0, {"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": context}})


def subagent_start(ctx: HookContext) -> Outcome:
    """SubagentStart: the subagent is a liveness worker of its own from its start (``worker.start``
    in the journal), not only from its first write. With ``AGENT_COHERENCE_HOOK_HOLDER=session``
    it is its session, which is already a worker."""
    if ctx.agent_id is None or ctx.holder == ctx.family:
        return ALLOW
    agent_type = ctx.payload.get("agent_type")
    ctx.backend.worker_start(ctx.holder, {"source": "subagent", "parent": ctx.family,
                                          "agent_type": agent_type if isinstance(agent_type, str) else None})
    return ALLOW


def running_background_tasks(payload: dict) -> int:
    """How many entries of the Stop input's ``background_tasks`` are still running or pending."""
    tasks = payload.get("background_tasks")
    if not isinstance(tasks, list):
        return 0
    return sum(1 for task in tasks if isinstance(task, dict) and task.get("status") in ACTIVE_TASK_STATES)


def _declared_outputs(ctx: HookContext) -> list[str]:
    if ctx.agent_id is not None:
        return []  # the declaration belongs to the main agent, not to each subagent
    raw = ctx.env.get("AGENT_COHERENCE_EXPECT_OUTPUTS", "")
    return [path for path in raw.split(os.pathsep) if path.strip()]


def _missing_outputs(ctx: HookContext, outputs: list[str], since: float | None) -> list[str]:
    missing = []
    for path in outputs:
        try:
            key = ctx.file_key(path).key
        except PathOutsideRoot:
            missing.append(path)
            continue
        record = ctx.backend.get_version(key)
        written = (record is not None and record.sha256 is not None and ctx.is_family(record.writer)
                   and (since is None or record.updated_at >= since))
        if not written:
            missing.append(key)
    return missing


def _work_done(ctx: HookContext) -> tuple[int, float | None]:
    """Writes recorded for this holder since its session started (the main agent also counts the
    subagents it started since), and when that was."""
    workers = ctx.backend.list_workers(include_ended=True)
    mine = [w for w in workers if w.worker == ctx.holder]
    started = mine[0].started_at if mine else None
    done = mine[0].work_done if mine else 0
    if ctx.agent_id is None:
        for worker in workers:
            if worker.worker != ctx.holder and ctx.is_family(worker.worker) and (
                    started is None or worker.started_at >= started):
                done += worker.work_done
    return done, started


def stop(ctx: HookContext) -> Outcome:
    """Stop or SubagentStop: the zero-work check; a finished subagent also gives back its leases.

    Claude Code fires Stop while background tasks (subagents started in the background) still run,
    and lists them in ``background_tasks``. Their work is not done yet, so the check waits: no
    anomaly and no extra turn now; the Stop that follows their end runs it."""
    outputs = _declared_outputs(ctx)
    pending = running_background_tasks(ctx.payload)
    if pending:
        outcome = note(f"agent-coherence: zero-work check deferred, {pending} background task(s) still running")
    elif outputs or ctx.database_exists():
        outcome = _zero_work_check(ctx, outputs)
    else:
        outcome = ALLOW
    blocked = outcome.output is not None and outcome.output.get("decision") == "block"
    # A subagent that shares its session's holder (AGENT_COHERENCE_HOOK_HOLDER=session) owns
    # nothing of its own: releasing its holder would free the session's leases while it still works.
    own_holder = ctx.agent_id is not None and ctx.holder != ctx.family
    if ctx.event == "SubagentStop" and own_holder and not blocked and ctx.database_exists():
        _release(ctx, [ctx.holder])
    return outcome


def _zero_work_check(ctx: HookContext, outputs: list[str]) -> Outcome:
    assignments = _open_assignments(ctx)
    if not assignments and not outputs:
        return ALLOW  # nothing assigned: no need to count the work, which reads every worker recorded
    done, started = _work_done(ctx)
    missing = _missing_outputs(ctx, outputs, started) if outputs else []
    idle = bool(assignments) and done == 0
    if not idle and not missing:
        return ALLOW
    parts = []
    if idle:
        listed = "; ".join(_describe_assignment(a) for a in assignments[:MAX_LISTED])
        parts.append(f"{len(assignments)} open assignment(s) ({listed}) and no recorded write")
    if missing:
        parts.append(f"declared output(s) not written by this session: {', '.join(missing[:MAX_LISTED])}")
    repeat = ctx.payload.get("stop_hook_active") is True
    ctx.journal("anomaly.zero_work", None, {
        "event": ctx.event, "work_done": done, "assignments": [a.task_id for a in assignments[:50]],
        "missing_outputs": missing[:50], "repeat": repeat,
    })
    reason = (f"agent-coherence: this session ({ctx.holder}) is stopping with {' and '.join(parts)}. "
              f"Do the assigned work and write its outputs before stopping; if it cannot be done, say "
              f"why plainly so the user knows the work did not happen.")
    if repeat:
        return Outcome(0, {"systemMessage": reason})
    return Outcome(0, {"decision": "block", "reason": reason})


def _release(ctx: HookContext, holders: list[str]) -> None:
    backend = ctx.backend
    for holder in holders:
        backend.release_holder(holder)
        backend.drop_views(holder)
        backend.worker_end(holder)


def session_end(ctx: HookContext) -> Outcome:
    """Release the leases and views of the session and of its subagents, and end them as workers."""
    if not ctx.database_exists():
        return ALLOW
    backend = ctx.backend
    holders = {ctx.holder}
    holders.update(lease.holder for lease in backend.list_leases() if ctx.is_family(lease.holder))
    holders.update(w.worker for w in backend.list_workers() if ctx.is_family(w.worker))
    _release(ctx, sorted(holders))
    return ALLOW
