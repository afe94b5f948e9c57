"""``coherent_tool`` around class-based and ``@tool`` tools: same face to the model, leases held
for the call across processes, writes confirmed and recorded, every problem a ToolFailure."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from agent_coherence import Coordinator
from conftest import FORK

from .conftest import run_children

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def appender(root: Path) -> Any:
    """A ``@tool`` that appends a line with a read-then-write of the whole file (not atomic)."""
    from crewai.tools import tool

    @tool("Append Line")
    def append_line(path: str, line: str) -> str:
        """Append one line to a file."""
        target = root / path
        old = target.read_text() if target.exists() else ""
        time.sleep(0.002)  # the window in which a concurrent appender's line gets lost
        target.write_text(old + line + "\n")
        return f"appended to {path}"

    return append_line


def test_same_name_description_and_schema(work: Path, wcoord: Coordinator) -> None:
    from crewai_tools import FileWriterTool

    from agent_coherence.adapters.crewai import coherent_tool

    for inner in (FileWriterTool(base_dir=str(work / "root")), appender(work / "root")):
        wrapped = coherent_tool(inner, wcoord)
        assert (wrapped.name, wrapped.description) == (inner.name, inner.description)
        assert wrapped.args_schema.model_json_schema() == inner.args_schema.model_json_schema()
        assert wrapped.cache_function({}, "x") is False


def test_a_plain_function_is_refused_with_a_hint(wcoord: Coordinator) -> None:
    from agent_coherence.adapters.crewai import coherent_tool

    def save(path: str, text: str) -> str:
        """Save text to path."""
        return path

    with pytest.raises(TypeError, match=r"not function .*decorate a plain function with crewai.tools.tool"):
        coherent_tool(save, wcoord)  # type: ignore[arg-type]


def test_a_tool_that_coordinates_itself_is_refused(work: Path, wcoord: Coordinator) -> None:
    """Wrapped, each of its calls waited lease_wait for the lease its outer call held, then
    failed as LeaseHeld, by itself."""
    from crewai_tools import FileWriterTool

    from agent_coherence.adapters.crewai import CoherentFileWriterTool, coherent_tool

    for inner in (CoherentFileWriterTool(coordinator=wcoord), coherent_tool(FileWriterTool(), wcoord)):
        with pytest.raises(TypeError, match="coordinates its own writes already; use it as it is"):
            coherent_tool(inner, wcoord, lease_wait=0.1)


def test_a_single_path_string_is_refused(work: Path, wcoord: Coordinator) -> None:
    from agent_coherence.adapters.crewai import coherent_tool

    with pytest.raises(TypeError, match=r"not str 'out.md': paths=\['out.md'\]"):
        coherent_tool(appender(work / "root"), wcoord, paths="out.md")  # would lease "o", "u", "t", ...
    assert coherent_tool(appender(work / "root"), wcoord, paths=["out.md"]) is not None


def test_a_paths_function_returning_one_path_blocks_the_call(work: Path, wcoord: Coordinator,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A function that returns a string instead of a list: its letters would be leased and the
    file itself written with no lease, and the model told the write did not happen."""
    from crewai.tools import ToolFailure, tool

    from agent_coherence.adapters.crewai import coherent_tool

    @tool("Export")
    def export(out: str, text: str) -> str:
        """Export the text to the file out."""
        Path(out).write_text(text)
        return "exported"

    monkeypatch.chdir(work / "root")
    wrapped = coherent_tool(export, wcoord, paths=lambda args: args["out"])
    result = wrapped.run(out="report", text="x")
    assert isinstance(result, ToolFailure) and result.code == "InternalError", result
    assert "returned one str 'report'; it returns a list of paths: ['report']" in result.message
    assert not (work / "root" / "report").exists() and wcoord.leases() == []
    # The paths are unknown when the extractor fails: the message names the arguments, and does
    # not quote the content as if it were a path.
    assert "the 'Export' call (arguments: out, text)" in result.message and "report, x" not in result.message


def test_a_paths_function_returning_path_objects_leases_the_file_the_tool_writes(
        work: Path, wcoord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative ``Path`` is taken from the working directory, where the tool opens it, like the
    string it stands for (it was resolved against the root: another file)."""
    from crewai.tools import tool

    from agent_coherence.adapters.crewai import coherent_tool

    @tool("Export")
    def export(out: str, text: str) -> str:
        """Export the text to the file out."""
        Path(out).write_text(text)
        return "exported"

    (work / "root" / "sub").mkdir()
    monkeypatch.chdir(work / "root" / "sub")
    wrapped = coherent_tool(export, wcoord, paths=lambda args: [Path(args["out"])])
    assert wrapped.run(out="p.txt", text="x") == "exported"
    assert wcoord.version("sub/p.txt") is not None and wcoord.version("p.txt") is None


def test_a_relative_base_dir_is_taken_from_the_working_directory_where_the_tool_opens_it(
        work: Path, wcoord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    """It was taken from the root: run from elsewhere, another file was leased, the tool's write
    went unleased and the model was told it had not happened (WriteUnconfirmed)."""
    from crewai.tools import tool

    from agent_coherence.adapters.crewai import coherent_tool

    @tool("Export")
    def export(path: str, text: str) -> str:
        """Export the text to the file at path, under exports/."""
        (Path("exports") / path).write_text(text)
        return "exported"

    (work / "root" / "sub" / "exports").mkdir(parents=True)
    monkeypatch.chdir(work / "root" / "sub")
    wrapped = coherent_tool(export, wcoord, base_dir="exports")
    assert wrapped.run(path="p.txt", text="x") == "exported"
    assert wcoord.version("sub/exports/p.txt") is not None and wcoord.version("exports/p.txt") is None


def test_an_outputs_function_returning_one_path_is_journaled_not_split_into_letters(
        work: Path, wcoord: Coordinator) -> None:
    from agent_coherence import Anomaly
    from agent_coherence.adapters.crewai import install_crewai_hooks
    from agent_coherence.adapters.crewai.scripted import ScriptedLLM, run_crew

    found: list[Anomaly] = []
    hooks = install_crewai_hooks(wcoord, outputs=lambda task: "plan", on_anomaly=found.append)
    try:
        run_crew(ScriptedLLM(["done"]), [])
    finally:
        hooks.uninstall()
    assert found == []  # not one zero_work anomaly per letter: "p", "l", "a", "n"
    errors = [e.data["error"] for e in wcoord.journal.history() if e.kind == "crewai.task_watch_error"]
    assert errors == ["TypeError: the outputs= function returned one str 'plan'; it returns a list of paths: "
                      "['plan']"]


def append_many(root: str, wrapped: bool, n: int, worker: int, start: Any) -> None:
    from agent_coherence.adapters.crewai import coherent_tool

    coord = Coordinator.open(root)
    tool = appender(Path(root))
    if wrapped:
        tool = coherent_tool(tool, coord, holder="crewai:appender", base_dir=root)  # one holder for all
    start.wait(timeout=20)  # all appenders run at once
    for i in range(n):
        result = tool.run(path="log.txt", line=f"{worker}-{i}")
        if not str(result).startswith("appended"):
            os._exit(4)
    coord.close()
    os._exit(0)


@pytest.mark.contract  # the coordination also runs on PostgreSQL
@pytest.mark.parametrize("wrapped", [False, True], ids=["stock", "coherent"])
def test_calls_on_one_file_serialise_across_processes(work: Path, wrapped: bool) -> None:
    root, n = work / "root", 25
    start = FORK.Barrier(3)
    children = [FORK.Process(target=append_many, args=(str(root), wrapped, n, w, start)) for w in range(3)]
    assert run_children(children) == [0] * len(children)
    lines = (root / "log.txt").read_text().splitlines()
    if wrapped:
        assert sorted(lines) == sorted(f"{w}-{i}" for w in range(3) for i in range(n))
        with Coordinator.open(root) as coord:
            assert coord.version("log.txt").version == 3 * n  # type: ignore[union-attr]
    else:
        assert len(lines) < 3 * n  # lines lost to the read-then-write race


def test_a_write_the_tool_claims_but_did_not_make_is_a_failure(work: Path, wcoord: Coordinator) -> None:
    from crewai.tools import ToolFailure, tool

    from agent_coherence.adapters.crewai import coherent_tool

    @tool("Save Report")
    def save_report(filename: str, content: str) -> str:
        """Pretend to save a report."""
        return f"saved {filename}"

    result = coherent_tool(save_report, wcoord, base_dir=str(work / "root")).run(filename="r.md", content="x")
    assert isinstance(result, ToolFailure) and result.code == "WriteUnconfirmed" and result.retryable
    assert "does not exist on disk after the call (the tool answered 'saved r.md')" in result.message


def test_a_stale_read_and_a_foreign_edit_are_refused(work: Path, wcoord: Coordinator) -> None:
    from crewai.tools import ToolFailure

    from agent_coherence.adapters.crewai import CoherentFileReadTool, coherent_tool

    root = work / "root"
    wcoord.write("log.txt", b"v1\n", holder="setup")
    CoherentFileReadTool(coordinator=wcoord, holder="crewai:me").run(file_path="log.txt")
    wcoord.write("log.txt", b"v2 by someone else\n", holder="crewai:other")
    tool = coherent_tool(appender(root), wcoord, holder="crewai:me", base_dir=str(root))
    stale = tool.run(path="log.txt", line="mine")
    assert isinstance(stale, ToolFailure) and stale.code == "VersionConflict" and stale.retryable
    assert "Read the file again" in stale.message
    assert (root / "log.txt").read_text() == "v2 by someone else\n"

    (root / "log.txt").write_text("edited around the layer\n")
    foreign = coherent_tool(appender(root), wcoord, holder="crewai:third", base_dir=str(root)).run(
        path="log.txt", line="x")
    assert isinstance(foreign, ToolFailure) and foreign.code == "ForeignEdit" and not foreign.retryable
    assert (root / "log.txt").read_text() == "edited around the layer\n"


def test_a_lease_lost_during_the_call_is_reported(work: Path, wcoord: Coordinator) -> None:
    from crewai.tools import ToolFailure, tool

    from agent_coherence.adapters.crewai import coherent_tool

    root = work / "root"

    @tool("Slow Writer")
    def slow_writer(path: str, content: str) -> str:
        """Write a file while someone takes the lease away."""
        for lease in wcoord.leases():
            wcoord.release(lease)
        wcoord.acquire(path, "crewai:thief")
        (root / path).write_text(content)
        return "written"

    result = coherent_tool(slow_writer, wcoord, base_dir=str(root)).run(path="out.txt", content="mine")
    assert isinstance(result, ToolFailure) and result.code == "LeaseLost"
    assert "landed" in result.message and "Read the file and check" in result.message
    info = wcoord.version("out.txt")
    assert info is not None and info.size == 4  # the bytes on disk are recorded all the same


def test_arun_for_sync_and_async_tools(work: Path, wcoord: Coordinator) -> None:
    from crewai.tools import tool

    from agent_coherence.adapters.crewai import coherent_tool

    root = work / "root"

    @tool("Async Writer")
    async def async_writer(path: str, content: str) -> str:
        """Write a file asynchronously."""
        await asyncio.sleep(0)
        (root / path).write_text(content)
        return "written"

    async def both() -> list[Any]:
        sync_tool = coherent_tool(appender(root), wcoord, base_dir=str(root))
        async_tool = coherent_tool(async_writer, wcoord, base_dir=str(root))
        return [await sync_tool.arun(path="a.txt", line="x"), await async_tool.arun(path="b.txt", content="y")]

    assert asyncio.run(both()) == ["appended to a.txt", "written"]
    assert [wcoord.version(k).version for k in ("a.txt", "b.txt")] == [1, 1]  # type: ignore[union-attr]
    assert wcoord.leases() == []


def test_write_calls_are_never_served_from_the_cache(work: Path, wcoord: Coordinator) -> None:
    from agent_coherence.adapters.crewai import coherent_tool
    from agent_coherence.adapters.crewai.scripted import ScriptedLLM, run_crew

    root = work / "root"
    same = [("append_line", {"path": "log.txt", "line": "again"})]
    tool = coherent_tool(appender(root), wcoord, base_dir=str(root))
    run_crew(ScriptedLLM([same, same, "done"]), [tool], cache=True)
    assert (root / "log.txt").read_text() == "again\nagain\n"  # the tool ran twice, not once


def test_the_text_react_path_reaches_the_same_checks(work: Path, wcoord: Coordinator) -> None:
    """Without function calling CrewAI calls ``_run`` through its structured tool, not ``run``."""
    from agent_coherence.adapters.crewai import CoherentFileWriterTool
    from agent_coherence.adapters.crewai.scripted import ScriptedLLM, run_crew

    root = work / "root"
    writer = CoherentFileWriterTool(coordinator=wcoord, base_dir=str(root))
    good = {"filename": "plan.md", "content": "via react", "overwrite": True}
    bad = {"filename": "../outside/x.txt", "content": "no", "overwrite": True}
    llm = ScriptedLLM([[("File Writer Tool", good)], [("File Writer Tool", bad)], "done"], native=False)
    output = run_crew(llm, [writer])
    assert (root / "plan.md").read_text() == "via react"
    assert wcoord.version("plan.md").version == 1  # type: ignore[union-attr]
    assert [f.failure.code for f in output.tool_failures] == ["PathOutsideRoot"]
    assert not (work / "outside" / "x.txt").exists()
