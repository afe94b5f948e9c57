"""The global hooks: fail-closed before the call, paired before/after under parallel calls,
problems after the call reported without aborting the kickoff, uninstall restores stock CrewAI,
Task.output_file written under a lease and recorded, and zero-work tasks reported."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from agent_coherence import Anomaly, Coordinator

from .conftest import tool_results

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def run_turns(tools: list[Any], *turns: Any, output_file: str | None = None) -> tuple[list[str], Any]:
    """Run a crew whose model plays ``turns`` (lists of tool calls), then answers; returns every
    tool result the model was shown, and the task output."""
    from agent_coherence.adapters.crewai.scripted import ScriptedLLM, run_crew

    remaining = list(turns)
    seen: list[str] = []

    def script(messages: list[dict[str, Any]]) -> Any:
        seen[:] = tool_results(messages)
        return remaining.pop(0) if remaining else "done"

    output = run_crew(ScriptedLLM(script), tools, output_file=output_file)
    return seen, output


def write(name: str, content: str) -> tuple[str, dict[str, Any]]:
    return ("file_writer_tool", {"filename": name, "content": content, "overwrite": True})


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_an_internal_error_blocks_the_call_where_a_plain_hook_fails_open(work: Path, wcoord: Coordinator) -> None:
    from crewai.hooks import register_before_tool_call_hook
    from crewai_tools import FileWriterTool

    from agent_coherence.adapters.crewai import install_crewai_hooks, uninstall_crewai_hooks

    root = work / "root"

    def broken(_ctx: Any) -> None:
        raise RuntimeError("lock service down")

    register_before_tool_call_hook(broken)  # stock CrewAI swallows the error: the write happens
    told, _ = run_turns([FileWriterTool(base_dir=str(root))], [write("open.txt", "written anyway")])
    assert (root / "open.txt").read_text() == "written anyway"

    def failing_paths(_args: Any) -> list[str]:
        raise RuntimeError("path extractor broke")

    hooks = install_crewai_hooks(wcoord, tools=["file_writer_tool"], paths=failing_paths)
    try:
        told, output = run_turns([FileWriterTool(base_dir=str(root))], [write("closed.txt", "must not land")])
    finally:
        uninstall_crewai_hooks(hooks)
    assert not (root / "closed.txt").exists()
    assert len(told) == 1 and "(code: InternalError)" in told[0] and "path extractor broke" in told[0]
    assert [f.failure.code for f in output.tool_failures] == ["InternalError"]


def test_parallel_calls_pair_before_and_after(work: Path, wcoord: Coordinator) -> None:
    from crewai_tools import FileWriterTool

    from agent_coherence.adapters.crewai import install_crewai_hooks

    root = work / "root"
    hooks = install_crewai_hooks(wcoord, watch_tasks=False)
    contents = {("a.txt", i): f"a{i} " * (100 + 50 * i) for i in range(3)}
    contents.update({("b.txt", i): f"b{i} " * (120 + 40 * i) for i in range(3)})
    try:
        for _ in range(10):
            calls = [write(name, text) for (name, _i), text in contents.items()]
            told, output = run_turns([FileWriterTool(base_dir=str(root))], calls)
            assert len(told) == 6 and all(t.startswith("Content successfully written") for t in told), told
            assert output.tool_failures == []
            assert wcoord.leases() == []  # every after hook released exactly its own call's lease
            for name in ("a.txt", "b.txt"):
                final = (root / name).read_text()
                assert final in {t for (n, _i), t in contents.items() if n == name}  # one whole payload
                info = wcoord.version(name)
                assert info is not None and info.sha256 == sha(final)  # recorded as the newest version
    finally:
        hooks.uninstall()
    for event in wcoord.journal.history():
        if event.kind == "write.crewai":  # each recorded write is one the call for that file made
            name = event.key
            assert event.data["sha256"] in {sha(t) for (n, _i), t in contents.items() if n == name}


def test_a_held_file_is_refused_with_the_reason_and_uninstall_restores_stock(work: Path, wcoord: Coordinator) -> None:
    from crewai.hooks import get_after_tool_call_hooks, get_before_tool_call_hooks
    from crewai_tools import FileWriterTool

    from agent_coherence.adapters.crewai import install_crewai_hooks, uninstall_crewai_hooks

    root = work / "root"
    stock_before, stock_after = list(get_before_tool_call_hooks()), list(get_after_tool_call_hooks())
    hooks = install_crewai_hooks(wcoord, lease_wait=0.2)
    with wcoord.lease("held.txt", holder="other-crew"):
        told, output = run_turns([FileWriterTool(base_dir=str(root))], [write("held.txt", "blocked")])
    assert not (root / "held.txt").exists()
    assert "(code: LeaseHeld)" in told[0] and "'other-crew'" in told[0] and "Nothing was written" in told[0]
    assert [f.failure.code for f in output.tool_failures] == ["LeaseHeld"]

    assert uninstall_crewai_hooks() == 1
    assert get_before_tool_call_hooks() == stock_before and get_after_tool_call_hooks() == stock_after
    with wcoord.lease("held.txt", holder="other-crew"):
        told, output = run_turns([FileWriterTool(base_dir=str(root))], [write("held.txt", "stock again")])
    assert (root / "held.txt").read_text() == "stock again"  # stock CrewAI: nothing checks the lease
    assert told == ["Content successfully written to held.txt"]


def test_output_file_is_leased_and_recorded(work: Path, wcoord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_coherence.adapters.crewai import install_crewai_hooks

    monkeypatch.chdir(work / "root")  # CrewAI resolves output_file against the working directory
    hooks = install_crewai_hooks(wcoord)
    try:
        _, output = run_turns([], output_file="report.md")
    finally:
        hooks.uninstall()
    assert (work / "root" / "report.md").read_text() == "done"
    recorded = [e for e in wcoord.journal.history("report.md") if e.kind == "write.crewai.output_file"]
    assert len(recorded) == 1 and recorded[0].data["sha256"] == sha("done")
    assert wcoord.leases() == []
    assert wcoord.journal.count("anomaly.zero_work") == 0


def test_an_output_file_whose_lease_is_held_is_journaled_on_the_file_as_written_unleased(
        work: Path, wcoord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    """CrewAI writes output_file whatever a hook does: the entry must say so, on the file."""
    from agent_coherence import ForeignEdit
    from agent_coherence.adapters.crewai import install_crewai_hooks

    monkeypatch.chdir(work / "root")
    wcoord.write("report.md", b"theirs", holder="other")
    lease = wcoord.acquire("report.md", "other", 30)
    hooks = install_crewai_hooks(wcoord, lease_wait=0.2)
    try:
        run_turns([], output_file="report.md")
    finally:
        hooks.uninstall()
    assert (work / "root" / "report.md").read_text() == "done"
    [entry] = [e for e in wcoord.journal.history("report.md") if e.kind == "crewai.output_unleased"]
    assert entry.data["code"] == "LeaseHeld" and "CrewAI writes report.md without its lease" in entry.data["detail"]
    with pytest.raises(ForeignEdit):
        wcoord.write("report.md", b"theirs 2", lease=lease)


def test_on_busy_output_abort_stops_the_task_before_it_replaces_a_held_output_file(
        work: Path, wcoord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the default the holder's bytes are replaced (above); "abort" keeps them."""
    from crewai.hooks import HookAborted

    from agent_coherence.adapters.crewai import install_crewai_hooks

    monkeypatch.chdir(work / "root")
    wcoord.write("report.md", b"theirs", holder="other")
    lease = wcoord.acquire("report.md", "other", 30)
    with pytest.raises(ValueError, match="on_busy_output= is one of 'write', 'abort', not 'skip'"):
        install_crewai_hooks(wcoord, on_busy_output="skip")
    hooks = install_crewai_hooks(wcoord, lease_wait=0.2, on_busy_output="abort")
    try:
        with pytest.raises(HookAborted, match="stopped before writing report.md"):
            run_turns([], output_file="report.md")
    finally:
        hooks.uninstall()
    assert (work / "root" / "report.md").read_text() == "theirs"
    [entry] = [e for e in wcoord.journal.history("report.md") if e.kind == "crewai.output_refused"]
    assert entry.data["code"] == "LeaseHeld" and "on_busy_output='write'" in entry.data["detail"]
    assert wcoord.journal.count("crewai.output_unleased") == 0
    wcoord.write("report.md", b"theirs 2", lease=lease)  # no ForeignEdit: nothing replaced the file
    assert [lease.key for lease in wcoord.leases()] == ["report.md"]


def test_a_move_tool_leases_its_source_too(work: Path, wcoord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the destination was leased: a move took a file away from under the writer holding it.
    from crewai.tools import tool

    from agent_coherence.adapters.crewai import install_crewai_hooks

    root = work / "root"
    monkeypatch.chdir(root)  # a tool without a base_dir opens relative paths from here

    @tool("move_file")
    def move_file(source: str, destination: str) -> str:
        """Move the file at source to destination."""
        os.replace(root / source, root / destination)
        return f"moved {source} to {destination}"

    wcoord.write("draft.md", b"held draft", holder="other")
    hooks = install_crewai_hooks(wcoord, lease_wait=0.2)
    try:
        with wcoord.lease("draft.md", holder="other"):
            told, _ = run_turns([move_file], [("move_file", {"source": "draft.md", "destination": "final.md"})])
            assert "(code: LeaseHeld)" in told[0] and "'other'" in told[0], told
            assert (root / "draft.md").read_bytes() == b"held draft" and not (root / "final.md").exists()
        told, _ = run_turns([move_file], [("move_file", {"source": "draft.md", "destination": "final.md"})])
    finally:
        hooks.uninstall()
    assert told == ["moved draft.md to final.md"]
    assert wcoord.version("final.md").sha256 == sha("held draft")
    assert wcoord.version("draft.md").sha256 is None  # the move's removal of its source, recorded
    assert wcoord.leases() == []


def test_a_task_that_wrote_nothing_it_declared_is_zero_work(work: Path, wcoord: Coordinator) -> None:
    from crewai_tools import FileWriterTool

    from agent_coherence.adapters.crewai import install_crewai_hooks

    root = work / "root"
    found: list[Anomaly] = []
    hooks = install_crewai_hooks(wcoord, outputs={"write the files": ["plan.md", "notes.md"]},
                                 on_anomaly=found.append)
    try:
        (root / "plan.md").write_text("old")  # a write around the layer does not count
        run_turns([FileWriterTool(base_dir=str(root))], [write("notes.md", "real work")])
    finally:
        hooks.uninstall()
    # notes.md was written (through the hooks, which coordinate the stock tool); plan.md was not.
    assert [(a.kind, a.facts["key"]) for a in found] == [("zero_work", "plan.md")]
    assert "without a coordinated write to plan.md" in found[0].detail
    assert wcoord.journal.count("anomaly.zero_work") == 1


def test_a_problem_after_the_call_is_reported_without_aborting(work: Path, wcoord: Coordinator) -> None:
    from crewai.tools import tool

    from agent_coherence.adapters.crewai import install_crewai_hooks

    @tool("Save Report")
    def save_report(filename: str, content: str) -> str:
        """Claim to save a report, and save nothing."""
        return f"saved {filename}"

    hooks = install_crewai_hooks(wcoord, watch_tasks=False)
    try:
        told, output = run_turns([save_report], [("save_report", {"filename": str(work / "root" / "r.md"),
                                                                  "content": "x"})])
    finally:
        hooks.uninstall()
    # kickoff returned normally (an after hook that raised HookAborted would have aborted it)
    assert "(code: WriteUnconfirmed)" in told[0] and "'saved " in told[0]
    assert [f.failure.code for f in output.tool_failures] == ["WriteUnconfirmed"]
    assert wcoord.leases() == []


def test_the_hooks_leave_the_coherent_tools_alone(work: Path, wcoord: Coordinator) -> None:
    from agent_coherence.adapters.crewai import CoherentFileWriterTool, install_crewai_hooks

    writer = CoherentFileWriterTool(coordinator=wcoord, base_dir=str(work / "root"), lease_wait=2.0)
    hooks = install_crewai_hooks(wcoord, watch_tasks=False)
    try:
        told, output = run_turns([writer], [write("plan.md", "one"), write("plan.md", "two")])
    finally:
        hooks.uninstall()
    # Leased twice (by the hook, then by the tool under another holder), each call would wait for
    # itself and fail with LeaseHeld.
    assert told == ["Content successfully written to plan.md"] * 2 and output.tool_failures == []
    kinds = [e.kind for e in wcoord.journal.history("plan.md") if e.kind.startswith("write")]
    assert kinds == ["write", "write"]


def test_a_call_another_hook_blocks_gives_its_leases_back(work: Path, wcoord: Coordinator) -> None:
    from crewai.hooks import register_before_tool_call_hook
    from crewai_tools import FileWriterTool

    from agent_coherence.adapters.crewai import install_crewai_hooks

    hooks = install_crewai_hooks(wcoord, watch_tasks=False)
    register_before_tool_call_hook(lambda _ctx: False)  # the user's own policy, after ours
    try:
        told, output = run_turns([FileWriterTool(base_dir=str(work / "root"))], [write("new.md", "x")])
    finally:
        hooks.uninstall()
    assert told == ["Tool execution blocked by hook. Tool: file_writer_tool"]  # CrewAI's text, untouched
    assert output.tool_failures == [] and wcoord.leases() == []
    assert not (work / "root" / "new.md").exists()


def test_hooks_installed_twice_coordinate_each_call_once(work: Path, wcoord: Coordinator,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from crewai_tools import FileWriterTool

    from agent_coherence.adapters.crewai import install_crewai_hooks, uninstall_crewai_hooks

    root = work / "root"
    monkeypatch.chdir(root)
    install_crewai_hooks(wcoord, lease_wait=5)  # e.g. a set-up function run once per kickoff
    install_crewai_hooks(wcoord, lease_wait=5)
    started = time.monotonic()
    try:
        told, output = run_turns([FileWriterTool(base_dir=str(root))], [write("twice.txt", "once")],
                                 output_file="summary.md")
    finally:
        assert uninstall_crewai_hooks() == 2
    assert time.monotonic() - started < 5  # neither the write nor the output file waited on itself
    assert told == ["Content successfully written to twice.txt"] and output.tool_failures == []
    assert [e.kind for e in wcoord.journal.history("twice.txt")].count("write.crewai") == 1
    assert [e.kind for e in wcoord.journal.history("summary.md")].count("write.crewai.output_file") == 1
    assert wcoord.journal.count("crewai.output_unleased") == 0 and wcoord.leases() == []


def test_a_wrong_argument_is_refused_at_install(wcoord: Coordinator) -> None:
    from crewai_tools import FileWriterTool

    from agent_coherence.adapters.crewai import install_crewai_hooks, uninstall_crewai_hooks

    with pytest.raises(TypeError, match="needs a Coordinator"):
        install_crewai_hooks(".")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"a list of tool names or tools, not one str: tools=\['file_writer_tool'\]"):
        install_crewai_hooks(wcoord, tools="file_writer_tool")  # would coordinate the tools named "f", "i", ...
    with pytest.raises(TypeError, match=r"outputs\['write the plan'\]= .* not str"):
        install_crewai_hooks(wcoord, outputs={"write the plan": "plans/plan.md"})
    with pytest.raises(TypeError, match="paths= takes a function"):
        install_crewai_hooks(wcoord, paths="plans/plan.md")
    # Each of these was accepted, then blocked every write (or lost every anomaly) at run time.
    with pytest.raises(ValueError, match="wait must be a finite number of seconds"):
        install_crewai_hooks(wcoord, lease_wait=-1)
    with pytest.raises(TypeError, match="holder= is the agent's name"):
        install_crewai_hooks(wcoord, holder=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="outputs= maps task names to paths"):
        install_crewai_hooks(wcoord, outputs=["plans/plan.md"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_anomaly= is a function"):
        install_crewai_hooks(wcoord, on_anomaly="print")  # type: ignore[arg-type]
    assert uninstall_crewai_hooks() == 0  # nothing was left installed by the refused calls
    hooks = install_crewai_hooks(wcoord, tools=[FileWriterTool(), "Note Saver"])  # a tool stands for its name
    try:
        assert hooks.tools == {"file_writer_tool", "note_saver"}
    finally:
        hooks.uninstall()
