"""The hook against what the current client (Claude Code 2.1.332) actually sends: Stop while
background subagents still run, SubagentStart, and FIFOs, sockets or devices at a path.

Each payload is keyed like the ones captured from the real client (see
docs/claude-code.md); the hook runs as a separate process, as the client runs it.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import pytest

from test_claude_hook import (
    allowed, backend, bash, event, output, post_problem, post_write_payload, read_payload, reason, root,
    run_hook, write_payload,
)

__all__ = ["root"]  # the fixture, shared with test_claude_hook

QUICK = 20.0  # seconds: far beyond any hook call, far short of a hang


def background_stop(session: str, root: Path, status: str, **fields: object) -> dict:
    task = {"type": "subagent", "status": status, "task_id": "task_1", "agent_id": "agent-bg",
            "description": "write the report"}
    return event("Stop", session, root, stop_hook_active=False, last_assistant_message="Launched an agent.",
                 background_tasks=[task], session_crons=[], **fields)


def test_stop_waits_for_running_background_tasks_before_the_zero_work_check(root: Path) -> None:
    store = backend(root)
    store.assign("task-7", "claude:boss", None, {"summary": "write the report"})
    output(run_hook(root, event("SessionStart", "boss", root, source="startup")))

    # The main agent delegated the work to a background subagent, which still runs.
    for status in ("running", "pending"):
        said = output(run_hook(root, background_stop("boss", root, status)))
        assert said == {}, said  # no forced extra turn
    assert store.journal_count(kind="anomaly.zero_work") == 0  # no false alarm

    # The subagent does the work; the next Stop (its task completed) counts it and passes.
    started = event("SubagentStart", "boss", root, agent_id="agent-bg", agent_type="general-purpose")
    assert output(run_hook(root, started)) == {}
    sub_write = write_payload("boss", root, root / "report.md", "# Report\n", agent_id="agent-bg",
                              agent_type="general-purpose")
    assert allowed(run_hook(root, sub_write))
    (root / "report.md").write_text("# Report\n")
    post = post_write_payload("boss", root, root / "report.md", "# Report\n")
    post.update(agent_id="agent-bg", agent_type="general-purpose")
    assert output(run_hook(root, post)) == {}
    assert output(run_hook(root, background_stop("boss", root, "completed"))) == {}
    assert store.journal_count(kind="anomaly.zero_work") == 0


def test_a_finished_background_task_does_not_hide_idle_work(root: Path) -> None:
    store = backend(root)
    store.assign("task-8", "claude:idle", None, {"summary": "fix it"})
    output(run_hook(root, event("SessionStart", "idle", root, source="startup")))
    for status in ("completed", "failed", "killed"):
        said = output(run_hook(root, background_stop("idle", root, status)))
        assert said.get("decision") == "block" and "task-8" in said["reason"], (status, said)
    assert store.journal_count(kind="anomaly.zero_work") == 3


def test_subagent_start_makes_the_subagent_a_worker_from_its_start(root: Path) -> None:
    started = event("SubagentStart", "main", root, agent_id="agent-1", agent_type="Explore")
    assert output(run_hook(root, started)) == {}
    store = backend(root)
    workers = {w.worker: w for w in store.list_workers()}
    assert "claude:main/agent-1" in workers and workers["claude:main/agent-1"].work_done == 0
    starts = [e for e in store.journal_entries() if e.kind == "worker.start"]
    assert [e.holder for e in starts] == ["claude:main/agent-1"]
    assert starts[0].data["parent"] == "claude:main" and starts[0].data["agent_type"] == "Explore"

    stop = event("SubagentStop", "main", root, stop_hook_active=False, agent_id="agent-1", agent_type="Explore",
                 agent_transcript_path="/tmp/a.jsonl", last_assistant_message="done", background_tasks=[])
    assert output(run_hook(root, stop)) == {}
    ended = [w for w in store.list_workers(include_ended=True) if w.worker == "claude:main/agent-1"]
    assert ended and ended[0].ended_at is not None


def test_subagent_start_with_a_shared_holder_keeps_the_session_as_the_worker(root: Path) -> None:
    from test_claude_hook import hook_env

    env = hook_env(root, AGENT_COHERENCE_HOOK_HOLDER="session")
    output(run_hook(root, event("SessionStart", "main", root, source="startup"), env))
    assert output(run_hook(root, event("SubagentStart", "main", root, agent_id="a1", agent_type="x"), env)) == {}
    assert [w.worker for w in backend(root).list_workers()] == ["claude:main"]


# -- FIFOs, sockets and devices ---------------------------------------------------------------------


def _special_files(root: Path) -> dict[str, Path]:
    fifo = root / "pipe"
    os.mkfifo(fifo)
    sock_path = root / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.close()  # the socket file stays
    return {"a FIFO (named pipe)": fifo, "a socket": sock_path}


def test_fifos_and_sockets_are_refused_at_once_and_never_opened(root: Path) -> None:
    store = backend(root)
    for kind, path in _special_files(root).items():
        began = time.monotonic()
        refusals = [
            run_hook(root, write_payload("s", root, path, "x\n")),
            run_hook(root, read_payload("s", root, path)),
            run_hook(root, bash("s", root, f"echo x > {path.name}")),
        ]
        for result in refusals:
            assert not allowed(result), (kind, result.stdout)
            assert f"it is {kind}, not a regular file" in reason(result) and path.name in reason(result)
        # after a write that "succeeded": said plainly, nothing recorded, no hang
        said = output(run_hook(root, post_write_payload("s", root, path, "x\n")))
        assert f"{kind}, not a regular file" in post_problem(said)
        assert time.monotonic() - began < QUICK
        assert store.get_version(path.name) is None and store.get_lease(path.name) is None
    entries = [e for e in store.journal_entries() if e.kind == "conflict.path"]
    assert len(entries) == 6 and all(e.data["reason"].startswith("not a regular file") for e in entries)


def test_a_device_node_is_refused_without_being_opened(root: Path) -> None:
    try:
        os.mknod(root / "null-device", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # what /dev/null is
    except (PermissionError, OSError) as error:
        pytest.skip(f"cannot create a device node here: {error}")
    result = run_hook(root, write_payload("s", root, root / "null-device", "x\n"))
    assert "it is a character device, not a regular file" in reason(result)


def test_a_subagent_stop_with_a_shared_holder_keeps_the_sessions_leases(root: Path) -> None:
    """With AGENT_COHERENCE_HOOK_HOLDER=session a subagent writes as its session: its end is not the
    session's end, so the session keeps its leases, its views and its place as a worker."""
    from test_claude_hook import hook_env

    env = hook_env(root, AGENT_COHERENCE_HOOK_HOLDER="session")
    target = root / "plan.md"
    output(run_hook(root, event("SessionStart", "main", root, source="startup"), env))
    assert allowed(run_hook(root, write_payload("main", root, target, "mine\n"), env))
    stop = event("SubagentStop", "main", root, stop_hook_active=False, agent_id="a1", agent_type="x",
                 agent_transcript_path="/tmp/a.jsonl", last_assistant_message="done", background_tasks=[])
    assert output(run_hook(root, stop, env)) == {}
    store = backend(root)
    lease = store.get_lease("plan.md")
    assert lease is not None and lease.holder == "claude:main"
    assert [w.worker for w in store.list_workers()] == ["claude:main"]
    assert not allowed(run_hook(root, write_payload("other", root, target, "theirs\n"), env))


def test_a_session_resumed_after_its_end_is_a_live_worker_again_with_its_work(root: Path) -> None:
    """`claude --resume` runs the ended session again under its id: SessionStart with source
    "resume" after the SessionEnd of the earlier process. It must be a live worker again (else
    its idling is judged as an ended worker's) and keep the work it had done."""
    from test_claude_hook import session_end, write_through_hook

    output(run_hook(root, event("SessionStart", "again", root, source="startup")))
    write_through_hook(root, "again", root / "notes.md", "first run\n")
    output(run_hook(root, session_end("again", root)))
    assert [w.worker for w in backend(root).list_workers()] == []

    output(run_hook(root, event("SessionStart", "again", root, source="resume")))
    live = {w.worker: w for w in backend(root).list_workers()}
    assert "claude:again" in live and live["claude:again"].work_done == 1, live
